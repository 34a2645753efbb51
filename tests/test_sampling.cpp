// tests/test_sampling.cpp: top-k, top-p, temperature and greedy token choice against
// independent computations; stop tokens and prompts of different lengths on a model
// whose next token is known; bad options (docs/errors_sampling.md).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "autodiff/tape.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/combinators.hpp"
#include "models/decoding.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"

using namespace minitrax;
using autodiff::Var;
using base::DType;
using base::Mode;
using core::key_from_seed;
using core::Tensor;
using models::SampleOptions;

namespace {

// Random log-probs [rows, vocab] (log-softmax of normal logits), as float64 rows.
std::vector<std::vector<double>> random_log_probs(std::size_t rows, std::size_t vocab,
                                                  std::uint64_t seed, double scale = 2.0) {
  const Tensor z = core::normal(key_from_seed(seed), {rows, vocab}, DType::f64);
  std::vector<std::vector<double>> out(rows, std::vector<double>(vocab));
  for (std::size_t r = 0; r < rows; ++r) {
    double m = -1e300, s = 0;
    for (std::size_t v = 0; v < vocab; ++v) m = std::max(m, scale * z.flat(r * vocab + v));
    for (std::size_t v = 0; v < vocab; ++v) s += std::exp(scale * z.flat(r * vocab + v) - m);
    for (std::size_t v = 0; v < vocab; ++v) {
      out[r][v] = scale * z.flat(r * vocab + v) - m - std::log(s);
    }
  }
  return out;
}

Tensor to_tensor(const std::vector<std::vector<double>>& rows) {
  std::vector<double> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return Tensor::from<double>({rows.size(), rows.at(0).size()}, flat);
}

// The distribution a user expects, computed the plain way: probabilities
// exp(logp / T) / sum, sorted (descending, then by id), cut to the first k,
// renormalised, cut to the shortest prefix reaching p, renormalised. 0 outside.
std::vector<double> naive_kept(const std::vector<double>& logp, double temperature, long k,
                               double p) {
  const std::size_t vocab = logp.size();
  std::vector<double> q(vocab);
  double sum = 0;
  for (std::size_t v = 0; v < vocab; ++v) sum += q[v] = std::exp(logp[v] / temperature);
  for (double& x : q) x /= sum;
  std::vector<std::pair<double, std::size_t>> sorted;
  for (std::size_t v = 0; v < vocab; ++v) sorted.push_back({q[v], v});
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (k > 0 && static_cast<std::size_t>(k) < vocab) sorted.resize(static_cast<std::size_t>(k));
  double top_sum = 0;
  for (const auto& [prob, v] : sorted) top_sum += prob;
  std::vector<std::pair<double, std::size_t>> nucleus;
  double cum = 0;
  for (const auto& [prob, v] : sorted) {
    if (cum >= p) break;
    nucleus.push_back({prob, v});
    cum += prob / top_sum;
  }
  double kept_sum = 0;
  for (const auto& [prob, v] : nucleus) kept_sum += prob;
  std::vector<double> out(vocab, 0.0);
  for (const auto& [prob, v] : nucleus) out[v] = prob / kept_sum;
  return out;
}

std::size_t argmax(const std::vector<double>& xs) {
  return static_cast<std::size_t>(std::max_element(xs.begin(), xs.end()) - xs.begin());
}

// A predict-mode "language model" whose next token is known: after token x it puts
// probability `sure` on (x + 1) % vocab and spreads the rest evenly. It counts its calls.
struct PlusOne {
  std::shared_ptr<long> calls = std::make_shared<long>(0);
  base::LayerPtr model;
  PlusOne(std::size_t vocab, std::size_t batch, double sure = 0.9) {
    auto counter = calls;
    model = layers::Serial({layers::Fn("PlusOne", [vocab, sure, counter](const Var& x) {
      ++*counter;
      const std::size_t b = x.dim(0);
      const double rest = std::log((1 - sure) / static_cast<double>(vocab - 1));
      Tensor out = Tensor::full({b, 1, vocab}, rest, DType::f32);
      for (std::size_t i = 0; i < b; ++i) {
        const auto next = (static_cast<std::size_t>(x.value().flat(i)) + 1) % vocab;
        out.data<float>()[i * vocab + next] = static_cast<float>(std::log(sure));
      }
      return Var(out);
    })});
    model->set_mode(Mode::predict);
    model->init({{{batch, 1}, DType::i32}});
    *calls = 0;
  }
};

std::vector<std::int32_t> row(const Tensor& t, std::size_t r) {
  const auto all = t.to_vector<std::int32_t>();
  const std::size_t w = t.dim(1);
  return {all.begin() + static_cast<long>(r * w), all.begin() + static_cast<long>((r + 1) * w)};
}

}  // namespace

TEST_CASE("sampling: top-k never leaves the k most likely, and k = 1 is greedy") {
  const auto lp = random_log_probs(64, 20, 1);
  const Tensor t = to_tensor(lp);
  const Tensor greedy = models::sample_tokens(t, 0.0, key_from_seed(0));
  for (std::uint32_t draw = 0; draw < 50; ++draw) {
    const auto key = core::fold_in(key_from_seed(2), draw);
    const Tensor k5 = models::sample_tokens(t, {.temperature = 1.5, .top_k = 5}, key);
    const Tensor k1 = models::sample_tokens(t, {.temperature = 1.5, .top_k = 1}, key);
    for (std::size_t r = 0; r < lp.size(); ++r) {
      // The 5 most likely, by sorting (the values are distinct).
      std::vector<double> sorted = lp[r];
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      CHECK(lp[r][static_cast<std::size_t>(k5.flat(r))] >= sorted[4]);
      CHECK(k1.flat(r) == static_cast<double>(argmax(lp[r])));
      CHECK(greedy.flat(r) == static_cast<double>(argmax(lp[r])));
    }
  }
  // k >= vocab keeps everything: the same draws as no limit.
  const auto key = key_from_seed(3);
  CHECK(
      models::sample_tokens(t, {.temperature = 1.0, .top_k = 20}, key).to_vector<std::int32_t>() ==
      models::sample_tokens(t, {.temperature = 1.0}, key).to_vector<std::int32_t>());
  CHECK(
      models::sample_tokens(t, {.temperature = 1.0, .top_k = 999}, key).to_vector<std::int32_t>() ==
      models::sample_tokens(t, {.temperature = 1.0}, key).to_vector<std::int32_t>());
  // Temperature 0 is greedy whatever top_k and top_p say.
  CHECK(models::sample_tokens(t, {.temperature = 0.0, .top_k = 3, .top_p = 0.2}, key)
            .to_vector<std::int32_t>() == greedy.to_vector<std::int32_t>());
}

TEST_CASE("sampling: filter_log_probs keeps what a naive sorted cumulative sum keeps") {
  const auto lp = random_log_probs(40, 30, 4);
  std::size_t sizes_seen = 0;
  std::set<std::size_t> sizes;
  for (double temperature : {0.5, 1.0, 2.0}) {
    for (long k : {0L, 1L, 7L, 30L}) {
      for (double p : {0.05, 0.3, 0.5, 0.9, 0.99, 1.0}) {
        CAPTURE(temperature);
        CAPTURE(k);
        CAPTURE(p);
        const Tensor f = models::filter_log_probs(
            to_tensor(lp), {.temperature = temperature, .top_k = k, .top_p = p});
        for (std::size_t r = 0; r < lp.size(); ++r) {
          const auto want = naive_kept(lp[r], temperature, k, p);
          std::size_t kept = 0;
          for (std::size_t v = 0; v < want.size(); ++v) {
            const double got = f.at({r, v});
            // the same set, and the same renormalised probabilities
            CHECK((want[v] > 0) == std::isfinite(got));
            if (want[v] > 0) {
              CHECK(std::abs(std::exp(got) - want[v]) < 1e-12);
              ++kept;
            }
          }
          sizes.insert(kept);
          ++sizes_seen;
        }
      }
    }
  }
  CHECK(sizes.size() > 10);  // the cases cover many kept-set sizes, not just 1 and all
  // Greedy (temperature 0): the point mass on the argmax.
  const Tensor g = models::filter_log_probs(to_tensor(lp), {});
  for (std::size_t r = 0; r < lp.size(); ++r) {
    for (std::size_t v = 0; v < 30; ++v) {
      CHECK(g.at({r, v}) == (v == argmax(lp[r]) ? 0.0 : -INFINITY));
    }
  }
  CHECK(sizes_seen == 3 * 4 * 6 * 40);
}

TEST_CASE("sampling: draws follow the renormalised top-k / top-p distribution (chi-square)") {
  const std::vector<double> logp = {std::log(0.30), std::log(0.25), std::log(0.20),
                                    std::log(0.12), std::log(0.08), std::log(0.05)};
  const double temperature = 0.8;
  const long k = 4;
  const double p = 0.75;
  const auto want = naive_kept(logp, temperature, k, p);
  std::size_t kept = 0;
  for (double w : want) kept += w > 0;
  REQUIRE(kept == 3);  // the top 4 renormalised, then the nucleus: 3 tokens
  // One call, 30000 rows: row b is drawn with fold_in(key, b).
  const std::size_t n = 30000;
  std::vector<std::vector<double>> rows(n, logp);
  const Tensor draws = models::sample_tokens(
      to_tensor(rows), {.temperature = temperature, .top_k = k, .top_p = p}, key_from_seed(5));
  std::vector<double> counts(logp.size(), 0);
  for (std::size_t i = 0; i < n; ++i) counts[static_cast<std::size_t>(draws.flat(i))] += 1;
  auto chi2 = [&](const std::vector<double>& q) {
    double s = 0;
    for (std::size_t v = 0; v < q.size(); ++v) {
      if (q[v] > 0) s += std::pow(counts[v] - n * q[v], 2) / (n * q[v]);
    }
    return s;
  };
  for (std::size_t v = 0; v < logp.size(); ++v) {
    if (want[v] == 0) CHECK(counts[v] == 0);  // never outside the kept set
  }
  // 2 degrees of freedom: P(chi2 > 18.42) = 1e-4 for a correct sampler.
  CHECK(chi2(want) < 18.42);
  // The test has power: the same draws against the distribution without top-p (the
  // top 4 renormalised) fail it by far.
  CHECK(chi2(naive_kept(logp, temperature, k, 1.0)) > 18.42 * 10);
}

TEST_CASE("sampling: a stop token ends each row; the call ends when all rows have stopped") {
  PlusOne lm(10, 3);
  const std::vector<std::vector<int>> prompts = {{2}, {5, 6}, {}};
  // Greedy: after x comes x + 1. Stop at 7.
  const Tensor out = models::autoregressive_sample(*lm.model, prompts, 8, {.stop_id = 7});
  REQUIRE(out.shape() == core::Shape{3, 10});  // longest prompt (2) + n_new (8)
  CHECK(row(out, 0) == std::vector<std::int32_t>{2, 3, 4, 5, 6, 7, 0, 0, 0, 0});
  CHECK(row(out, 1) == std::vector<std::int32_t>{5, 6, 7, 0, 0, 0, 0, 0, 0, 0});
  CHECK(row(out, 2) == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7, 0, 0, 0});
  // The empty prompt's row needs the most calls: start, then 1 .. 7.
  CHECK(*lm.calls == 7);
  // Without a stop token every row gets n_new tokens: 10 calls (the longest prompt + 8).
  *lm.calls = 0;
  const Tensor all = models::autoregressive_sample(*lm.model, prompts, 8);
  CHECK(row(all, 0) == std::vector<std::int32_t>{2, 3, 4, 5, 6, 7, 8, 9, 0, 0});
  CHECK(row(all, 1) == std::vector<std::int32_t>{5, 6, 7, 8, 9, 0, 1, 2, 3, 4});
  CHECK(row(all, 2) == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 0, 0});
  CHECK(*lm.calls == 10);
  // Another pad id fills the rest of the stopped rows.
  const Tensor padded =
      models::autoregressive_sample(*lm.model, prompts, 8, {.stop_id = 7, .pad_id = 9});
  CHECK(row(padded, 1) == std::vector<std::int32_t>{5, 6, 7, 9, 9, 9, 9, 9, 9, 9});
  // n_new = 0: the prompts, padded, and no model call.
  *lm.calls = 0;
  CHECK(row(models::autoregressive_sample(*lm.model, prompts, 0), 1) ==
        std::vector<std::int32_t>{5, 6});
  CHECK(*lm.calls == 0);
}

TEST_CASE("sampling: with temperature, rows stop at their own stop token") {
  // sure = 0.5: the chain x -> x + 1 is broken often; a row ends at its first 7.
  PlusOne lm(10, 4, 0.5);
  const std::vector<std::vector<int>> prompts = {{1}, {1}, {1}, {1}};
  const Tensor free = models::autoregressive_sample(*lm.model, prompts, 12,
                                                    {.temperature = 1.0, .rng = key_from_seed(8)});
  const Tensor stopped = models::autoregressive_sample(
      *lm.model, prompts, 12, {.temperature = 1.0, .rng = key_from_seed(8), .stop_id = 7});
  std::size_t rows_with_stop = 0;
  for (std::size_t r = 0; r < 4; ++r) {
    const auto f = row(free, r), s = row(stopped, r);
    // The same draws up to and including the first 7 (after the prompt), then pad.
    const auto first = std::find(f.begin() + 1, f.end(), 7);
    const std::size_t len =
        first == f.end() ? f.size() : static_cast<std::size_t>(first - f.begin()) + 1;
    rows_with_stop += first != f.end();
    for (std::size_t j = 0; j < f.size(); ++j) CHECK(s[j] == (j < len ? f[j] : 0));
  }
  CHECK(rows_with_stop > 0);
}

TEST_CASE("sampling: a fixed key gives the same tokens; rows have their own keys") {
  models::TransformerLMOptions o{.vocab_size = 20,
                                 .d_model = 16,
                                 .d_ff = 32,
                                 .n_layers = 1,
                                 .n_heads = 2,
                                 .dropout = 0.0,
                                 .max_len = 32,
                                 .mode = Mode::predict};
  auto lm = models::TransformerLM(o);
  lm->init({{{3, 1}, DType::i32}}, key_from_seed(9));
  const Tensor prompt = Tensor::from<std::int32_t>({3, 2}, {4, 5, 4, 5, 4, 5});
  const SampleOptions opts{.temperature = 1.0, .top_p = 0.95, .rng = key_from_seed(10)};
  const Tensor a = models::autoregressive_sample(*lm, prompt, 12, opts);
  CHECK(models::autoregressive_sample(*lm, prompt, 12, opts).to_vector<std::int32_t>() ==
        a.to_vector<std::int32_t>());
  // Equal prompts, different row keys: different samples.
  CHECK(row(a, 0) != row(a, 1));
  CHECK(row(a, 1) != row(a, 2));
  // Another key: another sample.
  SampleOptions other = opts;
  other.rng = key_from_seed(11);
  CHECK(models::autoregressive_sample(*lm, prompt, 12, other).to_vector<std::int32_t>() !=
        a.to_vector<std::int32_t>());
  // Given the same key for every row, every row is the same.
  SampleOptions same = opts;
  same.row_keys = {key_from_seed(12), key_from_seed(12), key_from_seed(12)};
  const Tensor s = models::autoregressive_sample(*lm, prompt, 12, same);
  CHECK(row(s, 0) == row(s, 1));
  CHECK(row(s, 0) == row(s, 2));
}

// ---- bad options (docs/errors_sampling.md: SMP01 ... SMP17) ----

namespace {

// f() must throw exactly the message `want`, as an E (or a type derived from it).
template <class E, class F>
void check_error(F&& f, const std::string& want) {
  try {
    f();
    FAIL("no error; expected: " << want);
  } catch (const E& e) {
    CHECK(std::string(e.what()) == want);
  } catch (const std::exception& e) {
    FAIL("wrong exception type (" << testutil::type_name(typeid(e)) << "): " << e.what());
  }
}

// A predict-mode TransformerLM with vocab 11 and max_len 32, batch 1.
struct SmallLM {
  base::LayerPtr lm;
  SmallLM() {
    models::TransformerLMOptions o{.vocab_size = 11,
                                   .d_model = 16,
                                   .d_ff = 32,
                                   .n_layers = 1,
                                   .n_heads = 2,
                                   .dropout = 0.0,
                                   .max_len = 32,
                                   .mode = Mode::predict};
    lm = models::TransformerLM(o);
    lm->init({{{1, 1}, DType::i32}}, key_from_seed(13));
  }
  // The error of sampling `prompt` (default {0, 5, 7}) with these options.
  template <class E = core::ValueError>
  void check(const SampleOptions& opts, long n_new, const Tensor& prompt, const std::string& want) {
    const auto before = lm->flat_state();
    check_error<E>([&] { (void)models::autoregressive_sample(*lm, prompt, n_new, opts); }, want);
    // The model's state is as before (positions and caches at 0).
    const auto after = lm->flat_state();
    REQUIRE(after.size() == before.size());
    for (std::size_t i = 0; i < after.size(); ++i) {
      CHECK(core::max_abs_diff(after[i].value, before[i].value) == 0.0);
    }
  }
  template <class E = core::ValueError>
  void check(const SampleOptions& opts, const std::string& want) {
    check<E>(opts, 4, Tensor::from<std::int32_t>({1, 3}, {0, 5, 7}), want);
  }
};

}  // namespace

TEST_CASE("SMP01 autoregressive_sample: top_k < 0") {
  SmallLM().check({.top_k = -1}, "autoregressive_sample: top_k must be >= 0 (0: no limit), got -1");
}

TEST_CASE("SMP02 autoregressive_sample: top_p of 0, above 1, or NaN") {
  SmallLM m;
  m.check({.top_p = 0.0},
          "autoregressive_sample: top_p must be in (0, 1] (1: no limit), got 0.000000");
  m.check({.top_p = 1.5},
          "autoregressive_sample: top_p must be in (0, 1] (1: no limit), got 1.500000");
  m.check({.top_p = NAN}, "autoregressive_sample: top_p must be in (0, 1] (1: no limit), got nan");
}

TEST_CASE("SMP03 autoregressive_sample: a negative or infinite temperature") {
  SmallLM m;
  m.check({.temperature = -0.5},
          "autoregressive_sample: temperature must be finite and >= 0, got -0.500000");
  m.check({.temperature = INFINITY},
          "autoregressive_sample: temperature must be finite and >= 0, got inf");
}

TEST_CASE("SMP04 autoregressive_sample: n_new < 0") {
  SmallLM().check({}, -1, Tensor::from<std::int32_t>({1, 1}, {0}),
                  "autoregressive_sample: n_new must be >= 0, got -1");
}

TEST_CASE("SMP05 autoregressive_sample: row_keys of the wrong size") {
  SmallLM().check(
      {.row_keys = {key_from_seed(1), key_from_seed(2)}},
      "autoregressive_sample: row_keys has 2 keys for 1 prompts (give one per prompt, or none)");
}

TEST_CASE("SMP06 autoregressive_sample: a prompt longer than the model's max_len") {
  SmallLM().check(
      {}, 1, Tensor::zeros({1, 33}, DType::i32),
      "autoregressive_sample: prompt 0 has 33 tokens, more than the model's max_len 32");
}

TEST_CASE("SMP07 autoregressive_sample: prompt + n_new beyond the model's max_len") {
  SmallLM().check({}, 5, Tensor::zeros({1, 30}, DType::i32),
                  "autoregressive_sample: the longest prompt (30 tokens) + n_new 5 = 35 positions, "
                  "more than the model's max_len 32 (at most 2 new tokens fit)");
}

TEST_CASE("SMP08 autoregressive_sample: prompt ids outside the vocabulary") {
  SmallLM m;
  m.check({}, 4, Tensor::from<std::int32_t>({1, 3}, {0, 11, 7}),
          "autoregressive_sample: prompt 0's id at position 1 is 11, outside the model's "
          "vocabulary [0, 11)");
  m.check({}, 4, Tensor::from<std::int32_t>({1, 3}, {0, 5, -2}),
          "autoregressive_sample: prompt 0's id at position 2 is -2, outside the model's "
          "vocabulary [0, 11)");
}

TEST_CASE("SMP09 autoregressive_sample: stop_id outside the vocabulary") {
  SmallLM().check(
      {.stop_id = 11},
      "autoregressive_sample: stop_id (-1: none) is 11, outside the model's vocabulary [0, 11)");
}

TEST_CASE("SMP10 autoregressive_sample: pad_id outside the vocabulary") {
  SmallLM().check({.pad_id = -1},
                  "autoregressive_sample: pad_id is -1, outside the model's vocabulary [0, 11)");
}

TEST_CASE("SMP11 autoregressive_sample: a float prompt") {
  SmallLM().check<core::DTypeError>(
      {}, 4, Tensor::from<float>({1, 2}, {1.0f, 2.0f}),
      "autoregressive_sample: the prompt must hold integer token ids, got float32");
}

TEST_CASE("SMP12 autoregressive_sample: a prompt that is not two-dimensional") {
  SmallLM().check<core::ShapeError>({}, 4, Tensor::zeros({3}, DType::i32),
                                    "autoregressive_sample: expected a prompt [batch, length], "
                                    "got [3]");
}

TEST_CASE("SMP13 autoregressive_sample: no prompts") {
  SmallLM m;
  check_error<core::ShapeError>(
      [&] { (void)models::autoregressive_sample(*m.lm, std::vector<std::vector<int>>{}, 3); },
      "autoregressive_sample: no prompts (a batch of 0)");
}

TEST_CASE("SMP14 autoregressive_sample: a model not in predict mode") {
  models::TransformerLMOptions o{.vocab_size = 11,
                                 .d_model = 16,
                                 .d_ff = 32,
                                 .n_layers = 1,
                                 .n_heads = 2,
                                 .dropout = 0.0,
                                 .max_len = 32,
                                 .mode = Mode::eval};
  auto lm = models::TransformerLM(o);
  lm->init({{{1, 4}, DType::i32}});
  check_error<core::ValueError>(
      [&] {
        (void)models::autoregressive_sample(*lm, Tensor::from<std::int32_t>({1, 1}, {0}), 3);
      },
      "autoregressive_sample: the model must be in predict mode (made with mode = predict, or "
      "set_mode(Mode::predict) before init), it is in eval mode");
}

TEST_CASE("SMP15 sample_tokens, filter_log_probs: the same option checks") {
  const Tensor lp = Tensor::from<float>({1, 3}, {-1.0f, -0.5f, -2.0f});
  check_error<core::ValueError>(
      [&] { (void)models::sample_tokens(lp, {.temperature = 1.0, .top_k = -3}, key_from_seed(0)); },
      "sample_tokens: top_k must be >= 0 (0: no limit), got -3");
  check_error<core::ValueError>(
      [&] { (void)models::filter_log_probs(lp, {.temperature = 1.0, .top_p = -0.1}); },
      "filter_log_probs: top_p must be in (0, 1] (1: no limit), got -0.100000");
  check_error<core::ValueError>(
      [&] { (void)models::sample_tokens(lp, -1.0, key_from_seed(0)); },
      "sample_tokens: temperature must be finite and >= 0, got -1.000000");
}

TEST_CASE("SMP16 sample_tokens: log-probs with NaN, all -inf, or integers") {
  check_error<core::ValueError>(
      [&] {
        (void)models::sample_tokens(Tensor::from<float>({1, 2}, {NAN, 0.0f}), 1.0,
                                    key_from_seed(0));
      },
      "sample_tokens: row 0 of the log-probs holds nan at token 0 (the model's output is not "
      "finite)");
  check_error<core::ValueError>(
      [&] {
        (void)models::sample_tokens(Tensor::from<float>({1, 2}, {-INFINITY, -INFINITY}), 1.0,
                                    key_from_seed(0));
      },
      "sample_tokens: row 0 of the log-probs is -inf everywhere (no token is possible)");
  check_error<core::DTypeError>(
      [&] {
        (void)models::sample_tokens(Tensor::from<std::int32_t>({1, 2}, {0, 1}), 1.0,
                                    key_from_seed(0));
      },
      "sample_tokens: expected floating log-probs, got int32");
}

TEST_CASE("SMP17 sample_tokens: log-probs that are not two-dimensional") {
  check_error<core::ShapeError>(
      [&] {
        (void)models::sample_tokens(Tensor::zeros({2, 1, 3}, DType::f32), 1.0, key_from_seed(0));
      },
      "sample_tokens: expected log-probs [batch, vocab], got [2, 1, 3]");
}
