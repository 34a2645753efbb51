// The copy/duplication task stream: structure, ranges, weights, determinism.
#include <doctest/doctest.h>

#include <set>

#include "core/ops.hpp"
#include "training/data.hpp"

using namespace minitrax;
using training::Batch;

TEST_CASE("copy task: 0 w 0 w with loss weights on the second w only") {
  const std::size_t B = 4, L = 16, V = 10;
  Batch b = training::copy_task_batch(core::key_from_seed(3), B, L, V);
  REQUIRE(b[0].shape() == Shape{B, L});
  CHECK(core::equal(b[0], b[1]));
  const std::size_t n = L / 2 - 1;
  std::set<int> seen;
  for (std::size_t i = 0; i < B; ++i) {
    CHECK(b[0].at({i, 0}) == 0);
    CHECK(b[0].at({i, n + 1}) == 0);
    for (std::size_t j = 0; j < n; ++j) {
      const double w = b[0].at({i, 1 + j});
      CHECK(w >= 1);
      CHECK(w <= V - 2);
      seen.insert(static_cast<int>(w));
      CHECK(b[0].at({i, n + 2 + j}) == w);
    }
    for (std::size_t j = 0; j < L; ++j) {
      CHECK(b[2].at({i, j}) == (j >= n + 2 ? 1.0 : 0.0));
    }
  }
  CHECK(seen.size() == V - 2);  // 28 draws over 8 symbols: all appear (seeded)
}

TEST_CASE("copy task: reverse, padding, and errors") {
  Batch b = training::copy_task_batch(core::key_from_seed(1), 2, 8, 20, /*reverse=*/true, 32);
  CHECK(b[0].shape() == Shape{2, 32});
  for (std::size_t i = 0; i < 2; ++i) {
    for (std::size_t j = 0; j < 3; ++j) CHECK(b[0].at({i, 5 + j}) == b[0].at({i, 3 - j}));
    for (std::size_t j = 8; j < 32; ++j) {
      CHECK(b[0].at({i, j}) == 0);
      CHECK(b[2].at({i, j}) == 0);
    }
  }
  CHECK_THROWS_WITH_AS(training::copy_task_batch(core::key_from_seed(0), 2, 7, 10),
                       "copy task: length must be even and >= 4 (\"0 w 0 w\" with |w| >= 1), got 7",
                       ValueError);
  CHECK_THROWS_AS(training::copy_task_stream(core::key_from_seed(0), 2, 8, 2), ValueError);
}

TEST_CASE("copy task stream: batch k is a pure function of (key, k)") {
  auto s1 = training::copy_task_stream(core::key_from_seed(7), 3, 12, 50);
  auto s2 = training::copy_task_stream(core::key_from_seed(7), 3, 12, 50);
  CHECK(core::equal(s1(5)[0], s2(5)[0]));
  CHECK_FALSE(core::equal(s1(5)[0], s1(6)[0]));
  auto s3 = training::copy_task_stream(core::key_from_seed(8), 3, 12, 50);
  CHECK_FALSE(core::equal(s1(5)[0], s3(5)[0]));
}

TEST_CASE("sequence_copy_inputs: Trax's lengths") {
  auto in = training::sequence_copy_inputs(core::key_from_seed(0), 12, 2, 5, 3, 6, false, 1);
  std::set<std::size_t> train_lengths, eval_lengths;
  for (long k = 0; k < 200; ++k) {
    train_lengths.insert(in.train(k)[0].dim(1));
    eval_lengths.insert(in.eval(k)[0].dim(1));
  }
  CHECK(train_lengths == std::set<std::size_t>{4, 6, 8, 10});
  CHECK(eval_lengths == std::set<std::size_t>{8, 10, 12});
}
