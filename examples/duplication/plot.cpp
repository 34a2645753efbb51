// examples/duplication/plot.cpp
#include "duplication/plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace minitrax::app {

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

}  // namespace

std::string svg_chart(const std::string& title, const std::string& x_label,
                      const std::string& left_label, const std::string& right_label,
                      const std::vector<PlotSeries>& series) {
  const double W = 760, H = 420, left = 70, right = 70, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double l_lo = x_lo, l_hi = -x_lo;
  bool log_left = true;
  for (const PlotSeries& s : series) {
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      if (!s.right_axis) {
        l_lo = std::min(l_lo, s.y[i]);
        l_hi = std::max(l_hi, s.y[i]);
        if (s.y[i] <= 0) log_left = false;
      }
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  if (x_lo > 0 && x_lo < 0.05 * (x_hi - x_lo)) x_lo = 0;  // steps from 1: ticks at round numbers
  if (!std::isfinite(l_lo)) l_lo = 0, l_hi = 1, log_left = false;
  auto ly = [&](double v) {
    if (log_left) {
      const double a = std::log10(l_lo), b = std::log10(std::max(l_hi, l_lo * 1.0001));
      return top + ph * (1 - (std::log10(v) - a) / (b - a));
    }
    const double hi = l_hi > l_lo ? l_hi : l_lo + 1;
    return top + ph * (1 - (v - l_lo) / (hi - l_lo));
  };
  auto ry = [&](double v) { return top + ph * (1 - std::clamp(v, 0.0, 1.0)); };
  auto px = [&](double v) { return left + pw * (v - x_lo) / (x_hi - x_lo); };

  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
     << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
     << escape(title) << "</text>\n"
     << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
     << "\" fill=\"none\" stroke=\"#444\"/>\n";
  // Grid and tick labels: 5 ticks on each axis.
  for (int i = 0; i <= 4; ++i) {
    const double f = i / 4.0;
    const double xv = x_lo + f * (x_hi - x_lo);
    os << "<line x1=\"" << px(xv) << "\" y1=\"" << top << "\" x2=\"" << px(xv) << "\" y2=\""
       << top + ph << "\" stroke=\"#ddd\"/>\n"
       << "<text x=\"" << px(xv) << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">"
       << fmt(xv) << "</text>\n";
    const double lv =
        log_left
            ? std::pow(10.0, std::log10(l_lo) +
                                 f * (std::log10(std::max(l_hi, l_lo * 1.0001)) - std::log10(l_lo)))
            : l_lo + f * ((l_hi > l_lo ? l_hi : l_lo + 1) - l_lo);
    os << "<text x=\"" << left - 6 << "\" y=\"" << ly(lv) + 4 << "\" text-anchor=\"end\">"
       << fmt(lv) << "</text>\n";
    os << "<line x1=\"" << left << "\" y1=\"" << ry(f) << "\" x2=\"" << left + pw << "\" y2=\""
       << ry(f) << "\" stroke=\"#eee\"/>\n"
       << "<text x=\"" << left + pw + 6 << "\" y=\"" << ry(f) + 4 << "\">" << fmt(f) << "</text>\n";
  }
  os << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">"
     << escape(x_label) << "</text>\n"
     << "<text transform=\"translate(16," << top + ph / 2
     << ") rotate(-90)\" text-anchor=\"middle\">" << escape(left_label)
     << (log_left ? " (log scale)" : "") << "</text>\n"
     << "<text transform=\"translate(" << W - 14 << "," << top + ph / 2
     << ") rotate(90)\" text-anchor=\"middle\">" << escape(right_label) << "</text>\n";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const PlotSeries& s = series[k];
    const char* color = colors[k % 6];
    os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.6\""
       << (s.right_axis ? " stroke-dasharray=\"5,3\"" : "") << " points=\"";
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (!s.right_axis && log_left && s.y[i] <= 0) continue;
      os << px(s.x[i]) << "," << (s.right_axis ? ry(s.y[i]) : ly(s.y[i])) << " ";
    }
    os << "\"/>\n";
    const double lx = left + 10, lyy = top + 16 + 16 * static_cast<double>(k);
    os << "<line x1=\"" << lx << "\" y1=\"" << lyy - 4 << "\" x2=\"" << lx + 22 << "\" y2=\""
       << lyy - 4 << "\" stroke=\"" << color << "\" stroke-width=\"2\""
       << (s.right_axis ? " stroke-dasharray=\"5,3\"" : "") << "/>\n"
       << "<text x=\"" << lx + 28 << "\" y=\"" << lyy << "\">" << escape(s.name)
       << (s.right_axis ? " (right axis)" : "") << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace minitrax::app
