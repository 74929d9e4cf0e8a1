// calibration.h: OOD thresholds, AUROC and reliability binning (SPEC section 5:
// OOD score, calibration by vote share / entropy).
//
// Basic usage:
//   double t = vismem::fit_ood_threshold(in_dist_scores, 0.05);   // <= 5% of them flagged
//   double a = vismem::auroc(in_dist_scores, ood_scores);          // 1 = perfectly separated
//   auto bins = vismem::reliability_bins(confidence, correct, 10); // equal-width bins over [0, 1]
//   double e = vismem::expected_calibration_error(bins);
//
// Pure functions; thread safe.
#pragma once
#include <cstdint>
#include <vector>

namespace vismem {

// The smallest threshold t among the scores such that the share of scores
// strictly above t is <= fpr (a score > t is called out of distribution).
double fit_ood_threshold(std::vector<double> in_scores, double fpr);

// P(out score > in score) + 0.5 P(equal): the area under the ROC curve for
// "larger score = out of distribution". Exact, O((n + m) log(n + m)).
double auroc(const std::vector<double>& in_scores, const std::vector<double>& out_scores);

struct ReliabilityBin {
  double lo = 0, hi = 0;
  int64_t count = 0;
  double mean_confidence = 0;  // over the bin's queries
  double accuracy = 0;         // share correct, in [0, 1]
};
// nbins equal-width bins over [0, 1] (1.0 goes into the last bin).
std::vector<ReliabilityBin> reliability_bins(const std::vector<double>& confidence, const std::vector<uint8_t>& correct,
                                             int nbins);
// sum over bins of count/N * |accuracy - mean_confidence|.
double expected_calibration_error(const std::vector<ReliabilityBin>& bins);

}  // namespace vismem
