// examples/reformer_lab.cpp: the course lab "Reformer Efficient Attention" (Coursera NLP
// specialisation, course 4 week 4, ungraded lab 1) walked through step by step in C++.
//
// Each step is one function named after the lab's, runs on the lab's inputs and prints
// what the notebook prints, so the two can be read side by side. After the notebook's
// printout every step checks its results: the lab's expected values where the lab gives
// them, and otherwise the properties the step must have. Each check prints one line
// ending in OK or MISMATCH, and the program exits with 1 if any check fails.
//
//   reformer_lab               all seven steps
//   reformer_lab --step 5      only step 5 (repeat --step for several)
//   reformer_lab --list        the steps and the lab sections they follow
//   reformer_lab --help
//
// The steps (lab section in brackets):
//   1 our_softmax            [2.1.1]  softmax written through its logsumexp
//   2 our_simple_attend      [2.2]    dot-product attention of one head
//   3 OurSelfAttention       [2.3]    the SelfAttention layer, reference path, 3 heads
//   4 our_hash_vectors       [3.2]    angular LSH: random rotations, argmax, offsets
//   5 sort_buckets           [3.3]    sort positions by (bucket, position); undo_sort
//   6 dotandv                [3.4]    attention inside chunks of the sorted sequence
//   7 OurLSHSelfAttention    [3.5]    the LSHSelfAttention layer, reference path
//
// The lab's own functions (our_softmax, our_simple_attend, our_hash_vectors,
// sort_buckets, dotandv) are written here again, with minitrax's tensor ops where the lab
// uses numpy and the public helpers of layers/research/attention_ops.hpp
// (length_normalized, mask_self_attention, permute_via_gather, ...) where the lab calls
// Trax's. Each step also runs the library's version of the same thing and checks that the
// two agree.
//
// Steps 3 and 7 run the layers with use_reference_code = true: the layer loops over
// (example, head) and calls forward_unbatched once per head. The lab's classes override
// forward_unbatched, and so do ours, with the lab's bodies built from the earlier steps:
// OurSelfAttention projects x and attends with our_simple_attend (step 2);
// OurLSHSelfAttention hashes with our_hash_vectors (step 4), sorts with sort_buckets
// (step 5), attends within chunks and combines the rounds with dotandv (step 6). Neither
// calls the library's forward_unbatched. Afterwards each step runs the library's
// SelfAttentionLayer / LSHSelfAttentionLayer::forward_unbatched on the same inputs,
// weights, rng and state, and checks that the outputs and new states agree. To watch one
// head of the lab's class at work, build with the `debug` preset and break in gdb:
//
//   gdb --args build/debug/examples/reformer_lab --step 7
//   (gdb) break OurLSHSelfAttention::forward_unbatched
//   (gdb) run
//
// (A breakpoint on minitrax::layers::research::LSHSelfAttentionLayer::forward_unbatched
// stops in the library's version instead, when step 7 compares it head by head.)
//
// Random inputs: the lab draws them with JAX (jax.random.uniform(PRNGKey(0), ...),
// fastmath.random.get_prng(1)). minitrax's rng produces JAX's Threefry bits
// (core/rng.hpp), so core::key_from_seed(s) is PRNGKey(s) and the inputs are the lab's.
// The layers draw their weights as Trax 1.3.4 does (one key per head, split 4 ways for
// q, k, v, o), so steps 2, 3 and 7 can be compared with the lab's printed numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "core/kernels.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "layers/research/attention_ops.hpp"
#include "layers/research/efficient_attention.hpp"

using namespace minitrax;
namespace fm = minitrax::fastmath;
namespace research = minitrax::layers::research;
using autodiff::Var;
using core::DType;
using core::Key;
using core::Shape;
using core::Tensor;
using core::Trans;
using UnbatchedResult = research::EfficientAttentionBase::UnbatchedResult;

namespace {

// =============================================================================================
// Printing as numpy prints, and the checks
// =============================================================================================

/// A shape as Python prints a tuple: (8, 8), (24,).
std::string tuple(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

/// The shortest %g text that reads back as the same float32 (numpy prints float32 so).
std::string shortest(double value, char style) {
  const float v = static_cast<float>(value);
  char buf[64];
  for (int precision = 1; precision <= 9; ++precision) {
    const int p = style == 'e' ? precision - 1 : precision;
    std::snprintf(buf, sizeof buf, style == 'e' ? "%.*e" : "%.*g", p, static_cast<double>(v));
    if (style != 'e' && std::string(buf).find('e') != std::string::npos) continue;
    if (std::strtof(buf, nullptr) == v) return buf;
  }
  std::snprintf(buf, sizeof buf, style == 'e' ? "%.8e" : "%.9g", static_cast<double>(v));
  return buf;
}

/// numpy's layout for an array: nested brackets, every element padded to a common width,
/// float elements aligned on their decimal point, scientific notation when small and large
/// magnitudes mix, lines wrapped at 75 characters.
std::string np_str(const Tensor& t) {
  const std::size_t n = t.size();
  std::vector<std::string> cells(n);
  if (!core::is_floating(t.dtype())) {
    for (std::size_t i = 0; i < n; ++i) cells[i] = std::to_string(static_cast<long>(t.flat(i)));
    std::size_t w = 0;
    for (const auto& c : cells) w = std::max(w, c.size());
    for (auto& c : cells) c.insert(0, w - c.size(), ' ');
  } else {
    double lo = INFINITY, hi = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double a = std::fabs(t.flat(i));
      if (a != 0) lo = std::min(lo, a);
      hi = std::max(hi, a);
    }
    const bool scientific = (lo < 1e-4) || hi >= 1e8 || (lo > 0 && hi / lo > 1e3);
    if (scientific) {
      // One mantissa precision for all (the largest any element needs), as numpy does.
      std::size_t digits = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::string s = shortest(t.flat(i), 'e');
        const std::size_t dot = s.find('.'), e = s.find('e');
        if (dot != std::string::npos) digits = std::max(digits, e - dot - 1);
      }
      for (std::size_t i = 0; i < n; ++i) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.*e", static_cast<int>(digits),
                      static_cast<double>(static_cast<float>(t.flat(i))));
        cells[i] = buf;
      }
    } else {
      for (std::size_t i = 0; i < n; ++i) {
        cells[i] = shortest(t.flat(i), 'g');
        if (cells[i].find('.') == std::string::npos) cells[i] += ".";
      }
      std::size_t left = 0, right = 0;
      for (const auto& c : cells) {
        const std::size_t dot = c.find('.');
        left = std::max(left, dot);
        right = std::max(right, c.size() - dot);
      }
      for (auto& c : cells) {
        const std::size_t dot = c.find('.');
        c.insert(0, left - dot, ' ');
        c.append(right - (c.size() - (left)), ' ');
      }
    }
    std::size_t w = 0;
    for (const auto& c : cells) w = std::max(w, c.size());
    for (auto& c : cells) c.insert(0, w - c.size(), ' ');
  }
  if (t.ndim() == 0) return cells.empty() ? "" : cells[0];

  const Shape& shape = t.shape();
  std::function<std::string(std::size_t, std::size_t, std::size_t)> rec =
      [&](std::size_t axis, std::size_t offset, std::size_t stride) -> std::string {
    std::string s = "[";
    const std::size_t extent = shape[axis];
    const std::size_t inner = stride / std::max<std::size_t>(extent, 1);
    if (axis + 1 == shape.size()) {
      std::size_t col = axis + 1;  // the brackets before the first element
      for (std::size_t i = 0; i < extent; ++i) {
        const std::string& c = cells[offset + i];
        if (i > 0) {
          if (col + 1 + c.size() + 1 > 75) {
            while (s.back() == ' ') s.pop_back();
            s += "\n" + std::string(axis + 1, ' ');
            col = axis + 1;
          } else {
            s += " ";
            ++col;
          }
        }
        s += c;
        col += c.size();
      }
    } else {
      for (std::size_t i = 0; i < extent; ++i) {
        if (i > 0) s += std::string(shape.size() - axis - 1, '\n') + std::string(axis + 1, ' ');
        s += rec(axis + 1, offset + i * inner, inner);
      }
    }
    return s + "]";
  };
  return rec(0, 0, n);
}

std::string np_str(const Var& v) {
  return np_str(v.value());
}

/// A short one-line view of a tensor for the check lines: all elements if at most 24, else
/// the first 6 and the count.
std::string brief(const Tensor& t) {
  const Tensor flat = t.reshape(Shape{t.size()});
  const bool all = t.size() <= 24;
  const std::string text = np_str(all ? flat : core::slice(flat, 0, 0, 6));
  std::string s;  // on one line: each line break and the indent after it become one space
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\n') {
      s += text[i];
      continue;
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    s += ' ';
    while (i + 1 < text.size() && text[i + 1] == ' ') ++i;
  }
  if (all) return s;
  s.pop_back();
  return s + " ...] (" + std::to_string(t.size()) + " values)";
}

/// How many checks ran and how many failed, over the whole run.
struct Tally {
  int run = 0;
  int failed = 0;
};
Tally tally;

bool verdict(bool ok) {
  ++tally.run;
  if (!ok) ++tally.failed;
  std::cout << (ok ? " -> OK\n" : " -> MISMATCH\n");
  return ok;
}

/// Integer arrays must be identical.
bool check_equal(const std::string& what, const std::vector<long>& expected, const Tensor& got) {
  const std::vector<std::int32_t> e(expected.begin(), expected.end());
  const Tensor want = Tensor::from<std::int32_t>({e.size()}, e);
  const bool ok = want.size() == got.size() &&
                  core::equal(want, got.astype(DType::i32).reshape(Shape{got.size()}));
  std::cout << "  check " << what << ": expected " << brief(want) << " got " << brief(got);
  return verdict(ok);
}

/// Float arrays: max |expected - got| <= tol.
bool check_close(const std::string& what, const Tensor& expected, const Tensor& got, double tol) {
  const bool same_shape = expected.shape() == got.shape();
  const double diff = same_shape
                          ? core::max_abs_diff(expected.astype(DType::f64), got.astype(DType::f64))
                          : INFINITY;
  char buf[96];
  if (tol == 0) {
    std::snprintf(buf, sizeof buf, " max |diff| %.3g (must be exact)", diff);
  } else {
    std::snprintf(buf, sizeof buf, " max |diff| %.3g (tolerance %.0e)", diff, tol);
  }
  std::cout << "  check " << what << ": expected " << brief(expected) << " got " << brief(got)
            << buf;
  return verdict(same_shape && diff <= tol);
}

bool check_close(const std::string& what, const Shape& shape, const std::vector<double>& expected,
                 const Tensor& got, double tol) {
  return check_close(what, Tensor::from<double>(shape, expected), got, tol);
}

/// A property that must hold.
bool check_that(const std::string& what, bool ok, const std::string& detail = "") {
  std::cout << "  check " << what;
  if (!detail.empty()) std::cout << ": " << detail;
  return verdict(ok);
}

void banner(int step, const std::string& title) {
  std::cout << "\n==== step " << step << ": " << title << " "
            << std::string(title.size() < 60 ? 60 - title.size() : 2, '=') << "\n";
}

/// numpy's `a % n` for a non-negative integer array.
Tensor remainder(const Tensor& a, long n) {
  Tensor out = a.astype(DType::i32).clone();
  std::int32_t* p = out.data<std::int32_t>();
  for (std::size_t i = 0; i < out.size(); ++i) p[i] = static_cast<std::int32_t>(p[i] % n);
  return out;
}

// =============================================================================================
// Step 1 [2.1.1]: our_softmax
// =============================================================================================

/// The lab's our_softmax: softmax(x) = exp(x - logsumexp(x)) over the last axis, returning
/// the logsumexp as well. Keeping the logsumexp lets LSH attention compute a softmax in
/// pieces (one per hash round) and combine the pieces afterwards (steps 6 and 7).
/// passthrough = true returns x itself and a zero logsumexp: the lab uses it to keep the
/// integer dot products visible in step 6.
std::pair<Var, Var> our_softmax(const Var& x, bool passthrough = false) {
  Var logsumexp = fm::logsumexp(x, {-1}, /*keepdims=*/true);
  Var o = fm::exp(x - logsumexp);
  if (passthrough) return {x, Var(Tensor::zeros_like(logsumexp.value()))};
  return {o, logsumexp};
}

void step1_our_softmax() {
  banner(1, "our_softmax [lab 2.1.1]");
  // a = np.array([1.0, 2.0, 3.0, 4.0])
  const Tensor a = Tensor::from<float>({4}, {1, 2, 3, 4});
  // sma = np.exp(a) / sum(np.exp(a)): the textbook softmax, for comparison
  const Tensor ea = core::exp(a);
  const Tensor sma = core::div(ea, core::sum(ea));
  std::cout << np_str(sma) << "\n";
  // sma2, a_logsumexp = our_softmax(a)
  auto [sma2, a_logsumexp] = our_softmax(a);
  std::cout << np_str(sma2) << "\n" << np_str(a_logsumexp) << "\n";

  // No expected block in the notebook; these are softmax([1,2,3,4]) and log(sum(exp)).
  check_close("our_softmax([1,2,3,4])", {4}, {0.0320586, 0.0871443, 0.2368828, 0.6439143},
              sma2.value(), 1e-6);
  check_close("logsumexp([1,2,3,4])", {1}, {4.4401897}, a_logsumexp.value(), 1e-6);
  check_close("our_softmax = exp(a) / sum(exp(a))", sma, sma2.value(), 1e-7);
}

// =============================================================================================
// Step 2 [2.2]: our_simple_attend
// =============================================================================================

struct AttendResult {
  Var out;        // [q_len, d_v]
  Var logsumexp;  // [q_len]: each query's softmax normaliser
};

/// The lab's our_simple_attend: dot-product attention of ONE head of ONE example, with
/// masking and dropout but without chunking (Trax's attend, simplified).
///   q [q_len, d_qk]; k [kv_len, d_qk], or undefined for shared QK (then k = q, keys are
///   length-normalised); v [kv_len, d_v]; mask_fn(dots, q_info[:, None], kv_info[None, :]).
AttendResult our_simple_attend(const Var& q, Var k, const Var& v,
                               const research::MaskFn& mask_fn = {}, Tensor q_info = {},
                               Tensor kv_info = {}, double dropout = 0.0, Key rng = {},
                               bool verbose = false, bool passthrough = false) {
  if (!v.defined()) throw std::invalid_argument("our_simple_attend: v is required");
  // share_qk = k is None: the keys are the queries.
  const bool share_qk = !k.defined();
  if (share_qk) {
    k = q;
    if (!kv_info.defined()) kv_info = q_info;
  }
  // Shared keys are RMS-normalised (Trax's length_normalized); every key is then divided
  // by sqrt(d_k). The queries are never scaled.
  if (share_qk) k = research::length_normalized(k);
  k = fm::divide(k, Tensor::scalar(std::sqrt(static_cast<double>(k.dim(-1))), k.dtype()));

  // Step 1: dots = q @ swapaxes(k, -1, -2): one row of similarities per query.
  Var dots = fm::matmul(q, k, Trans::N, Trans::T);
  if (verbose) std::cout << "Our attend dots " << tuple(dots.shape()) << "\n";

  // Masking: the mask function compares each query's info with each key's info.
  if (mask_fn) {
    dots = mask_fn(dots, q_info.reshape(Shape{q_info.size(), 1}),
                   kv_info.reshape(Shape{1, kv_info.size()}));
  }

  // Step 2: the softmax, keeping its normaliser (LSH combines rounds with it).
  Var dots_logsumexp;
  std::tie(dots, dots_logsumexp) = our_softmax(dots, passthrough);
  if (verbose) {
    std::cout << "Our attend dots post softmax " << tuple(dots.shape()) << " "
              << tuple(dots_logsumexp.shape()) << "\n";
  }

  // Attention dropout: one keep mask [q_len, kv_len], scaled by 1 / keep_prob. (Trax ties
  // keep_prob to dots with tie_in; a constant here, so nothing to tie.)
  if (dropout > 0.0) {
    const double keep_prob = 1.0 - dropout;
    const Tensor keep = core::bernoulli(rng, keep_prob, {dots.dim(-2), dots.dim(-1)});
    const Tensor multiplier = core::mul(keep.astype(dots.dtype()), 1.0 / keep_prob);
    dots = dots * Var(multiplier);
  }

  // Step 3: out = dots @ v: each query's weighted average of the values.
  Var out = fm::matmul(dots, v);
  if (verbose) std::cout << "Our attend out1 " << tuple(out.shape()) << "\n";
  out = fm::reshape(out, {-1, static_cast<long>(out.dim(-1))});
  if (verbose) std::cout << "Our attend out2 " << tuple(out.shape()) << "\n";
  dots_logsumexp = fm::reshape(dots_logsumexp, {-1});
  return {out, dots_logsumexp};
}

void step2_our_simple_attend() {
  banner(2, "our_simple_attend [lab 2.2]");
  // rng_attend = fastmath.random.get_prng(1)
  // q = k = jax.random.uniform(rng_attend, (seq_len, d_qk)); v = uniform(rng_attend, (seq_len,
  // d_v)) (the lab uses the same key twice, so v's first values repeat q's)
  const Key rng_attend = core::key_from_seed(1);
  const Tensor q = core::uniform(rng_attend, {8, 3});
  const Tensor k = q;
  const Tensor v = core::uniform(rng_attend, {8, 4});
  // k is passed explicitly: no length normalisation, only k / sqrt(3); no mask, no dropout.
  const AttendResult r = our_simple_attend(q, k, v, {}, {}, {}, 0.0, rng_attend, /*verbose=*/true);
  std::cout << np_str(r.out) << "\n " << np_str(r.logsumexp) << "\n";

  // The notebook's "Expected Output" (JAX backend).
  check_close("o vs the lab's expected output (JAX threefry inputs)", {8, 4},
              {0.5606324,  0.7290605,  0.5251243,  0.47101074, 0.5713517,  0.71991956, 0.5033342,
               0.46975708, 0.5622886,  0.7288458,  0.52172124, 0.46318397, 0.5568317,  0.72234154,
               0.542236,   0.4699722,  0.56504494, 0.72274375, 0.5204978,  0.47231334, 0.56175965,
               0.7216782,  0.53293145, 0.48003793, 0.56753993, 0.72232544, 0.5141734,  0.46625748,
               0.57100445, 0.70785505, 0.5325362,  0.4590797},
              r.out.value(), 1e-6);
  check_close(
      "logits vs the lab's expected output", {8},
      {2.6512175, 2.1914332, 2.6630518, 2.7792363, 2.4583826, 2.5421977, 2.4145055, 2.5111294},
      r.logsumexp.value(), 1e-6);
  // The library's attend (Trax's, with chunking and adjacent chunks) computes the same.
  const research::AttendResult lib = research::attend(q, k, v, {});
  check_close("our_simple_attend = research::attend", lib.out.value(), r.out.value(), 1e-7);
}

// =============================================================================================
// Step 3 [2.3]: OurSelfAttention
// =============================================================================================

/// The lab's OurSelfAttention: Trax's SelfAttention with the lab's forward_unbatched. With
/// use_reference_code the layer calls forward_unbatched once per (example, head); each
/// call projects x to q, k, v with that head's weights, attends with our_simple_attend and
/// projects back with w_o. The layer sums the heads. Everything one head does is here:
/// the library's SelfAttentionLayer::forward_unbatched is not called (the step compares
/// the two from outside).
class OurSelfAttention : public research::SelfAttentionLayer {
 public:
  explicit OurSelfAttention(const research::SelfAttentionOptions& options)
      : SelfAttentionLayer(options, research::SrcLoc::current(), "OurSelfAttention") {
    if (options.chunk_len) {
      throw core::ValueError(
          "OurSelfAttention: our_simple_attend attends over the whole sequence; chunk_len must "
          "be unset, got " +
          std::to_string(*options.chunk_len));
    }
  }

  int calls = 0;        // forward_unbatched calls so far
  bool verbose = true;  // print as the notebook does

  UnbatchedResult forward_unbatched(const Var& x, const Tensor& mask,
                                    const std::vector<Var>& weights,
                                    const std::vector<Tensor>& state, Key rng,
                                    bool /*update_state*/, long /*head*/) override {
    ++calls;
    if (verbose) std::cout << "ourSelfAttention:forward_unbatched\n";
    // attend_rng, output_rng = fastmath.random.split(rng)
    const std::vector<Key> rngs = core::split(rng, 2);
    const Key attend_rng = rngs[0], output_rng = rngs[1];
    // The weights of this head, in Trax's order: w_q, w_k (unless share_qk), w_v, w_o,
    // then the biases if any.
    std::size_t i = 0;
    const Var w_q = weights.at(i++);
    const Var w_k = opt_.share_qk ? Var() : weights.at(i++);
    const Var w_v = weights.at(i++);
    const Var w_o = weights.at(i++);
    Var b_q, b_k, b_v;
    if (opt_.bias) {
      b_q = weights.at(i++);
      if (!opt_.share_qk) b_k = weights.at(i++);
      b_v = weights.at(i++);
    }
    if (verbose)
      std::cout << "x.shape,w_q.shape " << tuple(x.shape()) << " " << tuple(w_q.shape()) << "\n";

    // The same weights slide over every position (like a filter): q = x w_q, ...
    Var q = fm::matmul(x, w_q);
    Var k;
    if (!opt_.share_qk) k = fm::matmul(x, w_k);
    Var v = fm::matmul(x, w_v);
    if (opt_.bias) {
      q = q + b_q;
      if (!opt_.share_qk) k = k + b_k;
      v = v + b_v;
    }

    // mask_fn = partial(mask_self_attention, causal, exclude_self = share_qk, masked)
    const research::MaskFn mask_fn = [this](const Var& dots, const Tensor& qi, const Tensor& kvi) {
      return research::mask_self_attention(dots, qi, kvi, opt_.causal, opt_.share_qk, opt_.masked);
    };
    // q_info = kv_info = arange(seqlen); padded keys (mask 0) get negative positions.
    const Tensor q_info = Tensor::arange(x.dim(0), DType::i32);
    Tensor kv_info = q_info;
    if (opt_.masked) {
      const Tensor ones = Tensor::ones({x.dim(0)}, DType::i32);
      kv_info = core::mul(kv_info, core::where(mask, ones, core::neg(ones)));
    }

    // "Notice, we are calling our version of attend"
    const AttendResult o =
        our_simple_attend(q, k, v, mask_fn, q_info, kv_info, effective_rate(opt_.attention_dropout),
                          attend_rng, verbose);
    // "Notice, wo weight matrix applied to output of attend in forward_unbatched"
    Var out = fm::matmul(o.out, w_o);
    out = research::apply_broadcasted_dropout(out, effective_rate(opt_.output_dropout), output_rng);
    return {out, state};
  }
};

// The notebook's expected output of step 3 (its "Expected Output" block; a second printed
// run differs from it by up to 2e-7).
const std::vector<double> kStep3Expected = {
    6.70414150e-01, -1.04319841e-01, -5.33822298e-01, 1.92711830e-01, -4.52995300e-05,
    6.64090276e-01, -1.01875424e-01, -5.35732985e-01, 1.88311636e-01, -6.30623102e-03,
    6.73379958e-01, -1.06952399e-01, -5.31989932e-01, 1.90056771e-01, 1.30265951e-03,
    6.84564888e-01, -1.13240302e-01, -5.50182462e-01, 1.95673436e-01, 5.47635555e-03,
    6.81435883e-01, -1.11069024e-01, -5.32343268e-01, 1.91912323e-01, 5.69400191e-03,
    6.80724978e-01, -1.08496964e-01, -5.34994245e-01, 1.96332291e-01, 5.89764118e-03,
    6.80933297e-01, -1.14087194e-01, -5.18660128e-01, 1.90674156e-01, 1.14096403e-02,
    6.80265129e-01, -1.09031767e-01, -5.38248658e-01, 1.94203168e-01, 4.23955917e-03};

/// The lab's x: jax.random.uniform(jax.random.PRNGKey(0), (1, 8, 5)).
Tensor lab_x() {
  return core::uniform(core::key_from_seed(0), {1, 8, 5});
}

void step3_our_self_attention() {
  banner(3, "OurSelfAttention [lab 2.3]");
  // n_heads 3, d_qk 3, d_v 4, causal False, no dropout, use_reference_code, mode 'train'
  research::SelfAttentionOptions opt;
  opt.n_heads = 3;
  opt.d_qk = 3;
  opt.d_v = 4;
  opt.causal = false;
  opt.attention_dropout = 0.0;
  opt.use_reference_code = true;
  auto osa = std::make_shared<OurSelfAttention>(opt);
  // x = uniform(PRNGKey(0), (batch_size, seq_len, emb_len)); osa.init(signature(x), get_prng(1))
  const Tensor x = lab_x();
  osa->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
  // osa(x)
  const Tensor y = (*osa)(Var(x)).value();
  std::cout << "DeviceArray(" << np_str(y) << ", dtype=float32)\n";

  check_that("forward_unbatched called once per head", osa->calls == 3,
             "3 heads, " + std::to_string(osa->calls) + " calls");
  check_close("output vs the lab's expected output (JAX threefry inputs, Trax's init draws)",
              {1, 8, 5}, kStep3Expected, y, 1e-6);
  // Not in the notebook: each head of ours against the library's
  // SelfAttentionLayer::forward_unbatched, on the same x, weights and rng (quietly).
  auto sa = research::SelfAttention(opt);
  sa->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
  const Var x0 = Var(x.reshape(Shape{8, 5}));
  osa->verbose = false;
  double max_vs_library = 0;
  for (long h = 0; h < opt.n_heads; ++h) {
    const std::vector<Var> w = osa->head_weights(h);
    const Var ours = osa->forward_unbatched(x0, Tensor(), w, {}, osa->rng(), true, h).out;
    const Var lib = sa->forward_unbatched(x0, Tensor(), w, {}, osa->rng(), true, h).out;
    max_vs_library = std::max(max_vs_library, core::max_abs_diff(lib.value(), ours.value()));
  }
  osa->verbose = true;
  check_that(
      "each head's forward_unbatched = the library's SelfAttentionLayer::forward_unbatched",
      max_vs_library <= 1e-7, "max |diff| " + [&] {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3g", max_vs_library);
        return std::string(buf);
      }());
  // The library's SelfAttention layer itself, same options and init key: the same weights
  // and the same output.
  check_close("research::SelfAttention gives the same output", y, (*sa)(Var(x)).value(), 1e-7);

  // Beyond the lab's settings: causal, a padding mask, biases, dropout, two examples; the
  // same weights (all shifted by 0.1, so that the biases are not zero) and the same rng.
  research::SelfAttentionOptions hard;
  hard.n_heads = 2;
  hard.d_qk = 4;
  hard.d_v = 3;
  hard.causal = true;
  hard.masked = true;
  hard.bias = true;
  hard.attention_dropout = 0.2;
  hard.output_dropout = 0.1;
  hard.use_reference_code = true;
  const Tensor hx = core::uniform(core::key_from_seed(5), {2, 8, 6});
  const Tensor hmask =
      Tensor::from<std::int32_t>({2, 8}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0});
  auto ours = std::make_shared<OurSelfAttention>(hard);
  ours->verbose = false;
  auto lib = research::SelfAttention(hard);
  const base::Signature sig{{hx.shape(), hx.dtype()}, {hmask.shape(), hmask.dtype()}};
  ours->init(sig, core::key_from_seed(3));
  std::vector<Tensor> shifted;
  for (const base::NamedTensor& w : ours->flat_weights())
    shifted.push_back(core::add(w.value, 0.1));
  ours->set_flat_weights(shifted);
  lib->init(sig, core::key_from_seed(3));
  lib->set_flat_weights(shifted);
  ours->set_rng(core::key_from_seed(11));
  lib->set_rng(core::key_from_seed(11));
  check_close("causal, masked, biases, dropout, 2 examples: = research::SelfAttention",
              (*lib)({Var(hx), Var(hmask)}).at(0).value(),
              (*ours)({Var(hx), Var(hmask)}).at(0).value(), 1e-5);
}

// =============================================================================================
// Step 4 [3.2]: our_hash_vectors
// =============================================================================================

/// The lab's our_hash_vectors: angular LSH. Each of n_hashes rounds draws n_buckets / 2
/// random directions; a vector's bucket is the direction (or its opposite) it is closest
/// to, i.e. argmax over [xR, -xR]. Vectors pointing the same way land in the same bucket.
/// Round r's buckets are offset by r * n_buckets so rounds never share an id.
/// Returns int32 [n_hashes * L], round-major. mask (optional, [L], nonzero = real token):
/// padding goes to an extra bucket n_buckets.
Tensor our_hash_vectors(const Tensor& vecs, Key rng, long n_buckets, long n_hashes,
                        const Tensor& mask = {}, bool verbose = false) {
  // check for even, integer bucket sizes
  if (n_buckets % 2 != 0) throw std::invalid_argument("our_hash_vectors: n_buckets must be even");
  // (Trax: rng = stop_gradient(tie_in(vecs, rng)); the hash is not differentiated.)
  const long rot_size = n_buckets;
  const std::size_t d = vecs.dim(-1);
  const std::size_t nh = static_cast<std::size_t>(n_hashes);
  const std::size_t half = static_cast<std::size_t>(rot_size / 2);

  // Step 1: random rotations, N(0, 1) of shape (d, n_hashes, rot_size // 2).
  Tensor random_rotations = core::normal(rng, {d, nh, half});
  if (verbose) std::cout << "random.rotations.shape " << tuple(random_rotations.shape()) << "\n";

  // Step 2 (the lab's non-JAX path; JAX computes the same with einsum('tf,fhb->htb')):
  // 2a: flatten the rotations to (d, n_hashes * rot_size // 2)
  random_rotations = random_rotations.reshape(Shape{d, nh * half});
  if (verbose) std::cout << "random_rotations reshaped " << tuple(random_rotations.shape()) << "\n";
  // 2b: rotate every vector by every round's directions at once
  Tensor rotated_vecs = core::matmul(vecs, random_rotations.astype(vecs.dtype()));
  if (verbose) std::cout << "rotated_vecs1 " << tuple(rotated_vecs.shape()) << "\n";
  // 2c: split the columns per round: (L, n_hashes, rot_size // 2)
  rotated_vecs = rotated_vecs.reshape(Shape{vecs.dim(0), nh, half});
  if (verbose) std::cout << "rotated_vecs2 " << tuple(rotated_vecs.shape()) << "\n";
  // 2d: rounds first: (n_hashes, L, rot_size // 2)
  rotated_vecs = core::transpose(rotated_vecs, {1, 0, 2});
  if (verbose) std::cout << "rotated_vecs3 " << tuple(rotated_vecs.shape()) << "\n";

  // Step 3: the opposite directions too: (n_hashes, L, rot_size)
  rotated_vecs = core::concatenate({rotated_vecs, core::neg(rotated_vecs)}, -1);
  if (verbose) std::cout << "rotated_vecs.shape " << tuple(rotated_vecs.shape()) << "\n";

  // Step 4: the bucket is the best-matching direction (first one on ties).
  Tensor buckets = core::argmax(rotated_vecs, -1, DType::i32);  // (n_hashes, L)
  if (verbose) {
    std::cout << "buckets.shape " << tuple(buckets.shape()) << "\n";
    std::cout << "buckets " << np_str(buckets) << "\n";
  }

  long per_round = n_buckets;
  if (mask.defined()) {
    // An extra bucket for padding tokens only.
    per_round += 1;
    std::int32_t* b = buckets.data<std::int32_t>();
    const Tensor m = mask.astype(DType::i32);
    for (std::size_t h = 0; h < nh; ++h)
      for (std::size_t t = 0; t < vecs.dim(0); ++t)
        if (m.data<std::int32_t>()[t] == 0)
          b[h * vecs.dim(0) + t] = static_cast<std::int32_t>(per_round - 1);
  }

  // Step 5: offsets so that the rounds' bucket ids never overlap, then flatten.
  Tensor offsets = core::mul(Tensor::arange(nh, DType::i32), static_cast<double>(per_round));
  offsets = offsets.reshape(Shape{nh, 1});
  buckets = core::add(buckets, offsets).reshape(Shape{nh * vecs.dim(0)});
  if (verbose)
    std::cout << "buckets with offsets " << tuple(buckets.shape()) << "\n " << np_str(buckets)
              << "\n";
  return buckets;
}

/// Identical vectors share a bucket in every round, and round r's ids lie in
/// [r * n_buckets, r * n_buckets + n_buckets - 1].
void check_bucket_ranges(const std::string& what, const Tensor& buckets, long n_buckets,
                         long n_hashes) {
  const long L = static_cast<long>(buckets.size()) / n_hashes;
  bool ok = true;
  std::string detail;
  for (long r = 0; r < n_hashes; ++r) {
    long lo = 1L << 30, hi = -1;
    for (long t = 0; t < L; ++t) {
      const long b = static_cast<long>(buckets.flat(static_cast<std::size_t>(r * L + t)));
      lo = std::min(lo, b);
      hi = std::max(hi, b);
    }
    ok = ok && lo >= r * n_buckets && hi <= r * n_buckets + n_buckets - 1;
    detail += (r > 0 ? ", " : "") + std::string("round ") + std::to_string(r) + " in [" +
              std::to_string(lo) + ", " + std::to_string(hi) + "] of [" +
              std::to_string(r * n_buckets) + ", " + std::to_string(r * n_buckets + n_buckets - 1) +
              "]";
  }
  check_that(what, ok, detail);
}

void step4_our_hash_vectors() {
  banner(4, "our_hash_vectors [lab 3.2]");
  // ohv_q = np.ones((8, 5)): eight identical vectors; 4 buckets, 3 hash rounds.
  const Tensor ohv_q = Tensor::ones({8, 5});
  const long ohv_n_buckets = 4, ohv_n_hashes = 3;
  // ohv_rng = fastmath.random.get_prng(1)
  const Key ohv_rng = core::key_from_seed(1);
  const Tensor ohv = our_hash_vectors(ohv_q, ohv_rng, ohv_n_buckets, ohv_n_hashes, {}, true);
  std::cout << "ohv shape " << tuple(ohv.shape()) << " \nohv " << np_str(ohv) << "\n";

  // Identical vectors must share a bucket in every round.
  bool same = true;
  for (std::size_t r = 0; r < 3; ++r)
    for (std::size_t t = 0; t < 8; ++t) same = same && ohv.flat(r * 8 + t) == ohv.flat(r * 8);
  check_that("identical vectors share a bucket in every round", same);
  check_bucket_ranges("round r's buckets lie in [4r, 4r+3]", ohv, ohv_n_buckets, ohv_n_hashes);
  // The notebook printed [3 x8, 7 x8, 11 x8] on the TensorFlow backend and [3 x8, 5 x8,
  // 11 x8] on JAX: the backends' random normals differ. Ours are JAX's.
  check_equal("buckets vs the lab's JAX-backend output",
              {3, 3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 11, 11, 11, 11, 11, 11, 11, 11},
              ohv);
  const std::vector<std::int32_t> ours = ohv.to_vector<std::int32_t>();
  check_equal("our_hash_vectors = research::hash_vectors", {ours.begin(), ours.end()},
              research::hash_vectors(ohv_q, ohv_rng, {ohv_n_buckets}, ohv_n_hashes));
}

// =============================================================================================
// Step 5 [3.3]: sort_buckets
// =============================================================================================

struct Sorted {
  Var sq, sv;                 // [n_hashes * L, d]: the queries and values in sorted order
  Tensor sticker, undo_sort;  // int32 [n_hashes * L]
};

/// The lab's sort_buckets: sort all n_hashes * L (round, position) slots by bucket, so that
/// the members of a bucket sit next to each other, and remember how to undo the sort.
/// q [L, d_qk], v [L, d_v] (differentiable: the sorted copies are gathers of them).
Sorted sort_buckets(const Tensor& buckets, const Var& q, const Var& v, long n_buckets,
                    long n_hashes, long seqlen, bool verbose = true) {
  (void)n_buckets;  // the lab passes it but does not need it
  if (verbose) std::cout << "---sort_buckets--\n";
  // Step 1: ticker numbers the slots 0 .. n_hashes * seqlen - 1.
  const Tensor ticker = Tensor::arange(static_cast<std::size_t>(n_hashes * seqlen), DType::i32);
  if (verbose) std::cout << "ticker " << tuple(ticker.shape()) << " " << np_str(ticker) << "\n";
  // Step 2: one key per slot, bucket first, then position: distinct keys, so the sort
  // is well defined.
  const Tensor buckets_and_t =
      core::add(core::mul(buckets.astype(DType::i32), static_cast<double>(seqlen)),
                remainder(ticker, seqlen));
  if (verbose)
    std::cout << "buckets_and_t " << tuple(buckets_and_t.shape()) << " " << np_str(buckets_and_t)
              << "\n";

  // Step 3: sort ("s" for sorted): sticker[i] is the slot that goes to sorted place i.
  const auto [sbuckets_and_t, sticker] = core::sort_key_val(buckets_and_t, ticker, -1);
  if (verbose) {
    std::cout << "sbuckets_and_t " << tuple(sbuckets_and_t.shape()) << " " << np_str(sbuckets_and_t)
              << "\n";
    std::cout << "sticker " << tuple(sticker.shape()) << " " << np_str(sticker) << "\n";
  }
  // Step 4: undo_sort, the inverse permutation: sorting sticker brings each slot home.
  const Tensor undo_sort = core::sort_key_val(sticker, ticker, -1).second;
  if (verbose)
    std::cout << "undo_sort " << tuple(undo_sort.shape()) << " " << np_str(undo_sort) << "\n";

  // Step 5: the sorted queries and values; st = the original position of each slot.
  const Tensor st = remainder(sticker, seqlen);
  const Var sq = fm::take(q, Var(st), 0);
  const Var sv = fm::take(v, Var(st), 0);
  return {sq, sv, sticker, undo_sort};
}

/// The lab's test inputs for steps 5 and 6: L 8, 2 hashes, 4 buckets; q row j = (j % 4) *
/// [1, 1, 1], v = ones(8, 5), buckets [0 1 2 3 0 1 2 3 4 5 6 7 4 5 6 7].
struct SortInputs {
  long n_hashes = 2, n_buckets = 4, seqlen = 8, n_q = 3, n_v = 5;
  Tensor q, v, buckets;
};

SortInputs lab_sort_inputs() {
  SortInputs in;
  std::vector<float> q;
  for (long j = 0; j < in.seqlen; ++j)
    for (long f = 0; f < in.n_q; ++f) q.push_back(static_cast<float>(j % in.n_buckets));
  in.q = Tensor::from<float>({8, 3}, q);
  in.v = Tensor::ones({8, 5});
  std::vector<std::int32_t> b;
  for (long i = 0; i < in.n_hashes; ++i)
    for (long j = 0; j < in.seqlen; ++j)
      b.push_back(static_cast<std::int32_t>(j % in.n_buckets + in.n_buckets * i));
  in.buckets = Tensor::from<std::int32_t>({b.size()}, b);
  return in;
}

void step5_sort_buckets() {
  banner(5, "sort_buckets [lab 3.3]");
  const SortInputs in = lab_sort_inputs();
  std::cout << "q\n " << np_str(in.q) << "\n";
  std::cout << "t_buckets:  " << np_str(in.buckets) << "\n";
  const Sorted s = sort_buckets(in.buckets, in.q, in.v, in.n_buckets, in.n_hashes, in.seqlen, true);
  std::cout << "sq.shape " << tuple(s.sq.shape()) << " sv.shape " << tuple(s.sv.shape()) << "\n";
  std::cout << "sq\n " << np_str(s.sq) << "\n";

  // The lab's expected values (deterministic: no randomness anywhere in this step).
  const research::SortedBuckets lib = research::sort_buckets(in.buckets, in.seqlen, in.n_hashes);
  check_equal("buckets_and_t", {0, 9, 18, 27, 4, 13, 22, 31, 32, 41, 50, 59, 36, 45, 54, 63},
              lib.buckets_and_t);
  check_equal("sbuckets_and_t", {0, 4, 9, 13, 18, 22, 27, 31, 32, 36, 41, 45, 50, 54, 59, 63},
              lib.sbuckets_and_t);
  check_equal("sticker", {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15}, s.sticker);
  check_equal("undo_sort", {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15}, s.undo_sort);
  check_close("sq (first column; every row is that value times [1, 1, 1])", {16},
              {0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3},
              core::slice(s.sq.value(), 1, 0, 1).reshape(Shape{16}), 0.0);
  check_that("sv has shape (16, 5)", s.sv.shape() == Shape{16, 5}, tuple(s.sv.shape()));
  check_that("sticker[undo_sort] = ticker (undo_sort inverts the sort)",
             core::equal(core::take(s.sticker, s.undo_sort), Tensor::arange(16, DType::i32)));
  check_that("research::sort_buckets gives the same sticker and undo_sort",
             core::equal(lib.sticker, s.sticker) && core::equal(lib.undo_sort, s.undo_sort));
}

// =============================================================================================
// Step 6 [3.4]: dotandv
// =============================================================================================

struct DotAndV {
  Var o;       // [L, d_v]: the lab returns only this
  Var logits;  // the unsorted logsumexps (the lab prints them); kept for the checks
};

/// What Trax's attend does on top of the lab's dotandv, for OurLSHSelfAttention (step 7):
/// adjacent chunks, masks and attention dropout. The defaults leave dotandv as the lab
/// wrote it (step 6).
struct AttendExtras {
  long n_chunks_before = 0;  // earlier chunks (in sorted order) each chunk also sees
  long n_chunks_after = 0;   // later chunks each chunk also sees
  research::MaskFn mask_fn;  // empty: no mask
  Tensor q_info;             // int32 [n_hashes * L]: each sorted slot's position
  Tensor kv_info;            // the keys' positions (negative: padding); undefined: q_info
  double dropout = 0.0;      // attention dropout rate
  Key rng{};                 // for dropout
};

/// The lab's dotandv: attention inside fixed-size chunks of the sorted sequence, then
/// unsorted and the hash rounds combined. sq, sk [n_hashes * L, d_qk] (the lab passes sq
/// twice), sv [n_hashes * L, d_v], undo_sort int32 [n_hashes * L]. As the lab wrote it it
/// is simplified on purpose: no key normalisation or scaling (the caller passes the keys
/// it wants as sk), no adjacent chunks, no masks; `extras` adds those (step 7).
DotAndV dotandv(const Var& sq, const Var& sk, const Var& sv, const Tensor& undo_sort,
                long kv_chunk_len, long n_hashes, long seqlen, bool passthrough,
                bool verbose = false, const AttendExtras& extras = {}) {
  const long before = extras.n_chunks_before, after = extras.n_chunks_after;
  const bool adjacent = before != 0 || after != 0;
  // Step 1: chunks of kv_chunk_len sorted queries, each chunk dotted with its keys.
  const Var rsq = fm::reshape(sq, {-1, kv_chunk_len, static_cast<long>(sq.dim(-1))});
  Var rsk = fm::reshape(sk, {-1, kv_chunk_len, static_cast<long>(sk.dim(-1))});
  // (Trax's attend: each chunk's keys also come from the chunks before and after it.)
  if (adjacent) rsk = research::look_adjacent(rsk, before, after);
  const Var rsqt = fm::transpose(rsk, {0, 2, 1});  // np.swapaxes(rsk, -1, -2)
  if (verbose)
    std::cout << "rsq.shape,rsqt.shape:  " << tuple(rsq.shape()) << " " << tuple(rsqt.shape())
              << "\n";
  Var dotlike = fm::matmul(rsq, rsqt);
  if (verbose) std::cout << "dotlike\n " << np_str(dotlike) << "\n";

  // (Trax's attend: the masks compare each query's position with each key's.)
  if (extras.mask_fn) {
    const std::size_t n_chunks = rsq.dim(0), chunk = rsq.dim(1), window = rsqt.dim(2);
    const Tensor q_info = extras.q_info.reshape(Shape{n_chunks, chunk, 1});
    Tensor kv_info =
        (extras.kv_info.defined() ? extras.kv_info : extras.q_info).reshape(Shape{n_chunks, chunk});
    if (adjacent) kv_info = research::look_adjacent(kv_info, before, after);
    dotlike = extras.mask_fn(dotlike, q_info, kv_info.reshape(Shape{n_chunks, 1, window}));
  }

  // Step 2: the softmax within each chunk (or the passthrough).
  Var slogits;
  std::tie(dotlike, slogits) = our_softmax(dotlike, passthrough);
  if (verbose) std::cout << "dotlike post softmax\n " << np_str(dotlike) << "\n";

  // (Trax's attend: attention dropout, one keep mask [chunk, window] for all chunks.)
  if (extras.dropout > 0.0) {
    const double keep_prob = 1.0 - extras.dropout;
    const Tensor keep = core::bernoulli(extras.rng, keep_prob, {dotlike.dim(-2), dotlike.dim(-1)});
    const Tensor multiplier =
        core::div(keep.astype(dotlike.dtype()), Tensor::scalar(keep_prob, dotlike.dtype()));
    dotlike = dotlike * Var(multiplier);
  }

  // Step 3: the values, chunked the same way; so = weights @ values per chunk.
  Var vr = fm::reshape(sv, {-1, kv_chunk_len, static_cast<long>(sv.dim(-1))});
  if (adjacent) vr = research::look_adjacent(vr, before, after);
  if (verbose)
    std::cout << "dotlike.shape, vr.shape: " << tuple(dotlike.shape()) << " " << tuple(vr.shape())
              << "\n";
  Var so = fm::matmul(dotlike, vr);
  if (verbose) std::cout << "so.shape: " << tuple(so.shape()) << "\n";
  so = fm::reshape(so, {-1, static_cast<long>(so.dim(-1))});
  slogits = fm::reshape(slogits, {-1});  // provided
  if (verbose)
    std::cout << "so.shape,slogits.shape " << tuple(so.shape()) << " " << tuple(slogits.shape())
              << "\n";

  // Step 4: undo the sort: each slot's output and logsumexp back in (round, position) order.
  Var o = fm::take(so, Var(undo_sort), 0);
  Var logits = fm::take(slogits, Var(undo_sort), 0);
  if (verbose) std::cout << "o.shape,o " << tuple(o.shape()) << " " << np_str(o) << "\n";
  if (verbose)
    std::cout << "logits.shape, logits " << tuple(logits.shape()) << " " << np_str(logits) << "\n";
  const Var unsorted_logits = logits;

  // Step 5 (provided): combine the rounds. Each round's softmax was normalised over its own
  // chunk; weighting round r by exp(logits_r - logsumexp over rounds) turns the rounds
  // into one softmax over the union of their chunks.
  if (n_hashes > 1) {
    o = fm::reshape(o, {n_hashes, seqlen, static_cast<long>(o.dim(-1))});
    logits = fm::reshape(logits, {n_hashes, seqlen, 1});
    const Var probs = fm::exp(logits - fm::logsumexp(logits, {0}, /*keepdims=*/true));
    o = fm::sum(o * probs, {0});
  }
  return {o, unsorted_logits};
}

void step6_dotandv() {
  banner(6, "dotandv [lab 3.4]");
  // Step 5's outputs, recomputed quietly.
  const SortInputs in = lab_sort_inputs();
  const Sorted s =
      sort_buckets(in.buckets, in.q, in.v, in.n_buckets, in.n_hashes, in.seqlen, false);
  const long t_kv_chunk_len = 2;

  const DotAndV pass =
      dotandv(s.sq, s.sq, s.sv, s.undo_sort, t_kv_chunk_len, in.n_hashes, in.seqlen,
              /*passthrough=*/true, /*verbose=*/true);
  std::cout << "out\n " << np_str(pass.o) << "\n";
  std::cout << "\n-----With softmax enabled----\n\n";
  const DotAndV soft =
      dotandv(s.sq, s.sq, s.sv, s.undo_sort, t_kv_chunk_len, in.n_hashes, in.seqlen,
              /*passthrough=*/false, /*verbose=*/true);
  std::cout << "out\n " << np_str(soft.o) << "\n";

  // Deterministic expected values. The chunks pair equal rows, so a chunk of value-c rows has
  // dots all 3c^2 (0, 3, 12, 27), a softmax of 1/2 everywhere, and a logsumexp of
  // 3c^2 + ln 2.
  const Var rsq = fm::reshape(s.sq, {-1, t_kv_chunk_len, 3});
  const Tensor dotlike = fm::matmul(rsq, rsq, Trans::N, Trans::T).value();
  std::vector<double> want_dots;
  for (int h = 0; h < 2; ++h)
    for (double d : {0.0, 3.0, 12.0, 27.0})
      for (int i = 0; i < 4; ++i) want_dots.push_back(d);
  check_close("dotlike per chunk = 0, 3, 12, 27 (twice)", {8, 2, 2}, want_dots, dotlike, 0.0);
  check_close(
      "passthrough: out rows 0, 6, 24, 54 (twice)", {8, 5},
      [] {
        std::vector<double> e;
        for (int h = 0; h < 2; ++h)
          for (double r : {0.0, 6.0, 24.0, 54.0})
            for (int f = 0; f < 5; ++f) e.push_back(r);
        return e;
      }(),
      pass.o.value(), 0.0);
  check_close("passthrough: logits all 0", Tensor::zeros({16}), pass.logits.value(), 0.0);
  std::vector<double> want_logits;
  for (int i = 0; i < 4; ++i)
    for (double d : {0.6931472, 3.6931472, 12.693148, 27.693148}) want_logits.push_back(d);
  // float32 spacing near 27.7 is 1.9e-6: the tolerance allows one unit there.
  check_close("softmax: logits = dot + ln 2 = [0.6931472 3.6931472 12.693148 27.693148] x4", {16},
              want_logits, soft.logits.value(), 2e-6);
  check_close("softmax: out = 1 everywhere (lab: 1 and 0.99999905)",
              Tensor::ones({8, 5}, DType::f64), soft.o.value(), 1e-6);
  // Trax unsorts with permute_via_gather / permute_via_sort (the same values, with
  // gradients that are gathers too); the lab's comment says np.take "would also work".
  const research::SortedBuckets lib = research::sort_buckets(in.buckets, in.seqlen, in.n_hashes);
  const Var sorted_logits = fm::take(soft.logits, Var(s.sticker), 0);  // back to sorted order
  const Var via_sort = research::permute_via_sort(sorted_logits, lib.sticker, lib.buckets_and_t, 0);
  const Var via_gather = research::permute_via_gather(sorted_logits, lib.undo_sort, lib.sticker, 0);
  check_that("permute_via_sort and permute_via_gather unsort as np.take(., undo_sort) does",
             core::equal(via_sort.value(), soft.logits.value()) &&
                 core::equal(via_gather.value(), soft.logits.value()));
}

// =============================================================================================
// Step 7 [3.5]: OurLSHSelfAttention
// =============================================================================================

/// The lab's OurLSHSelfAttention: Trax's LSHSelfAttention with the lab's forward_unbatched,
/// assembled from the lab's own steps: q = x w_q and v = x w_v; buckets from
/// our_hash_vectors (step 4) with a key split from the state; sort_buckets (step 5);
/// chunked attention with dotandv (step 6), given what Trax's attend adds (normalised and
/// scaled keys, the self mask, adjacent chunks, dropout); the unsort and the combination of
/// rounds (inside dotandv); the output projection w_o. The library's
/// LSHSelfAttentionLayer::forward_unbatched is not called: the step compares the two from
/// outside. Break here in gdb to step through one head.
class OurLSHSelfAttention : public research::LSHSelfAttentionLayer {
 public:
  explicit OurLSHSelfAttention(const research::LSHSelfAttentionOptions& options)
      : LSHSelfAttentionLayer(options, research::SrcLoc::current()) {
    if (options.n_buckets.size() != 1) {
      throw core::ValueError(
          "OurLSHSelfAttention: our_hash_vectors takes one n_buckets, got a factorised list of " +
          std::to_string(options.n_buckets.size()));
    }
  }

  int calls = 0;                     // forward_unbatched calls so far
  bool verbose = true;               // print as the notebook does
  std::vector<Tensor> head_buckets;  // each call's buckets

  UnbatchedResult forward_unbatched(const Var& x, const Tensor& mask,
                                    const std::vector<Var>& weights,
                                    const std::vector<Tensor>& state, Key rng, bool update_state,
                                    long head) override {
    ++calls;
    const research::LSHSelfAttentionOptions& opts = lsh_options();
    if (fixed_rotations().defined()) {
      throw core::ValueError(
          "OurLSHSelfAttention: our_hash_vectors draws its own rotations; set_fixed_rotations "
          "is not supported");
    }
    if (verbose) std::cout << "OurLSHSelfAttention:forward_unbatched (head " << head << ")\n";
    // attend_rng, output_rng = fastmath.random.split(rng)
    const std::vector<Key> rngs = core::split(rng, 2);
    const Key attend_rng = rngs[0], output_rng = rngs[1];
    // w_q, w_v, w_o = weights (shared QK: no w_k)
    const Var& w_q = weights.at(0);
    const Var& w_v = weights.at(1);
    const Var& w_o = weights.at(2);
    if (verbose)
      std::cout << "x.shape,w_q.shape " << tuple(x.shape()) << " " << tuple(w_q.shape()) << "\n";

    // q = np.matmul(x, w_q); v = np.matmul(x, w_v): the queries are the keys too.
    const Var q = fm::matmul(x, w_q);  // [L, d_qk]
    const Var v = fm::matmul(x, w_v);  // [L, d_v]
    const long seqlen = static_cast<long>(x.dim(0));
    const long n_hashes = opts.n_hashes;
    const long n_buckets = opts.n_buckets.at(0);
    if (state.size() != 2) {
      throw core::ValueError("OurLSHSelfAttention: expected a state of (buckets, hash key), got " +
                             std::to_string(state.size()) + " tensors");
    }

    Tensor buckets;
    std::vector<Tensor> new_state = state;
    if (update_state) {
      // _, old_hash_rng = state;  hash_rng, hash_subrng = fastmath.random.split(old_hash_rng)
      const std::vector<Key> keys = core::split(research::key_from_tensor(state.at(1)), 2);
      const Key hash_rng = keys[0], hash_subrng = keys[1];
      // buckets = our_hash_vectors(q, hash_subrng, n_buckets, n_hashes, mask): int32
      // [n_hashes * L], not differentiated (q's values only).
      buckets = our_hash_vectors(q.value(), hash_subrng, n_buckets, n_hashes, mask);
      // state = (buckets, hash_rng); with max_length_for_buckets the stored buckets are
      // zero-padded to n_hashes * max_length_for_buckets, one shape for every length.
      Tensor s_buckets = buckets;
      if (opts.max_length_for_buckets && seqlen < *opts.max_length_for_buckets) {
        const std::size_t pad =
            static_cast<std::size_t>(n_hashes * *opts.max_length_for_buckets) - buckets.size();
        s_buckets = core::concatenate({buckets, Tensor::zeros({pad}, DType::i32)}, 0);
      }
      new_state = {s_buckets, research::key_to_tensor(hash_rng)};
    } else {
      // buckets, _ = state: the buckets of the forward pass that made the state.
      buckets = state.at(0);
      if (opts.max_length_for_buckets) buckets = core::slice(buckets, 0, 0, n_hashes * seqlen);
    }
    if (static_cast<long>(buckets.size()) != n_hashes * seqlen) {
      throw core::ShapeError(
          "OurLSHSelfAttention: the stored buckets cover " + std::to_string(buckets.size()) +
          " positions, this call needs n_hashes * length = " + std::to_string(n_hashes * seqlen) +
          ": run a state-updating forward pass at this length first");
    }
    if (verbose)
      std::cout << "buckets " << tuple(buckets.shape()) << " " << np_str(buckets) << "\n";
    head_buckets.push_back(buckets);

    // Step 5: sort the (round, position) slots by bucket ("s" for sorted).
    const Sorted s = sort_buckets(buckets, q, v, n_buckets, n_hashes, seqlen, /*verbose=*/false);
    const Var& sq = s.sq;  // [n_hashes * L, d_qk]
    const Var& sv = s.sv;  // [n_hashes * L, d_v]
    // st = sticker % seqlen: the original position of each sorted slot.
    const Tensor st = remainder(s.sticker, seqlen);

    // The keys are the queries (shared QK), length-normalised, then / sqrt(d_qk) (Trax's
    // attend does this inside; the lab's dotandv takes the keys ready).
    const Var sk =
        fm::divide(research::length_normalized(sq),
                   Tensor::scalar(std::sqrt(static_cast<double>(sq.dim(-1))), sq.dtype()));

    // mask_fn = partial(mask_self_attention, causal, exclude_self = True, masked); q_info = st;
    // masked: kv_info = st * where(mask[st], 1, -1) (padded keys get negative positions).
    AttendExtras extras;
    extras.n_chunks_before = opts.n_chunks_before;
    extras.n_chunks_after = opts.n_chunks_after;
    extras.mask_fn = [causal = opts.causal, masked = opts.masked](const Var& dots, const Tensor& qi,
                                                                  const Tensor& kvi) {
      return research::mask_self_attention(dots, qi, kvi, causal, /*exclude_self=*/true, masked);
    };
    extras.q_info = st;
    if (opts.masked) {
      const Tensor smask = core::take(mask.astype(DType::i32), st, 0);
      const Tensor ones = Tensor::ones({st.size()}, DType::i32);
      extras.kv_info = core::mul(st, core::where(smask, ones, core::neg(ones)));
    }
    extras.dropout = effective_rate(opts.attention_dropout);
    extras.rng = attend_rng;

    // Step 6: attention within chunks of the sorted slots, the sort undone (undo_sort) and
    // the rounds combined by their logsumexps: o [L, d_v].
    const DotAndV attended = dotandv(sq, sk, sv, s.undo_sort, *opts.chunk_len, n_hashes, seqlen,
                                     /*passthrough=*/false, /*verbose=*/false, extras);
    const Var& o = attended.o;  // (attended.logits: the rounds' logsumexps, already used)

    // out = np.matmul(o, w_o), then the output dropout (one mask over the features).
    Var out = fm::matmul(o, w_o);
    out = research::apply_broadcasted_dropout(out, effective_rate(opts.output_dropout), output_rng);
    return {out, new_state};
  }
};

// The notebook's expected output of step 7 (its "Expected Output" block; a second printed
// run differs from it by up to 5e-7).
const std::vector<double> kStep7Expected = {
    6.6842866e-01,  -1.1364317e-01, -5.4430598e-01, 2.1126229e-01,  -1.0988474e-02, 7.0949805e-01,
    -1.5455173e-01, -5.9923279e-01, 2.2719435e-01,  1.3833910e-02,  7.1442688e-01,  -1.2046629e-01,
    -5.3956538e-01, 1.7320301e-01,  -1.6552359e-02, 6.7178923e-01,  -7.6611072e-02, -5.9399861e-01,
    2.1236289e-01,  7.9482794e-04,  7.1518469e-01,  -1.1359149e-01, -5.7821870e-01, 2.1304403e-01,
    3.0598417e-02,  6.8235356e-01,  -9.3979865e-02, -5.5341852e-01, 2.1608178e-01,  -6.6673756e-04,
    6.1286646e-01,  -8.1026971e-02, -4.8148811e-01, 1.9373316e-01,  3.1555206e-02,  7.2203499e-01,
    -1.0199657e-01, -5.5215180e-01, 1.7872262e-01,  -2.2289127e-02};

/// The max |a - b| of two outputs as "%.3g" text.
std::string diff_text(const Tensor& a, const Tensor& b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g",
                core::max_abs_diff(a.astype(DType::f64), b.astype(DType::f64)));
  return buf;
}

/// Whether two layers' states are identical, leaf by leaf (buckets and hash keys).
bool same_state(const base::Layer& a, const base::Layer& b) {
  const std::vector<Tensor> sa = a.state().flatten(), sb = b.state().flatten();
  if (sa.size() != sb.size()) return false;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].shape() != sb[i].shape() || sa[i].dtype() != sb[i].dtype() ||
        !core::equal(sa[i], sb[i]))
      return false;
  }
  return true;
}

/// Not in the notebook: `ours` and the library's `lib` (same options, same init key) run side
/// by side on `inputs`: two state-updating calls (each rehashes with a key split from the
/// state), then one that reuses the stored buckets (update_state = false). After each call
/// the outputs must agree within 1e-5 and the states (buckets, hash keys) be identical.
void check_layer_vs_library(const std::string& what, research::EfficientAttentionBase& ours,
                            research::EfficientAttentionBase& lib, const base::Stack& inputs) {
  for (int call = 1; call <= 3; ++call) {
    const bool update = call < 3;
    ours.set_update_state(update);
    lib.set_update_state(update);
    ours.set_rng(core::key_from_seed(10 + call));  // the same dropout masks for both
    lib.set_rng(core::key_from_seed(10 + call));
    const Tensor y_ours = ours(inputs).at(0).value();
    const Tensor y_lib = lib(inputs).at(0).value();
    const double diff = core::max_abs_diff(y_ours.astype(DType::f64), y_lib.astype(DType::f64));
    const bool state_ok = same_state(ours, lib);
    check_that(what + ", call " + std::to_string(call) +
                   (update ? " (rehashing)" : " (update_state = false)") +
                   ": output and state = the library's",
               y_ours.shape() == y_lib.shape() && diff <= 1e-5 && state_ok,
               "output max |diff| " + diff_text(y_ours, y_lib) + " (tolerance 1e-5), state " +
                   (state_ok ? "identical" : "DIFFERENT"));
  }
  ours.set_update_state(true);
  lib.set_update_state(true);
}

void step7_our_lsh_self_attention() {
  banner(7, "OurLSHSelfAttention [lab 3.5]");
  // n_heads 3, d_qk 3, d_v 4, causal False, masked False, chunk_len 8, n_chunks_before 0,
  // n_chunks_after 0, n_hashes 5, n_buckets 4, no dropout, use_reference_code, mode 'train'
  research::LSHSelfAttentionOptions opt;
  opt.n_heads = 3;
  opt.d_qk = 3;
  opt.d_v = 4;
  opt.causal = false;
  opt.masked = false;
  opt.chunk_len = 8;
  opt.n_chunks_before = 0;
  opt.n_chunks_after = 0;
  opt.n_hashes = 5;
  opt.n_buckets = {4};
  opt.attention_dropout = 0.0;
  opt.use_reference_code = true;
  auto al = std::make_shared<OurLSHSelfAttention>(opt);
  // x = uniform(PRNGKey(0), (1, seq_len, emb_len)); al.init(signature(x), get_prng(1))
  const Tensor x = lab_x();
  al->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
  // (Not in the notebook: the state each head starts from, for the comparisons below.)
  std::vector<std::vector<Tensor>> start_state;
  for (long h = 0; h < opt.n_heads; ++h) start_state.push_back(al->state_row(h));
  // al(x)
  const Tensor y = (*al)(Var(x)).value();
  std::cout << "DeviceArray(" << np_str(y) << ", dtype=float32)\n";

  check_that("forward_unbatched called once per head", al->calls == 3,
             "3 heads, " + std::to_string(al->calls) + " calls");
  for (std::size_t h = 0; h < al->head_buckets.size(); ++h) {
    check_bucket_ranges("head " + std::to_string(h) + ": round r's buckets lie in [4r, 4r+3]",
                        al->head_buckets[h], 4, 5);
  }
  check_close("output vs the lab's expected output (JAX threefry inputs, Trax's init draws)",
              {1, 8, 5}, kStep7Expected, y, 1e-6);

  // Each head against the library's LSHSelfAttentionLayer::forward_unbatched, run on this
  // same layer with the same x, weights, starting state and rng: the same output (within
  // 1e-5) and the same new state (buckets and hash key, exactly). (A gdb breakpoint on the
  // library's function stops here, once per head.)
  const Var x0 = Var(x.reshape(Shape{8, 5}));
  al->verbose = false;
  double max_vs_library = 0;
  bool states_agree = true;
  for (long h = 0; h < opt.n_heads; ++h) {
    const std::vector<Var> w = al->head_weights(h);
    const UnbatchedResult ours = al->forward_unbatched(
        x0, Tensor(), w, start_state[static_cast<std::size_t>(h)], al->rng(), true, h);
    const UnbatchedResult lib = al->LSHSelfAttentionLayer::forward_unbatched(
        x0, Tensor(), w, start_state[static_cast<std::size_t>(h)], al->rng(), true, h);
    max_vs_library =
        std::max(max_vs_library, core::max_abs_diff(ours.out.value(), lib.out.value()));
    const std::vector<Tensor> layer_row = al->state_row(h);  // what the layer's call stored
    for (std::size_t i = 0; i < 2; ++i) {
      states_agree = states_agree && core::equal(ours.state.at(i), lib.state.at(i)) &&
                     core::equal(layer_row.at(i), lib.state.at(i));
    }
  }
  al->verbose = true;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", max_vs_library);
  check_that(
      "each head's forward_unbatched = the library's LSHSelfAttentionLayer::forward_unbatched",
      max_vs_library <= 1e-5, std::string("max |diff| ") + buf + " (tolerance 1e-5)");
  check_that(
      "our_hash_vectors gives the library's buckets: each head's new state (buckets, hash key) "
      "= the library's",
      states_agree);
  // The library's LSHSelfAttention layer itself, same options and init key, call after call.
  {
    auto ours = std::make_shared<OurLSHSelfAttention>(opt);
    ours->verbose = false;
    auto lib = research::LSHSelfAttention(opt);
    ours->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
    lib->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
    check_layer_vs_library("research::LSHSelfAttention, the lab's settings", *ours, *lib, {Var(x)});
  }
  // Beyond the lab's settings: causal, padding mask, adjacent chunks, dropout, two examples,
  // buckets padded to max_length_for_buckets.
  {
    research::LSHSelfAttentionOptions hard;
    hard.n_heads = 2;
    hard.d_qk = 4;
    hard.d_v = 3;
    hard.causal = true;
    hard.masked = true;
    hard.chunk_len = 4;
    hard.n_chunks_before = 1;
    hard.n_chunks_after = 1;
    hard.n_hashes = 2;
    hard.n_buckets = {4};
    hard.attention_dropout = 0.2;
    hard.output_dropout = 0.1;
    hard.max_length_for_buckets = 12;
    hard.use_reference_code = true;
    const Tensor hx = core::uniform(core::key_from_seed(5), {2, 8, 6});
    const Tensor hmask =
        Tensor::from<std::int32_t>({2, 8}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0});
    auto ours = std::make_shared<OurLSHSelfAttention>(hard);
    ours->verbose = false;
    auto lib = research::LSHSelfAttention(hard);
    const base::Signature sig{{hx.shape(), hx.dtype()}, {hmask.shape(), hmask.dtype()}};
    ours->init(sig, core::key_from_seed(3));
    lib->init(sig, core::key_from_seed(3));
    check_layer_vs_library(
        "causal, masked, 1 chunk before and after, dropout, 2 examples, max_length_for_buckets",
        *ours, *lib, {Var(hx), Var(hmask)});
  }

  // The derived invariant: with chunk_len = L = 8 and no adjacent chunks, every round's
  // only chunk is the whole sequence, so each round is full attention and the rounds are
  // identical: the output is full shared-QK attention with the self mask (-1e5), whatever
  // the hashing. Computed here with the lab's our_simple_attend, head by head.
  const research::MaskFn self_mask = [](const Var& dots, const Tensor& qi, const Tensor& kvi) {
    return research::mask_self_attention(dots, qi, kvi, /*causal=*/false, /*exclude_self=*/true,
                                         /*masked=*/false);
  };
  Var full;
  for (long h = 0; h < opt.n_heads; ++h) {
    const std::vector<Var> w = al->head_weights(h);  // w_q, w_v, w_o
    const Var q = fm::matmul(x0, w[0]);
    const Var v = fm::matmul(x0, w[1]);
    const AttendResult a = our_simple_attend(q, Var(), v, self_mask, Tensor::arange(8, DType::i32));
    const Var out = fm::matmul(a.out, w[2]);
    full = full.defined() ? full + out : out;
  }
  check_close("invariant: = full shared-QK attention with the self mask (our_simple_attend)",
              fm::reshape(full, {1, 8, 5}).value(), y, 1e-6);
  // The memory-lean path (the default) computes the same function.
  auto lean = research::LSHSelfAttention([&] {
    research::LSHSelfAttentionOptions o = opt;
    o.use_reference_code = false;
    return o;
  }());
  lean->init({{x.shape(), x.dtype()}}, core::key_from_seed(1));
  check_close("the memory-lean path gives the same output", y, (*lean)(Var(x)).value(), 1e-6);
}

// =============================================================================================
// The command line
// =============================================================================================

struct Step {
  int number;
  const char* name;
  const char* section;
  const char* what;
  void (*run)();
};

const std::vector<Step> kSteps = {
    {1, "our_softmax", "2.1.1", "softmax through its logsumexp, on [1, 2, 3, 4]",
     step1_our_softmax},
    {2, "our_simple_attend", "2.2", "one head's dot-product attention, seq 8, d_qk 3, d_v 4",
     step2_our_simple_attend},
    {3, "OurSelfAttention", "2.3",
     "SelfAttention, reference path: 3 heads, 3 forward_unbatched calls", step3_our_self_attention},
    {4, "our_hash_vectors", "3.2", "angular LSH of ones(8, 5): 4 buckets, 3 hashes",
     step4_our_hash_vectors},
    {5, "sort_buckets", "3.3", "sort by (bucket, position): sticker and undo_sort",
     step5_sort_buckets},
    {6, "dotandv", "3.4", "attention within chunks of 2, unsort, combine 2 rounds", step6_dotandv},
    {7, "OurLSHSelfAttention", "3.5",
     "LSHSelfAttention, reference path: chunk_len 8, 5 hashes, 4 buckets",
     step7_our_lsh_self_attention},
};

void print_list() {
  std::cout << "The steps of the lab \"Reformer Efficient Attention\" (lab section in brackets):\n";
  for (const Step& s : kSteps) {
    char buf[160];
    const std::string section = "[" + std::string(s.section) + "]";
    std::snprintf(buf, sizeof buf, "  %d  %-20s %-7s  %s\n", s.number, s.name, section.c_str(),
                  s.what);
    std::cout << buf;
  }
}

void print_help() {
  std::cout
      << "reformer_lab: the course lab \"Reformer Efficient Attention\" (Coursera NLP C4W4),\n"
         "step by step in C++, on the lab's inputs. Prints what the notebook prints, then\n"
         "checks each step (lines ending in OK or MISMATCH).\n\n"
         "usage: reformer_lab [--step N]... [--list] [--help]\n"
         "  (no options)  run all steps\n"
         "  --step N      run step N (1..7); repeat to run several\n"
         "  --list        list the steps\n"
         "  --help        this text\n\n"
         "Exit status: 0 if every check passed, 1 if one failed, 2 for a usage error.\n\n";
  print_list();
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "reformer_lab: " << msg << "\nusage: reformer_lab [--step N]... [--list] [--help]\n";
  std::exit(2);
}

int parse_step(const std::string& text) {
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < 1 || n > static_cast<long>(kSteps.size())) {
    usage_error("--step needs a step number from 1 to " + std::to_string(kSteps.size()) +
                ", got '" + text + "' (see --list)");
  }
  return static_cast<int>(n);
}

}  // namespace

int main(int argc, char** argv) try {
  std::set<int> chosen;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      print_help();
      return 0;
    }
    if (arg == "--list") {
      print_list();
      return 0;
    }
    if (arg == "--step") {
      if (i + 1 >= argc) usage_error("missing step number after --step");
      chosen.insert(parse_step(argv[++i]));
    } else if (arg.rfind("--step=", 0) == 0) {
      chosen.insert(parse_step(arg.substr(7)));
    } else {
      usage_error("unknown argument '" + arg + "'");
    }
  }

  try {
    for (const Step& s : kSteps) {
      if (chosen.empty() || chosen.count(s.number) > 0) s.run();
    }
  } catch (const std::exception& e) {
    std::cerr << "reformer_lab: error: " << e.what() << "\n";
    return 1;
  }

  std::cout << "\nreformer_lab: " << tally.run << " checks, ";
  if (tally.failed == 0) {
    std::cout << "all OK\n";
    return 0;
  }
  std::cout << tally.failed << " MISMATCH\n";
  return 1;
} catch (const std::exception& e) {
  // minitrax reports bad input and failed files with exceptions (core/error.hpp): say
  // what went wrong and exit 1, as the main job does, instead of std::terminate.
  std::cerr << "reformer_lab: error: " << e.what() << "\n";
  return 1;
}
