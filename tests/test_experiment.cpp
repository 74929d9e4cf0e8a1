// Experiments (experiment.h): knn against brute force, the scaling fit on
// exact points, and every experiment end to end through the CLI on small
// synthetic embedding sets (clustered classes, a made-up taxonomy).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <tuple>

#include "error.h"
#include "experiment.h"
#include "memory.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::TempDir;

namespace {

// Classes as noisy copies of random unit centers (d = 16).
LabeledSet clustered(const std::vector<std::string>& classes, int per_class, uint32_t seed, const std::string& prefix,
                     double noise = 0.15) {
  const int d = 16;
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0, 1);
  LabeledSet s;
  s.dim = d;
  for (auto& c : classes) {
    std::mt19937 gc(static_cast<uint32_t>(std::hash<std::string>{}(c)));  // same center in every split
    std::vector<float> center(d);
    for (auto& v : center) v = n(gc);
    for (int i = 0; i < per_class; ++i) {
      std::vector<float> x(d);
      double norm = 0;
      for (int j = 0; j < d; ++j) {
        x[j] = center[j] + static_cast<float>(noise) * 4 * n(g);
        norm += x[j] * x[j];
      }
      for (auto& v : x) v = static_cast<float>(v / std::sqrt(norm));
      s.ids.push_back(prefix + "/" + c + "/" + std::to_string(i));
      s.labels.push_back(c);
      s.x.insert(s.x.end(), x.begin(), x.end());
    }
  }
  return s;
}

void save(const LabeledSet& s, const std::string& path) {
  Memory m = Memory::create(path, {.dim = s.dim, .model_id = "synthetic"});
  m.add(s.ids, s.labels, s.x.data());
}

}  // namespace

TEST(Experiment, KnnMatchesBruteForce) {
  LabeledSet mem = clustered({"a", "b", "c"}, 20, 1, "m"), q = clustered({"a", "b", "c"}, 5, 2, "q");
  auto qs = knn(mem, q, 7);
  ASSERT_EQ(qs.size(), 15u);
  for (int64_t i = 0; i < q.size(); ++i) {
    std::vector<std::pair<double, int64_t>> all;
    for (int64_t j = 0; j < mem.size(); ++j) {
      double dot = 0;
      for (int c = 0; c < mem.dim; ++c) dot += double(q.x[i * mem.dim + c]) * mem.x[j * mem.dim + c];
      all.emplace_back(1 - dot, j);
    }
    std::sort(all.begin(), all.end());
    for (int r = 0; r < 7; ++r) {
      EXPECT_EQ(qs[i].neighbor_ids[r], mem.ids[all[r].second]) << i << " " << r;
      EXPECT_NEAR(qs[i].distances[r], all[r].first, 1e-5);
    }
    EXPECT_EQ(qs[i].true_labels[0], q.labels[i]);
  }
  // subset / concat / rows_with_labels keep rows and order.
  auto rows = rows_with_labels(mem, {"b"});
  ASSERT_EQ(rows.size(), 20u);
  LabeledSet b = subset(mem, rows);
  EXPECT_EQ(b.labels[0], "b");
  EXPECT_EQ(std::vector<float>(b.x.begin(), b.x.begin() + 16), std::vector<float>(mem.x.begin() + 20 * 16, mem.x.begin() + 21 * 16));
  LabeledSet ab = concat(subset(mem, rows_with_labels(mem, {"a"})), b);
  EXPECT_EQ(ab.size(), 40);
  EXPECT_EQ(ab.ids[20], b.ids[0]);
}

TEST(Experiment, ScalingFitRecoversExactLaw) {
  std::vector<double> n = {20, 100, 1000, 1e4, 1e5}, err;
  for (double x : n) err.push_back(std::pow(10.0, -1.3 * std::log10(std::log10(x)) + 1.7));
  ScalingFit f = fit_scaling(n, err);
  EXPECT_NEAR(f.a, -1.3, 1e-9);
  EXPECT_NEAR(f.b, 1.7, 1e-9);
  EXPECT_NEAR(f.r2, 1.0, 1e-12);
  EXPECT_NEAR(f.predict(1e6), std::pow(10.0, -1.3 * std::log10(6.0) + 1.7), 1e-9);
  EXPECT_THROW(fit_scaling({5, 8}, {10, 9}), Error);  // N must exceed 10
}

TEST(Experiment, UnknownNameIsAClearError) {
  EXPECT_THROW(experiment_sets("nope"), Error);
}

TEST(Experiment, AllExperimentsThroughTheCli) {
  TempDir t;
  std::filesystem::create_directories(t / "cache");
  std::vector<std::string> tiny, nette = {"n0", "n1", "n2"};
  std::string tax;
  for (int i = 0; i < 12; ++i) {
    std::string c = "t" + std::to_string(i);
    tiny.push_back(c);
    // Four groups of three at depth 2, two halves at depth 1.
    tax += c + "\troot > half" + std::to_string(i % 2) + " > group" + std::to_string(i % 4) + " > " + c + "\n";
  }
  write_text_file(t / "tax.tsv", tax);
  save(clustered(tiny, 12, 11, "tt"), t / "cache/tiny_train.db");
  save(clustered(tiny, 4, 12, "tv"), t / "cache/tiny_val.db");
  save(clustered(nette, 12, 13, "nt"), t / "cache/imagenette_train.db");
  save(clustered(nette, 4, 14, "nv"), t / "cache/imagenette_val.db");
  auto r = test::run_cli("experiment all --cache " + (t / "cache") + " --out " + (t / "res") + " --taxonomy " +
                         (t / "tax.tsv") + " --k 10 --seeds 2 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (std::string n : {"lifelong", "lifelong-split", "pruning", "scaling", "hierarchy", "ood"}) {
    std::string md = test::read_file(t / ("res/" + n + "/report.md"));
    EXPECT_NE(md.find("synthetic"), std::string::npos) << n;
    auto j = nlohmann::json::parse(test::read_file(t / ("res/" + n + "/numbers.json")));
    EXPECT_FALSE(j.empty()) << n;
  }
  EXPECT_NE(test::read_file(t / "res/README.md").find("scaling/report.md"), std::string::npos);
  for (std::string f : {"scaling/scaling.svg", "pruning/pruning_sweep.svg", "hierarchy/discovery.svg", "ood/ood_roc.svg",
                        "ood/calibration.svg"})
    EXPECT_NE(test::read_file(t / ("res/" + f)).find("<polyline"), std::string::npos) << f;

  // Checks on the numbers, from what the sets are.
  auto life = nlohmann::json::parse(test::read_file(t / "res/lifelong/numbers.json"));
  // Separable clusters: the new classes are learned from their items alone.
  EXPECT_GT(life["rank"]["new"].get<double>(), 80.0);
  EXPECT_GT(life["rank"]["old_before"].get<double>(), 80.0);
  auto hier = nlohmann::json::parse(test::read_file(t / "res/hierarchy/numbers.json"));
  EXPECT_EQ(hier["n"]["0"]["leaf"].get<double>(), 0.0);  // a held-out class cannot be named
  EXPECT_GT(hier["n"]["100"]["leaf"].get<double>(), 50.0);
  auto sc = nlohmann::json::parse(test::read_file(t / "res/scaling/numbers.json"));
  EXPECT_TRUE(sc["points"].contains("10"));
  EXPECT_FALSE(sc["points"].contains("20"));  // only 12 items per class
  auto ood = nlohmann::json::parse(test::read_file(t / "res/ood/numbers.json"));
  double fpr = ood["threshold"]["0.05"]["heldout_fpr"].get<double>();
  EXPECT_GE(fpr, 0.0);
  EXPECT_LE(fpr, 0.25);

  // Same seed, same report; a missing set without data is a clear error.
  auto again = test::run_cli("experiment scaling --cache " + (t / "cache") + " --out " + (t / "res2") + " --k 10 --seeds 2 --threads 1");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(test::read_file(t / "res2/scaling/report.md"), test::read_file(t / "res/scaling/report.md"));
  std::filesystem::remove(t / "cache/tiny_val.db");
  auto bad = test::run_cli("experiment scaling --cache " + (t / "cache") + " --data " + (t / "nodata") + " --out " + (t / "res3"));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("no such folder"), std::string::npos) << bad.err;
  // An explicit --model must be the one the cached sets were made with.
  auto other = test::run_cli("experiment lifelong --cache " + (t / "cache") + " --out " + (t / "res4") + " --model " +
                             test::shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("another --cache folder"), std::string::npos) << other.err;
  auto unknown = test::run_cli("experiment nope --cache " + (t / "cache"));
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("unknown experiment"), std::string::npos) << unknown.err;
}

TEST(Experiment, CachedSetsOfOneModelAtTwoPrecisionsAreRefused) {
  // The sets must share the whole fingerprint: the same model's int8
  // embeddings differ from its float32 ones only in the fingerprint's end.
  TempDir t;
  std::filesystem::create_directories(t / "cache");
  const std::vector<std::string> classes = {"a", "b"};
  const LabeledSet train = clustered(classes, 6, 1, "tt"), val = clustered(classes, 2, 2, "tv");
  for (auto [set, name, fp] : {std::tuple{&train, "tiny_train.db", "f409ef4f73fcbb96|pre"},
                               std::tuple{&val, "tiny_val.db", "f409ef4f73fcbb96|pre|int8|a8"}}) {
    Memory::CreateOptions co;
    co.dim = set->dim;
    co.model_id = "mobilenet_v1";
    co.fingerprint = fp;
    Memory m = Memory::create(t / ("cache/" + std::string(name)), co);
    m.add(set->ids, set->labels, set->x.data());
  }
  auto r = test::run_cli("experiment scaling --cache " + (t / "cache") + " --out " + (t / "res") + " --k 3 --seeds 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("embedded with mobilenet_v1 (f409ef4f73fc, int8|a8), the other sets with mobilenet_v1 "
                       "(f409ef4f73fc, f32)"),
            std::string::npos)
      << r.err;
}

TEST(Experiment, DiscoveryMatchesBuildingEachMemory) {
  // The hierarchy experiment merges each query's neighbor list instead of
  // building a memory per held-out class. Oracle: build them. At n = 0 (the
  // class removed) and n >= class size (all of it) no random draw is involved.
  std::vector<std::string> classes;
  std::string tax;
  for (int i = 0; i < 10; ++i) {
    classes.push_back("t" + std::to_string(i));
    tax += classes.back() + "\troot > h" + std::to_string(i % 2) + " > g" + std::to_string(i % 4) + " > x" +
           std::to_string(i % 5) + " > h" + std::to_string(i % 2) + "g" + std::to_string(i % 4) + "x" + std::to_string(i % 5) +
           " > " + classes.back() + "\n";
  }
  TempDir t;
  write_text_file(t / "tax.tsv", tax);
  LabeledSet train = clustered(classes, 9, 21, "tt", 0.3), val = clustered(classes, 3, 22, "tv", 0.3);
  ExperimentData data;
  data.get = [&](const std::string& n) -> const LabeledSet& { return n == "tiny/train" ? train : val; };
  data.taxonomy = Taxonomy::read(t / "tax.tsv");
  ExperimentReport r = run_experiment("hierarchy", data, {});
  const Taxonomy& tx = *data.taxonomy;
  for (int n : {0, 100}) {
    std::map<std::string, int> correct;
    for (auto& c : classes) {
      auto others = rows_with_labels(train, [&] {
        std::vector<std::string> o;
        for (auto& x : classes)
          if (x != c || n > 0) o.push_back(x);
        return o;
      }());
      auto qs = knn(subset(train, others), subset(val, rows_with_labels(val, {c})), 10);
      for (auto& q : qs) {
        NeighborVotes nv{q.neighbor_labels, q.distances, {}, {}};
        HierarchyDecision h = decide_levels(Vote::rank, nv, 10, tx, {4, 6, 8}, 0.5);
        for (size_t l = 0; l < h.levels.size(); ++l) {
          std::string truth = h.levels[l].depth < 0 ? c : tx.at_depth(c, h.levels[l].depth);
          correct[h.levels[l].level] += h.levels[l].decision.prediction == truth;
        }
      }
    }
    for (auto& [level, k] : correct)
      EXPECT_DOUBLE_EQ(r.numbers["n"][std::to_string(n)][level].get<double>(), 100.0 * k / val.size())
          << "n=" << n << " " << level;
  }
}
