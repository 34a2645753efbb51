// SVG charts (examples/common/plot.hpp) and the main job's curves.svg and table2.svg
// (examples/duplication/charts.hpp): tick values against hand-computed answers, the
// edge cases (one point, NaN, constant, empty), and every chart, plus every SVG in docs/,
// parsed as XML, its texts inside the image, rendered by rsvg-convert and looked at
// (not blank, nothing inked on the edge, a single eval point visible).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "common/plot.hpp"
#include "core/error.hpp"
#include "duplication/charts.hpp"
#include "svg_check.hpp"
#include "test_util.hpp"
#include "training/loop.hpp"

using namespace minitrax;
namespace fs = std::filesystem;
using testutil::contains;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string rsvg_path() {
#ifdef MINITRAX_RSVG_CONVERT
  return MINITRAX_RSVG_CONVERT;
#else
  return "";
#endif
}

fs::path out_dir() {
  const fs::path d = fs::path(MINITRAX_PLOT_OUT);
  fs::create_directories(d);
  return d;
}

// Writes the SVG to the output folder, runs every check on it and returns the render.
svgcheck::Image check_chart(const std::string& name, const std::string& svg) {
  const fs::path svg_path = out_dir() / (name + ".svg");
  {
    std::ofstream f(svg_path);
    f << svg;
  }
  const std::string png = (out_dir() / (name + ".png")).string();
  const std::vector<std::string> problems =
      svgcheck::check_file(svg_path.string(), rsvg_path(), png);
  for (const std::string& p : problems) MESSAGE(p);
  CHECK(problems.empty());
  if (rsvg_path().empty()) {
    MESSAGE("SKIPPED rendering " << name
                                 << ": rsvg-convert was not found when this build was "
                                    "configured (apt-get install librsvg2-bin)");
    return {};
  }
  return svgcheck::read_png(png);
}

std::vector<std::string> tick_texts(const std::string& svg) {
  std::vector<std::string> out;
  for (const svgcheck::Element& e : svgcheck::parse_xml(svg)) {
    if (e.name == "text") out.push_back(e.text);
  }
  return out;
}

bool has_text(const std::string& svg, const std::string& t) {
  for (const std::string& s : tick_texts(svg)) {
    if (s == t) return true;
  }
  return false;
}

long count(const std::string& s, const std::string& what) {
  long n = 0;
  for (std::size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

std::vector<training::MetricsRecord> history(long steps, long eval_every, double nan_at = -1) {
  std::vector<training::MetricsRecord> h;
  for (long s = 1; s <= steps; ++s) {
    // A loss falling from about 4.9 to about 0.04, as in a real run.
    const double loss = s == nan_at ? kNaN : 4.9 * std::exp(-4.8 * double(s) / double(steps));
    h.push_back({s, "train", {{"loss", loss}, {"learning_rate", 1e-3}}});
    if (s % eval_every == 0 || s == steps) {
      const double acc = 1 - 0.9 * std::exp(-3.0 * double(s) / double(steps));
      h.push_back({s, "eval", {{"loss", loss * 1.1}, {"accuracy", acc}}});
    }
  }
  return h;
}

}  // namespace

TEST_CASE("plot ticks: short labels") {
  CHECK(plot::tick_label(0) == "0");
  CHECK(plot::tick_label(0.5) == "0.5");
  CHECK(plot::tick_label(2) == "2");
  CHECK(plot::tick_label(0.05) == "0.05");
  CHECK(plot::tick_label(0.001) == "1e-3");
  CHECK(plot::tick_label(0.0025) == "2.5e-3");
  CHECK(plot::tick_label(250) == "250");
  CHECK(plot::tick_label(1500) == "1500");
  CHECK(plot::tick_label(20000) == "20k");
  CHECK(plot::tick_label(12500) == "12500");
  CHECK(plot::tick_label(2.5e6) == "2.5e6");
  CHECK(plot::tick_label(-0.1) == "-0.1");
  CHECK(plot::tick_label(3 * 0.1) == "0.3");
}

TEST_CASE("plot ticks: an axis's labels share one form") {
  plot::Axis a{plot::Scale::linear, 0, 20000, {0, 5000, 10000, 15000, 20000}};
  CHECK(plot::tick_labels(a) == std::vector<std::string>{"0", "5k", "10k", "15k", "20k"});
  a.ticks = {0, 1000, 2000, 3000};
  CHECK(plot::tick_labels(a) == std::vector<std::string>{"0", "1000", "2000", "3000"});
  a.ticks = {500, 1000, 2500, 10000};
  CHECK(plot::tick_labels(a) == std::vector<std::string>{"500", "1k", "2.5k", "10k"});
  a.ticks = {0, 0.07, 0.5, 1};
  CHECK(plot::tick_labels(a, true) == std::vector<std::string>{"0%", "7%", "50%", "100%"});
}

TEST_CASE("plot ticks: linear axes step by 1, 2 or 5 x 10^k") {
  CHECK(plot::linear_ticks(0, 1000, 6) == std::vector<double>{0, 200, 400, 600, 800, 1000});
  CHECK(plot::linear_ticks(0, 1, 6) == std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1});
  CHECK(plot::linear_ticks(-1, 1, 5) == std::vector<double>{-1, -0.5, 0, 0.5, 1});
  CHECK(plot::linear_ticks(0, 1, 11) ==
        std::vector<double>{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1});
  // Ticks inside the range only: [13, 97] with at most 6 ticks -> step 20.
  CHECK(plot::linear_ticks(13, 97, 6) == std::vector<double>{20, 40, 60, 80});
  // The axis moves its ends out to the enclosing ticks.
  const plot::Axis a = plot::linear_axis(0.0123, 0.0987, 6);
  CHECK(a.lo == 0);
  CHECK(a.hi == 0.1);
  CHECK(a.ticks == std::vector<double>{0, 0.02, 0.04, 0.06, 0.08, 0.1});
  // A constant series: widened by 10% either way, then to the enclosing ticks.
  const plot::Axis c = plot::linear_axis(3, 3, 6);
  CHECK(c.lo == doctest::Approx(2.6));
  CHECK(c.hi == doctest::Approx(3.4));
  CHECK(c.ticks.size() == 5);
  CHECK(plot::linear_axis(0, 0, 6).ticks == std::vector<double>{-1, -0.5, 0, 0.5, 1});
}

TEST_CASE("plot ticks: log axes on 1, 2 and 5 x 10^k") {
  // The range: a loss from 4.9 down to 0.0397.
  CHECK(plot::log_ticks(0.0397, 4.9) == std::vector<double>{0.05, 0.1, 0.2, 0.5, 1, 2});
  // The axis pads 3% of the span (2.09 decades) either way: 4.9 * 10^0.0627 = 5.66 > 5.
  const plot::Axis a = plot::log_axis(0.0397, 4.9);
  CHECK(a.lo == doctest::Approx(0.0397 / std::pow(10.0, 0.03 * std::log10(4.9 / 0.0397))));
  CHECK(a.ticks == std::vector<double>{0.05, 0.1, 0.2, 0.5, 1, 2, 5});
  // Too many 1-2-5 ticks: decades, then every 2nd decade.
  CHECK(plot::log_ticks(1e-6, 10, 8) ==
        std::vector<double>{1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10});
  CHECK(plot::log_ticks(1e-6, 10, 5) == std::vector<double>{1e-6, 1e-4, 0.01, 1});
  // Fewer than three: 1, 2, ..., 9 x 10^k ([2.1, 8.6] holds only 5 of 1, 2, 5).
  CHECK(plot::log_ticks(2.1, 8.6) == std::vector<double>{3, 4, 5, 6, 7, 8});
  // Fewer than three of those: linear steps (2.5 / 7 = 0.36 -> 0.5).
  CHECK(plot::log_ticks(2.1, 4.6) == std::vector<double>{2.5, 3, 3.5, 4, 4.5});
  CHECK(plot::log_ticks(1, 2) == std::vector<double>{1, 1.2, 1.4, 1.6, 1.8, 2});
  // A constant series at 2.3: [1.15, 4.6], where only 2 is a 1-2-5 value.
  CHECK(plot::log_axis(2.3, 2.3).ticks == std::vector<double>{2, 3, 4});
  // Narrower than 3 to 4: linear steps. [3.1, 3.2] padded by 0.01 decade is
  // [3.0291, 3.2740]: span 0.245 / 7 = 0.035 -> step 0.05.
  CHECK(plot::log_axis(3.1, 3.2).ticks == std::vector<double>{3.05, 3.1, 3.15, 3.2, 3.25});
  CHECK(plot::log_ticks(1.99, 2.6) == std::vector<double>{2, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6});
}

TEST_CASE("plot: bad input is a ValueError naming the thing") {
  using testutil::contains;
  CHECK_THROWS_WITH_AS(plot::linear_ticks(kNaN, 1),
                       "linear_ticks: expected finite lo <= hi, got [NaN, 1]", ValueError);
  CHECK_THROWS_WITH_AS(plot::linear_ticks(2, 1),
                       "linear_ticks: expected finite lo <= hi, got [2, 1]", ValueError);
  CHECK_THROWS_WITH_AS(plot::log_ticks(0, 1), "log_ticks: expected a positive range, got [0, 1]",
                       ValueError);
  CHECK_THROWS_WITH_AS(plot::log_axis(-1, 1), "log_axis: expected a positive range, got [-1, 1]",
                       ValueError);
  plot::LineChart chart;
  CHECK_THROWS_WITH_AS(plot::line_chart_svg(chart),
                       "line_chart_svg: expected at least one panel, got 0", ValueError);
  chart.panels.push_back(
      {"loss", plot::Scale::linear, {}, {}, {plot::Series::eval("eval", {1, 2, 3}, {1, 2})}});
  CHECK_THROWS_WITH_AS(plot::line_chart_svg(chart),
                       "line_chart_svg: series 'eval' has 3 x values and 2 y values; expected as "
                       "many of each",
                       ValueError);
  chart.panels[0].series[0].y.push_back(3);
  chart.panels[0].series[0].smoothing = 1;
  CHECK_THROWS_WITH_AS(plot::line_chart_svg(chart),
                       "line_chart_svg: series 'eval' has smoothing 1; expected a weight in [0, 1)",
                       ValueError);
  chart.panels[0].series[0].smoothing = 0;
  chart.width = 100;
  CHECK_THROWS_WITH_AS(
      plot::line_chart_svg(chart),
      "line_chart_svg: expected width >= 200 and panel_height >= 60, got 100 and 190", ValueError);
  chart.width = 720;
  chart.x_max = kNaN;
  CHECK_THROWS_WITH_AS(plot::line_chart_svg(chart),
                       "line_chart_svg: x_max is NaN; expected a finite value or none", ValueError);
  chart.x_max.reset();
  CHECK_NOTHROW(plot::line_chart_svg(chart));
  // A range narrower than the values' resolution still ends, with at most max_ticks + 1.
  CHECK(plot::linear_ticks(1e9, 1e9 + 1e-6, 6).size() <= 7);
  CHECK_THROWS_WITH_AS(plot::bar_chart_svg({}), "bar_chart_svg: expected at least one bar, got 0",
                       ValueError);
}

TEST_CASE("plot: curves.svg with one evaluation shows its point") {
  const std::string svg = app::curves_svg("one evaluation", history(40, 1000));
  // The single eval point of each panel is a dot (a circle), not an invisible polyline.
  CHECK(count(svg, "<circle") >= 2 + 2);  // 2 dots + 2 legend samples
  CHECK(count(svg, "fill=\"#d62728\"") >= 4);
  const svgcheck::Image img = check_chart("curves_one_eval", svg);
  if (img.width > 0) {
    // The eval colour (#d62728) shows: the legend samples and the two dots.
    CHECK(svgcheck::count_color(img, 0xd6, 0x27, 0x28) > 60);
  }
}

TEST_CASE("plot: curves.svg of a long run, ticks on round values") {
  const std::string svg =
      app::curves_svg("ReformerLM on the duplication task (LSH-4, length 32)", history(500, 25));
  for (const char* t :
       {"0.05", "0.1", "0.2", "0.5", "1", "2", "5", "0", "100", "200", "500", "20%", "100%"}) {
    INFO(t);
    // "0.05" .. "5" on the loss axis, 0 .. 500 on the step axis (labels of the x axis are
    // 0, 100, ... 500), 0% .. 100% on the accuracy axis.
    if (std::string(t).back() != '%') CHECK(has_text(svg, t));
  }
  for (const std::string& t : tick_texts(svg)) {
    CHECK_MESSAGE(t.size() <= 60, t);
    CHECK(!contains(t, "4.896"));
  }
  check_chart("curves_many_evals", svg);
}

TEST_CASE("plot: NaN, infinite, constant, single-point and empty series") {
  // A NaN train loss at step 7 is skipped; the line goes on from step 6 to step 8.
  std::vector<training::MetricsRecord> h = history(60, 10, 7);
  REQUIRE(h[20].task == "train");
  h[20].values["loss"] = std::numeric_limits<double>::infinity();
  const std::string svg = app::curves_svg("a NaN and an inf in the train loss", h);
  CHECK(contains(svg, "train (2 points NaN or inf, skipped)"));
  // The train polyline has the 58 other points.
  const std::size_t from = svg.find("points=\"", svg.find("<polyline")),
                    to = svg.find('"', from + 8);
  CHECK(count(svg.substr(from, to - from), ",") == 58);
  check_chart("curves_nan", svg);

  plot::LineChart c;
  c.title = "edge cases";
  c.x_label = "step";
  c.panels.push_back({"constant",
                      plot::Scale::log,
                      {},
                      {},
                      {plot::Series::train("flat", {1, 2, 3}, {2.3, 2.3, 2.3})}});
  c.panels.push_back(
      {"one point", plot::Scale::linear, {}, {}, {plot::Series::train("lone", {5}, {0.25})}});
  c.panels.push_back(
      {"empty", plot::Scale::linear, {}, {}, {plot::Series::eval("nothing", {}, {})}});
  c.panels.push_back(
      {"all NaN", plot::Scale::log, {}, {}, {plot::Series::eval("nan", {1, 2}, {kNaN, -1})}});
  c.panels.push_back({"log with a zero",
                      plot::Scale::log,
                      {},
                      {},
                      {plot::Series::eval("zero", {1, 2, 3, 4}, {0.5, 0, kNaN, 0.25})}});
  const std::string e = plot::line_chart_svg(c);
  CHECK(contains(e, "nothing (no data)"));
  CHECK(contains(e, "nan (no data)"));
  CHECK(count(e, ">no data</text>") == 2);
  CHECK(contains(e, "zero (1 point NaN or inf, 1 point &lt;= 0 on a log axis, skipped)"));
  CHECK(has_text(e, "2"));  // the constant's log axis: ticks 2, 3, 4
  CHECK(has_text(e, "3"));
  check_chart("edge_cases", e);

  plot::LineChart none;
  none.panels.push_back({"", plot::Scale::linear, {}, {}, {}});
  check_chart("no_series", plot::line_chart_svg(none));
}

TEST_CASE("plot: a smoothed series, its moving average against a hand computation") {
  plot::LineChart c;
  plot::Series s = plot::Series::train("noisy", {0, 1, 2}, {1, 3, 3});
  s.smoothing = 0.5;
  c.x_min = 0;
  c.x_max = 2;
  c.panels.push_back({"y", plot::Scale::linear, 0.0, 4.0, {s}});
  const std::string svg = plot::line_chart_svg(c);
  CHECK(contains(svg, "noisy (smoothed; faint: as recorded)"));
  const std::vector<svgcheck::Element> doc = svgcheck::parse_xml(svg);
  double top = 0, height = 0;
  std::vector<std::vector<double>> lines;
  for (const svgcheck::Element& e : doc) {
    if (e.name == "rect" && e.attrs.count("fill") && e.attrs.at("fill") == "none") {
      top = std::stod(e.attrs.at("y"));
      height = std::stod(e.attrs.at("height"));
    }
    if (e.name == "polyline") lines.push_back(svgcheck::numbers(e.attrs.at("points")));
  }
  REQUIRE(lines.size() == 2);  // the faint raw line, then the average
  REQUIRE(lines[1].size() == 6);
  // Debiased EMA with weight 0.5: 1, (0.25 + 1.5) / 0.75 = 2.3333, (0.875 + 1.5) / 0.875 = 2.7143.
  const double expect[3] = {1, 1.75 / 0.75, 2.375 / 0.875};
  for (int i = 0; i < 3; ++i) {
    // y = 4 at 5 px below the frame's top, y = 0 at 5 px above its bottom.
    CHECK(lines[1][2 * i + 1] ==
          doctest::Approx(top + 5 + (height - 10) * (1 - expect[i] / 4)).epsilon(0.002));
    CHECK(lines[0][2 * i + 1] ==
          doctest::Approx(top + 5 + (height - 10) * (1 - s.y[i] / 4)).epsilon(0.002));
  }
}

TEST_CASE("plot: a text LM's curves, loss and bits per character, train and eval") {
  std::vector<double> steps, loss, bpc, esteps, eloss, ebpc;
  for (int s = 10; s <= 3000; s += 10) {
    steps.push_back(s);
    loss.push_back(1.2 + 3.2 * std::exp(-s / 500.0) + 0.05 * std::sin(s));
    bpc.push_back(loss.back() / std::log(2.0));
    if (s % 500 == 0) {
      esteps.push_back(s);
      eloss.push_back(loss.back() + 0.1);
      ebpc.push_back(eloss.back() / std::log(2.0));
    }
  }
  plot::LineChart c;
  c.title = "ReformerLM, characters of dict-gcide (length 2048)";
  c.x_label = "training step";
  c.x_min = 0;
  c.panels.push_back(
      {"cross-entropy (nats per character)",
       plot::Scale::linear,
       {},
       {},
       {plot::Series::train("train", steps, loss), plot::Series::eval("eval", esteps, eloss)}});
  c.panels.push_back(
      {"bits per character",
       plot::Scale::linear,
       {},
       {},
       {plot::Series::train("train", steps, bpc), plot::Series::eval("held-out", esteps, ebpc)}});
  const std::string svg = plot::line_chart_svg(c);
  CHECK(has_text(svg, "3000"));
  CHECK(has_text(svg, "1500"));
  check_chart("text_lm_curves", svg);
}

TEST_CASE("plot: a title wider than the chart is cut short with an ellipsis, not clipped") {
  plot::LineChart c;
  c.title =
      "ReformerLM (reversible), 2 layers, d_model 128, d_ff 512, 2 heads, attention "
      "[lsh], LSH n_hashes 2, n_buckets 64, chunk_len 64 \xC3\xA9\xC3\xA9\xC3\xA9";
  c.x_label = "training step";
  c.panels.push_back(
      {"loss", plot::Scale::linear, {}, {}, {plot::Series::train("train", {1, 2, 3}, {3, 2, 1})}});
  const std::string svg = plot::line_chart_svg(c);
  CHECK(svg.find("chunk_len 64") == std::string::npos);  // the end was cut
  CHECK(svg.find("\xE2\x80\xA6") != std::string::npos);  // and says so
  CHECK(svg.find("ReformerLM (reversible), 2 layers") != std::string::npos);
  check_chart("long_title", svg);  // parses, renders, every text inside the viewBox
}

TEST_CASE("plot: log x and log y, as in a scaling benchmark") {
  plot::LineChart c;
  c.title = "time per token against length";
  c.x_label = "sequence length";
  c.x_scale = plot::Scale::log;
  std::vector<double> L, dense, lsh;
  for (double l = 128; l <= 32768; l *= 2) {
    L.push_back(l);
    dense.push_back(0.01 * l);
    lsh.push_back(12 + std::log2(l));
  }
  c.panels.push_back({"us per token",
                      plot::Scale::log,
                      {},
                      {},
                      {plot::Series::train("dense", L, dense), plot::Series::eval("LSH", L, lsh)}});
  const std::string svg = plot::line_chart_svg(c);
  // x over [128, 32768] (2.4 decades, padded): 200, 500, 1000, ..., 20000, those from
  // 1000 up in thousands.
  for (const std::string t :
       {"200", "500", "1k", "2k", "5k", "10k", "20k", "sequence length (log scale)"}) {
    INFO(t);
    CHECK(has_text(svg, t));
  }
  check_chart("log_log", svg);
}

TEST_CASE("plot: table2.svg, a bar per attention setting with its value") {
  const std::string svg = app::table2_svg(
      "LSH-4",
      {{"Full", 1.0}, {"LSH-8", 0.9987}, {"LSH-4", 0.9961}, {"LSH-2", 0.8412}, {"LSH-1", 0.4125}},
      128);
  for (const std::string t : {"100.00%", "99.87%", "99.61%", "84.12%", "41.25%", "Full", "LSH-8",
                              "LSH-1", "0%", "20%", "100%"}) {
    INFO(t);
    CHECK(has_text(svg, t));
  }
  check_chart("table2", svg);
  // A NaN accuracy: no bar, "n/a".
  const std::string nan = app::table2_svg("Full", {{"Full", kNaN}}, 8);
  CHECK(has_text(nan, "n/a"));
  check_chart("table2_nan", nan);
}

TEST_CASE("plot: every SVG in docs/ parses, fits and renders") {
  long n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(MINITRAX_SOURCE_DIR) / "docs")) {
    if (entry.path().extension() != ".svg") continue;
    ++n;
    const std::string png =
        (out_dir() / ("docs_" + entry.path().stem().string() + ".png")).string();
    const std::vector<std::string> problems =
        svgcheck::check_file(entry.path().string(), rsvg_path(), png);
    for (const std::string& p : problems) MESSAGE(p);
    CHECK(problems.empty());
  }
  CHECK(n >= 2);
  if (rsvg_path().empty())
    MESSAGE("SKIPPED rendering: rsvg-convert not found (apt-get install librsvg2-bin)");
}

TEST_CASE("plot: the svg checker catches what it is meant to catch") {
  // Independent of the charts: the checks fail on bad SVG.
  CHECK_THROWS(svgcheck::parse_xml("<svg><text>a</svg>"));
  CHECK_THROWS(svgcheck::parse_xml("<svg><text>a & b</text></svg>"));
  CHECK_THROWS(svgcheck::parse_xml("<svg x=1></svg>"));
  CHECK_THROWS(svgcheck::parse_xml("<html></html>"));
  const auto doc = svgcheck::parse_xml(
      "<svg width=\"100\" height=\"50\" font-size=\"12\"><text x=\"95\" y=\"20\">clipped</text>"
      "<text x=\"50\" y=\"20\" text-anchor=\"middle\">ok</text>"
      "<text transform=\"translate(6,25) rotate(-90)\" text-anchor=\"middle\">vertical text</text>"
      "</svg>");
  const std::vector<std::string> bad = svgcheck::texts_outside(doc);
  REQUIRE(bad.size() == 2);
  CHECK(contains(bad[0], "'clipped'"));
  CHECK(contains(bad[1], "'vertical text'"));
  if (rsvg_path().empty()) return;
  // Rendered: a white image is blank; a line through the image's edge is ink on it.
  const std::string blank = (out_dir() / "checker_blank.svg").string();
  std::ofstream(blank) << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"50\" height=\"40\">"
                          "<rect width=\"50\" height=\"40\" fill=\"white\"/></svg>\n";
  const auto p1 =
      svgcheck::check_file(blank, rsvg_path(), (out_dir() / "checker_blank.png").string());
  REQUIRE(p1.size() == 1);
  CHECK(contains(p1[0], "renders (nearly) blank"));
  const std::string edge = (out_dir() / "checker_edge.svg").string();
  std::ofstream(edge) << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"50\" height=\"40\">"
                         "<rect x=\"10\" y=\"10\" width=\"20\" height=\"10\"/>"
                         "<line x1=\"0\" y1=\"30\" x2=\"50\" y2=\"30\" stroke=\"black\"/></svg>\n";
  const auto p2 =
      svgcheck::check_file(edge, rsvg_path(), (out_dir() / "checker_edge.png").string());
  REQUIRE(p2.size() == 1);
  CHECK(contains(p2[0], "inked pixels on the image's edge"));
}
