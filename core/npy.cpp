// minitrax/core/npy.cpp: .npy and .npz reading and writing (see npy.hpp, docs/files.md).
//
// Readers treat every number in a file as hostile: each offset and length is checked
// against the bytes actually present before it is used (with overflow-safe
// arithmetic), and nothing is allocated before its size has been checked that way.
#include "core/npy.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <system_error>

namespace minitrax::core {
namespace {

using u64 = std::uint64_t;

[[noreturn]] void fail(std::string_view what, const std::string& msg) {
  throw FileError(std::string(what) + ": " + msg);
}

std::string errno_text(int e) {
  return std::generic_category().message(e);
}

// Untrusted bytes made safe for an error message: non-printable bytes become \xNN.
std::string printable(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// True if [off, off + len) lies within [0, size), without overflow.
bool fits(u64 off, u64 len, u64 size) {
  return off <= size && len <= size - off;
}

// Little-endian unsigned integer of `n` bytes at `off`; the caller has checked the range.
u64 le(std::string_view b, std::size_t off, int n) {
  u64 v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[off + i]);
  return v;
}

void put_le(std::string& out, u64 v, int n) {
  for (int i = 0; i < n; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// ============================================================================
// .npy
// ============================================================================

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr bool kLittleEndian = std::endian::native == std::endian::little;
constexpr std::size_t kMaxRank = 32;  // numpy's NPY_MAXDIMS: numpy cannot write more

// numpy's type code of a dtype without its byte-order character: "f4", "i8", ...
std::string_view type_code(DType d) {
  switch (d) {
    case DType::f32:
      return "f4";
    case DType::f64:
      return "f8";
    case DType::i32:
      return "i4";
    case DType::i64:
      return "i8";
  }
  return "";
}

// Python's repr of a shape tuple: "()", "(5,)", "(2, 3)".
std::string shape_repr(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

// numpy's name of a type code such as "f2" (float16) or "O" (object); "" if unknown.
std::string numpy_name(std::string_view code) {
  if (code.empty()) return "";
  std::size_t bytes = 0;
  const char* end = code.data() + code.size();
  const bool sized = code.size() > 1 && code.size() <= 4 &&
                     std::from_chars(code.data() + 1, end, bytes).ptr == end && bytes > 0;
  const std::string bits = sized ? std::to_string(8 * bytes) : "";
  switch (code[0]) {
    case 'b':
    case '?':
      return "bool";
    case 'i':
      return sized ? "int" + bits : "";
    case 'u':
      return sized ? "uint" + bits : "";
    case 'f':
      return sized ? "float" + bits : "";
    case 'c':
      return sized ? "complex" + bits : "";
    case 'O':
      return "object";
    case 'U':
      return "str";
    case 'S':
    case 'a':
      return "bytes";
    case 'V':
      return "void";
    case 'M':
      return "datetime64";
    case 'm':
      return "timedelta64";
    default:
      return "";
  }
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// The header is the text of a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// followed by spaces and a newline. This parser accepts exactly that grammar (any key
// order, any whitespace, either quote, Python 2's "3L") and nothing else.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  NpyHeader parse() {
    NpyHeader h;
    std::set<std::string> seen;
    expect('{');
    while (!take('}')) {
      const std::string key = quoted();
      expect(':');
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') {
          fail(what_,
               "unsupported dtype: structured (record) arrays are not supported; "
               "minitrax reads float32, float64, int32 and int64");
        }
        h.descr = quoted();
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
      } else if (key == "shape") {
        h.shape = tuple();
      } else {
        bad("unexpected key '" + printable(key) + "'");
      }
      if (!seen.insert(key).second) bad("duplicate key '" + key + "'");
      if (!take(',')) {
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != s_.size()) bad("unexpected text after the closing '}'");
    for (const char* key : {"descr", "fortran_order", "shape"}) {
      if (!seen.count(key)) bad(std::string("missing key '") + key + "'");
    }
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& msg) {
    fail(what_, "bad header: " + msg + " in \"" + printable(s_, 160) + "\"");
  }
  std::string at() const { return " at offset " + std::to_string(pos_); }
  void skip_space() {
    while (pos_ < s_.size() && std::string_view(" \t\r\n").find(s_[pos_]) != npos) ++pos_;
  }
  char peek() {
    skip_space();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  bool take(char c) {
    if (peek() != c || pos_ == s_.size()) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!take(c)) bad(std::string("expected '") + c + "'" + at());
  }
  std::string quoted() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string" + at());
    const std::size_t end = s_.find(q, pos_ + 1);
    if (end == std::string_view::npos) bad("unterminated string" + at());
    std::string v(s_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return v;
  }
  bool boolean() {
    peek();
    for (const bool v : {true, false}) {
      const std::string_view word = v ? "True" : "False";
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return v;
      }
    }
    bad("fortran_order is not True or False" + at());
  }
  Shape tuple() {
    expect('(');
    Shape shape;
    bool comma = false;
    while (!take(')')) {
      shape.push_back(integer());
      if (shape.size() > kMaxRank) bad("more than " + std::to_string(kMaxRank) + " dimensions");
      comma = take(',');
      if (!comma) {
        expect(')');
        break;
      }
    }
    if (shape.size() == 1 && !comma) bad("shape is not a tuple (a 1-tuple needs a comma)");
    return shape;
  }
  std::size_t integer() {  // numpy's extents are non-negative int64
    if (peek() == '-') bad("negative extent" + at());
    const std::size_t start = pos_;
    constexpr std::size_t max = std::numeric_limits<std::int64_t>::max();
    std::size_t v = 0;
    for (; pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; ++pos_) {
      const auto d = static_cast<std::size_t>(s_[pos_] - '0');
      if (v > (max - d) / 10) bad("extent too large" + at());
      v = v * 10 + d;
    }
    if (pos_ == start) bad("expected an integer" + at());
    if (pos_ < s_.size() && (s_[pos_] == 'L' || s_[pos_] == 'l')) ++pos_;  // Python 2 long
    return v;
  }

  static constexpr std::size_t npos = std::string_view::npos;
  std::string_view s_;
  std::string_view what_;
  std::size_t pos_ = 0;
};

struct Layout {
  DType dtype;
  bool swap;  // the data's byte order is not this machine's
};

Layout parse_descr(const std::string& descr, std::string_view what) {
  std::string_view code = descr;
  char order = '=';
  if (!code.empty() && std::string_view("<>|=").find(code[0]) != std::string_view::npos) {
    order = code[0];
    code.remove_prefix(1);
  }
  for (const DType d : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    if (code == type_code(d)) return {d, order == (kLittleEndian ? '>' : '<')};
  }
  const std::string name = numpy_name(code);
  fail(what, "unsupported dtype '" + printable(descr) + "'" +
                 (name.empty() ? "" : " (" + name + ")") +
                 ": minitrax reads float32, float64, int32 and int64");
}

// Copies column-major elements `src` of `shape` into row-major order at `dst`.
void fortran_to_c(const char* src, char* dst, const Shape& shape, std::size_t esize) {
  const std::size_t rank = shape.size(), n = shape_size(shape);
  Shape index(rank, 0), stride(rank);  // stride: column-major, in elements
  for (std::size_t k = 0, s = 1; k < rank; s *= shape[k], ++k) stride[k] = s;
  std::size_t from = 0;  // column-major position of `index`
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(dst + i * esize, src + from * esize, esize);
    for (std::size_t k = rank; k-- > 0;) {  // next index in row-major order
      if (++index[k] < shape[k]) {
        from += stride[k];
        break;
      }
      from -= (shape[k] - 1) * stride[k];
      index[k] = 0;
    }
  }
}

// ============================================================================
// zip (for .npz)
// ============================================================================

constexpr u64 kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50,
              kEnd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr u64 kMax16 = 0xffff, kMax32 = 0xffffffff;
constexpr u64 kMaxDeflateRatio = 1032;  // deflate never expands data more than this
constexpr unsigned kStored = 0, kDeflated = 8;

struct Member {
  std::string name;
  u64 flags = 0, method = 0, crc = 0, csize = 0, usize = 0, offset = 0;
};

uInt chunk(std::size_t n) {
  return static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
}
Bytef* zbytes(const char* p) {
  return reinterpret_cast<Bytef*>(const_cast<char*>(p));
}

std::uint32_t crc_of(std::string_view s) {
  return static_cast<std::uint32_t>(crc32_z(0, zbytes(s.data()), s.size()));
}

// Replaces the 32-bit sizes and offset saturated at 0xffffffff by the zip64 extra field's.
void read_zip64_extra(std::string_view extra, Member& m, std::string_view what) {
  for (std::size_t q = 0; q + 4 <= extra.size();) {
    const std::size_t id = le(extra, q, 2), len = le(extra, q + 2, 2);
    if (len > extra.size() - q - 4)
      fail(what, "member '" + printable(m.name) + "': corrupt extra field");
    if (id == 1) {
      std::size_t f = q + 4;
      for (u64* field : {&m.usize, &m.csize, &m.offset}) {
        if (*field != kMax32) continue;
        if (f + 8 > q + 4 + len)
          fail(what, "member '" + printable(m.name) + "': zip64 field too short");
        *field = le(extra, f, 8);
        f += 8;
      }
    }
    q += 4 + len;
  }
}

std::string inflate_raw(std::string_view in, u64 size, const std::string& where) {
  if (size / kMaxDeflateRatio > in.size() + 16) {
    fail(where, "claims " + std::to_string(size) + " bytes from " + std::to_string(in.size()) +
                    " compressed bytes, more than deflate can produce: corrupt");
  }
  std::string out(size, '\0');
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail(where, "zlib cannot start inflating");
  struct End {
    z_stream& z;
    ~End() { inflateEnd(&z); }
  } end{zs};
  std::size_t in_pos = 0, out_pos = 0;
  for (;;) {
    const uInt ai = chunk(in.size() - in_pos), ao = chunk(out.size() - out_pos);
    zs.next_in = zbytes(in.data() + in_pos);
    zs.avail_in = ai;
    zs.next_out = zbytes(out.data() + out_pos);
    zs.avail_out = ao;
    const int r = inflate(&zs, Z_NO_FLUSH);
    in_pos += ai - zs.avail_in;
    out_pos += ao - zs.avail_out;
    if (r == Z_STREAM_END) break;
    if (r == Z_OK) continue;
    if (r == Z_BUF_ERROR && in_pos == in.size()) fail(where, "truncated compressed data");
    if (r == Z_BUF_ERROR) {
      fail(where, "inflates to more than the " + std::to_string(size) + " bytes the archive says");
    }
    fail(where, std::string("corrupt compressed data (") + (zs.msg ? zs.msg : "zlib error") + ")");
  }
  if (out_pos != size) {
    fail(where, "inflates to " + std::to_string(out_pos) + " bytes, the archive says " +
                    std::to_string(size));
  }
  return out;
}

std::string deflate_raw(std::string_view in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    throw FileError("zlib cannot start deflating");
  }
  struct End {
    z_stream& z;
    ~End() { deflateEnd(&z); }
  } end{zs};
  std::string out(deflateBound(&zs, in.size()), '\0');
  std::size_t in_pos = 0, out_pos = 0;
  for (;;) {
    if (out_pos == out.size()) out.resize(out.size() + out.size() / 2 + 64);
    const uInt ai = chunk(in.size() - in_pos), ao = chunk(out.size() - out_pos);
    zs.next_in = zbytes(in.data() + in_pos);
    zs.avail_in = ai;
    zs.next_out = zbytes(out.data() + out_pos);
    zs.avail_out = ao;
    const int r = deflate(&zs, in_pos + ai == in.size() ? Z_FINISH : Z_NO_FLUSH);
    in_pos += ai - zs.avail_in;
    out_pos += ao - zs.avail_out;
    if (r == Z_STREAM_END) break;
    if (r != Z_OK && r != Z_BUF_ERROR) throw FileError("zlib cannot deflate");
  }
  out.resize(out_pos);
  return out;
}

}  // namespace

// ============================================================================
// .npy
// ============================================================================

Tensor parse_npy(std::string_view b, std::string_view what) {
  if (b.empty()) fail(what, "empty file: not a .npy file");
  if (b.substr(0, kMagic.size()) != kMagic.substr(0, std::min(b.size(), kMagic.size()))) {
    fail(what, "bad magic: not a .npy file");
  }
  if (b.size() < 8) fail(what, "truncated: the file ends inside the .npy magic and version");
  const unsigned major = static_cast<unsigned char>(b[6]), minor = static_cast<unsigned char>(b[7]);
  if (major < 1 || major > 3 || minor != 0) {
    fail(what, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + " (minitrax reads 1.0, 2.0 and 3.0)");
  }
  const int len_size = major == 1 ? 2 : 4;
  if (b.size() < 8u + len_size) fail(what, "truncated: the file ends inside the header length");
  const std::size_t header_len = le(b, 8, len_size);
  const std::size_t data_off = 8 + len_size + header_len;  // < 2^33: no overflow
  if (data_off > b.size()) {
    fail(what, "truncated: header says its text is " + std::to_string(header_len) +
                   " bytes, file has " + std::to_string(b.size() - 8 - len_size));
  }
  const NpyHeader h = HeaderParser(b.substr(8 + len_size, header_len), what).parse();
  const Layout layout = parse_descr(h.descr, what);
  const std::size_t esize = dtype_size(layout.dtype);

  // Elements and bytes: the shape must be one a Tensor can have (core::checked_size, the
  // rule every tensor is made under, so that whatever save_npy writes loads back).
  const std::string type = std::string(dtype_name(layout.dtype)) + " shape " + shape_repr(h.shape);
  std::size_t count = 0;
  try {
    count = checked_size(h.shape, "parse_npy", layout.dtype);
  } catch (const ShapeError&) {
    fail(what, type + " is too large: corrupt header");
  }
  const std::size_t nbytes = count * esize, have = b.size() - data_off;
  const std::string sizes = type + " needs " + std::to_string(nbytes) +
                            " bytes of data, file has " + std::to_string(have);
  if (have < nbytes) fail(what, "truncated: " + sizes);
  if (have > nbytes) fail(what, sizes + " (extra bytes at the end)");

  Tensor t = Tensor::empty(h.shape, layout.dtype, "parse_npy");
  if (nbytes == 0) return t;
  auto* dst = static_cast<char*>(t.raw_data());
  const char* src = b.data() + data_off;
  if (h.fortran_order && h.shape.size() > 1) {
    fortran_to_c(src, dst, h.shape, esize);
  } else {
    std::memcpy(dst, src, nbytes);
  }
  if (layout.swap) {
    for (std::size_t i = 0; i < count; ++i) std::reverse(dst + i * esize, dst + (i + 1) * esize);
  }
  return t;
}

std::string to_npy_bytes(const Tensor& t) {
  if (!t.defined()) throw ValueError("to_npy_bytes: the tensor is undefined");
  const Shape& shape = t.shape();
  std::string dict = std::string("{'descr': '") + (kLittleEndian ? '<' : '>') +
                     std::string(type_code(t.dtype())) +
                     "', 'fortran_order': False, 'shape': " + shape_repr(shape) + ", }";
  // numpy >= 1.24 leaves room to grow axis 0 in place: 21 characters for its digits.
  if (!shape.empty()) dict.append(21 - std::to_string(shape[0]).size(), ' ');
  // Pad with spaces and a newline so that the data starts at a multiple of 64 bytes;
  // format 2.0 (a 4-byte length) only if the header does not fit in 65535 bytes.
  int len_size = 2;
  auto padding = [&] { return 64 - (8 + len_size + dict.size() + 1) % 64; };
  if (dict.size() + 1 + padding() > kMax16) len_size = 4;
  const std::size_t pad = padding();

  std::string out(kMagic);
  out.reserve(8 + len_size + dict.size() + pad + 1 + t.nbytes());
  out += static_cast<char>(len_size == 2 ? 1 : 2);
  out += '\0';
  put_le(out, dict.size() + pad + 1, len_size);
  out += dict;
  out.append(pad, ' ');
  out += '\n';
  if (t.nbytes() > 0) out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  return out;
}

Tensor load_npy(const std::string& path) {
  return parse_npy(read_file(path), path);
}

void save_npy(const std::string& path, const Tensor& t) {
  if (!t.defined()) throw ValueError(path + ": cannot save an undefined tensor");
  write_file_atomic(path, to_npy_bytes(t));
}

// ============================================================================
// .npz
// ============================================================================

NpzEntries parse_npz(std::string_view b, std::string_view what) {
  // 1. The end record: the last 22 bytes, or earlier if the archive has a comment.
  std::size_t end = std::string_view::npos;
  for (std::size_t back = 22; back <= b.size() && back <= 22 + kMax16; ++back) {
    const std::size_t p = b.size() - back;
    if (le(b, p, 4) == kEndSig && le(b, p + 20, 2) == back - 22) {
      end = p;
      break;
    }
  }
  if (end == std::string_view::npos) {
    if (b.substr(0, kMagic.size()) == kMagic) fail(what, "not an .npz archive but a .npy file");
    if (b.substr(0, 4) == "PK\x03\x04") fail(what, "truncated or corrupt: no zip end record");
    fail(what, "not an .npz file (no zip end record)");
  }
  u64 disk = le(b, end + 4, 2), cd_disk = le(b, end + 6, 2), count = le(b, end + 10, 2),
      cd_size = le(b, end + 12, 4), cd_off = le(b, end + 16, 4);
  u64 cd_limit = end;  // where the central directory must end by
  if (end >= 20 && le(b, end - 20, 4) == kLocator64Sig) {
    const u64 rec = le(b, end - 20 + 8, 8);
    if (!fits(rec, 56, end - 20) || le(b, rec, 4) != kEnd64Sig)
      fail(what, "corrupt zip64 end record");
    disk = le(b, rec + 16, 4);
    cd_disk = le(b, rec + 20, 4);
    count = le(b, rec + 32, 8);
    cd_size = le(b, rec + 40, 8);
    cd_off = le(b, rec + 48, 8);
    cd_limit = rec;
  }
  if (disk != 0 || cd_disk != 0) fail(what, "multi-disk zip archives are not supported");
  if (!fits(cd_off, cd_size, cd_limit)) {
    fail(what, "truncated or corrupt: the central directory (" + std::to_string(cd_size) +
                   " bytes at offset " + std::to_string(cd_off) + ") is not in the file");
  }

  // 2. The central directory: one record per member, with the authoritative sizes and
  //    CRC (a local header may defer them to a data descriptor after the data).
  std::vector<Member> members;
  std::set<std::string> names;
  const std::size_t cd_end = cd_off + cd_size;
  std::size_t p = cd_off;
  for (u64 i = 0; i < count; ++i) {
    const std::string bad_entry =
        "corrupt central directory entry " + std::to_string(i) + " of " + std::to_string(count);
    if (!fits(p, 46, cd_end) || le(b, p, 4) != kCentralSig) fail(what, bad_entry);
    const std::size_t n = le(b, p + 28, 2), e = le(b, p + 30, 2), c = le(b, p + 32, 2);
    if (!fits(p + 46, n + e + c, cd_end)) fail(what, bad_entry);
    Member m;
    m.name = b.substr(p + 46, n);
    m.flags = le(b, p + 8, 2);
    m.method = le(b, p + 10, 2);
    m.crc = le(b, p + 16, 4);
    m.csize = le(b, p + 20, 4);
    m.usize = le(b, p + 24, 4);
    m.offset = le(b, p + 42, 4);
    read_zip64_extra(b.substr(p + 46 + n, e), m, what);
    p += 46 + n + e + c;
    const std::string where = "member '" + printable(m.name) + "'";
    if (m.flags & 1) fail(what, where + " is encrypted");
    if (m.method != kStored && m.method != kDeflated) {
      fail(what, where + " uses compression method " + std::to_string(m.method) +
                     " (.npz members are stored or deflated)");
    }
    // Names as load_npz returns them (".npy" stripped) must be unique and non-empty:
    // "w" and "w.npy" would both be "w" (save_npz refuses both cases too).
    std::string key = m.name;
    if (key.ends_with(".npy")) key.resize(key.size() - 4);
    if (key.empty()) fail(what, where + " has an empty name");
    if (!names.insert(key).second) {
      fail(what, "duplicate " + where + " (names are compared without their '.npy')");
    }
    members.push_back(std::move(m));
  }
  if (p != cd_end) {
    fail(what, "corrupt central directory: " + std::to_string(count) + " entries take " +
                   std::to_string(p - cd_off) + " bytes, the end record says " +
                   std::to_string(cd_size));
  }

  // 3. Each member's local header and data, which lie before the central directory.
  NpzEntries out;
  for (const Member& m : members) {
    const std::string where = std::string(what) + ": member '" + printable(m.name) + "'";
    if (!fits(m.offset, 30, cd_off) || le(b, m.offset, 4) != kLocalSig) {
      fail(where, "no local header at offset " + std::to_string(m.offset));
    }
    const std::size_t off = m.offset, n = le(b, off + 26, 2), e = le(b, off + 28, 2);
    if (!fits(off + 30, n + e, cd_off)) fail(where, "truncated local header");
    if (b.substr(off + 30, n) != m.name) {
      fail(where, "the local header names it '" + printable(b.substr(off + 30, n)) + "'");
    }
    if (le(b, off + 8, 2) != m.method) fail(where, "local header and central directory disagree");
    const std::size_t data = off + 30 + n + e;
    if (!fits(data, m.csize, cd_off)) {
      fail(where, "truncated: " + std::to_string(m.csize) + " bytes at offset " +
                      std::to_string(data) + " run past the members' area");
    }
    std::string_view bytes = b.substr(data, m.csize);
    std::string inflated;
    if (m.method == kDeflated) {
      inflated = inflate_raw(bytes, m.usize, where);
      bytes = inflated;
    } else if (m.csize != m.usize) {
      fail(where, "stored with " + std::to_string(m.csize) + " bytes but its size is " +
                      std::to_string(m.usize));
    }
    if (const std::uint32_t crc = crc_of(bytes); crc != m.crc) {
      fail(what, "CRC mismatch in member '" + printable(m.name) + "' (the archive says " +
                     hex32(static_cast<std::uint32_t>(m.crc)) + ", the data has " + hex32(crc) +
                     "): the file is corrupt");
    }
    std::string name = m.name;
    if (name.ends_with(".npy")) name.resize(name.size() - 4);
    out.emplace_back(std::move(name), parse_npy(bytes, where));
  }
  return out;
}

std::string to_npz_bytes(const NpzEntries& entries, bool compress) {
  // Every member gets zip64 sizes and offset (as numpy's force_zip64 does), and the
  // archive a zip64 end record: one layout for all sizes, read by numpy and unzip.
  // Times are fixed at 1980-01-01 00:00, so equal tensors give equal bytes.
  constexpr u64 kVersion = 45, kMadeBy = (3 << 8) | kVersion, kDate = (1 << 5) | 1;
  std::set<std::string> names;
  std::string out, cd;
  for (const auto& [name, t] : entries) {
    const std::string fname = name + ".npy";
    if (name.empty() || fname.size() > kMax16 || !names.insert(name).second) {
      throw ValueError("save_npz: the member name '" + printable(name) +
                       "' is empty, too long or used twice");
    }
    if (!t.defined()) throw ValueError("save_npz: the tensor '" + name + "' is undefined");
    std::string data = to_npy_bytes(t);
    const u64 usize = data.size(), crc = crc_of(data), offset = out.size();
    if (compress) data = deflate_raw(data);
    const u64 flags = std::any_of(fname.begin(), fname.end(), [](char c) { return c & 0x80; })
                          ? 0x800  // UTF-8 name
                          : 0;
    const u64 method = compress ? kDeflated : kStored;

    put_le(out, kLocalSig, 4);
    put_le(out, kVersion, 2);
    put_le(out, flags, 2);
    put_le(out, method, 2);
    put_le(out, 0, 2);  // time
    put_le(out, kDate, 2);
    put_le(out, crc, 4);
    put_le(out, kMax32, 4);  // sizes: in the zip64 extra field
    put_le(out, kMax32, 4);
    put_le(out, fname.size(), 2);
    put_le(out, 20, 2);  // extra field length
    out += fname;
    put_le(out, 1, 2);  // zip64 extra: sizes
    put_le(out, 16, 2);
    put_le(out, usize, 8);
    put_le(out, data.size(), 8);
    out += data;

    put_le(cd, kCentralSig, 4);
    put_le(cd, kMadeBy, 2);
    put_le(cd, kVersion, 2);
    put_le(cd, flags, 2);
    put_le(cd, method, 2);
    put_le(cd, 0, 2);
    put_le(cd, kDate, 2);
    put_le(cd, crc, 4);
    put_le(cd, kMax32, 4);
    put_le(cd, kMax32, 4);
    put_le(cd, fname.size(), 2);
    put_le(cd, 28, 2);           // extra field length
    put_le(cd, 0, 2);            // comment length
    put_le(cd, 0, 2);            // disk
    put_le(cd, 0, 2);            // internal attributes
    put_le(cd, 0644u << 16, 4);  // external attributes: a Unix rw-r--r-- file
    put_le(cd, kMax32, 4);       // offset: in the zip64 extra field
    cd += fname;
    put_le(cd, 1, 2);  // zip64 extra: sizes and offset
    put_le(cd, 24, 2);
    put_le(cd, usize, 8);
    put_le(cd, data.size(), 8);
    put_le(cd, offset, 8);
  }
  const u64 n = entries.size(), cd_off = out.size(), cd_size = cd.size();
  out += cd;
  const u64 end64 = out.size();
  put_le(out, kEnd64Sig, 4);
  put_le(out, 44, 8);  // size of the rest of this record
  put_le(out, kMadeBy, 2);
  put_le(out, kVersion, 2);
  put_le(out, 0, 4);  // this disk
  put_le(out, 0, 4);  // the disk of the central directory
  put_le(out, n, 8);
  put_le(out, n, 8);
  put_le(out, cd_size, 8);
  put_le(out, cd_off, 8);
  put_le(out, kLocator64Sig, 4);
  put_le(out, 0, 4);
  put_le(out, end64, 8);
  put_le(out, 1, 4);  // number of disks
  put_le(out, kEndSig, 4);
  put_le(out, 0, 4);  // disk numbers
  put_le(out, std::min(n, kMax16), 2);
  put_le(out, std::min(n, kMax16), 2);
  put_le(out, std::min(cd_size, kMax32), 4);
  put_le(out, std::min(cd_off, kMax32), 4);
  put_le(out, 0, 2);  // comment length
  return out;
}

NpzEntries load_npz(const std::string& path) {
  return parse_npz(read_file(path), path);
}

void save_npz(const std::string& path, const NpzEntries& entries, bool compress) {
  write_file_atomic(path, to_npz_bytes(entries, compress));
}

// ============================================================================
// files
// ============================================================================

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "cannot read: " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "cannot read: it is a folder");
  // One byte more than the size, so that reading the end needs no reallocation.
  std::string out(S_ISREG(st.st_mode) ? static_cast<std::size_t>(st.st_size) + 1 : 1 << 16, '\0');
  std::size_t len = 0;
  for (;;) {
    if (len == out.size()) out.resize(2 * out.size());
    const ssize_t got = ::read(fd, out.data() + len, out.size() - len);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path, "cannot read: " + errno_text(errno));
    if (got == 0) break;
    len += static_cast<std::size_t>(got);
  }
  out.resize(len);
  return out;
}

namespace {

// Fault injection for the crash tests (tests/crash/kill_and_resume.cpp; docs/files.md,
// "Crash safety"). MINITRAX_TEST_KILL_IN_WRITE="N" or "N:PART" makes the N-th atomic
// write of this process (counting only paths containing PART, if given) SIGKILL the
// process after writing half of its temporary file, before the rename;
// MINITRAX_TEST_KILL_AFTER_WRITE does the same right after the rename. Unset (always,
// outside the tests), this costs one getenv per variable per process.
struct KillHook {
  long n = 0;        // 0: off
  std::string part;  // only paths containing this count
  std::atomic<long> seen{0};
  explicit KillHook(const char* var) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') return;
    const std::string s(v);
    const std::size_t colon = s.find(':');
    n = std::atol(s.substr(0, colon).c_str());
    if (colon != std::string::npos) part = s.substr(colon + 1);
  }
  bool fires(const std::string& path) {
    if (n <= 0 || path.find(part) == std::string::npos) return false;
    return ++seen == n;
  }
};

KillHook& kill_in_write() {
  static KillHook hook("MINITRAX_TEST_KILL_IN_WRITE");
  return hook;
}
KillHook& kill_after_write() {
  static KillHook hook("MINITRAX_TEST_KILL_AFTER_WRITE");
  return hook;
}

}  // namespace

void write_file_atomic(const std::string& path, std::string_view bytes) {
  static std::atomic<unsigned> serial{0};
  const bool die_midway = kill_in_write().fires(path);
  const std::string tmp =
      path + ".minitrax-tmp." + std::to_string(::getpid()) + "." + std::to_string(serial++);
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) folder = ".";

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) fail(path, "cannot write: the folder '" + folder + "' does not exist");
    fail(path, "cannot create the temporary file '" + tmp + "': " + errno_text(e));
  }
  std::string error;
  const std::size_t to_write = die_midway ? bytes.size() / 2 : bytes.size();
  for (std::size_t done = 0; done < to_write && error.empty();) {
    const ssize_t put = ::write(fd, bytes.data() + done, to_write - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0)
      error = "cannot write '" + tmp + "': " + errno_text(put < 0 ? errno : EIO);
    else
      done += static_cast<std::size_t>(put);
  }
  if (die_midway) ::raise(SIGKILL);  // the test hook: killed halfway through the temporary
  if (error.empty() && ::fsync(fd) != 0) error = "cannot sync '" + tmp + "': " + errno_text(errno);
  if (::close(fd) != 0 && error.empty()) error = "cannot close '" + tmp + "': " + errno_text(errno);
  if (error.empty() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    error = "cannot rename '" + tmp + "' to it: " + errno_text(errno);
  }
  if (!error.empty()) {
    ::unlink(tmp.c_str());
    fail(path, error);
  }
  if (kill_after_write().fires(path)) ::raise(SIGKILL);  // the test hook: just renamed
  // Make the rename itself durable (best effort: not every file system syncs folders).
  if (const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    if (::fsync(dir) != 0) { /* the data is safe; only the rename may not be durable yet */
    }
    ::close(dir);
  }
}

}  // namespace minitrax::core
