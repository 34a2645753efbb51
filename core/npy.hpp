/// @file
/// numpy's .npy and .npz files, read and written.
///
/// Files are byte-compatible with numpy: what np.save / np.savez / np.savez_compressed
/// write loads here, and what we write loads with np.load (our .npy bytes are the
/// bytes numpy 1.24 writes for the same array). Tensors hold float32, float64, int32
/// or int64; other dtypes are refused with a FileError that names them.
///
/// Every length in a file is treated as hostile: a truncated, corrupt or foreign file
/// raises FileError `"<file>: <what is wrong>"`, never a crash, an out-of-bounds read or
/// a huge allocation. Saves are atomic: the file appears complete or not at all.
/// docs/files.md describes the formats, the checks and the error messages.
///
/// @code
/// save_npy("w.npy", Tensor::ones({2, 3}));            // np.load("w.npy") in Python
/// Tensor w = load_npy("w.npy");                       // [2, 3] float32
/// save_npz("params.npz", {{"w", w}, {"b", Tensor::zeros({3})}}, /*compress=*/true);
/// for (const auto& [name, t] : load_npz("params.npz")) std::cout << name << " " << t << "\n";
/// @endcode
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace minitrax::core {

// -- .npy: one tensor -------------------------------------------------------------
/// Reads a .npy file (format 1.0, 2.0 or 3.0; any byte order; C or Fortran order) into a
/// tensor of the stored shape and dtype. FileError if it cannot be read or is not valid.
Tensor load_npy(const std::string& path);
/// Writes `t` as a .npy file (format 1.0, native byte order, C order), atomically; the
/// shape and dtype are kept (a rank-0 tensor is a numpy scalar array).
void save_npy(const std::string& path, const Tensor& t);
/// Parses the bytes of a .npy file; `what` names the source in error messages.
Tensor parse_npy(std::string_view bytes, std::string_view what = "<memory>");
/// The bytes `save_npy` writes.
std::string to_npy_bytes(const Tensor& t);

// -- .npz: a zip archive of named .npy members ----------------------------------
/// Named tensors in archive order. Names carry no ".npy": it is stripped on load and
/// added on save (as np.savez does: `np.load(f)["w"]` is the member "w.npy").
using NpzEntries = std::vector<std::pair<std::string, Tensor>>;

/// Reads an .npz archive (stored or deflated members, zip64, data descriptors).
NpzEntries load_npz(const std::string& path);
/// Writes an .npz archive atomically; `compress` deflates the members
/// (np.savez_compressed), otherwise they are stored (np.savez).
void save_npz(const std::string& path, const NpzEntries& entries, bool compress = false);
/// Parses the bytes of an .npz archive; `what` names the source in error messages.
NpzEntries parse_npz(std::string_view bytes, std::string_view what = "<memory>");
/// The bytes `save_npz` writes.
std::string to_npz_bytes(const NpzEntries& entries, bool compress = false);

// -- whole files ------------------------------------------------------------------
/// The contents of a file; FileError `"<path>: cannot open: <reason>"` on failure.
std::string read_file(const std::string& path);
/// Replaces `path` by `bytes` atomically: writes `"<path>.minitrax-tmp.<pid>.<n>"` in the same
/// folder, fsyncs it and renames it over `path`. On failure the temporary is removed,
/// an existing file is left untouched, and FileError says what failed. (For the crash
/// tests only: the environment variables MINITRAX_TEST_KILL_IN_WRITE and
/// MINITRAX_TEST_KILL_AFTER_WRITE make a chosen write SIGKILL the process; see
/// docs/files.md, "Crash safety".)
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace minitrax::core
