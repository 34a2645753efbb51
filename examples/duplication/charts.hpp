// examples/duplication/charts.hpp: the main job's charts (common/plot.hpp draws them):
// curves.svg, the loss and accuracy against steps, and table2.svg, the accuracy of the
// trained model under each attention setting (a row of the Reformer paper's Table 2).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace minitrax::training {
struct MetricsRecord;
}

namespace minitrax::app {

/// Two stacked panels over the training step: cross-entropy (train as a line, eval as
/// dots on a dashed line; log scale) and the eval second-half accuracy (0 to 100%).
/// `history` is Loop::history() (what metrics.jsonl holds); records of tasks other than
/// "train" and "eval" and values other than loss and accuracy are left out.
std::string curves_svg(const std::string& title,
                       const std::vector<training::MetricsRecord>& history);

/// A bar per attention setting ({name, accuracy in [0, 1]}, in the table's column order),
/// the value printed on each bar; the bar named `trained_with` is drawn darker.
std::string table2_svg(const std::string& trained_with,
                       const std::vector<std::pair<std::string, double>>& accuracy,
                       long held_out_sequences);

}  // namespace minitrax::app
