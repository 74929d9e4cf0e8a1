// classify / eval / ood-fit with a taxonomy, OOD scores and abstaining, end to
// end through the CLI on hand-placed embeddings whose answers are known.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "npy.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::run_cli;
using vismem::test::TempDir;

namespace {

// Items on the unit circle of the first two coordinates (d = 4): angle in
// degrees. Classes: cat near 0, dog near 20, trout near 90, car near 180.
struct Fixture {
  TempDir t;
  std::string mem = t / "m.db";
  Fixture() {
    std::vector<std::pair<std::string, double>> items = {
        {"cat", 0}, {"cat", 2}, {"cat", 4}, {"dog", 16}, {"dog", 18}, {"dog", 20},
        {"trout", 88}, {"trout", 90}, {"trout", 92}, {"car", 178}, {"car", 180}, {"car", 182}};
    std::vector<std::string> labels, ids;
    std::vector<float> x;
    for (size_t i = 0; i < items.size(); ++i) {
      labels.push_back(items[i].first);
      ids.push_back("i" + std::to_string(i));
      push(x, items[i].second);
    }
    write_npy_f32(t / "x.npy", x.data(), {static_cast<int64_t>(items.size()), 4});
    write_lines(t / "labels.txt", labels);
    write_lines(t / "ids.txt", ids);
    write_text_file(t / "tax.tsv",
                    "cat\troot > animal > mammal > cat\n"
                    "dog\troot > animal > mammal > dog\n"
                    "trout\troot > animal > fish > trout\n"
                    "car\troot > artifact > vehicle > car\n");
    EXPECT_EQ(run_cli("create " + mem + " --dim 4").exit_code, 0);
    auto r = run_cli("add " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "labels.txt" + " --ids " + t / "ids.txt");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  static void push(std::vector<float>& x, double deg, double off_plane = 0) {
    double a = deg * M_PI / 180;
    x.insert(x.end(), {static_cast<float>(std::cos(a)), static_cast<float>(std::sin(a)), static_cast<float>(off_plane), 0.f});
  }
  std::string queries(const std::string& name, std::vector<std::pair<double, double>> q) {
    std::vector<float> x;
    for (auto [deg, off] : q) push(x, deg, off);
    write_npy_f32(t / name, x.data(), {static_cast<int64_t>(q.size()), 4});
    return t / name;
  }
};

}  // namespace

TEST(CliClassify, LevelsAndConfidentAnswer) {
  Fixture f;
  // A query between cat and dog (10 degrees): k = 4 takes 2 cats + 2 dogs.
  std::string q = f.queries("q.npy", {{10, 0}});
  auto r = run_cli("classify " + f.mem + " --embeddings " + q + " --k 4 --vote plurality --taxonomy " + f.t / "tax.tsv" +
                   " --levels 1,2 --confident 0.9 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["levels"].size(), 3u);
  EXPECT_EQ(j["levels"][0]["prediction"], "animal");
  EXPECT_EQ(j["levels"][1]["prediction"], "mammal");
  EXPECT_DOUBLE_EQ(j["levels"][1]["score_share"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["levels"][2]["score_share"].get<double>(), 0.5);
  EXPECT_EQ(j["confident_level"], "depth 2");
  EXPECT_EQ(j["confident_prediction"], "mammal");
  EXPECT_DOUBLE_EQ(j["vote_share"].get<double>(), 0.5);
  EXPECT_NEAR(j["entropy"].get<double>(), std::log(2.0) / std::log(4.0), 1e-12);

  // Text output names the confident level; a label outside the taxonomy is an error.
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --k 4 --taxonomy " + f.t / "tax.tsv" + " --levels 1,2 --confident 0.9");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("depth 2   mammal (share 1.00)  <- confident"), std::string::npos) << r.out;
  write_text_file(f.t / "small.tsv", "cat\troot > cat\n");
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --taxonomy " + f.t / "small.tsv");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not in the taxonomy"), std::string::npos) << r.err;
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --confident 0.5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--taxonomy"), std::string::npos) << r.err;
}

TEST(CliClassify, EvalPerLevel) {
  Fixture f;
  // Queries near each class, with true labels; trout query sits near dog so it
  // is wrong at the leaf and at depth 2 but right at depth 1 (animal).
  std::string q = f.queries("q.npy", {{1, 0}, {19, 0}, {181, 0}, {30, 0}});
  write_lines(f.t / "ql.txt", {"cat", "dog", "car", "trout"});
  auto r = run_cli("eval " + f.mem + " --embeddings " + q + " --labels " + f.t / "ql.txt" + " --k 1 --taxonomy " +
                   f.t / "tax.tsv" + " --levels 1,2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(j["methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 75.0);
  EXPECT_DOUBLE_EQ(j["levels"]["depth 1"]["methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 100.0);
  EXPECT_DOUBLE_EQ(j["levels"]["depth 2"]["methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 75.0);
}

TEST(CliClassify, OodFitAndAbstain) {
  Fixture f;
  // Fit on in-distribution queries (on the circle), then an off-plane query is OOD.
  std::string in = f.queries("in.npy", {{1, 0}, {3, 0}, {10, 0}, {17, 0}, {19, 0}, {89, 0}, {91, 0}, {179, 0}, {181, 0}});
  auto r = run_cli("ood-fit " + f.mem + " --embeddings " + in + " --k 3 --fpr 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto fit = nlohmann::json::parse(r.out);
  EXPECT_EQ(fit["k"], 3);
  EXPECT_DOUBLE_EQ(fit["fpr_measured"].get<double>(), 0.0);
  auto info = nlohmann::json::parse(run_cli("info " + f.mem + " --json").out);
  EXPECT_DOUBLE_EQ(info["ood"]["threshold"].get<double>(), fit["threshold"].get<double>());
  EXPECT_FALSE(info["ood"]["stale"].get<bool>());

  std::string q = f.queries("q.npy", {{2, 0}, {2, 3}});  // the second is far off the plane
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --k 3 --abstain --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["prediction"], "cat");
  EXPECT_FALSE(j[0]["abstained"].get<bool>());
  EXPECT_TRUE(j[1]["prediction"].is_null());
  EXPECT_TRUE(j[1]["abstained"].get<bool>());
  EXPECT_GT(j[1]["ood_score"].get<double>(), j[1]["ood_threshold"].get<double>());
  // The OOD score is the median of the first k distances.
  auto nn = j[0]["neighbors"];
  EXPECT_DOUBLE_EQ(j[0]["ood_score"].get<double>(), nn[1]["distance"].get<double>());

  // --self fits on the memory's own items; a changed memory marks the fit stale.
  r = run_cli("ood-fit " + f.mem + " --self --k 2 --fpr 0.25");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OOD threshold"), std::string::npos);
  r = run_cli("remove " + f.mem + " --id i0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  info = nlohmann::json::parse(run_cli("info " + f.mem + " --json").out);
  EXPECT_TRUE(info["ood"]["stale"].get<bool>());

  // Without a fitted threshold, --abstain is refused with the way out.
  Fixture g;
  r = run_cli("classify " + g.mem + " --embeddings " + q + " --abstain");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("ood-fit"), std::string::npos) << r.err;
  r = run_cli("ood-fit " + g.mem + " --k 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exactly one of"), std::string::npos) << r.err;
}

TEST(CliClassify, RerankCommandAnswers) {
  Fixture f;
  std::string q = f.queries("q.npy", {{1, 0}, {179, 0}});
  // A re-ranker that answers the label of the last neighbor it was given,
  // and leaves the request where the test can read it.
  write_text_file(f.t / "rr.py",
                  "import json, sys\n"
                  "req = json.load(sys.stdin)\n"
                  "open(sys.argv[1] + '/' + req['query']['id'] + '.json', 'w').write(json.dumps(req))\n"
                  "print(json.dumps({'label': req['neighbors'][-1]['label']}))\n");
  auto r = run_cli("classify " + f.mem + " --embeddings " + q + " --k 4 --vote plurality --json --rerank-cmd 'python3 " +
                   f.t / "rr.py" + " " + f.t.path.string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  // 4 neighbors of the 1-degree query: three cats, then the nearest dog (16).
  EXPECT_EQ(j[0]["rerank"]["vote_prediction"], "cat");
  EXPECT_EQ(j[0]["rerank"]["label"], "dog");
  EXPECT_EQ(j[0]["prediction"], "dog");
  EXPECT_EQ(j[1]["rerank"]["vote_prediction"], "car");  // last of 4 neighbors of 179: car 178/180/182, then trout 92
  EXPECT_EQ(j[1]["rerank"]["label"], "trout");
  EXPECT_EQ(j[1]["prediction"], "trout");
  auto req = nlohmann::json::parse(test::read_file(f.t / "q0.json"));
  EXPECT_EQ(req["k"], 4);
  EXPECT_EQ(req["prediction"], "cat");
  ASSERT_EQ(req["neighbors"].size(), 4u);
  EXPECT_EQ(req["neighbors"][0]["label"], "cat");
  EXPECT_TRUE(req["query"]["image"].is_null());
  // A failing re-ranker is an error, not a silent fallback to the vote.
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --rerank-cmd 'echo broken >&2; exit 2'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("broken"), std::string::npos) << r.err;
}

TEST(CliClassify, EvalReportsCoverageWhenAbstaining) {
  Fixture f;
  std::string in = f.queries("in.npy", {{1, 0}, {3, 0}, {10, 0}, {17, 0}, {19, 0}, {89, 0}, {91, 0}, {179, 0}, {181, 0}});
  ASSERT_EQ(run_cli("ood-fit " + f.mem + " --embeddings " + in + " --k 3 --fpr 0").exit_code, 0);
  // Three queries on the circle (right, right, wrong) and one far off it.
  std::string q = f.queries("q.npy", {{2, 0}, {179, 0}, {13, 0}, {2, 3}});
  write_lines(f.t / "ql.txt", {"cat", "car", "trout", "cat"});
  auto r = run_cli("eval " + f.mem + " --embeddings " + q + " --labels " + f.t / "ql.txt" + " --k 1 --abstain --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_DOUBLE_EQ(j["methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 75.0);  // the far one is still a cat
  EXPECT_EQ(j["abstain"]["kept"], 3);
  EXPECT_DOUBLE_EQ(j["abstain"]["coverage"].get<double>(), 75.0);
  EXPECT_NEAR(j["abstain"]["kept_methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 200.0 / 3, 1e-9);
  r = run_cli("eval " + f.mem + " --embeddings " + q + " --labels " + f.t / "ql.txt" + " --abstain --taxonomy " + f.t / "tax.tsv");
  EXPECT_EQ(r.exit_code, 1);
}

TEST(CliClassify, LabelNamesBesideLabels) {
  Fixture f;
  write_text_file(f.t / "names.tsv", "cat\tdomestic cat\ndog\tdomestic dog\n");
  std::string q = f.queries("q.npy", {{1, 0}});
  auto r = run_cli("classify " + f.mem + " --embeddings " + q + " --k 4 --vote plurality --json --label-names " + f.t / "names.tsv");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prediction"], "cat");  // labels stay as stored
  EXPECT_EQ(j["prediction_name"], "domestic cat");
  EXPECT_EQ(j["scores"][1]["name"], "domestic dog");
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --label-names " + f.t / "names.tsv");
  EXPECT_NE(r.out.find("prediction: cat (domestic cat)"), std::string::npos) << r.out;
  r = run_cli("classify " + f.mem + " --embeddings " + q + " --label-names " + f.t / "missing.tsv");
  EXPECT_EQ(r.exit_code, 1);
}
