// One query's decision (decision.h), the taxonomy levels (taxonomy.h) and the
// OOD / calibration statistics (calibration.h) against hand-computed values
// and brute-force oracles.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "calibration.h"
#include "decision.h"
#include "error.h"
#include "taxonomy.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;

namespace {
NeighborVotes nv_of(std::vector<std::string> labels, std::vector<double> d) { return {labels, d, {}, {}}; }
}  // namespace

TEST(Decision, PluralityScoresSharesAndEntropy) {
  auto nv = nv_of({"a", "b", "a", "c"}, {0.1, 0.2, 0.3, 0.4});
  Decision d = decide(Vote::plurality, nv, 4);
  EXPECT_EQ(d.prediction, "a");
  ASSERT_EQ(d.scores.size(), 3u);
  EXPECT_EQ(d.scores[0], (std::pair<std::string, double>{"a", 2.0}));
  EXPECT_DOUBLE_EQ(d.score_share, 0.5);
  EXPECT_DOUBLE_EQ(d.vote_share, 0.5);
  // H = -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2; normalized by ln 4 = 2 ln 2.
  EXPECT_NEAR(d.entropy, 0.75, 1e-12);
  EXPECT_EQ(d.neighbor_weights, (std::vector<double>{1, 1, 1, 1}));
}

TEST(Decision, TieWinnerListedFirstEvenIfItReachedTheTieLater) {
  // a, b, b, a with plurality: after 3, b leads (2 > 1); a ties at 4 but a tie
  // keeps the leader (SPEC), so b wins although a got its first vote earlier.
  auto nv = nv_of({"a", "b", "b", "a"}, {0.1, 0.2, 0.3, 0.4});
  Decision d = decide(Vote::plurality, nv, 4);
  EXPECT_EQ(d.prediction, "b");
  EXPECT_EQ(d.scores[0].first, "b");
  EXPECT_EQ(d.scores[1].first, "a");
}

TEST(Decision, FirstKOnlyAndConcentrationOfOneLabel) {
  auto nv = nv_of({"x", "x", "y", "y", "y"}, {0.1, 0.1, 0.2, 0.3, 0.4});
  Decision d = decide(Vote::rank, nv, 2);
  EXPECT_EQ(d.prediction, "x");
  EXPECT_EQ(d.k, 2);
  EXPECT_DOUBLE_EQ(d.vote_share, 1.0);
  EXPECT_DOUBLE_EQ(d.entropy, 0.0);
  EXPECT_DOUBLE_EQ(d.score_share, 1.0);
  EXPECT_THROW(decide(Vote::rank, nv, 6), Error);
}

TEST(Decision, OodScoreIsTheMedian) {
  EXPECT_DOUBLE_EQ(ood_score({0.1, 0.2, 0.9}, 3), 0.2);
  EXPECT_DOUBLE_EQ(ood_score({0.1, 0.2, 0.4, 0.9}, 4), 0.3);
  EXPECT_DOUBLE_EQ(ood_score({0.1, 0.2, 0.4, 0.9}, 1), 0.1);
  EXPECT_THROW(ood_score({0.1}, 2), Error);
}

TEST(Taxonomy, DepthIsStepsBelowTheRootAndShortPathsStayLeaves) {
  test::TempDir t;
  write_text_file(t / "tax.tsv",
                  "# leaf\tpath\n"
                  "cat\troot > animal > mammal > feline > cat\n"
                  "dog\troot > animal > mammal > canine > dog\n"
                  "trout\troot > animal > fish > trout\n"
                  "car\troot > artifact > car\n");
  Taxonomy tax = Taxonomy::read(t / "tax.tsv");
  EXPECT_EQ(tax.size(), 4u);
  EXPECT_EQ(tax.max_depth(), 4);
  EXPECT_EQ(tax.at_depth("cat", 0), "root");
  EXPECT_EQ(tax.at_depth("cat", 1), "animal");
  EXPECT_EQ(tax.at_depth("cat", 2), "mammal");
  EXPECT_EQ(tax.at_depth("car", 2), "car");
  EXPECT_EQ(tax.at_depth("car", 9), "car");
  EXPECT_EQ(tax.groups({"cat", "dog", "trout", "car"}, 1), 2u);
  EXPECT_EQ(tax.groups({"cat", "dog", "trout", "car"}, 2), 3u);
  EXPECT_THROW(tax.at_depth("bird", 1), Error);
  EXPECT_THROW(tax.check_covers({"cat", "bird"}, "memory"), Error);

  // Levels: the same vote over the ancestors. Leaf plurality over dog, cat,
  // car, cat, dog: cat leads at 4 (2 > 1); dog's tie at 5 keeps cat.
  auto nv = nv_of({"dog", "cat", "car", "cat", "dog"}, {0.1, 0.2, 0.3, 0.4, 0.5});
  HierarchyDecision h = decide_levels(Vote::plurality, nv, 5, tax, {1, 2}, 0.7);
  ASSERT_EQ(h.levels.size(), 3u);
  EXPECT_EQ(h.levels[0].decision.prediction, "animal");
  EXPECT_DOUBLE_EQ(h.levels[0].decision.score_share, 0.8);
  EXPECT_EQ(h.levels[1].decision.prediction, "mammal");
  EXPECT_DOUBLE_EQ(h.levels[1].decision.score_share, 0.8);
  EXPECT_EQ(h.levels[2].decision.prediction, "cat");
  EXPECT_DOUBLE_EQ(h.levels[2].decision.score_share, 0.4);
  EXPECT_EQ(h.confident_level, 1);  // the deepest level with share >= 0.7
  EXPECT_EQ(decide_levels(Vote::plurality, nv, 5, tax, {1, 2}, 0.9).confident_level, -1);
  EXPECT_EQ(decide_levels(Vote::plurality, nv, 5, tax, {1, 2}, 0.4).confident_level, 2);

  std::vector<QueryNeighbors> qs(1);
  qs[0].true_labels = {"trout"};
  qs[0].neighbor_labels = {"cat", "trout"};
  auto r = relabel(qs, tax, 2);
  EXPECT_EQ(r[0].true_labels[0], "fish");
  EXPECT_EQ(r[0].neighbor_labels, (std::vector<std::string>{"mammal", "fish"}));
}

TEST(Taxonomy, BadFilesAndLevels) {
  test::TempDir t;
  write_text_file(t / "a.tsv", "cat root > cat\n");
  EXPECT_THROW(Taxonomy::read(t / "a.tsv"), Error);
  write_text_file(t / "b.tsv", "cat\troot >  > cat\n");
  EXPECT_THROW(Taxonomy::read(t / "b.tsv"), Error);
  write_text_file(t / "c.tsv", "cat\troot > cat\ncat\troot > cat\n");
  EXPECT_THROW(Taxonomy::read(t / "c.tsv"), Error);
  write_text_file(t / "d.tsv", "# only a comment\n");
  EXPECT_THROW(Taxonomy::read(t / "d.tsv"), Error);
  EXPECT_EQ(parse_levels("4, 6,8"), (std::vector<int>{4, 6, 8}));
  EXPECT_THROW(parse_levels("4,4"), Error);
  EXPECT_THROW(parse_levels("0"), Error);
  EXPECT_THROW(parse_levels("4,x"), Error);
  EXPECT_THROW(parse_levels(""), Error);
}

TEST(Taxonomy, WordNetCutsOfTinyImageNet) {
  Taxonomy tax = Taxonomy::read(test::shared_dir() + "/data/tiny-imagenet/hierarchy_wordnet.tsv");
  auto leaves = read_lines(test::shared_dir() + "/data/tiny-imagenet/wnids.txt");
  ASSERT_EQ(leaves.size(), 202u);
  tax.check_covers(leaves, "wnids.txt");
  // The data README: cut at depths 4/6/8 gives 8/41/115 groups.
  EXPECT_EQ(tax.groups(leaves, 4), 8u);
  EXPECT_EQ(tax.groups(leaves, 6), 41u);
  EXPECT_EQ(tax.groups(leaves, 8), 115u);
  EXPECT_EQ(tax.at_depth("n02124075", 100), "n02124075:Egyptian_cat");
}

TEST(Calibration, ThresholdHitsTheTargetRate) {
  std::vector<double> s;
  for (int i = 1; i <= 100; ++i) s.push_back(i / 100.0);
  double t = fit_ood_threshold(s, 0.05);
  EXPECT_DOUBLE_EQ(t, 0.95);  // 5 scores above
  EXPECT_DOUBLE_EQ(fit_ood_threshold(s, 0.0), 1.0);
  // Ties: with ten copies of the top value, the threshold cannot split them.
  std::vector<double> tied(90, 0.5);
  tied.insert(tied.end(), 10, 0.9);
  EXPECT_DOUBLE_EQ(fit_ood_threshold(tied, 0.05), 0.9);
  EXPECT_DOUBLE_EQ(fit_ood_threshold(tied, 0.10), 0.5);
  EXPECT_THROW(fit_ood_threshold({}, 0.05), Error);
  EXPECT_THROW(fit_ood_threshold(s, 1.0), Error);
}

TEST(Calibration, AurocMatchesPairCounting) {
  std::mt19937 g(5);
  std::uniform_int_distribution<int> u(0, 20);  // many ties
  std::vector<double> in, out;
  for (int i = 0; i < 300; ++i) in.push_back(u(g) / 10.0);
  for (int i = 0; i < 200; ++i) out.push_back(u(g) / 10.0 + 0.3);
  double pairs = 0;
  for (double a : in)
    for (double b : out) pairs += b > a ? 1.0 : b == a ? 0.5 : 0.0;
  EXPECT_NEAR(auroc(in, out), pairs / (in.size() * out.size()), 1e-12);
  EXPECT_DOUBLE_EQ(auroc({0.1, 0.2}, {0.3, 0.4}), 1.0);
  EXPECT_DOUBLE_EQ(auroc({0.3, 0.4}, {0.1, 0.2}), 0.0);
}

TEST(Calibration, BinsAndEce) {
  // Two bins: [0, 0.5) holds 0.2, 0.4 (one right), [0.5, 1] holds 0.6, 1.0 (both right).
  auto b = reliability_bins({0.2, 0.4, 0.6, 1.0}, {1, 0, 1, 1}, 2);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].count, 2);
  EXPECT_DOUBLE_EQ(b[0].mean_confidence, 0.3);
  EXPECT_DOUBLE_EQ(b[0].accuracy, 0.5);
  EXPECT_EQ(b[1].count, 2);
  EXPECT_DOUBLE_EQ(b[1].mean_confidence, 0.8);
  EXPECT_DOUBLE_EQ(b[1].accuracy, 1.0);
  EXPECT_NEAR(expected_calibration_error(b), 0.5 * 0.2 + 0.5 * 0.2, 1e-12);
  EXPECT_THROW(reliability_bins({1.5}, {1}, 2), Error);
  EXPECT_THROW(reliability_bins({0.5}, {1, 0}, 2), Error);
}
