// examples/common/plot.hpp: SVG charts for training runs, written by hand (no plotting
// library, only the C++ standard library and core/error.hpp):
//   - line charts of one or more panels stacked over a shared x axis (loss on one,
//     accuracy or bits per character on the next), train series as solid lines and
//     eval series as dashed lines with a marker on every point (so one evaluation is
//     still a visible dot), linear or log axes;
//   - bar charts (one value per setting, the value printed on its bar).
// Ticks fall on 1-2-5 steps (linear) or on 1, 2, 5 x 10^k (log), labels are short
// (0.5, 2, 1e-3, 20k), margins are computed from the labels' widths so that nothing is
// clipped, and legends sit above each panel, never on the data. Points whose x or y is
// NaN or infinite (or not positive on a log axis) are skipped, the line joining their
// neighbours, and the legend says how many were skipped.
//
// Link the CMake target minitrax_plot and include "common/plot.hpp". A language model's
// curves, loss and bits per character, train and eval:
//
//   plot::LineChart c;
//   c.title = "ReformerLM on my text";
//   c.x_label = "training step";
//   c.x_min = 0;
//   plot::Series train = plot::Series::train("train", steps, loss);
//   train.smoothing = 0.8;  // one batch per point: noisy
//   c.panels.push_back({"cross-entropy (log scale)", plot::Scale::log, {}, {},
//                       {train, plot::Series::eval("eval", eval_steps, eval_loss)}});
//   c.panels.push_back({"bits per character", plot::Scale::linear, {}, {},
//                       {plot::Series::eval("held-out", eval_steps, eval_bpc)}});
//   core::write_file_atomic(dir + "/curves.svg", plot::line_chart_svg(c));
//
// examples/duplication/charts.cpp builds the main job's charts from Loop::history().
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace minitrax::plot {

enum class Scale { linear, log };

/// One curve. x and y must have the same length (else ValueError).
struct Series {
  std::string name;
  std::vector<double> x, y;
  bool line = true;      ///< join the points
  bool dashed = false;   ///< dashed line (eval series)
  bool markers = false;  ///< a dot on every point (eval series; a single point is a dot)
  std::string color;     ///< an SVG colour; empty: the palette colour of its position
  /// In [0, 1): 0 draws the points as they are; w > 0 draws them faintly and over them
  /// their exponential moving average (weight w on the past, debiased as TensorBoard
  /// does; of log y on a log axis), for noisy training curves.
  double smoothing = 0;

  /// A training curve: a solid line in the train colour.
  static Series train(std::string name, std::vector<double> x, std::vector<double> y,
                      std::string color = train_color);
  /// An evaluation curve: a dashed line with a dot on each point, in the eval colour.
  static Series eval(std::string name, std::vector<double> x, std::vector<double> y,
                     std::string color = eval_color);

  static constexpr const char* train_color = "#1f77b4";
  static constexpr const char* eval_color = "#d62728";
};

/// One panel of a line chart: its own y axis; the x axis is shared by all panels.
struct Panel {
  std::string y_label;  ///< written above the panel, with the legend
  Scale y_scale = Scale::linear;
  std::optional<double> y_min, y_max;  ///< fixed ends (e.g. 0 and 1); else from the data
  std::vector<Series> series;
  bool percent = false;  ///< y values are fractions, ticks labelled as percentages
};

struct LineChart {
  std::string title;
  std::string x_label;
  Scale x_scale = Scale::linear;
  std::optional<double> x_min, x_max;  ///< fixed ends (e.g. step 0); else from the data
  std::vector<Panel> panels;           ///< top to bottom
  double width = 720;                  ///< of the whole image, in px
  double panel_height = 190;           ///< of each panel's data area, in px
};

/// The chart as a standalone SVG document. Throws ValueError for a series whose x and
/// y differ in length, a chart without panels, or a width or height too small to draw.
std::string line_chart_svg(const LineChart& chart);

struct Bar {
  std::string label;  ///< under the bar
  double value;       ///< NaN: no bar, "n/a" printed
  std::string color;  ///< empty: the default bar colour
};

struct BarChart {
  std::string title;
  std::string y_label;                 ///< written above the plot
  std::vector<Bar> bars;               ///< left to right
  bool percent = false;                ///< values are fractions, shown as percentages
  std::optional<double> y_min, y_max;  ///< default: 0 and from the data (1 for percent)
  std::string note;                    ///< one line under the chart (what the bars mean)
  double height = 260;                 ///< of the data area, in px
};

/// The chart as a standalone SVG document (width from the number and labels of bars).
std::string bar_chart_svg(const BarChart& chart);

// ---- the pieces, for tests and other charts ----

/// An axis: its ends (lo < hi) and its tick values, all within [lo, hi].
struct Axis {
  Scale scale = Scale::linear;
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};

/// Ticks of step 1, 2 or 5 x 10^k within [lo, hi]: the smallest such step that gives
/// at most max_ticks ticks. lo <= hi, both finite (else ValueError).
std::vector<double> linear_ticks(double lo, double hi, int max_ticks = 6);
/// Ticks within [lo, hi] (0 < lo <= hi, else ValueError): 1, 2 and 5 x 10^k if at most
/// max_ticks of them fall inside; else the decades (10^k), or every 2nd, 5th, 10th...
/// decade; if fewer than three would fall inside, 1, 2, ..., 9 x 10^k; if still fewer
/// than three (a range within a factor of about 3), linear_ticks.
std::vector<double> log_ticks(double lo, double hi, int max_ticks = 8);

/// A linear axis over the data range [lo, hi], its ends moved out to the enclosing
/// ticks (a constant range is widened first).
Axis linear_axis(double lo, double hi, int max_ticks = 6);
/// A log axis over [lo, hi] (positive), padded by 3% of its span in log space (at least
/// 0.01 decade; a constant range is widened by a factor of 2 either way), with log_ticks.
Axis log_axis(double lo, double hi, int max_ticks = 8);

/// A tick label in short form: "0", "0.5", "2", "250", "20k", "1e-3", "2.5e6", "-0.1".
std::string tick_label(double v);
/// The labels of an axis's ticks: tick_label's, but on an axis that reaches 10000 every
/// tick from 1000 up in thousands ("500", "1k", "2.5k", "20k"); with `percent`,
/// fractions as percentages ("25%").
std::vector<std::string> tick_labels(const Axis& axis, bool percent = false);
/// An upper estimate of the width in px of `text` in the sans-serif font (DejaVu Sans's
/// advances) at `font_size` px; non-ASCII characters count as 1 em.
double text_width(std::string_view text, double font_size);
/// `text` with &, <, > and " written as XML entities.
std::string xml_escape(std::string_view text);

}  // namespace minitrax::plot
