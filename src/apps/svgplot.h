// svgplot.h: small line charts as standalone SVG (experiment reports).
//
// Basic usage:
//   vismem::Plot p{.title = "Error vs memory size", .x_label = "items", .y_label = "error (%)", .log_x = true};
//   p.series.push_back({"rank", {1, 10, 100}, {60, 40, 30}});
//   vismem::write_text_file("scaling.svg", vismem::render_svg(p));   // textio.h
//
// Pure functions; thread safe.
#pragma once
#include <string>
#include <vector>

namespace vismem {

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool markers = true;
  bool dashed = false;
};

struct Plot {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<Series> series;
  int width = 640, height = 420;
};

// Axes with "nice" ticks, one colored polyline per series, a legend.
// Non-finite points (and non-positive ones on a log axis) are skipped.
std::string render_svg(const Plot& p);

}  // namespace vismem
