// minitrax/tests/test_doc_messages.cpp: the error messages the documentation quotes
// (outside docs/errors.md, which test_error_catalogue.cpp checks) are the real ones.
//
// Each case makes the error the page describes, catches it, and checks that the page
// quotes its message word for word (line breaks and indentation of the Markdown
// source count as one space). Where a page quotes only part of a message, the quote is
// read from the page and must be part of the real message. Files are made in a
// temporary folder that is the working directory, so that messages name them as the
// pages do ("x.npy: ...").
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/npy.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "duplication/config.hpp"
#include "layers/combinators.hpp"
#include "layers/core.hpp"
#include "test_util.hpp"
#include "training/data.hpp"
#include "training/loop.hpp"
#include "training/losses.hpp"
#include "training/optimizers.hpp"
#include "training/schedules.hpp"

using namespace minitrax;
namespace fs = std::filesystem;
namespace tl = minitrax::layers;

namespace {

std::string read_doc(const std::string& rel) {
  std::ifstream f(std::string(MINITRAX_SOURCE_DIR) + "/" + rel, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot read " << rel);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs of spaces, tabs and newlines become one space.
std::string squeeze(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// The page quotes the whole message.
void check_quoted(const std::string& doc_rel, const std::string& message) {
  INFO("page: " << doc_rel);
  INFO("real message: " << message);
  CHECK_MESSAGE(squeeze(read_doc(doc_rel)).find(squeeze(message)) != std::string::npos,
                doc_rel << " does not quote the real message");
}

// The page quotes part of the message, between double quotes, starting with `opening`:
// that part must be in the real message.
void check_partial_quote(const std::string& doc_rel, const std::string& opening,
                         const std::string& message) {
  const std::string doc = read_doc(doc_rel);
  const std::size_t at = doc.find("\"" + opening);
  REQUIRE_MESSAGE(at != std::string::npos, doc_rel << " has no quote starting \"" << opening);
  const std::size_t end = doc.find('"', at + 1);
  REQUIRE(end != std::string::npos);
  const std::string quote = doc.substr(at + 1, end - at - 1);
  INFO("page: " << doc_rel << ", quote: " << quote);
  INFO("real message: " << message);
  CHECK(squeeze(message).find(squeeze(quote)) != std::string::npos);
}

// A fresh temporary folder as the working directory, for the life of the object.
struct InTempDir {
  fs::path old = fs::current_path();
  fs::path dir;
  explicit InTempDir(const std::string& name) {
    dir = fs::temp_directory_path() /
          ("minitrax_doc_messages_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::current_path(dir);
  }
  ~InTempDir() {
    fs::current_path(old);
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
  REQUIRE(f.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// A .npy file by hand: magic, version major.0, the header length (2 bytes in version 1,
// 4 after), the header text and the data.
std::string npy(unsigned major, std::size_t header_len, const std::string& text,
                const std::string& data) {
  std::string b = "\x93NUMPY";
  b += static_cast<char>(major);
  b += '\0';
  for (int k = 0; k < (major == 1 ? 2 : 4); ++k)
    b += static_cast<char>((header_len >> (8 * k)) & 0xff);
  return b + text + data;
}

std::string npy(const std::string& text, const std::string& data) {
  return npy(1, text.size(), text, data);
}

void put_le(std::string& b, std::size_t at, std::uint64_t v, int n) {
  for (int k = 0; k < n; ++k) b[at + k] = static_cast<char>((v >> (8 * k)) & 0xff);
}

// The message of what f throws (it must throw a minitrax error).
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return e.what();
  }
  FAIL("no minitrax error was thrown");
  return "";
}

const Tensor kW = Tensor::from<float>({2, 3}, {1, 2, 3, 4, 5, 6});

// In an archive that save_npz wrote with one member "w.npy": where its central
// directory entry starts, and in it the zip64 sizes (uncompressed, then compressed).
std::size_t central_entry(const std::string& zip) {
  const std::size_t at = zip.find("PK\x01\x02");
  REQUIRE(at != std::string::npos);
  return at;
}
constexpr std::size_t kCentralUsize = 46 + 5 + 4;  // fixed part, "w.npy", extra id+len
constexpr std::size_t kLocalData = 30 + 5 + 20;    // a member's data in its local header

}  // namespace

TEST_CASE("docs/files.md: the messages under Errors are the real ones") {
  InTempDir tmp("files");
  const std::string doc = "docs/files.md";
  auto load = [](const std::string& path) { return message_of([&] { core::load_npy(path); }); };
  auto load_z = [](const std::string& path) { return message_of([&] { core::load_npz(path); }); };
  const std::string header23 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";

  check_quoted(doc, load("x.npy"));  // no such file

  write_bytes("x.npy", "PK\x03\x04 is a zip, not a .npy");
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy(4, header23.size(), header23, std::string(24, '\0')));
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy(1, 118, header23.substr(0, 40), ""));
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy(header23, std::string(10, '\0')));
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy(header23, std::string(28, '\0')));
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy("{'descr': '<f4', 'fortran_order': False, }    \n", ""));
  check_quoted(doc, load("x.npy"));

  write_bytes("x.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, "
                           "4294967296), }\n",
                           ""));
  check_quoted(doc, load("x.npy"));

  core::save_npy("m.npz", kW);
  check_quoted(doc, load_z("m.npz"));

  // A stored archive cut after 100 bytes.
  core::save_npz("ok.npz", {{"w", kW}});
  const std::string stored = read_bytes("ok.npz");
  write_bytes("m.npz", stored.substr(0, 100));
  check_quoted(doc, load_z("m.npz"));

  // A stored member with its last data byte flipped.
  std::string z = stored;
  z[central_entry(z) - 1] ^= 0x01;
  write_bytes("m.npz", z);
  check_quoted(doc, load_z("m.npz"));

  // A stored member whose size (in the central directory) says one byte less.
  z = stored;
  put_le(z, central_entry(z) + kCentralUsize, 151, 8);
  write_bytes("m.npz", z);
  check_quoted(doc, load_z("m.npz"));

  // A stored member holding a truncated .npy: shape (2, 3) and 20 bytes of data (the same
  // size as the .npy of 5 floats, whose place it takes; the CRCs are made to fit).
  core::save_npz("five.npz", {{"w", Tensor::from<float>({5}, {1, 2, 3, 4, 5})}});
  z = read_bytes("five.npz");
  const std::string member = core::to_npy_bytes(kW).substr(0, 128 + 20);
  REQUIRE(member.size() == core::to_npy_bytes(Tensor::from<float>({5}, {1, 2, 3, 4, 5})).size());
  z.replace(kLocalData, member.size(), member);
  const auto crc = static_cast<std::uint32_t>(
      ::crc32(0, reinterpret_cast<const Bytef*>(member.data()), static_cast<uInt>(member.size())));
  put_le(z, 14, crc, 4);
  put_le(z, central_entry(z) + 16, crc, 4);
  write_bytes("m.npz", z);
  check_quoted(doc, load_z("m.npz"));

  // A deflated member whose size (in the central directory) claims a terabyte.
  core::save_npz("big.npz", {{"w", kW}}, /*compress=*/true);
  z = read_bytes("big.npz");
  put_le(z, central_entry(z) + kCentralUsize, 1099511627928ull, 8);
  write_bytes("m.npz", z);
  check_quoted(doc, load_z("m.npz"));
}

TEST_CASE("docs/files.md: an atomic write into a missing folder") {
  InTempDir tmp("atomic");
  check_quoted("docs/files.md", message_of([] { core::save_npz("run/ckpt.npz", {{"w", kW}}); }));
}

TEST_CASE("docs/files.md: Loop::run refuses a folder that holds a run") {
  InTempDir tmp("loop");
  auto make = [] {
    training::TrainTask task{training::copy_task_stream(core::key_from_seed(1), 2, 4, 8),
                             training::WeightedCategoryCrossEntropy(),
                             std::make_shared<training::SGD>(), training::constant(0.01)};
    training::LoopOptions options;
    options.output_dir = "runs/x";
    options.checkpoint_every = 5;
    options.eval_every = 0;
    options.progress = training::Progress::none;
    auto model = tl::Serial({tl::Embedding(8, 4), tl::Dense(8), tl::LogSoftmax()});
    return training::Loop(model, task, {}, options, core::key_from_seed(2));
  };
  make().run(7);  // checkpoints at steps 5 and 7
  auto again = make();
  check_quoted("docs/files.md", message_of([&] { again.run(7); }));
}

TEST_CASE("docs/rng.md: uniform with an integer dtype") {
  check_partial_quote("docs/rng.md", "dtype must be", message_of([] {
                        core::uniform(core::key_from_seed(0), {2}, core::DType::i32);
                      }));
}

TEST_CASE("docs/fuzzing.md: a JSON number beyond double's range") {
  std::string message;
  try {
    app::DuplicationConfig c;
    app::apply_json(c, R"({"lr": 1e400})", "big.json");
  } catch (const app::ConfigError& e) {
    message = e.what();
  }
  REQUIRE(!message.empty());
  check_quoted("docs/fuzzing.md", message);
}

TEST_CASE("docs/fuzzing.md: a config nested deeper than 64 levels") {
  std::string message;
  try {
    app::DuplicationConfig c;
    app::apply_json(c,
                    "{\"attention\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
                    "run.json");
  } catch (const app::ConfigError& e) {
    message = e.what();
  }
  REQUIRE(!message.empty());
  check_quoted("docs/fuzzing.md", message);
}
