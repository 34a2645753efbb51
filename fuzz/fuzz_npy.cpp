// fuzz/fuzz_npy.cpp: libFuzzer target for the .npy reader (core::parse_npy).
//
// Any input must either parse or raise core::FileError; anything else (a crash, a
// sanitizer report, another exception, a leak) is a bug. A tensor that parses must
// survive a round trip: to_npy_bytes, then parse_npy again, gives the same dtype,
// shape and bytes.
#include <cstring>

#include "core/npy.hpp"
#include "fuzz_util.hpp"

using namespace minitrax;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  core::Tensor t;
  try {
    t = core::parse_npy(fuzz::as_bytes(data, size), "fuzz.npy");
  } catch (const core::FileError&) {
    return 0;
  }
  const core::Tensor u = core::parse_npy(core::to_npy_bytes(t), "round trip");
  if (u.dtype() != t.dtype() || u.shape() != t.shape() || u.nbytes() != t.nbytes() ||
      (t.nbytes() && std::memcmp(u.raw_data(), t.raw_data(), t.nbytes()) != 0)) {
    fuzz::invariant_failed("parse_npy(to_npy_bytes(t)) differs from t");
  }
  return 0;
}
