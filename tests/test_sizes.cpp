// tests/test_sizes.cpp: no shape, size or file crashes the process (issue 12, part 6).
//
// Four groups, each case a TEST_CASE named by its id in docs/errors.md (part "Sizes, empty axes,
// memory and layers before init"):
//  * S..: sizes that overflow (element counts, byte counts, extents): a ShapeError naming
//    the op and the shape, never a wrapped-around size;
//  * A..: sizes that are valid but cannot be allocated: an AllocationError saying what
//    was being allocated and how big;
//  * Z..: zero-size axes at each position, compared with the known answer (or a clear
//    error where the answer is undefined);
//  * L..: layers with weights called before init().
//
// MINITRAX_PRINT_ERRORS=1 ./test_sizes prints every observed message (what
// docs/errors.md (part "Sizes, empty axes, memory and layers before init") shows).
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <typeinfo>
#include <vector>

#include "autodiff/fastmath.hpp"
#include "autodiff/transforms.hpp"
#include "core/kernels.hpp"
#include "core/npy.hpp"
#include "core/ops.hpp"
#include "core/rng.hpp"
#include "layers/attention.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "layers/research/efficient_attention.hpp"
#include "models/reformer.hpp"
#include "models/transformer.hpp"
#include "test_util.hpp"
#include "training/losses.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define MINITRAX_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MINITRAX_TEST_ASAN 1
#endif
#endif

#ifdef MINITRAX_TEST_ASAN
// ASan's allocator aborts on an allocation it cannot serve unless told to return null
// (then the aligned allocator throws std::bad_alloc, as glibc's malloc failing does).
// Only this test program gets the default; ASAN_OPTIONS still overrides it.
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1";
}
#endif

using namespace minitrax;
namespace tl = minitrax::layers;
namespace ea = minitrax::layers::research;
namespace fm = minitrax::fastmath;
using autodiff::Var;
using base::Stack;
using core::DType;
using core::Shape;
using core::Tensor;
using testutil::contains;

namespace {

constexpr std::size_t k2_32 = std::size_t{1} << 32;

// ---- observing an error -----------------------------------------------------------------

using testutil::observe;
using testutil::Observed;

const std::string kLimit = "9223372036854775807 bytes (PTRDIFF_MAX)";

Tensor ramp(const Shape& shape, DType dtype = DType::f32) {
  Tensor t = Tensor::empty(shape, dtype);
  core::dispatch_all(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (std::size_t i = 0; i < t.size(); ++i) p[i] = static_cast<T>(0.25 * double(i) - 1.0);
  });
  return t;
}

bool all_nan(const Tensor& t) {
  for (double v : t.to_vector<double>()) {
    if (!std::isnan(v)) return false;
  }
  return true;
}

}  // namespace

// =========================================================================================
// S: sizes that overflow
// =========================================================================================

TEST_CASE("S01 Tensor::zeros: an element count that overflows 64 bits") {
  // 2^32 * 2^32 = 2^64 wrapped to 0 before: a "valid" tensor of size 0.
  const Observed o = observe("S01", [] { Tensor::zeros({k2_32, k2_32}); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "Tensor::zeros: shape [4294967296, 4294967296] is too large for a float32 tensor: its "
        "4-byte elements would take more than " +
            kLimit);
}

TEST_CASE("S02 Tensor::empty: a byte count over PTRDIFF_MAX, per dtype") {
  // 2^61 float32 elements are 2^63 bytes: one byte too many. 2^61 - 1 fit (the check only;
  // nothing is allocated). For float64 the limit is 2^60 - 1 elements.
  const std::size_t n61 = std::size_t{1} << 61, n60 = std::size_t{1} << 60;
  CHECK(core::checked_size({n61 - 1}, "t", DType::f32) == n61 - 1);
  CHECK(core::checked_size({n60 - 1}, "t", DType::f64) == n60 - 1);
  CHECK(core::checked_size({n60 - 1}, "t", DType::i64) == n60 - 1);
  CHECK(core::checked_size({}, "t", DType::f32) == 1);
  CHECK(core::checked_size({3, 0, 5}, "t", DType::f32) == 0);
  CHECK_THROWS_AS(core::checked_size({n60}, "t", DType::f64), ShapeError);
  CHECK_THROWS_AS(core::checked_size({n61}, "t", DType::i32), ShapeError);
  const Observed o = observe("S02", [&] { Tensor::empty({n61}, DType::f32); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "Tensor::empty: shape [2305843009213693952] is too large for a float32 tensor: "
        "its 4-byte elements would take more than " +
            kLimit);
  // shape_size alone: exact products, 0 with any extent 0, ShapeError past 64 bits.
  CHECK(core::shape_size({k2_32, k2_32, 0}) == 0);
  CHECK(core::shape_size({k2_32, k2_32 - 1}) == (k2_32 * (k2_32 - 1)));
  CHECK_THROWS_AS(core::shape_size({k2_32, k2_32}), ShapeError);
}

TEST_CASE("S03 Tensor::zeros: an empty shape whose other extents overflow") {
  // Empty, but strides computed from it would overflow: refused, as numpy refuses it.
  const Observed o = observe("S03", [] { Tensor::zeros({k2_32, k2_32, 0}); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "Tensor::zeros: shape [4294967296, 4294967296, 0] is too large for a float32 tensor: its "
        "nonzero extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
  // An empty tensor with large (but addressable) extents is fine, and ops on it work.
  const Tensor e = Tensor::zeros({std::size_t{1} << 40, 0, 3});
  CHECK(e.size() == 0);
  CHECK(core::sum(e, {0}).shape() == Shape{0, 3});
  CHECK(core::transpose(e).shape() == Shape{3, 0, std::size_t{1} << 40});
  CHECK(core::softmax(e).shape() == e.shape());
}

TEST_CASE("S04 Tensor::reshape: a target shape that overflows") {
  const Tensor e = Tensor::zeros({0});
  // {2^32, 2^32} wrapped to 0 elements and was accepted for an empty tensor.
  const Observed o = observe("S04", [&] { e.reshape(Shape{k2_32, k2_32}); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "Tensor::reshape: shape [4294967296, 4294967296] is too large for a float32 tensor: its "
        "4-byte elements would take more than " +
            kLimit);
  // With an inferred extent: the known extents' product overflows.
  const Tensor x = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(x.reshape(std::vector<long>{-1, 1L << 32, 1L << 32}),
                       "Tensor::reshape: cannot reshape [4] (4 elements) into [-1, 4294967296, "
                       "4294967296]",
                       ShapeError);
  CHECK(x.reshape(std::vector<long>{2, -1}).shape() == Shape{2, 2});
}

TEST_CASE("S05 add: a broadcast result too large to address") {
  // Both operands are empty (and valid); their broadcast [2^32, 2^32, 0] is not.
  const Tensor a = Tensor::zeros({k2_32, 1, 0}), b = Tensor::zeros({1, k2_32, 0});
  const Observed o = observe("S05", [&] { core::add(a, b); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "add: shape [4294967296, 4294967296, 0] is too large for a float32 tensor: its nonzero "
        "extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
  CHECK_THROWS_AS(core::where(Tensor::zeros({1, 0}, DType::i32), a, b), ShapeError);
}

TEST_CASE("S06 matmul: an output shape too large to address") {
  // k = 0: the operands are empty, the [2^32, 2^32] product is not.
  const Tensor a = Tensor::zeros({k2_32, 0}), b = Tensor::zeros({0, k2_32});
  const Observed o = observe("S06", [&] { core::matmul(a, b); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "matmul: shape [4294967296, 4294967296] is too large for a float32 tensor: its 4-byte "
        "elements would take more than " +
            kLimit);
  CHECK_THROWS_AS(fm::matmul(Var(a), Var(b)), ShapeError);
}

TEST_CASE("S07 pad: padding that overflows an extent, or the element count") {
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  const Observed o = observe("S07", [&] { core::pad(Tensor::zeros({2}), {{0, max}}); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what == "pad: the extent 2 + 18446744073709551615 overflows a 64-bit count");
  const Observed o2 = observe("S07b", [&] {
    core::pad(Tensor::zeros({std::size_t{1} << 40, 0}), {{0, 0}, {0, std::size_t{1} << 30}});
  });
  CHECK(o2.type == "minitrax::core::ShapeError");
  CHECK(o2.what ==
        "pad: shape [1099511627776, 1073741824] is too large for a float32 tensor: its 4-byte "
        "elements would take more than " +
            kLimit);
}

TEST_CASE("S08 concatenate: extents that add up past 64 bits or past the byte limit") {
  const std::size_t big = (std::size_t{1} << 61) - 1;  // the largest float32 extent
  const std::vector<Tensor> nine(9, Tensor::zeros({big, 0}));
  const Observed o = observe("S08", [&] { core::concatenate(nine, 0); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "concatenate: the extent 18446744073709551608 + 2305843009213693951 overflows a 64-bit "
        "count");
  const std::vector<Tensor> two(2, Tensor::zeros({big, 0}));
  const Observed o2 = observe("S08b", [&] { core::concatenate(two, 0); });
  CHECK(o2.type == "minitrax::core::ShapeError");
  CHECK(o2.what ==
        "concatenate: shape [4611686018427387902, 0] is too large for a float32 tensor: its "
        "nonzero extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
}

TEST_CASE("S09 Tensor::arange: counts past the dtype or the byte limit") {
  const Observed o = observe("S09", [] { Tensor::arange(std::size_t{1} << 62, DType::i64); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "Tensor::arange: shape [4611686018427387904] is too large for an int64 tensor: its 8-byte "
        "elements would take more than " +
            kLimit);
  const Observed o2 =
      observe("S09b", [] { Tensor::arange(std::numeric_limits<std::size_t>::max()); });
  CHECK(o2.type == "minitrax::core::ValueError");
  CHECK(o2.what ==
        "Tensor::arange: n = 18446744073709551615 counts past the largest int32 (2147483647); use "
        "DType::i64");
  // The edges: 2^31 int32 values end at 2^31 - 1 (checked without allocating 8 GiB: a
  // small arange shows the values, the error shows the boundary).
  CHECK_THROWS_AS(Tensor::arange((std::size_t{1} << 31) + 1), ValueError);
  CHECK(Tensor::arange(4).to_vector<int>() == std::vector<int>{0, 1, 2, 3});
}

TEST_CASE("S10 one_hot: indices times depth too large") {
  const Tensor idx = Tensor::zeros({std::size_t{1} << 40, 0}, DType::i32);
  const Observed o = observe("S10", [&] { core::one_hot(idx, std::size_t{1} << 30); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "one_hot: shape [1099511627776, 0, 1073741824] is too large for a float32 tensor: its "
        "nonzero extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
}

TEST_CASE("S11 take and Embedding: a lookup whose output is too large") {
  const Tensor x = Tensor::zeros({2, std::size_t{1} << 40, 0});
  const Tensor idx = Tensor::zeros({std::size_t{1} << 30, 0}, DType::i32);
  const Observed o = observe("S11", [&] { core::take(x, idx, 0); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "take: shape [1073741824, 0, 1099511627776, 0] is too large for a float32 tensor: its "
        "nonzero extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
  // Embedding: [2^60, 0] int32 ids are valid (2^62 bytes); [2^60, 0, 4] float32 is not.
  auto emb = tl::Embedding(10, 4);
  emb->init({{{1, 3}, DType::i32}});
  const Tensor ids = Tensor::zeros({std::size_t{1} << 60, 0}, DType::i32);
  const Observed o2 = observe("S11b", [&] { (*emb)(Var(ids)); });
  CHECK(o2.type == "minitrax::base::LayerError");
  CHECK(o2.original ==
        "take: shape [1152921504606846976, 0, 4] is too large for a float32 tensor: its nonzero "
        "extents times 4-byte elements exceed " +
            kLimit + ", even though an extent is 0");
  CHECK(contains(o2.what, "Embedding (created at tests/test_sizes.cpp:"));
}

TEST_CASE("S12 npy: a header shape too large to load; everything saved loads back") {
  auto header = [](const std::string& shape) {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
    dict += '\n';
    std::string b = "\x93NUMPY";
    b += '\x01';
    b += '\x00';
    b += static_cast<char>(dict.size() & 0xff);
    b += static_cast<char>(dict.size() >> 8);
    return b + dict;
  };
  const Observed o =
      observe("S12", [&] { core::parse_npy(header("(4294967296, 4294967296)"), "x.npy"); });
  CHECK(o.type == "minitrax::core::FileError");
  CHECK(o.what == "x.npy: float32 shape (4294967296, 4294967296) is too large: corrupt header");
  // Empty but over the limit: refused too (it used to load as a tensor no op could use).
  const Observed o2 =
      observe("S12b", [&] { core::parse_npy(header("(4294967296, 4294967296, 0)"), "x.npy"); });
  CHECK(o2.type == "minitrax::core::FileError");
  CHECK(o2.what == "x.npy: float32 shape (4294967296, 4294967296, 0) is too large: corrupt header");
  // The largest empty shapes a tensor can have round-trip through npy and npz.
  for (DType d : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    const std::size_t big = core::kMaxTensorBytes / core::dtype_size(d);
    const Tensor t = Tensor::zeros({0, big}, d);
    const Tensor u = core::parse_npy(core::to_npy_bytes(t), "round trip");
    CHECK(u.shape() == t.shape());
    CHECK(u.dtype() == d);
    const core::NpzEntries back = core::parse_npz(core::to_npz_bytes({{"t", t}}), "round trip");
    CHECK(back.at(0).second.shape() == t.shape());
    CHECK_THROWS_AS(Tensor::zeros({0, big + 1}, d), ShapeError);
  }
}

TEST_CASE("S13 split: sizes whose sum wraps around") {
  const std::size_t max = std::numeric_limits<std::size_t>::max();
  // max + 4 wraps to 3, the extent: accepted before, then split off a huge piece.
  const Observed o = observe("S13", [&] { core::split(Tensor::zeros({3}), {max, 4}, 0); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "split: sizes [18446744073709551615, 4] add up to more than a 64-bit count holds, but axis "
        "0 of shape [3] has extent 3");
  // n equal parts of an empty axis: n empties (as numpy); a number too large for memory
  // is an AllocationError, not a bare std::bad_alloc / length_error.
  CHECK(core::split(Tensor::zeros({0, 2}), std::size_t{3}, 0).size() == 3);
  const Observed o2 = observe("S13b", [&] {
    core::split(Tensor::zeros({0, 2}), std::size_t{1} << 62, 0);
  });
  CHECK(o2.type == "minitrax::core::AllocationError");
  CHECK(o2.what ==
        "split: cannot make 4611686018427387904 parts of axis 0 of shape [0, 2] (out "
        "of memory)");
}

TEST_CASE("S14 random draws and Tensor::from: shapes that overflow") {
  const core::Key key = core::key_from_seed(0);
  const Observed o = observe("S14", [&] { core::normal(key, {k2_32, k2_32}, DType::f32); });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what ==
        "normal: shape [4294967296, 4294967296] is too large for a float32 tensor: its 4-byte "
        "elements would take more than " +
            kLimit);
  CHECK_THROWS_AS(core::uniform(key, {k2_32, k2_32}, DType::f32, 0, 1), ShapeError);
  CHECK_THROWS_AS(core::bernoulli(key, 0.5, {k2_32, k2_32}), ShapeError);
  CHECK_THROWS_AS(core::randint(key, {k2_32, k2_32}, 0, 5, DType::i32), ShapeError);
  // from: 2^64 wrapped to 0 matched an empty value list before.
  const Observed o2 = observe("S14b", [] { Tensor::from<float>({k2_32, k2_32}, {}); });
  CHECK(o2.type == "minitrax::core::ShapeError");
  CHECK(o2.what ==
        "Tensor::from: shape [4294967296, 4294967296] is too large for a float32 tensor: its "
        "4-byte elements would take more than " +
            kLimit);
}

// =========================================================================================
// A: valid sizes that cannot be allocated
// =========================================================================================

TEST_CASE("A01 Tensor::zeros: 256 PiB, more than any address space") {
  // 2^58 bytes: past the 47-bit (and 57-bit) user address space, so no overcommit
  // setting can grant it; ASan's allocator returns null (allocator_may_return_null, above).
  const std::size_t n = std::size_t{1} << 28;
  const Observed o = observe("A01", [&] { Tensor::zeros({n, n}); });
  CHECK(o.type == "minitrax::core::AllocationError");
  CHECK(o.what ==
        "Tensor::zeros: cannot allocate 256.0 PiB for a float32 tensor [268435456, 268435456] "
        "(out of memory)");
}

TEST_CASE("A02 matmul and Dense: an output that cannot be allocated") {
  const std::size_t n = std::size_t{1} << 28;
  const Tensor a = Tensor::zeros({n, 0}), b = Tensor::zeros({0, n});
  const Observed o = observe("A02", [&] { core::matmul(a, b); });
  CHECK(o.type == "minitrax::core::AllocationError");
  CHECK(o.what ==
        "matmul: cannot allocate 256.0 PiB for a float32 tensor [268435456, 268435456] (out of "
        "memory)");
  // In a layer: the LayerError keeps the allocation message.
  auto dense = tl::Dense(static_cast<long>(n));
  dense->set_weights(base::Weights::list(
      {base::Weights(Tensor::zeros({0, n})), base::Weights(Tensor::zeros({n}))}));
  const Observed o2 = observe("A02b", [&] { (*dense)(Var(Tensor::zeros({n, 0}))); });
  CHECK(o2.type == "minitrax::base::LayerError");
  CHECK(o2.original == o.what);
}

TEST_CASE("A03 Tensor::zeros: 4 GiB under a 1 GiB address-space limit (forked child)") {
#ifdef MINITRAX_TEST_ASAN
  // ASan maps terabytes of shadow memory up front: an RLIMIT_AS small enough to refuse
  // 4 GiB leaves it no room to run. A01 and A02 cover the message under ASan.
  MESSAGE("skipped under AddressSanitizer: RLIMIT_AS cannot be combined with its shadow memory");
#else
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // child: limit the address space to what it uses now plus 1 GiB
    ::close(fds[0]);
    std::string msg = "no limit";
    long pages = 0;
    if (std::ifstream statm("/proc/self/statm"); statm >> pages) {
      const auto used = static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE));
      const rlimit lim{used + (rlim_t{1} << 30), used + (rlim_t{1} << 30)};
      if (::setrlimit(RLIMIT_AS, &lim) == 0) {
        try {
          Tensor::zeros({32768, 32768});
          msg = "no error";
        } catch (const AllocationError& e) {
          msg = e.what();
        } catch (const std::exception& e) {
          msg = std::string("other: ") + e.what();
        }
      }
    }
    [[maybe_unused]] const auto w = ::write(fds[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string got;
  char buf[512];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, std::size_t(r));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  if (std::getenv("MINITRAX_PRINT_ERRORS")) {
    std::cerr << "==== A03 | minitrax::core::AllocationError\n" << got << "\n";
  }
  CHECK(got ==
        "Tensor::zeros: cannot allocate 4.0 GiB for a float32 tensor [32768, 32768] (out of "
        "memory)");
#endif
}

// =========================================================================================
// Z: zero-size axes
// =========================================================================================

TEST_CASE("Z01 Dense on [2, 0] with d_in 0: the bias, broadcast (it died with SIGFPE)") {
  auto dense = tl::Dense(3, tl::init::GlorotUniform(), tl::init::RandomNormal(1.0));
  dense->init({{{2, 0}, DType::f32}});
  const Tensor b = dense->weights()[1].leaf();
  CHECK(dense->weights()[0].leaf().shape() == Shape{0, 3});
  const Var y = (*dense)(Var(Tensor::zeros({2, 0})));
  REQUIRE(y.shape() == Shape{2, 3});
  CHECK(core::equal(y.value(), core::broadcast_to(b, {2, 3})));
  // Gradients: d/db of sum(y) is the number of rows; d/dw is empty; d/dx is empty.
  const auto g = autodiff::grad(
      [](const autodiff::VarList& v) { return fm::sum(fm::dense(v[0], v[1], v[2])); },
      {Tensor::zeros({2, 0}), Tensor::zeros({0, 3}), b});
  CHECK(g[0].shape() == Shape{2, 0});
  CHECK(g[1].shape() == Shape{0, 3});
  CHECK(g[2].to_vector<float>() == std::vector<float>{2, 2, 2});
  // Batch 0 and a rank-3 input with d_in 0.
  CHECK((*dense)(Var(Tensor::zeros({0, 0}))).shape() == Shape{0, 3});
  const Var y3 = (*dense)(Var(Tensor::zeros({2, 4, 0})));
  CHECK(core::equal(y3.value(), core::broadcast_to(b, {2, 4, 3})));
}

TEST_CASE("Z02 matmul with m, n, k or batch 0, and its gradients") {
  const Tensor a = ramp({2, 3}), b = ramp({3, 4});
  CHECK(core::matmul(Tensor::zeros({0, 3}), b).shape() == Shape{0, 4});
  CHECK(core::matmul(a, Tensor::zeros({3, 0})).shape() == Shape{2, 0});
  // k = 0: an empty sum, all zeros (the output buffer starts uninitialised).
  const Tensor z = core::matmul(Tensor::full({2, 0}, 7), Tensor::full({0, 4}, 7));
  CHECK(core::equal(z, Tensor::zeros({2, 4})));
  CHECK(core::matmul(Tensor::zeros({0, 2, 3}), Tensor::zeros({0, 3, 4})).shape() == Shape{0, 2, 4});
  CHECK(core::matmul(Tensor::zeros({5, 2, 0}), Tensor::zeros({0, 4})).shape() == Shape{5, 2, 4});
  // matmul_into with k = 0: out = beta * out.
  Tensor out = Tensor::full({2, 4}, 3);
  core::matmul_into(out, Tensor::zeros({2, 0}), Tensor::zeros({0, 4}), core::Trans::N,
                    core::Trans::N, 1.0, 0.5);
  CHECK(core::equal(out, Tensor::full({2, 4}, 1.5)));
  // The VJP with a shared rank-2 b and n = 0 divided by g's last extent (SIGFPE).
  const auto g =
      autodiff::grad([](const autodiff::VarList& v) { return fm::sum(fm::matmul(v[0], v[1])); },
                     {ramp({2, 3, 4}), Tensor::zeros({4, 0})});
  CHECK(core::equal(g[0], Tensor::zeros({2, 3, 4})));
  CHECK(g[1].shape() == Shape{4, 0});
  // And with k = 0: d/da is empty, d/db = sum over rows of ones.
  const auto g2 =
      autodiff::grad([](const autodiff::VarList& v) { return fm::sum(fm::matmul(v[0], v[1])); },
                     {Tensor::zeros({2, 3, 0}), Tensor::zeros({0, 5})});
  CHECK(g2[0].shape() == Shape{2, 3, 0});
  CHECK(g2[1].shape() == Shape{0, 5});
}

TEST_CASE("Z03 reductions over empty axes: identities, NaN for mean, errors for max/min") {
  const Tensor e = Tensor::zeros({3, 0});
  CHECK(core::equal(core::sum(e, {1}), Tensor::zeros({3})));
  CHECK(core::sum(e).item<float>() == 0.0f);
  CHECK(core::sum(e, {0}).shape() == Shape{0});
  CHECK(core::equal(core::sum(Tensor::zeros({3, 0}, DType::i32), {1}),
                    Tensor::zeros({3}, DType::i32)));
  // mean of nothing is NaN (0 / 0), as numpy's.
  CHECK(all_nan(core::mean(e, {1})));
  CHECK(core::mean(e, {1}).shape() == Shape{3});
  CHECK(std::isnan(core::mean(e).item<float>()));
  CHECK(core::mean(e, {0}).shape() == Shape{0});
  // logsumexp of nothing is -inf (log 0).
  for (float v : core::logsumexp(e, {1}).to_vector<float>()) CHECK(v == -INFINITY);
  for (float v : core::logsumexp_last(e).to_vector<float>()) CHECK(v == -INFINITY);
  // max / min / argmax have no identity: a ValueError naming the shape.
  const Observed o = observe("Z03", [&] { core::max(e, {1}); });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what ==
        "max: cannot reduce over zero elements (shape [3, 0], axes [1]): the reduction has no "
        "identity");
  CHECK_THROWS_AS(core::min(e), ValueError);
  CHECK_THROWS_WITH_AS(core::argmax(e, 1), "argmax: axis 1 of shape [3, 0] is empty (no maximum)",
                       ValueError);
  // Reducing a non-empty axis of an empty tensor is fine.
  CHECK(core::max(e, {0}).shape() == Shape{0});
  CHECK(core::argmax(Tensor::zeros({0, 3}), 1).shape() == Shape{0});
  // Differentiable forms: gradients of the right (empty or zero) shapes.
  const auto g =
      autodiff::grad([](const autodiff::VarList& v) { return fm::sum(fm::mean(v[0], {1})); },
                     {Tensor::zeros({0, 4})});
  CHECK(g[0].shape() == Shape{0, 4});
  // sum_to and broadcast_to with empty shapes.
  CHECK(core::sum_to(Tensor::zeros({0, 3}), {3}).to_vector<float>() == std::vector<float>{0, 0, 0});
  CHECK(core::broadcast_to(Tensor::ones({3}), {0, 3}).shape() == Shape{0, 3});
}

TEST_CASE("Z04 softmax, log_softmax and their VJPs on empty rows and no rows") {
  for (const Shape& s : {Shape{2, 0}, Shape{0, 5}, Shape{0}, Shape{2, 0, 3}}) {
    CAPTURE(core::shape_str(s));
    const Tensor x = Tensor::zeros(s);
    CHECK(core::softmax(x).shape() == s);
    CHECK(core::log_softmax(x).shape() == s);
    CHECK(core::softmax_backward(x, x).shape() == s);
    CHECK(core::log_softmax_backward(x, x).shape() == s);
  }
  const auto g =
      autodiff::grad([](const autodiff::VarList& v) { return fm::sum(fm::log_softmax(v[0])); },
                     {Tensor::zeros({2, 0})});
  CHECK(g[0].shape() == Shape{2, 0});
}

TEST_CASE("Z05 layer_norm: an empty feature axis is an error, no rows is fine") {
  const Observed o = observe("Z05", [] {
    core::layer_norm(Tensor::zeros({2, 0}), Tensor::ones({0}), Tensor::zeros({0}));
  });
  CHECK(o.type == "minitrax::core::ShapeError");
  CHECK(o.what == "layer_norm: the last axis of x [2, 0] is empty");
  const auto r = core::layer_norm(Tensor::zeros({0, 4}), Tensor::ones({4}), Tensor::zeros({4}));
  CHECK(r.y.shape() == Shape{0, 4});
  CHECK(r.mean.shape() == Shape{0});
  const auto gr = core::layer_norm_backward(Tensor::zeros({0, 4}), Tensor::ones({4}), r.mean,
                                            r.rstd, Tensor::zeros({0, 4}));
  CHECK(core::equal(gr.dscale, Tensor::zeros({4})));
  CHECK(core::equal(gr.dbias, Tensor::zeros({4})));
  CHECK(gr.dx.shape() == Shape{0, 4});
  // The layer: the same error inside a LayerError; no rows is fine.
  auto ln = tl::LayerNorm();
  ln->init({{{2, 0}, DType::f32}});
  const Observed o2 = observe("Z05b", [&] { (*ln)(Var(Tensor::zeros({2, 0}))); });
  CHECK(o2.type == "minitrax::base::LayerError");
  CHECK(o2.original == "layer_norm: the last axis of x [2, 0] is empty");
  auto ln4 = tl::LayerNorm();
  ln4->init({{{0, 4}, DType::f32}});
  CHECK((*ln4)(Var(Tensor::zeros({0, 4}))).shape() == Shape{0, 4});
}

TEST_CASE("Z06 gathers, scatters and sorts with empty indices or axes") {
  const Tensor x = ramp({3, 4});
  CHECK(core::take(x, Tensor::zeros({0}, DType::i32), 0).shape() == Shape{0, 4});
  CHECK(core::take(x, Tensor::zeros({2, 0}, DType::i64), 1).shape() == Shape{3, 2, 0});
  CHECK(core::take(Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::i32), 0).shape() ==
        Shape{0, 4});
  CHECK(core::take(Tensor::zeros({3, 0}), Tensor::from<int>({2}, {2, 0}), 0).shape() ==
        Shape{2, 0});
  // An index into an empty axis is out of range.
  CHECK_THROWS_WITH_AS(core::take(Tensor::zeros({0, 4}), Tensor::zeros({1}, DType::i32), 0),
                       "take: index 0 is out of range for axis 0 of extent 0 (shape [0, 4])",
                       ValueError);
  CHECK(core::equal(
      core::take_backward(Tensor::zeros({0, 4}), Tensor::zeros({0}, DType::i32), {3, 4}, 0),
      Tensor::zeros({3, 4})));
  CHECK(
      core::take_along_axis(Tensor::zeros({2, 0}), Tensor::zeros({2, 0}, DType::i32), 1).shape() ==
      Shape{2, 0});
  CHECK(core::take_along_axis(x, Tensor::zeros({3, 0}, DType::i32), 1).shape() == Shape{3, 0});
  CHECK(core::equal(core::take_along_axis_backward(Tensor::zeros({3, 0}),
                                                   Tensor::zeros({3, 0}, DType::i32), {3, 4}, 1),
                    Tensor::zeros({3, 4})));
  CHECK(core::one_hot(Tensor::zeros({0}, DType::i32), 5).shape() == Shape{0, 5});
  CHECK(core::one_hot(Tensor::from<int>({2}, {0, 1}), 0).shape() == Shape{2, 0});
  CHECK(core::argsort(Tensor::zeros({0})).shape() == Shape{0});
  CHECK(core::argsort(Tensor::zeros({2, 0}), 0).shape() == Shape{2, 0});
  const auto [k, v] = core::sort_key_val(Tensor::zeros({2, 0}), Tensor::zeros({2, 0}), -1);
  CHECK(k.shape() == Shape{2, 0});
  CHECK(v.shape() == Shape{2, 0});
}

TEST_CASE("Z07 layout ops with zero extents") {
  CHECK(core::transpose(Tensor::zeros({0, 3})).shape() == Shape{3, 0});
  CHECK(core::transpose(Tensor::zeros({2, 0, 3}), {2, 0, 1}).shape() == Shape{3, 2, 0});
  const Tensor a = ramp({2, 3});
  const Tensor c = core::concatenate({Tensor::zeros({2, 0}), a, Tensor::zeros({2, 0})}, 1);
  CHECK(core::equal(c, a));
  CHECK(core::concatenate({Tensor::zeros({0, 3}), Tensor::zeros({0, 3})}, 0).shape() ==
        Shape{0, 3});
  const auto parts = core::split(a, std::vector<std::size_t>{0, 3, 0}, 1);
  CHECK(parts[0].shape() == Shape{2, 0});
  CHECK(core::equal(parts[1], a));
  CHECK(core::slice(a, 1, 2, 2).shape() == Shape{2, 0});
  CHECK(core::equal(core::slice_backward(Tensor::zeros({2, 0}), {2, 3}, 1, 1, 1),
                    Tensor::zeros({2, 3})));
  // pad of an empty axis: only padding.
  CHECK(core::pad(Tensor::zeros({0}), {{1, 2}}, 5.0).to_vector<float>() ==
        std::vector<float>{5, 5, 5});
  CHECK(core::pad(Tensor::zeros({2, 0}), {{0, 0}, {1, 0}}, 1.0).to_vector<float>() ==
        std::vector<float>{1, 1});
  CHECK(core::roll(Tensor::zeros({0, 3}), 2, 0).shape() == Shape{0, 3});
  CHECK(core::roll(Tensor::zeros({3, 0}), 2, 0).shape() == Shape{3, 0});
  CHECK(core::squeeze(Tensor::zeros({1, 0})).shape() == Shape{0});
  CHECK(core::expand_dims(Tensor::zeros({0}), 0).shape() == Shape{1, 0});
  CHECK(core::add(Tensor::zeros({0, 3}), Tensor::ones({3})).shape() == Shape{0, 3});
  CHECK(core::where(Tensor::zeros({2, 0}, DType::i32), Tensor::zeros({2, 0}), Tensor::scalar(1.0))
            .shape() == Shape{2, 0});
}

TEST_CASE("Z08 Embedding with no ids") {
  auto emb = tl::Embedding(10, 4);
  emb->init({{{2, 3}, DType::i32}});
  CHECK((*emb)(Var(Tensor::zeros({2, 0}, DType::i32))).shape() == Shape{2, 0, 4});
  CHECK((*emb)(Var(Tensor::zeros({0}, DType::i64))).shape() == Shape{0, 4});
  CHECK(emb->output_signature({{{0, 5}, DType::i32}}).at(0).shape == Shape{0, 5, 4});
}

TEST_CASE("Z09 Dropout and the activations on empty inputs") {
  for (const Shape& s : {Shape{0, 3}, Shape{2, 0}}) {
    CAPTURE(core::shape_str(s));
    auto drop = tl::Dropout(0.5, {}, base::Mode::train);
    CHECK((*drop)(Var(Tensor::zeros(s))).shape() == s);
    auto shared = tl::Dropout(0.5, {0}, base::Mode::train);
    CHECK((*shared)(Var(Tensor::zeros(s))).shape() == s);
    for (const auto& layer :
         {tl::Relu(), tl::Gelu(), tl::FastGelu(), tl::Sigmoid(), tl::Tanh(), tl::LogSoftmax()}) {
      CAPTURE(layer->name());
      CHECK((*layer)(Var(Tensor::zeros(s))).shape() == s);
    }
    CHECK((*tl::Mean(0))(Var(Tensor::zeros(s))).shape() == Shape{s[1]});
  }
  // Mean over an empty axis is NaN (as numpy's mean of nothing).
  CHECK(all_nan((*tl::Mean(-1))(Var(Tensor::zeros({3, 0}))).value()));
}

TEST_CASE("Z10 PositionalEncoding: d_feature 0, length 0, batch 0") {
  auto pe = tl::PositionalEncoding(8, 0.0, base::Mode::eval);
  pe->init({{{2, 3, 0}, DType::f32}});
  CHECK((*pe)(Var(Tensor::zeros({2, 3, 0}))).shape() == Shape{2, 3, 0});
  auto pe4 = tl::PositionalEncoding(8, 0.0, base::Mode::eval);
  pe4->init({{{2, 3, 4}, DType::f32}});
  const Tensor x = ramp({2, 0, 4});
  CHECK((*pe4)(Var(x)).shape() == Shape{2, 0, 4});
  CHECK((*pe4)(Var(Tensor::zeros({0, 3, 4}))).shape() == Shape{0, 3, 4});
  auto pe_predict = tl::PositionalEncoding(8, 0.0, base::Mode::predict);
  pe_predict->init({{{0, 1, 4}, DType::f32}});
  CHECK((*pe_predict)(Var(Tensor::zeros({0, 1, 4}))).shape() == Shape{0, 1, 4});
}

TEST_CASE("Z11 attention with length 0 or batch 0") {
  // Dense attention over zero keys: the softmax over an empty row is empty and the
  // weighted sum of no values is 0 (as JAX computes it).
  const Tensor q = ramp({1, 2, 3}), k = Tensor::zeros({1, 0, 3}), v = Tensor::zeros({1, 0, 5});
  const Var out = tl::dot_product_attention(Var(q), Var(k), Var(v), Var(), 0.0, base::Mode::eval,
                                            core::key_from_seed(0));
  CHECK(core::equal(out.value(), Tensor::zeros({1, 2, 5})));
  for (const Shape& s : {Shape{2, 0, 4}, Shape{0, 3, 4}}) {
    CAPTURE(core::shape_str(s));
    auto attn = tl::Attention(4, 2, 0.0, base::Mode::eval);
    auto causal = tl::CausalAttention(4, 2, 0.0, base::Mode::eval);
    attn->init({{s, DType::f32}, {{s[0], 1, 1, s[1]}, DType::i32}});
    causal->init({{s, DType::f32}});
    const Stack ys =
        (*attn)(Stack{Var(Tensor::zeros(s)), Var(Tensor::ones({s[0], 1, 1, s[1]}, DType::i32))});
    CHECK(ys.at(0).shape() == s);
    CHECK((*causal)(Var(Tensor::zeros(s))).shape() == s);
  }
}

TEST_CASE("Z12 losses and metrics over zero positions: NaN means, zero sums") {
  const Var lp(Tensor::zeros({0, 5})), t(Tensor::zeros({0}, DType::i32)), w(Tensor::zeros({0}));
  CHECK(std::isnan(training::cross_entropy(lp, t).value().item<float>()));
  CHECK(std::isnan(training::weighted_cross_entropy(lp, t, w).value().item<float>()));
  CHECK(training::cross_entropy_sum(lp, t, w).value().item<float>() == 0.0f);
  CHECK(std::isnan(training::accuracy(lp.value(), t.value()).item<float>()));
  CHECK(std::isnan(training::l2_loss(Var(Tensor::zeros({0})), Var(Tensor::zeros({0})), w)
                       .value()
                       .item<float>()));
  CHECK((*training::SumOfWeights())(Stack{lp, t, w}).at(0).value().item<float>() == 0.0f);
  CHECK(training::nll_per_position(lp, t).shape() == Shape{0});
  // Zero classes: every target is out of range.
  const Observed o = observe("Z12", [] {
    training::cross_entropy(Var(Tensor::zeros({2, 0})), Var(Tensor::zeros({2}, DType::i32)));
  });
  CHECK(o.type == "minitrax::core::ValueError");
  CHECK(o.what == "take_along_axis: index 0 is out of range for axis 1 of extent 0 (shape [2, 0])");
  CHECK_THROWS_WITH_AS(training::accuracy(Tensor::zeros({2, 0}), Tensor::zeros({2}, DType::i32)),
                       "argmax: axis 1 of shape [2, 0] is empty (no maximum)", ValueError);
}

// =========================================================================================
// L: layers called before init()
// =========================================================================================

namespace {

/// The error of calling `layer` on `inputs` without init.
Observed before_init(const std::string& id, const base::LayerPtr& layer, const Stack& inputs) {
  return observe(id, [&] { (*layer)(inputs); });
}

std::string before_init_message(const std::string& name, const std::string& where) {
  return name + " (created at " + where +
         ") was called before init(): call init with the input signature first (or set its "
         "weights)";
}

}  // namespace

TEST_CASE("L01 leaf layers with weights, called before init()") {
  const Var x(ramp({2, 3, 4}));
  const base::LayerPtr dense = tl::Dense(4), ln = tl::LayerNorm(),
                       pe = tl::PositionalEncoding(8, 0.0, base::Mode::eval),
                       emb = tl::Embedding(10, 4);
  const Observed o = before_init("L01", dense, {x});
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.what == before_init_message("Dense", dense->where()));
  CHECK(before_init("L01", ln, {x}).what == before_init_message("LayerNorm", ln->where()));
  CHECK(before_init("L01", pe, {x}).what == before_init_message("PositionalEncoding", pe->where()));
  const Observed oe = before_init("L01e", emb, {Var(Tensor::zeros({1, 4}, DType::i32))});
  CHECK(oe.what == before_init_message("Embedding", emb->where()));
  // Layers without weights need no init.
  CHECK((*tl::Relu())(x).shape() == x.shape());
  CHECK((*tl::Dropout(0.5))(x).shape() == x.shape());
  // Weights set instead of init: runs, with the right answer.
  auto d2 = tl::Dense(2);
  const Tensor w = ramp({4, 2}), b = Tensor::from<float>({2}, {1, -1});
  d2->set_weights(base::Weights::list({base::Weights(w), base::Weights(b)}));
  CHECK(core::allclose((*d2)(x).value(), core::add(core::matmul(x.value(), w), b)));
  // pure_fn with weights: also fine; with an empty weights tree: the same error.
  auto d3 = tl::Dense(2);
  const auto [ys, st] = d3->pure_fn({x}, d2->weight_vars(), base::State(), core::key_from_seed(0));
  CHECK(core::allclose(ys.at(0).value(), core::add(core::matmul(x.value(), w), b)));
  CHECK_THROWS_AS(d3->pure_fn({x}, base::VarTree(), base::State(), core::key_from_seed(0)),
                  base::LayerError);
}

TEST_CASE("L02 attention layers called before init()") {
  const Var x(ramp({1, 4, 8}));
  auto sa = ea::SelfAttention({.n_heads = 2, .d_qk = 4, .d_v = 4});
  auto lsh =
      ea::LSHSelfAttention({.n_heads = 2, .d_qk = 4, .d_v = 4, .chunk_len = 2, .n_buckets = {2}});
  auto attn = tl::Attention(8, 2, 0.0, base::Mode::eval);
  auto causal = tl::CausalAttention(8, 2, 0.0, base::Mode::eval);
  // It used to say "vector::_M_range_check: __n (which is 0) >= this->size() (which is 0)".
  const Observed o = before_init("L02", sa, {x});
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.what == before_init_message("SelfAttention", sa->where()));
  CHECK(before_init("L02", lsh, {x}).what == before_init_message("LSHSelfAttention", lsh->where()));
  // Attention is a Serial: the message names it and the first sublayer without weights.
  const Observed oa = before_init("L02b", attn, {x, Var(Tensor::ones({1, 1, 1, 4}, DType::i32))});
  CHECK(oa.type == "minitrax::base::LayerError");
  // (its sublayers are made at the same line as the layer)
  CHECK(oa.what == before_init_message("Serial", attn->where()) +
                       "; its sublayer Dense (created at " + attn->where() + ") has no weights");
  CHECK(before_init("L02", causal, {x}).what == before_init_message("Serial", causal->where()) +
                                                    "; its sublayer Dense (created at " +
                                                    causal->where() + ") has no weights");
}

TEST_CASE("L03 models and a Serial called before init()") {
  const Var ids(Tensor::zeros({1, 4}, DType::i32));
  auto serial = tl::Serial({tl::Relu(), tl::Dense(4), tl::LayerNorm()});
  auto tlm = models::TransformerLM(
      {.vocab_size = 10, .d_model = 8, .d_ff = 8, .n_layers = 1, .n_heads = 2, .max_len = 8});
  auto rlm = models::ReformerLM({.vocab_size = 10,
                                 .d_model = 8,
                                 .d_ff = 8,
                                 .d_attention_key = 4,
                                 .d_attention_value = 4,
                                 .n_layers = 1,
                                 .n_heads = 2,
                                 .max_len = 8});
  const Observed o = before_init("L03", serial, {Var(ramp({2, 4}))});
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(o.what == before_init_message("Serial", serial->where()) +
                      "; its sublayer Dense (created at " + serial->where() + ") has no weights");
  const Observed ot = before_init("L03b", tlm, {ids});
  CHECK(ot.type == "minitrax::base::LayerError");
  CHECK(
      contains(ot.what, before_init_message("Serial", tlm->where()) + "; its sublayer Embedding"));
  const Observed orf = before_init("L03c", rlm, {ids});
  CHECK(orf.type == "minitrax::base::LayerError");
  CHECK(contains(orf.what, "was called before init(): call init with the input signature first"));
  CHECK(contains(orf.what, "; its sublayer Embedding"));
  // After init, all of them run.
  serial->init({{{2, 4}, DType::f32}});
  CHECK((*serial)(Var(ramp({2, 4}))).shape() == Shape{2, 4});
  tlm->init({{{1, 4}, DType::i32}});
  CHECK((*tlm)(ids).shape() == Shape{1, 4, 10});
}

TEST_CASE("Z13 efficient attention and the language models: batch 0 and length 0") {
  // Batch 0 runs; length 0 is refused by SelfAttention / LSHSelfAttention with a clear
  // error (TransformerLM's dense attention handles it: no positions, no outputs).
  const Shape none{0, 4, 8}, empty_len{1, 0, 8};
  auto sa = ea::SelfAttention({.n_heads = 2, .d_qk = 4, .d_v = 4});
  sa->init({{none, DType::f32}});
  CHECK((*sa)(Var(Tensor::zeros(none))).shape() == none);
  auto lsh =
      ea::LSHSelfAttention({.n_heads = 2, .d_qk = 4, .d_v = 4, .chunk_len = 2, .n_buckets = {2}});
  lsh->init({{none, DType::f32}});
  CHECK((*lsh)(Var(Tensor::zeros(none))).shape() == none);
  auto sa0 = ea::SelfAttention({.n_heads = 2, .d_qk = 4, .d_v = 4});
  const Observed o = observe("Z13", [&] { sa0->init({{empty_len, DType::f32}}); });
  CHECK(o.type == "minitrax::base::LayerError");
  CHECK(contains(o.original, "length must be positive, got 0"));
  for (const Shape& s : {Shape{1, 0}, Shape{0, 4}}) {
    CAPTURE(core::shape_str(s));
    auto tlm = models::TransformerLM(
        {.vocab_size = 10, .d_model = 8, .d_ff = 8, .n_layers = 1, .n_heads = 2, .max_len = 8});
    tlm->init({{s, DType::i32}});
    CHECK((*tlm)(Var(Tensor::zeros(s, DType::i32))).shape() == Shape{s[0], s[1], 10});
  }
}
