#include "calibration.h"

#include <algorithm>
#include <cmath>

#include "error.h"

namespace vismem {

double fit_ood_threshold(std::vector<double> s, double fpr) {
  if (s.empty()) throw Error("OOD threshold: no in-distribution scores");
  if (!(fpr >= 0 && fpr < 1)) throw Error("OOD threshold: target false-positive rate must be in [0, 1)");
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  // Above s[i] lie the scores after the last copy of s[i]; take the first
  // (smallest) candidate whose share above is within the target.
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && s[j + 1] == s[i]) ++j;
    if (static_cast<double>(n - 1 - j) <= fpr * static_cast<double>(n)) return s[i];
    i = j + 1;
  }
  return s.back();
}

double auroc(const std::vector<double>& in, const std::vector<double>& out) {
  if (in.empty() || out.empty()) throw Error("AUROC needs scores of both kinds");
  // Mann-Whitney U with midranks for ties.
  std::vector<std::pair<double, int>> all;
  for (double x : in) all.emplace_back(x, 0);
  for (double x : out) all.emplace_back(x, 1);
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  double rank_sum_out = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j + 1 < all.size() && all[j + 1].first == all[i].first) ++j;
    double mid = 0.5 * (static_cast<double>(i) + static_cast<double>(j)) + 1.0;
    for (size_t t = i; t <= j; ++t)
      if (all[t].second) rank_sum_out += mid;
    i = j + 1;
  }
  const double m = static_cast<double>(out.size()), n = static_cast<double>(in.size());
  return (rank_sum_out - m * (m + 1) / 2) / (m * n);
}

std::vector<ReliabilityBin> reliability_bins(const std::vector<double>& conf, const std::vector<uint8_t>& correct,
                                             int nbins) {
  if (conf.size() != correct.size()) throw Error("reliability bins: length mismatch");
  if (nbins < 1) throw Error("reliability bins: need at least one bin");
  std::vector<ReliabilityBin> b(nbins);
  for (int i = 0; i < nbins; ++i) {
    b[i].lo = static_cast<double>(i) / nbins;
    b[i].hi = static_cast<double>(i + 1) / nbins;
  }
  for (size_t i = 0; i < conf.size(); ++i) {
    double c = conf[i];
    if (!(c >= 0 && c <= 1)) throw Error("reliability bins: confidence outside [0, 1]");
    int at = std::min(nbins - 1, static_cast<int>(c * nbins));
    b[at].count++;
    b[at].mean_confidence += c;
    b[at].accuracy += correct[i] ? 1.0 : 0.0;
  }
  for (auto& x : b)
    if (x.count) {
      x.mean_confidence /= static_cast<double>(x.count);
      x.accuracy /= static_cast<double>(x.count);
    }
  return b;
}

double expected_calibration_error(const std::vector<ReliabilityBin>& bins) {
  int64_t n = 0;
  for (auto& b : bins) n += b.count;
  if (n == 0) return 0;
  double e = 0;
  for (auto& b : bins) e += static_cast<double>(b.count) / n * std::abs(b.accuracy - b.mean_confidence);
  return e;
}

}  // namespace vismem
