// tests/svg_check.hpp: checks of an SVG file independent of the code that wrote it
// (tests/test_plot.cpp and the svg_check program): it is well-formed XML with an <svg>
// root, every <text> lies inside the image (its width estimated from its length), and
// rsvg-convert (Debian's librsvg2-bin) renders it to a PNG that is neither blank nor
// inked at its outermost pixels (which is where clipped text or lines would show).
#pragma once

#include <zlib.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace svgcheck {

struct Element {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::string text;  // character data directly inside
  int parent = -1;
};

// ---- a small, strict XML parser (elements, attributes, text, comments, prolog) ----
class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  std::vector<Element> parse() {
    std::vector<int> open;
    bool root_seen = false;
    while (i_ < s_.size()) {
      if (s_[i_] != '<') {
        std::string t = text_until('<');
        if (open.empty()) {
          if (t.find_first_not_of(" \t\r\n") != std::string::npos) fail("text outside the root");
        } else {
          out_[static_cast<std::size_t>(open.back())].text += t;
        }
        continue;
      }
      if (starts("<?")) {
        skip_past("?>");
      } else if (starts("<!--")) {
        skip_past("-->");
      } else if (starts("<![CDATA[")) {
        if (open.empty()) fail("CDATA outside the root");
        const std::size_t b = i_ + 9;
        skip_past("]]>");
        out_[static_cast<std::size_t>(open.back())].text += s_.substr(b, i_ - 3 - b);
      } else if (starts("<!")) {
        skip_past(">");
      } else if (starts("</")) {
        i_ += 2;
        const std::string n = name();
        spaces();
        expect('>');
        if (open.empty() || out_[static_cast<std::size_t>(open.back())].name != n) {
          fail("closing tag </" + n + "> does not match the open element");
        }
        open.pop_back();
      } else {
        ++i_;
        if (root_seen && open.empty()) fail("a second root element");
        Element e;
        e.name = name();
        e.parent = open.empty() ? -1 : open.back();
        for (;;) {
          const bool sp = spaces();
          if (starts("/>") || starts(">")) break;
          if (!sp) fail("expected a space before an attribute");
          const std::string a = name();
          spaces();
          expect('=');
          spaces();
          const char q = s_[i_];
          if (q != '"' && q != '\'') fail("attribute " + a + " is not quoted");
          ++i_;
          std::string v = text_until(q);
          if (v.find('<') != std::string::npos) fail("'<' in attribute " + a);
          expect(q);
          if (!e.attrs.emplace(a, v).second) fail("attribute " + a + " given twice");
        }
        out_.push_back(e);
        root_seen = true;
        if (starts("/>")) {
          i_ += 2;
        } else {
          ++i_;
          open.push_back(static_cast<int>(out_.size()) - 1);
        }
      }
    }
    if (!open.empty())
      fail("element <" + out_[static_cast<std::size_t>(open.back())].name + "> not closed");
    if (out_.empty()) fail("no root element");
    if (out_[0].name != "svg") fail("the root element is <" + out_[0].name + ">, not <svg>");
    return out_;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("XML error at byte " + std::to_string(i_) + ": " + what);
  }
  bool starts(const char* p) const {
    return s_.compare(i_, std::char_traits<char>::length(p), p) == 0;
  }
  void skip_past(const char* p) {
    const std::size_t k = s_.find(p, i_);
    if (k == std::string::npos) fail(std::string("missing ") + p);
    i_ = k + std::char_traits<char>::length(p);
  }
  void expect(char c) {
    if (i_ >= s_.size() || s_[i_] != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool spaces() {
    const std::size_t b = i_;
    while (i_ < s_.size() && std::string(" \t\r\n").find(s_[i_]) != std::string::npos) ++i_;
    return i_ > b;
  }
  std::string name() {
    const std::size_t b = i_;
    auto ok = [](char c, bool first) {
      return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
             (!first && (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.'));
    };
    while (i_ < s_.size() && ok(s_[i_], i_ == b)) ++i_;
    if (i_ == b) fail("expected a name");
    return s_.substr(b, i_ - b);
  }
  // Character data up to `stop`, entities decoded (only XML's five and &#...;).
  std::string text_until(char stop) {
    std::string t;
    while (i_ < s_.size() && s_[i_] != stop) {
      if (s_[i_] == '&') {
        const std::size_t e = s_.find(';', i_);
        if (e == std::string::npos) fail("unterminated entity");
        const std::string ent = s_.substr(i_ + 1, e - i_ - 1);
        static const std::map<std::string, std::string> known = {
            {"lt", "<"}, {"gt", ">"}, {"amp", "&"}, {"quot", "\""}, {"apos", "'"}};
        if (known.count(ent)) {
          t += known.at(ent);
        } else if (ent.size() > 1 && ent[0] == '#') {
          t += "?";  // a character reference: one character
        } else {
          fail("unknown entity &" + ent + ";");
        }
        i_ = e + 1;
      } else {
        t += s_[i_++];
      }
    }
    if (stop != '<' && i_ >= s_.size()) fail("unterminated attribute value");
    return t;
  }
  const std::string& s_;
  std::size_t i_ = 0;
  std::vector<Element> out_;
};

inline std::vector<Element> parse_xml(const std::string& text) {
  return Parser(text).parse();
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---- geometry ----
using Affine = std::array<double, 6>;  // x' = a x + c y + e, y' = b x + d y + f

inline Affine compose(const Affine& m, const Affine& n) {  // m then... m * n (n applied first)
  return {m[0] * n[0] + m[2] * n[1],        m[1] * n[0] + m[3] * n[1],
          m[0] * n[2] + m[2] * n[3],        m[1] * n[2] + m[3] * n[3],
          m[0] * n[4] + m[2] * n[5] + m[4], m[1] * n[4] + m[3] * n[5] + m[5]};
}

inline std::vector<double> numbers(const std::string& s) {
  std::vector<double> out;
  std::string t = s;
  for (char& c : t) {
    if (c == ',') c = ' ';
  }
  std::istringstream in(t);
  double v;
  while (in >> v) out.push_back(v);
  return out;
}

// translate(...) rotate(...) scale(...) matrix(...), applied right to left as SVG does.
inline Affine parse_transform(const std::string& s) {
  Affine m{1, 0, 0, 1, 0, 0};
  std::size_t i = 0;
  while (true) {
    const std::size_t open = s.find('(', i);
    if (open == std::string::npos) break;
    const std::size_t close = s.find(')', open);
    if (close == std::string::npos) throw std::runtime_error("bad transform '" + s + "'");
    std::string fn = s.substr(i, open - i);
    fn.erase(0, fn.find_first_not_of(" ,\t\n"));
    fn.erase(fn.find_last_not_of(" \t\n") + 1);
    const std::vector<double> a = numbers(s.substr(open + 1, close - open - 1));
    Affine t{1, 0, 0, 1, 0, 0};
    if (fn == "translate" && !a.empty()) {
      t = {1, 0, 0, 1, a[0], a.size() > 1 ? a[1] : 0};
    } else if (fn == "scale" && !a.empty()) {
      t = {a[0], 0, 0, a.size() > 1 ? a[1] : a[0], 0, 0};
    } else if (fn == "rotate" && !a.empty()) {
      const double r = a[0] * M_PI / 180, c = std::cos(r), sn = std::sin(r);
      t = {c, sn, -sn, c, 0, 0};
      if (a.size() == 3) {
        t = compose(compose(Affine{1, 0, 0, 1, a[1], a[2]}, t), Affine{1, 0, 0, 1, -a[1], -a[2]});
      }
    } else if (fn == "matrix" && a.size() == 6) {
      t = {a[0], a[1], a[2], a[3], a[4], a[5]};
    } else {
      throw std::runtime_error("unsupported transform '" + s + "'");
    }
    m = compose(m, t);
    i = close + 1;
  }
  return m;
}

struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

inline Box view_box(const std::vector<Element>& doc) {
  const auto& a = doc[0].attrs;
  if (a.count("viewBox")) {
    const std::vector<double> v = numbers(a.at("viewBox"));
    if (v.size() == 4) return {v[0], v[1], v[0] + v[2], v[1] + v[3]};
  }
  if (!a.count("width") || !a.count("height")) {
    throw std::runtime_error("the <svg> has neither a viewBox nor width and height");
  }
  return {0, 0, std::atof(a.at("width").c_str()), std::atof(a.at("height").c_str())};
}

// An attribute of the element or its nearest ancestor that has it.
inline std::string inherited(const std::vector<Element>& doc, int k, const std::string& name,
                             const std::string& fallback) {
  for (; k >= 0; k = doc[static_cast<std::size_t>(k)].parent) {
    const auto& a = doc[static_cast<std::size_t>(k)].attrs;
    if (a.count(name)) return a.at(name);
  }
  return fallback;
}

// A width estimate of text in a sans-serif font, per class of character (em: lowercase
// 0.6, uppercase and digits 0.68, wide letters and % 0.95, narrow ones and punctuation
// 0.34; bold 10% more), a code point beyond ASCII 1 em.
inline double estimate_width(const std::string& text, double size, bool bold) {
  double em = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) == 0x80) continue;
    if (c >= 0x80 || c == 'm' || c == 'w' || c == 'M' || c == 'W' || c == '%') {
      em += 0.95;
    } else if (std::string_view("iljftr.,;:' |()[]!-/").find(char(c)) != std::string_view::npos) {
      em += 0.34;
    } else if (std::islower(c)) {
      em += 0.6;
    } else {
      em += 0.68;
    }
  }
  return em * size * (bold ? 1.1 : 1.0);
}

// Each <text> whose estimated box leaves the view box, described.
inline std::vector<std::string> texts_outside(const std::vector<Element>& doc) {
  const Box vb = view_box(doc);
  std::vector<std::string> bad;
  for (std::size_t k = 0; k < doc.size(); ++k) {
    const Element& e = doc[k];
    if (e.name != "text") continue;
    const int ki = static_cast<int>(k);
    const double size = std::atof(inherited(doc, ki, "font-size", "16").c_str());
    const std::string anchor = inherited(doc, ki, "text-anchor", "start");
    const bool bold = inherited(doc, ki, "font-weight", "normal") == "bold";
    const double w = estimate_width(e.text, size, bold);
    const double x = std::atof(e.attrs.count("x") ? e.attrs.at("x").c_str() : "0");
    const double y = std::atof(e.attrs.count("y") ? e.attrs.at("y").c_str() : "0");
    const double left = anchor == "middle" ? x - w / 2 : anchor == "end" ? x - w : x;
    Affine m{1, 0, 0, 1, 0, 0};
    for (int p = ki; p >= 0; p = doc[static_cast<std::size_t>(p)].parent) {
      const auto& a = doc[static_cast<std::size_t>(p)].attrs;
      if (a.count("transform")) m = compose(parse_transform(a.at("transform")), m);
    }
    for (const auto& [cx, cy] : {std::pair{left, y - 0.76 * size},
                                 {left + w, y - 0.76 * size},
                                 {left, y + 0.24 * size},
                                 {left + w, y + 0.24 * size}}) {
      const double X = m[0] * cx + m[2] * cy + m[4], Y = m[1] * cx + m[3] * cy + m[5];
      if (X < vb.x0 - 0.5 || X > vb.x1 + 0.5 || Y < vb.y0 - 0.5 || Y > vb.y1 + 0.5) {
        char buf[96];
        std::snprintf(buf, sizeof buf, " reaches (%.1f, %.1f), outside the view box %gx%g", X, Y,
                      vb.x1 - vb.x0, vb.y1 - vb.y0);
        bad.push_back("text '" + e.text + "'" + buf);
        break;
      }
    }
  }
  return bad;
}

// ---- PNG (8-bit RGB or RGBA, not interlaced: what rsvg-convert writes) ----
struct Image {
  int width = 0, height = 0;
  std::vector<std::array<std::uint8_t, 4>> px;  // RGBA, row by row
};

inline Image read_png(const std::string& path) {
  const std::string d = read_text(path);
  auto u32 = [&](std::size_t at) {
    return (std::uint32_t(std::uint8_t(d[at])) << 24) |
           (std::uint32_t(std::uint8_t(d[at + 1])) << 16) |
           (std::uint32_t(std::uint8_t(d[at + 2])) << 8) | std::uint32_t(std::uint8_t(d[at + 3]));
  };
  if (d.size() < 8 || d.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    throw std::runtime_error(path + " is not a PNG");
  }
  Image img;
  int channels = 0;
  std::string idat;
  for (std::size_t at = 8; at + 8 <= d.size();) {
    const std::uint32_t len = u32(at);
    const std::string type = d.substr(at + 4, 4);
    if (at + 12 + len > d.size()) throw std::runtime_error(path + ": truncated chunk " + type);
    if (type == "IHDR") {
      img.width = static_cast<int>(u32(at + 8));
      img.height = static_cast<int>(u32(at + 12));
      const int depth = std::uint8_t(d[at + 16]), color = std::uint8_t(d[at + 17]);
      if (depth != 8 || (color != 2 && color != 6) || d[at + 20] != 0) {
        throw std::runtime_error(path + ": only 8-bit RGB(A), non-interlaced PNGs are read");
      }
      channels = color == 6 ? 4 : 3;
    } else if (type == "IDAT") {
      idat += d.substr(at + 8, len);
    }
    at += 12 + len;
  }
  if (channels == 0 || img.width <= 0 || img.height <= 0)
    throw std::runtime_error(path + ": no IHDR");
  const std::size_t stride = static_cast<std::size_t>(img.width) * channels;
  std::vector<std::uint8_t> raw((stride + 1) * static_cast<std::size_t>(img.height));
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) !=
          Z_OK ||
      raw_len != raw.size()) {
    throw std::runtime_error(path + ": bad image data");
  }
  std::vector<std::uint8_t> prev(stride, 0), cur(stride);
  img.px.reserve(static_cast<std::size_t>(img.width) * img.height);
  for (int r = 0; r < img.height; ++r) {
    const std::uint8_t* row = raw.data() + static_cast<std::size_t>(r) * (stride + 1);
    const int filter = row[0];
    for (std::size_t i = 0; i < stride; ++i) {
      const int a = i >= static_cast<std::size_t>(channels) ? cur[i - channels] : 0;
      const int b = prev[i];
      const int c = i >= static_cast<std::size_t>(channels) ? prev[i - channels] : 0;
      int pred = 0;
      switch (filter) {
        case 0:
          pred = 0;
          break;
        case 1:
          pred = a;
          break;
        case 2:
          pred = b;
          break;
        case 3:
          pred = (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          pred = (pa <= pb && pa <= pc) ? a : pb <= pc ? b : c;
          break;
        }
        default:
          throw std::runtime_error(path + ": bad filter type");
      }
      cur[i] = static_cast<std::uint8_t>(row[1 + i] + pred);
    }
    for (int x = 0; x < img.width; ++x) {
      const std::uint8_t* p = cur.data() + static_cast<std::size_t>(x) * channels;
      img.px.push_back({p[0], p[1], p[2], channels == 4 ? p[3] : std::uint8_t(255)});
    }
    std::swap(prev, cur);
  }
  return img;
}

// Not background: neither transparent nor (nearly) white.
inline bool inked(const std::array<std::uint8_t, 4>& p) {
  return p[3] > 32 && (p[0] < 235 || p[1] < 235 || p[2] < 235);
}

struct Ink {
  double fraction = 0;   // of all pixels
  long edge_pixels = 0;  // inked pixels in the outermost row or column
};

inline Ink ink(const Image& img) {
  Ink out;
  long n = 0;
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x) {
      if (!inked(img.px[static_cast<std::size_t>(y) * img.width + x])) continue;
      ++n;
      if (x == 0 || y == 0 || x == img.width - 1 || y == img.height - 1) ++out.edge_pixels;
    }
  }
  out.fraction = static_cast<double>(n) / (static_cast<double>(img.width) * img.height);
  return out;
}

// Pixels within `tol` of an RGB colour.
inline long count_color(const Image& img, int r, int g, int b, int tol = 24) {
  long n = 0;
  for (const auto& p : img.px) {
    if (std::abs(p[0] - r) <= tol && std::abs(p[1] - g) <= tol && std::abs(p[2] - b) <= tol) ++n;
  }
  return n;
}

// Renders with rsvg-convert (its path given); throws when it fails.
inline Image render(const std::string& rsvg, const std::string& svg_path,
                    const std::string& png_path) {
  const std::string cmd = "'" + rsvg + "' -o '" + png_path + "' '" + svg_path + "' 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + rsvg);
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int status = ::pclose(p);
  if (status != 0) throw std::runtime_error("rsvg-convert failed on " + svg_path + ": " + out);
  // Output with status 0 is no failure: fontconfig may warn about its cache, say.
  return read_png(png_path);
}

// Every problem found with one SVG file (empty: none). With an empty `rsvg` only the
// XML and text checks run.
inline std::vector<std::string> check_file(const std::string& svg_path, const std::string& rsvg,
                                           const std::string& png_path) {
  std::vector<std::string> problems;
  try {
    const std::vector<Element> doc = parse_xml(read_text(svg_path));
    for (const std::string& t : texts_outside(doc)) problems.push_back(svg_path + ": " + t);
    if (!rsvg.empty()) {
      const Image img = render(rsvg, svg_path, png_path);
      const Ink k = ink(img);
      if (k.fraction < 0.005) {
        problems.push_back(svg_path + ": renders (nearly) blank: " +
                           std::to_string(k.fraction * 100) + "% of the pixels inked");
      }
      if (k.edge_pixels > 0) {
        problems.push_back(svg_path + ": " + std::to_string(k.edge_pixels) +
                           " inked pixels on the image's edge (something is clipped)");
      }
    }
  } catch (const std::exception& e) {
    problems.push_back(svg_path + ": " + e.what());
  }
  return problems;
}

}  // namespace svgcheck
