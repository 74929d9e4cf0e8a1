// The re-ranking hook: the request document, running an external program
// (answers as JSON or plain text, failures, timeouts, bad output), and
// `vismem explain --rerank-cmd` end to end.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "error.h"
#include "rerank.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::run_cli;
using vismem::test::shared_dir;
using vismem::test::TempDir;
namespace fs = std::filesystem;

namespace {

// Answers the label of the second neighbor, as a JSON object, and keeps the request.
constexpr const char* kSecondNeighbor = R"py(import json, sys
req = json.load(sys.stdin)
with open(sys.argv[1], "w") as f:
    json.dump(req, f)
n = req["neighbors"][1]
print("thinking...", file=sys.stderr)
print(json.dumps({"label": n["label"], "confidence": 0.5, "reason": "second neighbor " + n["id"]}))
)py";

std::string write_script(const TempDir& t, const std::string& name, const std::string& text) {
  std::ofstream(t / name) << text;
  return t / name;
}

std::vector<Neighbor> neighbors(int n) {
  std::vector<Neighbor> nn;
  for (int i = 0; i < n; ++i) nn.push_back({i, "img_" + std::to_string(i) + ".jpg", i % 3 ? "dog" : "cat", 0.1f * (i + 1)});
  return nn;
}

Decision decision_for(const std::vector<Neighbor>& nn, int k) {
  NeighborVotes nv;
  for (auto& n : nn) {
    nv.labels.push_back(n.label);
    nv.distances.push_back(n.distance);
  }
  return decide(Vote::rank, nv, k);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string error_of(const std::string& cmd, const nlohmann::json& req, int timeout_s) {
  try {
    run_rerank(cmd, req, timeout_s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Rerank, RequestDocument) {
  auto nn = neighbors(5);
  Decision d = decision_for(nn, 3);
  nlohmann::json j = rerank_request("q.jpg", "rel/q.jpg", "rank", 3, d.prediction, nn,
                                    {"/abs/a.jpg", "", "b.jpg", "", ""}, d);
  EXPECT_EQ(j["query"]["id"], "q.jpg");
  EXPECT_EQ(j["query"]["image"], (fs::current_path() / "rel/q.jpg").string());
  EXPECT_EQ(j["vote"], "rank");
  EXPECT_EQ(j["k"], 3);
  EXPECT_EQ(j["prediction"], d.prediction);
  ASSERT_EQ(j["scores"].size(), d.scores.size());
  EXPECT_EQ(j["scores"][0]["label"], d.scores[0].first);
  EXPECT_DOUBLE_EQ(j["scores"][0]["score"].get<double>(), d.scores[0].second);
  ASSERT_EQ(j["neighbors"].size(), 5u);
  EXPECT_EQ(j["neighbors"][0]["rank"], 1);
  EXPECT_EQ(j["neighbors"][0]["id"], "img_0.jpg");
  EXPECT_EQ(j["neighbors"][0]["label"], "cat");
  EXPECT_EQ(j["neighbors"][0]["image"], "/abs/a.jpg");
  EXPECT_TRUE(j["neighbors"][1]["image"].is_null());
  EXPECT_EQ(j["neighbors"][2]["image"], (fs::current_path() / "b.jpg").string());
  EXPECT_NEAR(j["neighbors"][1]["distance"].get<double>(), 0.2, 1e-6);
  EXPECT_DOUBLE_EQ(j["neighbors"][2]["weight"].get<double>(), d.neighbor_weights[2]);
  EXPECT_TRUE(j["neighbors"][3]["weight"].is_null());  // past k: did not vote
  // No paths at all: every image null; a wrong count is an error.
  j = rerank_request("q", "", "rank", 3, d.prediction, nn, {}, d);
  EXPECT_TRUE(j["query"]["image"].is_null());
  EXPECT_TRUE(j["neighbors"][4]["image"].is_null());
  EXPECT_THROW(rerank_request("q", "", "rank", 3, d.prediction, nn, {"a"}, d), Error);
}

TEST(Rerank, JsonAnswerFromAScript) {
  TempDir t;
  auto nn = neighbors(4);
  Decision d = decision_for(nn, 4);
  nlohmann::json req = rerank_request("q.jpg", "", "rank", 4, d.prediction, nn, {}, d);
  std::string script = write_script(t, "second.py", kSecondNeighbor);
  RerankAnswer a = run_rerank("python3 " + script + " " + t / "seen.json", req, 30);
  EXPECT_EQ(a.label, "dog");
  ASSERT_TRUE(a.confidence.has_value());
  EXPECT_DOUBLE_EQ(*a.confidence, 0.5);
  EXPECT_EQ(a.reason, "second neighbor img_1.jpg");
  EXPECT_NE(a.stderr_text.find("thinking..."), std::string::npos);
  // The program saw exactly the request.
  EXPECT_EQ(nlohmann::json::parse(test::read_file(t / "seen.json")), req);
}

TEST(Rerank, PlainTextAnswerIsTheFirstLine) {
  nlohmann::json req = {{"k", 1}};
  EXPECT_EQ(run_rerank("cat >/dev/null; printf '\\n  golden retriever \\nsecond line\\n'", req, 10).label,
            "golden retriever");
  // Reading stdin is optional, even when the request is larger than a pipe buffer.
  nlohmann::json big = rerank_request("q", "", "rank", 3000, "cat", neighbors(3000), {}, decision_for(neighbors(3000), 3000));
  ASSERT_GT(big.dump().size(), 200000u);
  EXPECT_EQ(run_rerank("echo tabby", big, 10).label, "tabby");
  // A big request read through a pipeline: the answer depends on all of it.
  EXPECT_EQ(run_rerank("wc -c | awk '{print ($1 > 200000) ? \"big\" : \"small\"}'", big, 10).label, "big");
}

TEST(Rerank, FailingProgramReportsStatusAndStderr) {
  nlohmann::json req = {{"k", 1}};
  std::string e = error_of("cat >/dev/null; echo 'model weights not found' >&2; exit 3", req, 10);
  EXPECT_NE(e.find("exited with status 3"), std::string::npos) << e;
  EXPECT_NE(e.find("model weights not found"), std::string::npos) << e;
  e = error_of("no_such_reranker_program_xyz", req, 10);
  EXPECT_NE(e.find("status 127"), std::string::npos) << e;
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  e = error_of("kill -9 $$", req, 10);
  EXPECT_NE(e.find("killed by signal 9"), std::string::npos) << e;
  EXPECT_THROW(run_rerank("", req, 10), Error);
  EXPECT_THROW(run_rerank("echo x", req, 0), Error);
}

TEST(Rerank, TimeoutKillsTheProcessGroupQuickly) {
  TempDir t;
  nlohmann::json req = {{"k", 1}};
  // The shell starts sleep in the background and waits: both must die.
  const std::string cmd = "echo started >&2; sleep 10 & echo $! > " + t / "pid" + "; wait";
  auto t0 = std::chrono::steady_clock::now();
  std::string e = error_of(cmd, req, 1);
  const double took = seconds_since(t0);
  EXPECT_NE(e.find("timed out after 1 s"), std::string::npos) << e;
  EXPECT_NE(e.find("started"), std::string::npos) << e;
  EXPECT_LT(took, 4.0);
  const std::string pid = test::read_file(t / "pid");
  ASSERT_FALSE(pid.empty());
  // Gone or a zombie waiting for init: not sleeping on.
  const std::string stat = "/proc/" + pid.substr(0, pid.find('\n')) + "/stat";
  bool dead = false;
  for (int i = 0; i < 100 && !dead; ++i) {
    std::string s = test::read_file(stat);
    dead = s.empty() || s.find(") Z") != std::string::npos;
    if (!dead) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(dead) << test::read_file(stat);
  // A program that closes stdout but keeps running is also stopped by the deadline.
  t0 = std::chrono::steady_clock::now();
  e = error_of("exec >/dev/null; sleep 10", req, 1);
  EXPECT_NE(e.find("timed out"), std::string::npos) << e;
  EXPECT_LT(seconds_since(t0), 4.0);
}

TEST(Rerank, InvalidAnswersAreErrors) {
  nlohmann::json req = {{"k", 1}};
  std::string e = error_of("true", req, 10);
  EXPECT_NE(e.find("no answer"), std::string::npos) << e;
  e = error_of("printf '  \\n\\n'", req, 10);
  EXPECT_NE(e.find("no answer"), std::string::npos) << e;
  e = error_of("echo '{\"label\": '", req, 10);
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
  e = error_of("echo '{\"label\": 3}'", req, 10);
  EXPECT_NE(e.find("\"label\""), std::string::npos) << e;
  e = error_of("echo '{\"answer\": \"cat\"}'", req, 10);
  EXPECT_NE(e.find("\"label\""), std::string::npos) << e;
  e = error_of("echo '{\"label\": \"cat\", \"confidence\": \"high\"}'", req, 10);
  EXPECT_NE(e.find("confidence"), std::string::npos) << e;
  // Valid JSON, optional fields absent or null.
  RerankAnswer a = parse_rerank_answer("{\"label\": \" cat \", \"confidence\": null}");
  EXPECT_EQ(a.label, "cat");
  EXPECT_FALSE(a.confidence.has_value());
  EXPECT_EQ(a.reason, "");
}

TEST(RerankCli, ExplainAsksTheReranker) {
  TempDir t;
  const std::string model = shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  const std::string src = shared_dir() + "/data/imagenette2/train/";
  std::vector<std::string> ids;
  for (const char* c : {"n01440764", "n03888257"}) {
    std::vector<fs::path> files;
    for (auto& f : fs::directory_iterator(src + c)) files.push_back(f.path());
    std::sort(files.begin(), files.end());
    fs::create_directories(t / ("train/" + std::string(c)));
    for (size_t i = 0; i < 2; ++i) {
      fs::copy_file(files[i], t / "train/" + c + "/" + files[i].filename().string());
      ids.push_back(std::string(c) + "/" + files[i].filename().string());
    }
  }
  const std::string mem = t / "m.db";
  auto r = run_cli("create " + mem + " --model " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("add " + mem + " " + t / "train");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string query = t / "train/" + ids[0];
  std::string script = write_script(t, "second.py", kSecondNeighbor);

  r = run_cli("explain " + mem + " " + query + " --k 4 --rerank-cmd 'python3 " + script + " " + t / "seen.json" + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json seen = nlohmann::json::parse(test::read_file(t / "seen.json"));
  const std::string second = seen["neighbors"][1]["label"];
  EXPECT_NE(r.out.find("re-ranker: " + second + " (confidence 0.50)"), std::string::npos) << r.out;
  EXPECT_EQ(seen["k"], 4);
  EXPECT_EQ(seen["vote"], "rank");
  EXPECT_EQ(seen["query"]["image"], query);
  ASSERT_EQ(seen["neighbors"].size(), 4u);
  EXPECT_EQ(seen["neighbors"][0]["id"], ids[0]);  // the query is a memory item: itself first
  for (auto& n : seen["neighbors"]) EXPECT_TRUE(fs::exists(n["image"].get<std::string>())) << n;

  // With --html the page carries the answer beside the vote.
  r = run_cli("explain " + mem + " " + query + " --k 4 --html " + t / "p.html" + " --rerank-cmd 'echo hammerhead'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(re-ranker: hammerhead)"), std::string::npos) << r.out;
  EXPECT_NE(test::read_file(t / "p.html").find("<span class=\"rerank\">hammerhead</span>"), std::string::npos);

  // A failing re-ranker fails the command with its stderr.
  r = run_cli("explain " + mem + " " + query + " --k 4 --rerank-cmd 'echo no GPU >&2; exit 2' --rerank-timeout 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("exited with status 2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no GPU"), std::string::npos) << r.err;
}
