#include "svgplot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "error.h"

namespace vismem {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string num(double v) {
  char b[32];
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) std::snprintf(b, sizeof b, "%.0e", v);
  else std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// Ticks at 1, 2, 5 x 10^n inside [lo, hi] (linear axis).
std::vector<double> linear_ticks(double lo, double hi) {
  double span = hi - lo;
  double step = std::pow(10.0, std::floor(std::log10(span / 5)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (step * m) <= 7) {
      step *= m;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

}  // namespace

std::string render_svg(const Plot& p) {
  auto tx = [&](double v) { return p.log_x ? std::log10(v) : v; };
  auto ty = [&](double v) { return p.log_y ? std::log10(v) : v; };
  auto ok = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!p.log_x || x > 0) && (!p.log_y || y > 0);
  };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (auto& s : p.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (ok(s.x[i], s.y[i])) {
        x0 = std::min(x0, tx(s.x[i]));
        x1 = std::max(x1, tx(s.x[i]));
        y0 = std::min(y0, ty(s.y[i]));
        y1 = std::max(y1, ty(s.y[i]));
      }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
  double ypad = 0.05 * (y1 - y0);
  y0 -= ypad;
  y1 += ypad;
  const double L = 70, R = 170, T = 40, B = 55;
  const double W = p.width, H = p.height, pw = W - L - R, ph = H - T - B;
  auto px = [&](double v) { return L + (v - x0) / (x1 - x0) * pw; };
  auto py = [&](double v) { return T + ph - (v - y0) / (y1 - y0) * ph; };
  std::string o;
  char b[512];
  std::snprintf(b, sizeof b,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                p.width, p.height, p.width, p.height);
  o += b;
  std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">", L + pw / 2);
  o += b + esc(p.title) + "</text>\n";
  // Ticks and grid.
  auto axis_ticks = [&](double lo, double hi, bool logscale) {
    std::vector<double> t;
    if (!logscale) return linear_ticks(lo, hi);
    for (int e = static_cast<int>(std::floor(lo)); e <= static_cast<int>(std::ceil(hi)); ++e)
      for (double m : {1.0, 2.0, 5.0}) {
        double v = std::log10(m) + e;
        if (v >= lo - 1e-9 && v <= hi + 1e-9 && (hi - lo > 3 ? m == 1.0 : true)) t.push_back(v);
      }
    if (t.size() < 3) {  // a narrow log range: plain ticks, placed on the log scale
      t.clear();
      for (double v : linear_ticks(std::pow(10, lo), std::pow(10, hi)))
        if (v > 0) t.push_back(std::log10(v));
    }
    return t;
  };
  for (double v : axis_ticks(x0, x1, p.log_x)) {
    std::snprintf(b, sizeof b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                  px(v), T, px(v), T + ph, px(v), T + ph + 16, num(p.log_x ? std::pow(10, v) : v).c_str());
    o += b;
  }
  for (double v : axis_ticks(y0, y1, p.log_y)) {
    std::snprintf(b, sizeof b,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                  L, py(v), L + pw, py(v), L - 6, py(v) + 4, num(p.log_y ? std::pow(10, v) : v).c_str());
    o += b;
  }
  std::snprintf(b, sizeof b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#333\"/>\n", L, T,
                pw, ph);
  o += b;
  std::snprintf(b, sizeof b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">", L + pw / 2, H - 14);
  o += b + esc(p.x_label + (p.log_x ? " (log scale)" : "")) + "</text>\n";
  std::snprintf(b, sizeof b, "<text transform=\"translate(16,%g) rotate(-90)\" text-anchor=\"middle\">", T + ph / 2);
  o += b + esc(p.y_label + (p.log_y ? " (log scale)" : "")) + "</text>\n";
  for (size_t si = 0; si < p.series.size(); ++si) {
    const Series& s = p.series[si];
    const char* col = palette[si % (sizeof palette / sizeof *palette)];
    std::string pts;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!ok(s.x[i], s.y[i])) continue;
      std::snprintf(b, sizeof b, "%.1f,%.1f ", px(tx(s.x[i])), py(ty(s.y[i])));
      pts += b;
      if (s.markers) {
        std::snprintf(b, sizeof b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", px(tx(s.x[i])),
                      py(ty(s.y[i])), col);
        o += b;
      }
    }
    std::snprintf(b, sizeof b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col,
                  s.dashed ? " stroke-dasharray=\"6,4\"" : "");
    o += b + pts + "\"/>\n";
    double ly = T + 10 + 20 * static_cast<double>(si);
    std::snprintf(b, sizeof b,
                  "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                  "<text x=\"%g\" y=\"%g\">",
                  L + pw + 12, ly, L + pw + 36, ly, col, s.dashed ? " stroke-dasharray=\"6,4\"" : "", L + pw + 42, ly + 4);
    o += b + esc(s.name) + "</text>\n";
  }
  o += "</svg>\n";
  return o;
}

}  // namespace vismem
