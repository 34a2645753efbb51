// fuzz/fuzz_util.hpp: small helpers shared by the libFuzzer targets (docs/fuzzing.md).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace minitrax::fuzz {

inline std::string_view as_bytes(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A fixed file of this process in the temporary folder ($TMPDIR or /tmp), removed at
// exit: targets whose API takes a path write the input there (plain write, no fsync).
class TempFile {
 public:
  explicit TempFile(const std::string& stem) {
    path_ = (std::filesystem::temp_directory_path() /
             ("minitrax_" + stem + "_" + std::to_string(::getpid())))
                .string();
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }
  void write(std::string_view bytes) const {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) std::abort();
    if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
      std::abort();
    }
    if (std::fclose(f) != 0) std::abort();
  }

 private:
  std::string path_;
};

// Stops the run with a message: a broken invariant is a finding like a crash.
[[noreturn]] inline void invariant_failed(const char* what) {
  std::fprintf(stderr, "minitrax fuzz: invariant broken: %s\n", what);
  std::abort();
}

}  // namespace minitrax::fuzz
