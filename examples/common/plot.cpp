// examples/common/plot.cpp
#include "common/plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "core/error.hpp"

namespace minitrax::plot {

namespace {

constexpr double kFont = 12;       // ticks, legend, labels
constexpr double kTitleFont = 14;  // the title
constexpr double kPad = 8;         // space kept free at the image's edges
constexpr double kInset = 5;       // between a line chart's frame and its axes' ends
const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
const char* const kBarColor = "#7fa7cf";
const char* const kGrid = "#e6e6e6";
const char* const kFrame = "#888";

// A coordinate for the SVG text: one decimal is plenty at screen resolution.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::abs(v) < 0.05 ? 0.0 : v);
  return buf;
}

// 10^e exactly for the tick values: 3 * 10^-1 as 3 / 10 (= 0.3, not 0.30000000000000004).
double times_pow10(double m, int e) {
  return e >= 0 ? m * std::pow(10.0, e) : m / std::pow(10.0, -e);
}

// The 1-2-5 step (as mantissa and exponent) for covering `span` with at most `max_ticks`
// ticks: the smallest of 1, 2, 5 x 10^k with span / step + 1 <= max_ticks.
void nice_step(double span, int max_ticks, double& mant, int& exp10) {
  const double raw = span / std::max(1, max_ticks - 1);
  exp10 = static_cast<int>(std::floor(std::log10(raw)));
  for (int tries = 0; tries < 4; ++tries, ++exp10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double step = times_pow10(m, exp10);
      if (step >= raw * (1 - 1e-9)) {
        mant = m;
        return;
      }
    }
  }
  mant = 1;  // not reached: 10^(floor(log10 raw) + 1) > raw
}

void require_range(const char* what, double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi) {
    throw ValueError(std::string(what) + ": expected finite lo <= hi, got [" + tick_label(lo) +
                     ", " + tick_label(hi) + "]");
  }
}

// The per-character advance widths of DejaVu Sans (rsvg's "sans-serif" on Debian) in
// thousandths of an em, rounded up.
double advance(unsigned char c) {
  static const short lower[26] = {614, 635, 551, 635, 616, 353, 635, 634, 278, 278, 580, 278, 974,
                                  634, 613, 635, 635, 412, 522, 393, 634, 592, 818, 592, 592, 526};
  static const short upper[26] = {685, 687, 699, 771, 633, 576, 776, 753, 296, 296, 657, 558, 864,
                                  749, 788, 604, 788, 696, 636, 612, 733, 685, 990, 686, 612, 686};
  if (c >= 'a' && c <= 'z') return lower[c - 'a'];
  if (c >= 'A' && c <= 'Z') return upper[c - 'A'];
  if (c >= '0' && c <= '9') return 637;
  switch (c) {
    case ' ':
      return 318;
    case '.':
    case ',':
    case ':':
    case ';':
    case '!':
    case '\'':
    case '|':
      return 337;
    case '-':
      return 361;
    case '(':
    case ')':
    case '[':
    case ']':
    case '{':
    case '}':
      return 391;
    case '/':
    case '\\':
      return 337;
    case '%':
      return 951;
    case '@':
      return 1000;
    case '&':
      return 781;
    case '#':
    case '+':
    case '=':
    case '<':
    case '>':
    case '~':
      return 838;
    case '"':
      return 461;
    case '*':
      return 500;
    case '_':
      return 500;
    default:
      return 1000;
  }
}

// Bold DejaVu Sans is at most 15% wider than the book weight.
double bold_width(std::string_view text, double font_size) {
  return 1.15 * text_width(text, font_size);
}

// A point of a series as drawn: finite, and positive on a log axis.
bool drawable(double x, double y, Scale xs, Scale ys) {
  if (!std::isfinite(x) || !std::isfinite(y)) return false;
  if (xs == Scale::log && x <= 0) return false;
  if (ys == Scale::log && y <= 0) return false;
  return true;
}

// Maps data values to pixels along one axis ([p0, p1] is lo..hi; p1 < p0 for y).
struct Mapper {
  Axis axis;
  double p0, p1;
  double operator()(double v) const {
    double f;
    if (axis.scale == Scale::log) {
      f = (std::log10(v) - std::log10(axis.lo)) / (std::log10(axis.hi) - std::log10(axis.lo));
    } else {
      f = (v - axis.lo) / (axis.hi - axis.lo);
    }
    return p0 + f * (p1 - p0);
  }
};

// The axis over the data range [lo, hi] (no data: lo > hi) with optional fixed ends.
Axis make_axis(Scale scale, double lo, double hi, std::optional<double> fixed_lo,
               std::optional<double> fixed_hi, int max_ticks) {
  if (scale == Scale::log) {
    if (fixed_lo && *fixed_lo <= 0) fixed_lo.reset();
    if (fixed_hi && *fixed_hi <= 0) fixed_hi.reset();
  }
  if (lo > hi) {  // no data
    lo = scale == Scale::log ? 1 : 0;
    hi = scale == Scale::log ? 10 : 1;
  }
  if (fixed_lo) lo = std::min(*fixed_lo, hi);
  if (fixed_hi) hi = std::max(*fixed_hi, lo);
  if (fixed_lo && fixed_hi && *fixed_lo < *fixed_hi) {
    lo = *fixed_lo;
    hi = *fixed_hi;
    Axis a{scale, lo, hi, {}};
    a.ticks = scale == Scale::log ? log_ticks(lo, hi, max_ticks) : linear_ticks(lo, hi, max_ticks);
    return a;
  }
  Axis a = scale == Scale::log ? log_axis(lo, hi, max_ticks) : linear_axis(lo, hi, max_ticks);
  // A fixed end stays where it was asked to be (e.g. step 0); the ticks are kept inside.
  if (fixed_lo && *fixed_lo < a.hi) a.lo = *fixed_lo;
  if (fixed_hi && *fixed_hi > a.lo) a.hi = *fixed_hi;
  a.ticks =
      scale == Scale::log ? log_ticks(a.lo, a.hi, max_ticks) : linear_ticks(a.lo, a.hi, max_ticks);
  return a;
}

struct Svg {
  std::ostringstream os;
  void text(double x, double y, std::string_view s, const char* anchor = "start",
            double size = kFont, const char* extra = "") {
    os << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\"";
    if (std::string_view(anchor) != "start") os << " text-anchor=\"" << anchor << "\"";
    if (size != kFont) os << " font-size=\"" << size << "\"";
    os << extra << ">" << xml_escape(s) << "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const char* extra = "") {
    os << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\""
       << num(y2) << "\" stroke=\"" << stroke << "\"";
    if (width != 1) os << " stroke-width=\"" << width << "\"";
    os << extra << "/>\n";
  }
  void rect(double x, double y, double w, double h, const std::string& fill,
            const char* extra = "") {
    os << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(w) << "\" height=\""
       << num(h) << "\" fill=\"" << fill << "\"" << extra << "/>\n";
  }
  void open(double w, double h) {
    os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
       << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(w) << "\" height=\"" << num(h)
       << "\" viewBox=\"0 0 " << num(w) << " " << num(h)
       << "\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"" << kFont << "\">\n";
    rect(0, 0, w, h, "white");
  }
};

const char* kDash = " stroke-dasharray=\"6,4\"";

// The legend sample of a series: a short line (dashed or solid) with a dot.
void legend_sample(Svg& svg, double x, double baseline, const Series& s, const std::string& color) {
  const double y = baseline - 4;
  if (s.line) svg.line(x, y, x + 24, y, color, 2, s.dashed ? kDash : "");
  if (s.markers || !s.line) {
    svg.os << "<circle cx=\"" << num(x + 12) << "\" cy=\"" << num(y) << "\" r=\"3.5\" fill=\""
           << color << "\"/>\n";
  }
}

}  // namespace

Series Series::train(std::string name, std::vector<double> x, std::vector<double> y,
                     std::string color) {
  return Series{std::move(name), std::move(x), std::move(y), true, false, false, std::move(color)};
}

Series Series::eval(std::string name, std::vector<double> x, std::vector<double> y,
                    std::string color) {
  return Series{std::move(name), std::move(x), std::move(y), true, true, true, std::move(color)};
}

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

double text_width(std::string_view text, double font_size) {
  double em = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      // One code point: a lead byte and its continuation bytes.
      while (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) ++i;
      em += 1000;
    } else {
      em += advance(c);
    }
  }
  return em / 1000 * font_size;
}

std::string tick_label(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  const double a = std::abs(v);
  char buf[48];
  const int e = static_cast<int>(std::floor(std::log10(a) + 1e-9));
  if (a >= 1e4 && a < 1e6 && std::abs(v / 1000 - std::round(v / 1000)) < 1e-9) {
    std::snprintf(buf, sizeof buf, "%.0fk", v / 1000);
    return buf;
  }
  if (a < 0.01 || a >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.3g", v / std::pow(10.0, e));
    return std::string(buf) + "e" + std::to_string(e);
  }
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::vector<std::string> tick_labels(const Axis& axis, bool percent) {
  std::vector<std::string> out;
  if (percent) {
    // Fractions as percentages: 0.25 -> "25%" (rounded to hide 0.07 * 100 = 7.000000000000001).
    for (double t : axis.ticks) out.push_back(tick_label(std::round(t * 1e8) / 1e6) + "%");
    return out;
  }
  // On an axis that reaches 10000, every tick from 1000 up is written in thousands
  // (200, 500, 1k, 2k, 5k, 10k), else none is (1000, 2000, 3000).
  bool thousands = false;
  for (double t : axis.ticks) thousands |= std::abs(t) >= 1e4 && std::abs(t) < 1e6;
  for (double t : axis.ticks) {
    if (thousands && std::abs(t) >= 1000 && std::abs(t) < 1e6) {
      out.push_back(tick_label(std::round(t) / 1000) + "k");
    } else {
      out.push_back(tick_label(t));
    }
  }
  return out;
}

std::vector<double> linear_ticks(double lo, double hi, int max_ticks) {
  require_range("linear_ticks", lo, hi);
  if (max_ticks < 2) max_ticks = 2;
  if (lo == hi) return {lo};
  double m;
  int e;
  nice_step(hi - lo, max_ticks, m, e);
  // Ticks are n * m * 10^e for integer n; computed from the integer to keep them exact.
  const double step = times_pow10(m, e);
  const double tol = step * 1e-9;
  std::vector<double> out;
  // (At most max_ticks + 1 of them; the bound also ends the loop where n * m is beyond
  // a double's integers, a range narrower than the values' resolution.)
  const double first = std::ceil((lo - tol) / step);
  for (int k = 0; k <= max_ticks; ++k) {
    const double v = times_pow10((first + k) * m, e);
    if (v > hi + tol) break;
    if (!out.empty() && v <= out.back()) break;
    out.push_back(v == 0 ? 0.0 : v);  // no "-0"
  }
  return out;
}

std::vector<double> log_ticks(double lo, double hi, int max_ticks) {
  require_range("log_ticks", lo, hi);
  if (lo <= 0) {
    throw ValueError("log_ticks: expected a positive range, got [" + tick_label(lo) + ", " +
                     tick_label(hi) + "]");
  }
  if (max_ticks < 2) max_ticks = 2;
  const double tol = 1e-9;
  const int e0 = static_cast<int>(std::floor(std::log10(lo))) - 1;
  const int e1 = static_cast<int>(std::ceil(std::log10(hi))) + 1;
  auto inside = [&](double v) { return v >= lo * (1 - tol) && v <= hi * (1 + tol); };
  auto with = [&](std::initializer_list<double> mants, int every) {
    std::vector<double> out;
    for (int e = e0; e <= e1; ++e) {
      if (((e % every) + every) % every != 0) continue;
      for (double m : mants) {
        const double v = times_pow10(m, e);
        if (inside(v)) out.push_back(v);
      }
    }
    return out;
  };
  std::vector<double> t = with({1, 2, 5}, 1);
  if (static_cast<int>(t.size()) > max_ticks) {
    for (int every : {1, 2, 5, 10, 20, 50, 100}) {
      t = with({1}, every);
      if (static_cast<int>(t.size()) <= max_ticks) break;
    }
  } else if (t.size() < 3) {
    t = with({1, 2, 3, 4, 5, 6, 7, 8, 9}, 1);
    // Narrower still (within a factor of about 3): a log axis looks nearly linear
    // there, so linear 1-2-5 steps (2, 2.2, 2.4, ...).
    if (t.size() < 3) t = linear_ticks(lo, hi, max_ticks);
  }
  return t;
}

Axis linear_axis(double lo, double hi, int max_ticks) {
  require_range("linear_axis", lo, hi);
  if (lo == hi) {
    const double d = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  double m;
  int e;
  nice_step(hi - lo, max_ticks, m, e);
  const double step = times_pow10(m, e);
  Axis a;
  a.scale = Scale::linear;
  a.lo = times_pow10(std::floor(lo / step + 1e-9) * m, e);
  a.hi = times_pow10(std::ceil(hi / step - 1e-9) * m, e);
  a.ticks = linear_ticks(a.lo, a.hi, max_ticks + 1);
  return a;
}

Axis log_axis(double lo, double hi, int max_ticks) {
  require_range("log_axis", lo, hi);
  if (lo <= 0) {
    throw ValueError("log_axis: expected a positive range, got [" + tick_label(lo) + ", " +
                     tick_label(hi) + "]");
  }
  double a = std::log10(lo), b = std::log10(hi);
  if (b - a < 1e-9) {
    a -= std::log10(2.0);
    b += std::log10(2.0);
  } else {
    const double pad = std::max(0.03 * (b - a), 0.01);
    a -= pad;
    b += pad;
  }
  Axis out{Scale::log, std::pow(10.0, a), std::pow(10.0, b), {}};
  out.ticks = log_ticks(out.lo, out.hi, max_ticks);
  return out;
}

std::string line_chart_svg(const LineChart& chart) {
  if (chart.panels.empty()) throw ValueError("line_chart_svg: expected at least one panel, got 0");
  auto finite_end = [](const char* what, const std::optional<double>& v) {
    if (v && !std::isfinite(*v)) {
      throw ValueError(std::string("line_chart_svg: ") + what + " is " + tick_label(*v) +
                       "; expected a finite value or none");
    }
  };
  finite_end("x_min", chart.x_min);
  finite_end("x_max", chart.x_max);
  for (const Panel& p : chart.panels) {
    finite_end("a panel's y_min", p.y_min);
    finite_end("a panel's y_max", p.y_max);
    for (const Series& s : p.series) {
      if (!(s.smoothing >= 0 && s.smoothing < 1)) {
        throw ValueError("line_chart_svg: series '" + s.name + "' has smoothing " +
                         tick_label(s.smoothing) + "; expected a weight in [0, 1)");
      }
    }
  }
  if (!(chart.width >= 200) || !(chart.panel_height >= 60)) {
    throw ValueError("line_chart_svg: expected width >= 200 and panel_height >= 60, got " +
                     tick_label(chart.width) + " and " + tick_label(chart.panel_height));
  }
  for (const Panel& p : chart.panels) {
    for (const Series& s : p.series) {
      if (s.x.size() != s.y.size()) {
        throw ValueError("line_chart_svg: series '" + s.name + "' has " +
                         std::to_string(s.x.size()) + " x values and " +
                         std::to_string(s.y.size()) + " y values; expected as many of each");
      }
    }
  }
  const double W = chart.width, ph = chart.panel_height;
  // Linear ticks 30 px apart or more; log ticks (1, 2, 5: uneven) 22 px on average.
  const int y_ticks_max = std::max(3, static_cast<int>(ph / 30));
  const int y_log_ticks_max = std::max(3, static_cast<int>(ph / 22));

  // The data ranges, over drawable points only.
  const double inf = std::numeric_limits<double>::infinity();
  double x_lo = inf, x_hi = -inf;
  std::vector<Axis> y_axes;
  std::vector<std::vector<std::string>> y_labels;
  for (const Panel& p : chart.panels) {
    double lo = inf, hi = -inf;
    for (const Series& s : p.series) {
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!drawable(s.x[i], s.y[i], chart.x_scale, p.y_scale)) continue;
        x_lo = std::min(x_lo, s.x[i]);
        x_hi = std::max(x_hi, s.x[i]);
        lo = std::min(lo, s.y[i]);
        hi = std::max(hi, s.y[i]);
      }
    }
    y_axes.push_back(make_axis(p.y_scale, lo, hi, p.y_min, p.y_max,
                               p.y_scale == Scale::log ? y_log_ticks_max : y_ticks_max));
    y_labels.push_back(tick_labels(y_axes.back(), p.percent));
  }

  // Margins from the labels: left holds the widest y tick label, and half of the first
  // x tick label (centred on the left edge); right half of the last x tick label.
  double y_label_w = 0;
  for (const auto& labels : y_labels) {
    for (const std::string& t : labels) y_label_w = std::max(y_label_w, text_width(t, kFont));
  }
  double left = kPad + y_label_w + 6, right = kPad + 12;
  // X ticks: as many as fit with room for their labels.
  Axis xa;
  for (int max_x = 10;; --max_x) {
    const double pw = W - left - right;
    xa = make_axis(chart.x_scale, x_lo, x_hi, chart.x_min, chart.x_max, max_x);
    double widest = 0;
    for (const std::string& t : tick_labels(xa)) widest = std::max(widest, text_width(t, kFont));
    if (max_x <= 2 || (static_cast<double>(xa.ticks.size()) * (widest + 16) <= pw)) break;
  }
  const std::vector<std::string> x_labels = tick_labels(xa);
  {
    Mapper probe{xa, 0, 1};
    for (std::size_t i = 0; i < xa.ticks.size(); ++i) {
      const double half = text_width(x_labels[i], kFont) / 2;
      const double f = probe(xa.ticks[i]);  // 0 at the left edge of the data area, 1 at the right
      // The label's centre is at left + f * pw; keep [centre - half, centre + half] inside.
      const double pw = W - left - right;
      left = std::max(left, kPad + half - f * pw);
      right = std::max(right, kPad + half - (1 - f) * pw);
    }
  }
  const double pw = W - left - right;
  if (pw < 60)
    throw ValueError("line_chart_svg: width " + tick_label(W) + " leaves no room for data");

  // Each panel's header rows: its y label, then the legend entries, wrapping.
  struct Entry {
    const Series* s;
    std::string color, text;
    double x, row;
  };
  std::vector<std::vector<Entry>> legends;
  std::vector<int> header_rows;
  for (std::size_t k = 0; k < chart.panels.size(); ++k) {
    const Panel& p = chart.panels[k];
    std::vector<Entry> entries;
    double x = kPad + bold_width(p.y_label, kFont) + (p.y_label.empty() ? 0 : 24);
    int row = 0;
    for (std::size_t j = 0; j < p.series.size(); ++j) {
      const Series& s = p.series[j];
      long shown = 0, not_finite = 0, not_positive = 0;
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (drawable(s.x[i], s.y[i], chart.x_scale, p.y_scale)) {
          ++shown;
        } else if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
          ++not_finite;
        } else {
          ++not_positive;
        }
      }
      std::string text = s.name;
      if (s.smoothing > 0 && s.line && shown > 2) text += " (smoothed; faint: as recorded)";
      auto points = [](long n) { return std::to_string(n) + (n == 1 ? " point" : " points"); };
      if (shown == 0) {
        text += " (no data)";
      } else if (not_finite > 0 || not_positive > 0) {
        text += " (";
        if (not_finite > 0) text += points(not_finite) + " NaN or inf";
        if (not_finite > 0 && not_positive > 0) text += ", ";
        if (not_positive > 0) text += points(not_positive) + " <= 0 on a log axis";
        text += ", skipped)";
      }
      const double w = 24 + 6 + text_width(text, kFont);
      if (x + w > W - kPad && x > left) {
        ++row;
        x = left;
      }
      entries.push_back(
          {&s, s.color.empty() ? kPalette[j % 6] : s.color, text, x, static_cast<double>(row)});
      x += w + 18;
    }
    legends.push_back(std::move(entries));
    header_rows.push_back(row + 1);
  }

  Svg svg;
  std::ostringstream body;
  double y = kPad;
  if (!chart.title.empty()) y += 20;
  const double title_baseline = y - 4;
  std::vector<double> tops;
  for (std::size_t k = 0; k < chart.panels.size(); ++k) {
    y += 4 + 18 * header_rows[k] + 8;
    tops.push_back(y);
    y += ph + (k + 1 == chart.panels.size() ? 0 : 18);
  }
  const double axis_bottom = y;
  y += 18;  // x tick labels
  if (!chart.x_label.empty()) y += 18;
  const double H = y + kPad;

  svg.open(W, H);
  if (!chart.title.empty()) {
    // Centred on the image when it fits, else cut short (at a character boundary,
    // ending with an ellipsis) so that nothing is clipped.
    std::string title = chart.title;
    if (text_width(title, kTitleFont) + 2 * kPad > W) {
      const std::string ellipsis = "\xE2\x80\xA6";
      while (!title.empty() && text_width(title + ellipsis, kTitleFont) + 2 * kPad > W) {
        // One whole character: its continuation bytes, then its first byte.
        while (!title.empty() && (static_cast<unsigned char>(title.back()) & 0xC0) == 0x80) {
          title.pop_back();
        }
        if (!title.empty()) title.pop_back();
      }
      title += ellipsis;
    }
    svg.text(W / 2, title_baseline, title, "middle", kTitleFont);
  }
  // The axes' ends lie kInset px inside the frame, so that a point at an end (the last
  // evaluation, an accuracy of 100%) is not drawn on the frame.
  const Mapper px{xa, left + kInset, left + pw - kInset};
  for (std::size_t k = 0; k < chart.panels.size(); ++k) {
    const Panel& p = chart.panels[k];
    const double top = tops[k], bottom = top + ph;
    const Mapper py{y_axes[k], bottom - kInset, top + kInset};
    // Header: y label (and scale), legend.
    const double header_top = top - 8 - 18 * header_rows[k];
    if (!p.y_label.empty())
      svg.text(kPad, header_top + 13, p.y_label, "start", kFont, " font-weight=\"bold\"");
    for (const Entry& e : legends[k]) {
      const double baseline = header_top + 13 + 18 * e.row;
      legend_sample(svg, e.x, baseline, *e.s, e.color);
      svg.text(e.x + 30, baseline, e.text);
    }
    // Grid, ticks and frame.
    for (double t : xa.ticks) svg.line(px(t), top, px(t), bottom, kGrid);
    for (std::size_t i = 0; i < y_axes[k].ticks.size(); ++i) {
      const double t = y_axes[k].ticks[i];
      svg.line(left, py(t), left + pw, py(t), kGrid);
      svg.text(left - 5, py(t) + 4, y_labels[k][i], "end");
    }
    svg.rect(left, top, pw, ph, "none", (std::string(" stroke=\"") + kFrame + "\"").c_str());
    // The data, clipped to the data area widened by a marker's radius.
    svg.os << "<clipPath id=\"panel" << k << "\"><rect x=\"" << num(left - 5) << "\" y=\""
           << num(top - 5) << "\" width=\"" << num(pw + 10) << "\" height=\"" << num(ph + 10)
           << "\"/></clipPath>\n<g clip-path=\"url(#panel" << k << ")\">\n";
    bool any = false;
    for (std::size_t j = 0; j < p.series.size(); ++j) {
      const Series& s = p.series[j];
      const std::string& color = legends[k][j].color;
      std::ostringstream pts;
      std::vector<std::pair<double, double>> dots;
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!drawable(s.x[i], s.y[i], chart.x_scale, p.y_scale)) continue;
        dots.emplace_back(px(s.x[i]), py(s.y[i]));
        pts << (dots.size() > 1 ? " " : "") << num(dots.back().first) << ","
            << num(dots.back().second);
      }
      any |= !dots.empty();
      const bool smooth = s.smoothing > 0 && s.line && dots.size() > 2;
      if (s.line && dots.size() > 1) {
        svg.os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\""
               << (smooth ? "1\" stroke-opacity=\"0.3" : "1.8") << "\" stroke-linejoin=\"round\""
               << (s.dashed ? kDash : "") << " points=\"" << pts.str() << "\"/>\n";
      }
      if (smooth) {
        const bool lg = p.y_scale == Scale::log;
        double ema = 0, weight = 1;
        svg.os << "<polyline fill=\"none\" stroke=\"" << color
               << "\" stroke-width=\"2\" stroke-linejoin=\"round\"" << (s.dashed ? kDash : "")
               << " points=\"";
        bool first = true;
        for (std::size_t i = 0; i < s.x.size(); ++i) {
          if (!drawable(s.x[i], s.y[i], chart.x_scale, p.y_scale)) continue;
          ema = s.smoothing * ema + (1 - s.smoothing) * (lg ? std::log(s.y[i]) : s.y[i]);
          weight *= s.smoothing;
          const double v = ema / (1 - weight);
          svg.os << (first ? "" : " ") << num(px(s.x[i])) << "," << num(py(lg ? std::exp(v) : v));
          first = false;
        }
        svg.os << "\"/>\n";
      }
      // Markers; a lone point of a line series gets one too, or it would not show.
      if (s.markers || !s.line || dots.size() == 1) {
        for (const auto& [cx, cy] : dots) {
          svg.os << "<circle cx=\"" << num(cx) << "\" cy=\"" << num(cy) << "\" r=\"3.5\" fill=\""
                 << color << "\" stroke=\"white\" stroke-width=\"0.8\"/>\n";
        }
      }
    }
    svg.os << "</g>\n";
    if (!any)
      svg.text(left + pw / 2, top + ph / 2 + 4, "no data", "middle", kFont, " fill=\"#888\"");
  }
  for (std::size_t i = 0; i < xa.ticks.size(); ++i) {
    svg.text(px(xa.ticks[i]), axis_bottom + 15, x_labels[i], "middle");
  }
  if (!chart.x_label.empty()) {
    svg.text(left + pw / 2, axis_bottom + 33,
             chart.x_label + (chart.x_scale == Scale::log ? " (log scale)" : ""), "middle");
  }
  svg.os << "</svg>\n";
  return svg.os.str();
}

std::string bar_chart_svg(const BarChart& chart) {
  if (chart.bars.empty()) throw ValueError("bar_chart_svg: expected at least one bar, got 0");
  if (!(chart.height >= 60)) {
    throw ValueError("bar_chart_svg: expected height >= 60, got " + tick_label(chart.height));
  }
  auto value_text = [&](double v) {
    if (!std::isfinite(v)) return std::string("n/a");
    char buf[48];
    if (chart.percent) {
      std::snprintf(buf, sizeof buf, "%.2f%%", 100 * v);
    } else {
      std::snprintf(buf, sizeof buf, "%.4g", v);
    }
    return std::string(buf);
  };
  double lo = chart.y_min.value_or(0), hi = chart.y_max.value_or(chart.percent ? 1.0 : -1e300);
  for (const Bar& b : chart.bars) {
    if (!std::isfinite(b.value)) continue;
    lo = std::min(lo, b.value);
    hi = std::max(hi, b.value);
  }
  if (hi <= lo) hi = lo + 1;
  Axis ya = chart.y_min && chart.y_max && *chart.y_min < *chart.y_max
                ? Axis{Scale::linear, lo, hi, linear_ticks(lo, hi, 6)}
                : linear_axis(lo, hi, 6);
  const std::vector<std::string> labels = tick_labels(ya, chart.percent);
  double y_label_w = 0;
  for (const std::string& t : labels) y_label_w = std::max(y_label_w, text_width(t, kFont));
  double slot = 64;
  for (const Bar& b : chart.bars) {
    slot = std::max(slot, text_width(b.label, kFont) + 16);
    slot = std::max(slot, bold_width(value_text(b.value), kFont) + 12);
  }
  const double left = kPad + y_label_w + 6, right = kPad + 4;
  const double n = static_cast<double>(chart.bars.size());
  double W = left + n * slot + right;
  W = std::max({W, text_width(chart.title, kTitleFont) + 2 * kPad,
                1.1 * text_width(chart.note, kFont - 1) + 2 * kPad,
                bold_width(chart.y_label, kFont) + 2 * kPad, 320.0});
  const double pw = W - left - right;
  slot = pw / n;
  const double ph = chart.height;
  double y = kPad;
  if (!chart.title.empty()) y += 20;
  const double title_baseline = y - 4;
  const double header_baseline = y + 17;
  y += chart.y_label.empty() ? 8 : 26;
  const double top = y, bottom = top + ph;
  y = bottom + 20;  // bar labels
  const double note_baseline = y + 16;
  if (!chart.note.empty()) y += 20;
  const double H = y + kPad;

  Svg svg;
  svg.open(W, H);
  if (!chart.title.empty()) svg.text(W / 2, title_baseline, chart.title, "middle", kTitleFont);
  if (!chart.y_label.empty()) {
    svg.text(kPad, header_baseline, chart.y_label, "start", kFont, " font-weight=\"bold\"");
  }
  const Mapper py{ya, bottom, top};
  for (std::size_t i = 0; i < ya.ticks.size(); ++i) {
    svg.line(left, py(ya.ticks[i]), left + pw, py(ya.ticks[i]), kGrid);
    svg.text(left - 5, py(ya.ticks[i]) + 4, labels[i], "end");
  }
  const double base = py(std::clamp(0.0, ya.lo, ya.hi));
  for (std::size_t i = 0; i < chart.bars.size(); ++i) {
    const Bar& b = chart.bars[i];
    const double cx = left + slot * (static_cast<double>(i) + 0.5);
    const double bw = std::min(slot * 0.62, 90.0);
    svg.text(cx, bottom + 16, b.label, "middle");
    if (!std::isfinite(b.value)) {
      svg.text(cx, bottom - 6, "n/a", "middle", kFont, " fill=\"#888\"");
      continue;
    }
    const double v = std::clamp(b.value, ya.lo, ya.hi);
    const double yt = std::min(py(v), base), yb = std::max(py(v), base);
    svg.rect(cx - bw / 2, yt, bw, std::max(yb - yt, 0.5), b.color.empty() ? kBarColor : b.color);
    // The value above the bar, or inside its top when there is no room above.
    if (yt - top >= 18) {
      svg.text(cx, yt - 5, value_text(b.value), "middle", kFont, " font-weight=\"bold\"");
    } else {
      svg.text(cx, yt + 15, value_text(b.value), "middle", kFont,
               " font-weight=\"bold\" fill=\"white\"");
    }
  }
  svg.line(left, base, left + pw, base, kFrame);
  svg.rect(left, top, pw, ph, "none", (std::string(" stroke=\"") + kFrame + "\"").c_str());
  if (!chart.note.empty())
    svg.text(kPad, note_baseline, chart.note, "start", kFont - 1, " fill=\"#555\"");
  svg.os << "</svg>\n";
  return svg.os.str();
}

}  // namespace minitrax::plot
