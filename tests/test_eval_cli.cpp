// `vismem eval --neighbors FILE --json` against an accuracy table computed by hand:
// ties, exclusions with the all-excluded fallback, reliability weights, multi-label
// queries and integer labels.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "util_test.h"

using vismem::test::run_cli;
using vismem::test::TempDir;

namespace {

// q1 (truth a):      a m1 .1 | b m2 .2 | b m3 .3
// q2 (truth {c,z}):  b m2 .1 | c m6 .1 | c m7 .4     (multi-label; tie at k=2)
// q3 (truth 1, int): 1 m8 .2 | 2 m9 .2 | 2 m10 .2    (integer labels; tie at k=2)
const char* kNeighbors = R"({
 "q1": {"featurizer": "t", "image_id": "q1", "image_class": "a",
        "neighbor_image_ids": ["m1","m2","m3"], "neighbor_classes": ["a","b","b"], "neighbor_distances": [0.1,0.2,0.3]},
 "q2": {"featurizer": "t", "image_id": "q2", "image_class": ["c","z"],
        "neighbor_image_ids": ["m2","m6","m7"], "neighbor_classes": ["b","c","c"], "neighbor_distances": [0.1,0.1,0.4]},
 "q3": {"featurizer": "t", "image_id": "q3", "image_class": 1,
        "neighbor_image_ids": ["m8","m9","m10"], "neighbor_classes": [1,2,2], "neighbor_distances": [0.2,0.2,0.2]}
})";

const double third = 100.0 / 3, two_thirds = 200.0 / 3;

struct Fixture {
  TempDir dir;
  std::string file = dir / "nn.json";
  Fixture() { std::ofstream(file) << kNeighbors; }
  nlohmann::json eval(const std::string& extra) {
    auto r = run_cli("eval --neighbors " + file + " --json " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
};

void expect_method(const nlohmann::json& j, const char* m, std::vector<double> acc, double best, int best_k) {
  const auto& x = j["methods"][m];
  ASSERT_EQ(x["accuracy_at_k"].size(), acc.size()) << m;
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_NEAR(x["accuracy_at_k"][i].get<double>(), acc[i], 1e-9) << m << " k=" << i + 1;
  EXPECT_NEAR(x["best"].get<double>(), best, 1e-9) << m;
  EXPECT_EQ(x["best_k"].get<int>(), best_k) << m;
}

}  // namespace

TEST(EvalCli, HandComputedTable) {
  Fixture f;
  nlohmann::json j = f.eval("");
  EXPECT_EQ(j["queries"].get<int>(), 3);
  // plurality: q1 a,a(tie),b -> 1,1,0; q2 b,b(tie),c -> 0,0,1; q3 1,1(tie),2 -> 1,1,0
  expect_method(j, "plurality", {two_thirds, two_thirds, third}, two_thirds, 1);
  // distance: q1 k3 b = e^-.2 + e^-.3 = 1.56 > e^-.1: same as plurality; q2 k2 exact tie e^-.1 each -> b
  expect_method(j, "distance", {two_thirds, two_thirds, third}, two_thirds, 1);
  // softmax: q1 a = e^(.9/.07) = 3.8e5 beats b = e^(.8/.07) + e^(.7/.07) = 1.1e5 at k3 -> 1,1,1
  expect_method(j, "softmax", {two_thirds, two_thirds, two_thirds}, two_thirds, 1);
  // rank: q1 k3 b = 1/3 + 1/4 > 1/2
  expect_method(j, "rank", {two_thirds, two_thirds, third}, two_thirds, 1);
}

TEST(EvalCli, ExclusionWithFallback) {
  Fixture f;
  std::ofstream(f.dir / "ex.txt") << "m1\nm8\nm9\nm10\n";
  nlohmann::json j = f.eval("--exclude " + f.dir / "ex.txt");
  // q1: m1 excluded: k1 nothing counted -> first neighbor's label a (right); k2, k3 b (wrong) -> 1,0,0
  // q2 unchanged 0,0,1; q3: all excluded -> exclusion off -> 1,1,0
  expect_method(j, "plurality", {two_thirds, third, third}, two_thirds, 1);
  expect_method(j, "rank", {two_thirds, third, third}, two_thirds, 1);
}

TEST(EvalCli, ReliabilityWeights) {
  Fixture f;
  std::ofstream(f.dir / "rel.tsv") << "m2\t0.4\nm3\t0.4\n";
  nlohmann::json j = f.eval("--reliability " + f.dir / "rel.tsv");
  // q1: a 1 vs b .4 then .8 -> 1,1,1; q2: b .4, then c 1 -> 0,1,1; q3 unchanged 1,1,0
  expect_method(j, "plurality", {two_thirds, 100.0, two_thirds}, 100.0, 2);
}

TEST(EvalCli, KLimitsTheLists) {
  Fixture f;
  nlohmann::json j = f.eval("--k 2");
  expect_method(j, "plurality", {two_thirds, two_thirds}, two_thirds, 1);
}

TEST(EvalCli, NormalizedDistances) {
  Fixture f;
  // min .1, max .4: q1 d -> 0, 1/3, 2/3: a e^(1/.07) vs b e^((2/3)/.07) + e^((1/3)/.07): a keeps it.
  // q2 d -> 0, 0, 1: tie at k2 -> b; k3 c adds e^0 -> c = e^(1/.07) + 1 > b -> c (right).
  nlohmann::json j = f.eval("--normalize-distances");
  expect_method(j, "softmax", {two_thirds, two_thirds, two_thirds}, two_thirds, 1);
}

TEST(EvalCli, HumanTableAndErrors) {
  Fixture f;
  auto r = run_cli("eval --neighbors " + f.file);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("plurality"), std::string::npos);
  EXPECT_NE(r.out.find("best k"), std::string::npos);
  std::ofstream(f.dir / "bad.json") << R"({"q": {"image_class": "a", "neighbor_image_ids": ["m"], "neighbor_classes": ["a", "b"], "neighbor_distances": [0.1]}})";
  r = run_cli("eval --neighbors " + f.dir / "bad.json" + " --json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("differ in length"), std::string::npos) << r.err;
  r = run_cli("eval --neighbors " + f.dir / "missing.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;
  r = run_cli("eval --neighbors " + f.file + " --k 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("fewer than k=5"), std::string::npos) << r.err;
}
