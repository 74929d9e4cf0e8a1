// The HTTP service (server.h) in-process on a free port, against the library:
// the same answers as Memory::search / decide_query, writes that change
// nothing when refused, concurrent readers with a writer, image requests.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "decision.h"
#include "encoder.h"
#include "memory.h"
#include "pipeline.h"
#include "server.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::random_unit;
using vismem::test::TempDir;
using json = nlohmann::json;

namespace {

// A running service on 127.0.0.1:port, stopped and joined at the end.
struct Running {
  Server srv;
  int port = 0;
  std::thread th;
  Running(Memory m, ServerOptions o) : srv(std::move(m), o) {
    port = srv.bind("127.0.0.1", 0);
    th = std::thread([this] { srv.run(); });
  }
  ~Running() {
    srv.stop();
    th.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c;
  }
};

json rows(const std::vector<float>& x, int64_t n, int d) {
  json a = json::array();
  for (int64_t i = 0; i < n; ++i) a.push_back(std::vector<float>(x.begin() + i * d, x.begin() + (i + 1) * d));
  return a;
}

json post(httplib::Client& c, const std::string& path, const json& body, int expect) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return json();
  EXPECT_EQ(r->status, expect) << path << ": " << r->body;
  return json::parse(r->body);
}

struct Fixture {
  TempDir t;
  const int d = 16, n = 80;
  std::vector<float> x = random_unit(n, d, 61);
  std::vector<std::string> ids, labels;
  Fixture() {
    for (int i = 0; i < n; ++i) {
      ids.push_back("i" + std::to_string(i));
      labels.push_back("c" + std::to_string(i % 4));
    }
    Memory m = Memory::create(t / "m.db", {.dim = d, .model_id = "test"});
    m.add(ids, labels, x.data());
  }
};

}  // namespace

TEST(Server, AnswersEqualTheLibrary) {
  Fixture f;
  Memory local = Memory::open(f.t / "m.db");
  Running s(Memory::open(f.t / "m.db"), {});
  auto c = s.client();
  auto info = c.Get("/v1/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["items"], f.n);

  std::vector<float> q = random_unit(5, f.d, 62);
  json res = post(c, "/v1/classify", {{"embeddings", rows(q, 5, f.d)}, {"k", 7}, {"vote", "softmax"},
                                      {"ids", {"a", "b", "c", "d", "e"}}}, 200);
  auto nn = local.search(q.data(), 5, 100);
  ASSERT_EQ(res["results"].size(), 5u);
  for (int i = 0; i < 5; ++i) {
    QueryDecision qd = decide_query(local, nn[i], Vote::softmax, 7, 100);
    EXPECT_EQ(res["results"][i], decision_json(std::string(1, static_cast<char>('a' + i)), "softmax", qd)) << i;
  }
  json sr = post(c, "/v1/search", {{"embeddings", rows(q, 2, f.d)}, {"k", 4}}, 200);
  auto nn4 = local.search(q.data(), 2, 4);
  for (int i = 0; i < 2; ++i)
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(sr["results"][i][r]["id"], nn4[i][r].id);
      EXPECT_EQ(sr["results"][i][r]["distance"].get<float>(), nn4[i][r].distance);
    }
}

TEST(Server, WritesAndRefusalsChangeNothingWhenRefused) {
  Fixture f;
  {
    Running s(Memory::open(f.t / "m.db"), {});
    auto c = s.client();
    std::vector<float> y = random_unit(2, f.d, 63);
    json ok = post(c, "/v1/add", {{"ids", {"n0", "n1"}}, {"labels", {"c9", "c9"}}, {"embeddings", rows(y, 2, f.d)}}, 200);
    EXPECT_EQ(ok["added"], 2);
    EXPECT_EQ(ok["items"], f.n + 2);
    // Refused writes: duplicate id, wrong dimension, a zero vector, a non-number, bad mode.
    post(c, "/v1/add", {{"ids", {"n0"}}, {"labels", {"c9"}}, {"embeddings", rows(y, 1, f.d)}}, 400);
    post(c, "/v1/add", {{"ids", {"z"}}, {"labels", {"c9"}}, {"embedding", {1, 2, 3}}}, 400);
    post(c, "/v1/add", {{"ids", {"z"}}, {"labels", {"c9"}}, {"embedding", std::vector<float>(f.d, 0.f)}}, 400);
    json bad = {{"ids", {"z"}}, {"labels", {"c9"}}, {"embedding", std::vector<float>(f.d, 0.5f)}};
    bad["embedding"][3] = "x";
    post(c, "/v1/add", bad, 400);
    post(c, "/v1/add", {{"ids", {"z"}}, {"labels", {"c9"}}, {"embeddings", rows(y, 1, f.d)}, {"mode", "merge"}}, 400);
    post(c, "/v1/remove", {{"ids", {"nope"}}}, 400);
    EXPECT_EQ(json::parse(c.Get("/v1/info")->body)["items"], f.n + 2);
    json rm = post(c, "/v1/remove", {{"ids", {"n0"}}}, 200);
    EXPECT_EQ(rm["removed"], 1);
    // Bad requests of every other kind.
    auto r = c.Post("/v1/classify", "{not json", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("not valid JSON"), std::string::npos);
    post(c, "/v1/classify", {{"embeddings", rows(y, 1, f.d)}, {"k", 0}}, 400);
    post(c, "/v1/classify", {{"embeddings", rows(y, 1, f.d)}, {"vote", "best"}}, 400);
    r = c.Get("/v2/info");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    // Images to a memory that is not bound to a model.
    r = c.Post("/v1/classify", std::string("\x89PNG...."), "image/png");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
  }
  Memory after = Memory::open(f.t / "m.db");
  EXPECT_EQ(after.size(), f.n + 1);
  EXPECT_TRUE(after.contains("n1"));
  EXPECT_FALSE(after.contains("n0"));

  ServerOptions ro;
  ro.read_only = true;
  Running s(Memory::open(f.t / "m.db"), ro);
  auto c = s.client();
  post(c, "/v1/remove", {{"ids", {"n1"}}}, 403);
  EXPECT_TRUE(Memory::open(f.t / "m.db").contains("n1"));
}

TEST(Server, ConcurrentReadersWithAWriter) {
  Fixture f;
  Running s(Memory::open(f.t / "m.db"), {});
  std::vector<float> q = random_unit(1, f.d, 64);
  std::atomic<int> failures{0}, done{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&] {
      auto c = s.client();
      for (int i = 0; i < 40; ++i) {
        auto r = c.Post("/v1/classify", json{{"embedding", q}, {"k", 5}}.dump(), "application/json");
        if (!r || r->status != 200 || json::parse(r->body)["results"][0]["neighbors"].size() != 5u) ++failures;
        // info() reads the file: several at once share one SQLite connection.
        auto info = c.Get("/v1/info");
        if (!info || info->status != 200 || json::parse(info->body)["dim"] != f.d) ++failures;
        ++done;
      }
    });
  {
    auto c = s.client();
    for (int i = 0; i < 20; ++i) {
      std::vector<float> y = random_unit(1, f.d, 100 + i);
      std::string id = "w" + std::to_string(i);
      post(c, "/v1/add", {{"ids", {id}}, {"labels", {"c0"}}, {"embeddings", rows(y, 1, f.d)}}, 200);
      if (i % 2) post(c, "/v1/remove", {{"ids", {id}}}, 200);
    }
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(done.load(), 160);
  auto c = s.client();
  EXPECT_EQ(json::parse(c.Get("/v1/info")->body)["items"], f.n + 10);
}

TEST(Server, ImageRequestEqualsLocalClassification) {
  TempDir t;
  const std::string model = test::shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  const std::string data = test::shared_dir() + "/data/imagenette2";
  auto enc = load_encoder(model);
  std::vector<std::string> paths, ids, labels;
  for (std::string cls : {"n01440764", "n03888257"}) {
    int taken = 0;
    for (auto& e : std::filesystem::directory_iterator(data + "/train/" + cls)) {
      paths.push_back(e.path().string());
      ids.push_back(cls + "/" + e.path().filename().string());
      labels.push_back(cls);
      if (++taken == 3) break;
    }
  }
  EmbedResult er = embed_images(*enc, paths);
  ASSERT_EQ(er.ok.size(), paths.size());
  {
    Memory m = Memory::create(t / "m.db", {.dim = enc->dim(), .model_id = enc->name(), .fingerprint = enc->fingerprint(),
                                           .model_path = model});
    m.add(ids, labels, er.embeddings.data());
  }
  std::string query;
  for (auto& e : std::filesystem::directory_iterator(data + "/val/n03888257")) {
    query = e.path().string();
    break;
  }
  EmbedResult qe = embed_images(*enc, {query});
  Memory local = Memory::open(t / "m.db");
  QueryDecision qd = decide_query(local, local.search(qe.embeddings.data(), 1, 100)[0], Vote::plurality, 3, 100);

  Running s(Memory::open(t / "m.db"), {});
  auto c = s.client();
  std::string bytes = test::read_file(query);
  auto r = c.Post("/v1/classify?k=3&vote=plurality&id=q.jpg", bytes, "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["results"][0], decision_json("q.jpg", "plurality", qd));
  r = c.Post("/v1/classify", std::string("not an image"), "image/jpeg");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

TEST(ServerCli, ServesUntilSigterm) {
  Fixture f;
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const std::string mem = f.t / "m.db";
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(VISMEM_CLI_PATH, VISMEM_CLI_PATH, "serve", mem.c_str(), "--port", "0", "--read-only", nullptr);
    _exit(127);
  }
  close(out[1]);
  // "serving MEM on http://127.0.0.1:PORT (read-only)"
  std::string line;
  char ch = 0;
  while (read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  auto at = line.rfind(':');
  ASSERT_NE(at, std::string::npos) << line;
  int port = std::stoi(line.substr(at + 1));
  httplib::Client c("127.0.0.1", port);
  auto info = c.Get("/v1/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["items"], f.n);
  post(c, "/v1/remove", {{"ids", {"i1"}}}, 403);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::string rest;
  while (read(out[0], &ch, 1) == 1) rest += ch;
  close(out[0]);
  EXPECT_NE(rest.find("stopped"), std::string::npos) << rest;
}
