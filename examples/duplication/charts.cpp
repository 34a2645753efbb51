// examples/duplication/charts.cpp
#include "duplication/charts.hpp"

#include "common/plot.hpp"
#include "training/loop.hpp"

namespace minitrax::app {

std::string curves_svg(const std::string& title,
                       const std::vector<training::MetricsRecord>& history) {
  plot::Series train_loss = plot::Series::train("train", {}, {});
  plot::Series eval_loss = plot::Series::eval("eval", {}, {});
  plot::Series eval_acc = plot::Series::eval("eval", {}, {});
  // A record without a value for a series (a line of metrics.jsonl edited by hand) is
  // left out of that series.
  auto add = [](plot::Series& s, const training::MetricsRecord& r, const char* key) {
    const auto it = r.values.find(key);
    if (it == r.values.end()) return;
    s.x.push_back(static_cast<double>(r.step));
    s.y.push_back(it->second);
  };
  for (const training::MetricsRecord& r : history) {
    if (r.task == "train") {
      add(train_loss, r, "loss");
    } else if (r.task == "eval") {
      add(eval_loss, r, "loss");
      add(eval_acc, r, "accuracy");
    }
  }
  // A long run's train loss is noisy (one batch per step): drawn faintly, with its
  // moving average over it.
  if (train_loss.x.size() >= 100) train_loss.smoothing = 0.8;
  plot::LineChart chart;
  chart.title = title;
  chart.x_label = "training step";
  chart.x_min = 0;
  plot::Panel loss{"cross-entropy (log scale)", plot::Scale::log, {}, {}, {train_loss, eval_loss}};
  plot::Panel acc{"second-half accuracy", plot::Scale::linear, 0.0, 1.0, {eval_acc}, true};
  chart.panels = {loss, acc};
  return plot::line_chart_svg(chart);
}

std::string table2_svg(const std::string& trained_with,
                       const std::vector<std::pair<std::string, double>>& accuracy,
                       long held_out_sequences) {
  plot::BarChart chart;
  chart.title = "Trained with " + trained_with + ", evaluated with each attention";
  chart.y_label = "second-half accuracy";
  chart.percent = true;
  chart.y_min = 0;
  chart.y_max = 1;
  bool marked = false;
  for (const auto& [name, value] : accuracy) {
    plot::Bar b{name, value, ""};
    if (name == trained_with) {
      b.color = "#1f5f9f";
      marked = true;
    }
    chart.bars.push_back(b);
  }
  chart.note = "on " + std::to_string(held_out_sequences) +
               " held-out sequences (one row of the Reformer paper's Table 2)" +
               (marked ? "; dark: the training setting" : "");
  return plot::bar_chart_svg(chart);
}

}  // namespace minitrax::app
