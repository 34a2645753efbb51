// fuzz/fuzz_npz.cpp: libFuzzer target for the .npz reader (core::parse_npz: the zip
// end records, central directory, local headers, zip64 fields, inflate, CRC, and the
// .npy reader on each member).
//
// Any input must either parse or raise core::FileError. An archive that parses must
// round-trip: to_npz_bytes (stored, or deflated for odd-sized inputs) and parse_npz
// again give the same names, dtypes, shapes and bytes, in the same order.
#include <cstring>

#include "core/npy.hpp"
#include "fuzz_util.hpp"

using namespace minitrax;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  core::NpzEntries entries;
  try {
    entries = core::parse_npz(fuzz::as_bytes(data, size), "fuzz.npz");
  } catch (const core::FileError&) {
    return 0;
  }
  const core::NpzEntries again =
      core::parse_npz(core::to_npz_bytes(entries, size % 2 == 1), "round trip");
  if (again.size() != entries.size()) fuzz::invariant_failed("round trip: member count");
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& [n1, t] = entries[i];
    const auto& [n2, u] = again[i];
    if (n1 != n2 || u.dtype() != t.dtype() || u.shape() != t.shape() ||
        (t.nbytes() && std::memcmp(u.raw_data(), t.raw_data(), t.nbytes()) != 0)) {
      fuzz::invariant_failed("parse_npz(to_npz_bytes(entries)) differs from entries");
    }
  }
  return 0;
}
