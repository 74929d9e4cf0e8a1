// Voting rules against hand-computed neighbor lists (SPEC section 3, every tie example).
#include <gtest/gtest.h>

#include <cmath>

#include "aggregate.h"

using namespace vismem;

namespace {
VoteInput make(std::vector<int32_t> labels, std::vector<double> d = {}) {
  VoteInput in;
  in.labels = std::move(labels);
  in.distances = d.empty() ? std::vector<double>(in.labels.size(), 0.1) : std::move(d);
  return in;
}
}  // namespace

TEST(Aggregate, SpecTieExamplesPlurality) {
  EXPECT_EQ(predict_all_k(Vote::plurality, make({0, 1, 1})), (std::vector<int32_t>{0, 0, 1}));
  EXPECT_EQ(predict_all_k(Vote::plurality, make({0, 1})), (std::vector<int32_t>{0, 0}));
  // [2,3,3,1,1]: 3 reaches 2 votes first; 1 ties it later but is not strictly greater.
  EXPECT_EQ(predict_all_k(Vote::plurality, make({2, 3, 3, 1, 1})), (std::vector<int32_t>{2, 2, 3, 3, 3}));
}

TEST(Aggregate, TieExamplesHoldForEveryRuleWithEqualDistances) {
  for (Vote v : {Vote::distance, Vote::softmax}) {
    EXPECT_EQ(predict_all_k(v, make({0, 1, 1})).back(), 1);
    EXPECT_EQ(predict_all_k(v, make({0, 1})).back(), 0);
    EXPECT_EQ(predict_all_k(v, make({2, 3, 3, 1, 1})).back(), 3);
  }
}

TEST(Aggregate, WinnerWithIndexZeroIsKept) {
  // The published code's truthiness quirk would replace label 0 by the first neighbor's label (1).
  EXPECT_EQ(predict_all_k(Vote::plurality, make({1, 0, 0})), (std::vector<int32_t>{1, 1, 0}));
}

TEST(Aggregate, Weights) {
  VoteParams p;
  EXPECT_DOUBLE_EQ(vote_weight(Vote::plurality, 0.3, 5, p), 1.0);
  EXPECT_DOUBLE_EQ(vote_weight(Vote::distance, 0.3, 0, p), std::exp(-0.3));
  EXPECT_DOUBLE_EQ(vote_weight(Vote::softmax, 0.3, 0, p), std::exp(0.7 / 0.07));
  EXPECT_DOUBLE_EQ(vote_weight(Vote::rank, 0.3, 0, p), 0.5);
  EXPECT_DOUBLE_EQ(vote_weight(Vote::rank, 0.3, 3, p), 0.2);
  p.distance_power = 2;
  EXPECT_DOUBLE_EQ(vote_weight(Vote::distance, 0.3, 0, p), std::pow(std::exp(-0.3), 2));
}

TEST(Aggregate, RankVoting) {
  // weights 1/2, 1/3, 1/4: label 1 gets 7/12 > 1/2 at k=3.
  EXPECT_EQ(predict_all_k(Vote::rank, make({0, 1, 1})), (std::vector<int32_t>{0, 0, 1}));
  // [0,1,2,2]: 1/2 vs 1/3 vs (1/4 + 1/5 = 0.45): 0 stays.
  EXPECT_EQ(predict_all_k(Vote::rank, make({0, 1, 2, 2})), (std::vector<int32_t>{0, 0, 0, 0}));
}

TEST(Aggregate, DistanceVotingPrefersCloser) {
  // exp(-0.0) = 1 vs exp(-0.5) + exp(-0.6) = 0.6065 + 0.5488 = 1.155 > 1 -> label 1 at k=3.
  EXPECT_EQ(predict_all_k(Vote::distance, make({0, 1, 1}, {0.0, 0.5, 0.6})), (std::vector<int32_t>{0, 0, 1}));
  // exp(-0.0) = 1 vs exp(-0.7) + exp(-0.8) = 0.4966 + 0.4493 = 0.946 < 1 -> label 0.
  EXPECT_EQ(predict_all_k(Vote::distance, make({0, 1, 1}, {0.0, 0.7, 0.8})), (std::vector<int32_t>{0, 0, 0}));
}

TEST(Aggregate, SoftmaxVotingIsSharp) {
  // e^(1/0.07) vs 2 e^(0.9/0.07): ratio e^(0.1/0.07) = 4.17 > 2 -> label 0 holds.
  EXPECT_EQ(predict_all_k(Vote::softmax, make({0, 1, 1}, {0.0, 0.1, 0.1})).back(), 0);
  // with d = 0.02 for the pair: ratio e^(0.02/0.07) = 1.33 < 2 -> label 1.
  EXPECT_EQ(predict_all_k(Vote::softmax, make({0, 1, 1}, {0.0, 0.02, 0.02})).back(), 1);
  // plurality would flip both.
  EXPECT_EQ(predict_all_k(Vote::plurality, make({0, 1, 1}, {0.0, 0.1, 0.1})).back(), 1);
}

TEST(Aggregate, HardExclusion) {
  VoteInput in = make({0, 1, 1});
  in.excluded = {1, 0, 0};
  // k=1: nothing counted yet -> the first neighbor's label.
  EXPECT_EQ(predict_all_k(Vote::plurality, in), (std::vector<int32_t>{0, 1, 1}));
  VoteInput in2 = make({0, 1, 0, 1});
  in2.excluded = {0, 0, 1, 0};
  // counted: 0, 1, 1 -> label 1 leads at k=4; without the exclusion 0 and 1 tie at 2 and 0 keeps it.
  EXPECT_EQ(predict_all_k(Vote::plurality, in2), (std::vector<int32_t>{0, 0, 0, 1}));
  in2.excluded.clear();
  EXPECT_EQ(predict_all_k(Vote::plurality, in2), (std::vector<int32_t>{0, 0, 0, 0}));
}

TEST(Aggregate, HardExclusionFallbackWhenAllExcluded) {
  VoteInput in = make({0, 1, 1});
  in.excluded = {1, 1, 1};
  EXPECT_EQ(predict_all_k(Vote::plurality, in), (std::vector<int32_t>{0, 0, 1}));
}

TEST(Aggregate, RankCountsOnlyCountedNeighbors) {
  // [0, 1(excluded), 2, 2]: weights 1/2, -, 1/3, 1/4 -> 2 has 7/12 > 1/2 at k=4.
  VoteInput in = make({0, 1, 2, 2});
  in.excluded = {0, 1, 0, 0};
  EXPECT_EQ(predict_all_k(Vote::rank, in), (std::vector<int32_t>{0, 0, 0, 2}));
  // Without exclusion: 1/2, 1/3, 1/4 + 1/5 = 0.45 -> 0.
  in.excluded.clear();
  EXPECT_EQ(predict_all_k(Vote::rank, in).back(), 0);
}

TEST(Aggregate, SoftPruning) {
  VoteInput in = make({0, 1});
  in.reliability = {0.5, 1.0};
  EXPECT_EQ(predict_all_k(Vote::plurality, in), (std::vector<int32_t>{0, 1}));
  // rho = 1.75 / (1 + 1) = 0.875 for label 0, two neighbors of label 1 weighted 0.159 (ten wrong)
  VoteInput in2 = make({0, 1, 1});
  in2.reliability = {0.875, 1.75 / 11, 1.75 / 11};
  EXPECT_EQ(predict_all_k(Vote::plurality, in2).back(), 0);
}

TEST(Aggregate, BreakdownMatchesPrediction) {
  VoteInput in = make({2, 3, 3, 1, 1}, {0.1, 0.2, 0.3, 0.4, 0.5});
  for (Vote v : all_votes) {
    auto all = predict_all_k(v, in);
    for (int k = 1; k <= 5; ++k) {
      VoteBreakdown b = vote_breakdown(v, in, k);
      EXPECT_EQ(b.prediction, all[k - 1]);
      double total = 0;
      for (auto& [l, s] : b.scores) total += s;
      double wsum = 0;
      for (double w : b.neighbor_weights) wsum += w;
      EXPECT_NEAR(total, wsum, 1e-12);
    }
  }
  VoteBreakdown b = vote_breakdown(Vote::plurality, in, 5);
  ASSERT_EQ(b.scores.size(), 3u);
  EXPECT_EQ(b.scores[0], (std::pair<int32_t, double>{2, 1.0}));
  EXPECT_EQ(b.scores[1], (std::pair<int32_t, double>{3, 2.0}));
  EXPECT_EQ(b.scores[2], (std::pair<int32_t, double>{1, 2.0}));
}

TEST(Aggregate, MinMaxNormalize) {
  std::vector<VoteInput> qs = {make({0, 1}, {0.2, 0.4}), make({0, 1}, {0.6, 1.0})};
  minmax_normalize(qs);
  EXPECT_DOUBLE_EQ(qs[0].distances[0], 0.0);
  EXPECT_DOUBLE_EQ(qs[0].distances[1], 0.25);
  EXPECT_DOUBLE_EQ(qs[1].distances[0], 0.5);
  EXPECT_DOUBLE_EQ(qs[1].distances[1], 1.0);
}

TEST(Aggregate, BadInputThrows) {
  VoteInput in = make({0, 1});
  in.distances = {0.1};
  EXPECT_THROW(predict_all_k(Vote::plurality, in), std::runtime_error);
  EXPECT_THROW(parse_vote("majority"), std::runtime_error);
  EXPECT_EQ(parse_vote("rank"), Vote::rank);
}
