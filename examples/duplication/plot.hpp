// examples/duplication/plot.hpp: a small self-contained SVG line chart (no plotting
// library needed): training loss on the left axis, accuracy on the right axis.
#pragma once

#include <string>
#include <vector>

namespace minitrax::app {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
  bool right_axis = false;  // accuracy-like series (0..1) use the right axis
};

/// The chart as SVG text. Left axis: log scale if every left value is positive.
std::string svg_chart(const std::string& title, const std::string& x_label,
                      const std::string& left_label, const std::string& right_label,
                      const std::vector<PlotSeries>& series);

}  // namespace minitrax::app
