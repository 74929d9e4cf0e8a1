// The HTTP service (server.h) in-process on a free port, against the library:
// the same answers as Memory::search / decide_query, writes that change
// nothing when refused, concurrent readers with a writer, image requests.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>

#include "decision.h"
#include "encoder.h"
#include "error.h"
#include "explain.h"
#include "hash.h"
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

int status_of_result(const httplib::Result& r) { return r ? r->status : -1; }

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

TEST(ServerCli, RefusesOpenWritesOffLoopbackAndPrintsAGeneratedToken) {
  Fixture f;
  const std::string mem = f.t / "m.db";
  // Nothing is bound: the refusal comes before.
  auto r = test::run_cli("serve " + mem + " --host 0.0.0.0 --port 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--tokens"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;

  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    execl(VISMEM_CLI_PATH, VISMEM_CLI_PATH, "serve", mem.c_str(), "--port", "0", "--generate-token", nullptr);
    _exit(127);
  }
  close(out[1]);
  auto line = [&] {
    std::string l;
    char ch = 0;
    while (read(out[0], &ch, 1) == 1 && ch != '\n') l += ch;
    return l;
  };
  const std::string tline = line(), sline = line();  // "write token (shown once): vm_...", "serving ... :PORT (tokens required)"
  const std::string token = tline.substr(tline.rfind(' ') + 1);
  EXPECT_EQ(token.rfind("vm_", 0), 0u) << tline;
  const int port = std::stoi(sline.substr(sline.rfind(':') + 1));
  httplib::Client c("127.0.0.1", port);
  EXPECT_EQ(status_of_result(c.Get("/v1/info")), 401);
  httplib::Headers h = {{"Authorization", "Bearer " + token}};
  auto info = c.Get("/v1/info", h);
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["items"], f.n);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  close(out[0]);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// ------------------------------------------------------------------ access

namespace {

struct Tokens {
  std::string read = new_token(), write = new_token();
  std::vector<ApiToken> list() const {
    return {{sha256_hex(read.data(), read.size()), false, "r"}, {sha256_hex(write.data(), write.size()), true, "w"}};
  }
};

httplib::Result post_raw(httplib::Client& c, const std::string& path, const std::string& body, const std::string& type,
                         const std::string& token = "") {
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  return c.Post(path.c_str(), h, body, type.c_str());
}

int status_of(const httplib::Result& r) { return r ? r->status : -1; }

// The error message of a JSON error answer ("" if the body is not one).
std::string error_of(const httplib::Result& r) {
  if (!r) return "<no response>";
  try {
    return json::parse(r->body).at("error");
  } catch (...) {
    return "";
  }
}

}  // namespace

TEST(ServerAccess, TokensScopesContentTypeAndHost) {
  Fixture f;
  Tokens tk;
  ServerOptions o;
  o.tokens = tk.list();
  Running s(Memory::open(f.t / "m.db"), o);
  auto c = s.client();
  std::vector<float> y = random_unit(1, f.d, 70);
  const std::string add = json{{"ids", {"new"}}, {"labels", {"c0"}}, {"embeddings", rows(y, 1, f.d)}}.dump();
  const std::string query = json{{"embedding", std::vector<float>(y.begin(), y.end())}, {"k", 3}}.dump();

  // No token: reads and writes refused with 401 and a JSON message; /healthz and / are open.
  auto r = c.Get("/v1/info");
  EXPECT_EQ(status_of(r), 401);
  EXPECT_NE(error_of(r).find("Authorization: Bearer"), std::string::npos) << error_of(r);
  EXPECT_EQ(status_of(post_raw(c, "/v1/add", add, "application/json")), 401);
  EXPECT_EQ(status_of(c.Get("/healthz")), 200);
  r = c.Get("/");
  EXPECT_EQ(status_of(r), 200);
  EXPECT_NE(r->body.find("<script src=\"/app.js\">"), std::string::npos);
  EXPECT_EQ(status_of(c.Get("/metrics")), 401);
  // An unknown token, a read token on a write: refused. Read token on reads: answered.
  EXPECT_EQ(status_of(post_raw(c, "/v1/classify", query, "application/json", "vm_nope")), 401);
  r = post_raw(c, "/v1/add", add, "application/json", tk.read);
  EXPECT_EQ(status_of(r), 403);
  EXPECT_NE(error_of(r).find("read scope"), std::string::npos) << error_of(r);
  EXPECT_EQ(status_of(post_raw(c, "/v1/remove", R"({"ids": ["i1"]})", "application/json", tk.read)), 403);
  EXPECT_EQ(status_of(post_raw(c, "/v1/classify", query, "application/json", tk.read)), 200);
  httplib::Headers rh = {{"Authorization", "Bearer " + tk.read}};
  EXPECT_EQ(status_of(c.Get("/metrics", rh)), 200);
  // A write token, but a body type a cross-site form can send: refused (CSRF).
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    r = post_raw(c, "/v1/add", add, type, tk.write);
    EXPECT_EQ(status_of(r), 415) << type;
    EXPECT_NE(error_of(r).find("application/json"), std::string::npos) << type;
  }
  // An image type is for classify/explain only.
  EXPECT_EQ(status_of(post_raw(c, "/v1/search", query, "image/png", tk.read)), 415);
  EXPECT_EQ(Memory::open(f.t / "m.db").size(), f.n);  // nothing was written so far
  // The write token with JSON: written. "; charset" is fine.
  r = post_raw(c, "/v1/add", add, "application/json; charset=utf-8", tk.write);
  ASSERT_EQ(status_of(r), 200) << (r ? r->body : "");
  EXPECT_TRUE(Memory::open(f.t / "m.db").contains("new"));

  // Host allow-list (DNS rebinding): only the default local names.
  for (const char* host : {"evil.example", "127.0.0.2", "localhost.evil.example"}) {
    httplib::Headers h = {{"Host", host}, {"Authorization", "Bearer " + tk.read}};
    r = c.Get("/v1/info", h);
    EXPECT_EQ(status_of(r), 403) << host;
    EXPECT_NE(error_of(r).find("--allow-host"), std::string::npos) << host;
  }
  for (std::string host : std::vector<std::string>{"localhost", "127.0.0.1", "LOCALHOST:" + std::to_string(s.port), "[::1]:80"}) {
    httplib::Headers h = {{"Host", host}, {"Authorization", "Bearer " + tk.read}};
    EXPECT_EQ(status_of(c.Get("/v1/info", h)), 200) << host;
  }
  httplib::Headers evil = {{"Host", "evil.example"}};
  EXPECT_EQ(status_of(c.Get("/healthz", evil)), 200);  // health checks come by any name
}

TEST(ServerAccess, BindRefusesOpenWritesOffLoopback) {
  Fixture f;
  // Nothing is bound in these cases: the refusal comes first.
  try {
    Server srv(Memory::open(f.t / "m.db"), {});
    srv.bind("0.0.0.0", 0);
    FAIL() << "bound 0.0.0.0 with open writes";
  } catch (const vismem::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tokens"), std::string::npos) << e.what();
  }
  ServerOptions ro;
  ro.read_only = true;
  try {
    Server srv(Memory::open(f.t / "m.db"), ro);
    srv.bind("0.0.0.0", 0);
    FAIL() << "a wildcard bind without --allow-host";
  } catch (const vismem::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--allow-host"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(is_loopback_host("127.0.0.1") && is_loopback_host("127.8.0.1") && is_loopback_host("::1") &&
              is_loopback_host("localhost"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0") || is_loopback_host("10.0.0.1") || is_loopback_host("example.com"));
}

TEST(ServerAccess, TokenFile) {
  TempDir t;
  const std::string tok = new_token();
  EXPECT_EQ(tok.size(), 67u);
  EXPECT_NE(tok, new_token());
  {
    std::ofstream f(t / "tokens");
    f << "# comment\n\n" << token_file_line(tok, true, "alice") << "\n" << token_file_line("x", false, "") << "\n";
  }
  auto list = read_token_file(t / "tokens");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].sha256, sha256_hex(tok.data(), tok.size()));
  EXPECT_TRUE(list[0].write);
  EXPECT_EQ(list[0].name, "alice");
  EXPECT_FALSE(list[1].write);
  for (const char* bad : {"admin 0123\n", "read nothex\n", "write ABCDEF\n"}) {
    std::ofstream(t / "bad") << "# x\n" << bad;
    try {
      read_token_file(t / "bad");
      ADD_FAILURE() << bad;
    } catch (const vismem::Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad:2:"), std::string::npos) << e.what();
    }
  }
  // The CLI: `vismem token` appends a line and prints the token, which the file then knows.
  auto r = test::run_cli("token --file " + (t / "cli_tokens") + " --scope write --name bob");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string printed = r.out.substr(0, r.out.find('\n'));
  auto from_cli = read_token_file(t / "cli_tokens");
  ASSERT_EQ(from_cli.size(), 1u);
  EXPECT_EQ(from_cli[0].sha256, sha256_hex(printed.data(), printed.size()));
  EXPECT_TRUE(from_cli[0].write);
}

// ------------------------------------------------------------------ limits

TEST(ServerLimits, EveryLimitAnswersJsonAndTheServiceKeepsAnswering) {
  Fixture f;
  ServerOptions o;
  o.limits.max_body = 200000;
  o.limits.max_json_values = 5000;
  o.limits.max_queries = 3;
  o.limits.max_k = 50;
  Running s(Memory::open(f.t / "m.db"), o);
  auto c = s.client();
  std::vector<float> q = random_unit(4, f.d, 71);
  auto check = [&](const httplib::Result& r, int status, const std::string& words) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << r->body;
    EXPECT_NE(error_of(r).find(words), std::string::npos) << r->body;
    // ...and the service still answers.
    auto info = c.Get("/v1/info");
    ASSERT_TRUE(info);
    EXPECT_EQ(json::parse(info->body)["items"], f.n);
  };
  // Body size, from Content-Length before reading it.
  check(c.Post("/v1/search", std::string(300000, ' '), "application/json"), 413, "--max-body");
  // Depth: a body of '[' costs 16 levels, not memory.
  check(c.Post("/v1/search", std::string(150000, '['), "application/json"), 400, "--max-json-depth");
  // Values: 6000 numbers > 5000.
  {
    json big = {{"embedding", std::vector<float>(6000, 0.1f)}};
    check(c.Post("/v1/search", big.dump(), "application/json"), 413, "--max-json-values");
  }
  // Queries per request.
  check(c.Post("/v1/search", json{{"embeddings", rows(q, 4, f.d)}}.dump(), "application/json"), 413, "--max-queries");
  EXPECT_EQ(status_of(c.Post("/v1/search", json{{"embeddings", rows(q, 3, f.d)}}.dump(), "application/json")), 200);
  // k: range-checked before any narrowing (4294967298 is not 2), in the body and the query string.
  json one = {{"embeddings", rows(q, 1, f.d)}};
  for (json k : {json(4294967298ull), json(-1), json(0), json(51), json(2.5), json("3"), json(18446744073709551615ull)}) {
    json b = one;
    b["k"] = k;
    check(c.Post("/v1/search", b.dump(), "application/json"), 400, "from 1 to 50");
  }
  for (const char* k : {"4294967298", "99999999999999999999", "-3", "2x", ""})
    check(c.Post((std::string("/v1/classify?k=") + k).c_str(), one.dump(), "application/json"), 400, "\"k\"");
  json ok = one;
  ok["k"] = 50;
  auto r = c.Post("/v1/search", ok.dump(), "application/json");
  ASSERT_EQ(status_of(r), 200);
  EXPECT_EQ(json::parse(r->body)["results"][0].size(), 50u);
  // Image pixels, from the header before decoding: a 634-byte-style JPEG claiming 13000 x 13000.
  std::string jpeg = "\xFF\xD8\xFF\xC0";
  jpeg += std::string("\x00\x11\x08\x32\xC8\x32\xC8\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 17);
  jpeg += std::string(600, '\0');
  check(c.Post("/v1/classify", jpeg, "image/jpeg"), 413, "--max-image-pixels");
  std::string png = std::string("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x02\x00\x00\x00", 33);
  check(c.Post("/v1/classify", png, "image/png"), 413, "--max-image-pixels");
  // Chunked bodies over the limit: httplib's own 413, as JSON.
  {
    std::string big(300000, ' ');
    r = c.Post(
        "/v1/search",
        [&](size_t offset, httplib::DataSink& sink) {
          sink.write(big.data() + offset, std::min<size_t>(65536, big.size() - offset));
          if (offset + 65536 >= big.size()) sink.done();
          return true;
        },
        "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_FALSE(error_of(r).empty()) << r->body;
  }
  EXPECT_EQ(status_of(c.Get("/v1/info")), 200);
}

TEST(ServerLimits, InvalidUtf8IdsComeBackAsJson) {
  Fixture f;
  {
    Memory m = Memory::open(f.t / "m.db");
    std::vector<float> y(f.x.begin(), f.x.begin() + f.d);  // the same vector as i0: a neighbor of it
    m.add({"cafe.jpg"}, {"c"}, y.data());
  }
  {
    // add refuses such ids now; a memory made before that (and migrated) can still hold them.
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open((f.t / "m.db").c_str(), &h), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(h, "UPDATE items SET id = CAST(X'636166E92E6A7067' AS TEXT), label = CAST(X'63FF' AS TEXT) "
                              "WHERE id = 'cafe.jpg'",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(h);
  }
  Running s(Memory::open(f.t / "m.db"), {});
  auto c = s.client();
  std::vector<float> q(f.x.begin(), f.x.begin() + f.d);
  for (const char* path : {"/v1/classify", "/v1/search"}) {
    auto r = c.Post(path, json{{"embedding", q}, {"k", 3}}.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);  // valid JSON, the bad bytes replaced by U+FFFD
    EXPECT_NE(r->body.find("caf\xEF\xBF\xBD.jpg"), std::string::npos) << r->body;
    EXPECT_FALSE(j["results"].empty());
  }
}

// Raw sockets for clients that misbehave.
namespace {
int connect_local(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}
// True when the server closed the connection within ms (EOF or reset).
bool closed_within(int fd, int ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  char buf[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) continue;
    const ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0) return true;
  }
  return false;
}
}  // namespace

TEST(ServerLimits, SlowAndIdleClientsDoNotStarveOthers) {
  Fixture f;
  ServerOptions o;
  o.limits.max_connections = 16;
  o.limits.read_timeout_s = 2;
  o.limits.idle_timeout_s = 2;
  Running s(Memory::open(f.t / "m.db"), o);
  // 8 clients trickle headers, a line every 100 ms, and never finish.
  std::vector<int> slow;
  for (int i = 0; i < 8; ++i) {
    int fd = connect_local(s.port);
    ASSERT_GE(fd, 0);
    const std::string start = "POST /v1/search HTTP/1.1\r\nHost: localhost\r\n";
    ASSERT_EQ(send(fd, start.data(), start.size(), MSG_NOSIGNAL), ssize_t(start.size()));
    slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop) {
      for (int fd : slow) send(fd, "X-A: b\r\n", 8, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  // 200 idle connections: more than max_connections.
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) {
    int fd = connect_local(s.port);
    if (fd >= 0) idle.push_back(fd);
  }
  // (Connections that arrive while the burst is still being accepted may be
  // answered 503: the burst has the server's attention first.)
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // A well-behaved client is answered at once, every time.
  std::vector<float> q = random_unit(1, f.d, 72);
  auto c = s.client();
  const auto t0 = std::chrono::steady_clock::now();
  int ok = 0;
  for (int i = 0; i < 20; ++i) {
    httplib::Client fresh("127.0.0.1", s.port);  // a new connection each time: it must get a slot
    fresh.set_read_timeout(5, 0);
    auto r = fresh.Post("/v1/classify", json{{"embedding", q}, {"k", 3}}.dump(), "application/json");
    if (r && r->status == 200) ++ok;
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(ok, 20);
  EXPECT_LT(took, 1.5) << "20 requests among slow and idle clients";
  // The trickling clients are cut at the read timeout (2 s), not served forever.
  int cut = 0;
  for (int fd : slow) cut += closed_within(fd, 4000);
  stop = true;
  trickle.join();
  EXPECT_EQ(cut, 8);
  for (int fd : slow) close(fd);
  for (int fd : idle) close(fd);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("vismem_connections_total{outcome=\"evicted\"}"), std::string::npos);
  EXPECT_EQ(m->body.find("vismem_connections_total{outcome=\"timed_out\"} 0\n"), std::string::npos) << m->body;
}

TEST(ServerLimits, ConnectionLimitAnswers503WhenNoneIsIdle) {
  Fixture f;
  ServerOptions o;
  o.limits.max_connections = 2;
  o.limits.read_timeout_s = 1;
  Running s(Memory::open(f.t / "m.db"), o);
  // Two clients hold both slots, mid-request (not idle: they cannot be closed for a newcomer).
  std::vector<int> busy;
  for (int i = 0; i < 2; ++i) {
    int fd = connect_local(s.port);
    ASSERT_GE(fd, 0);
    send(fd, "GET /v1/info HTTP/1.1\r\n", 24, MSG_NOSIGNAL);
    busy.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server has read their first bytes
  httplib::Client c("127.0.0.1", s.port);
  auto r = c.Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(json::parse(r->body)["error"].get<std::string>().find("--max-connections"), std::string::npos) << r->body;
  // Once the read timeout has cut them, the service answers again.
  for (int fd : busy) EXPECT_TRUE(closed_within(fd, 3000));
  for (int fd : busy) close(fd);
  // The slots free when the server's side of the cut finishes, a moment after
  // the clients see the close: retry briefly, counting every 503 answered.
  int rejected = 1;
  for (int i = 0; i < 60; ++i) {
    r = c.Get("/healthz");
    ASSERT_TRUE(r);
    if (r->status != 503) break;
    ++rejected;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(r->status, 200);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("vismem_connections_total{outcome=\"rejected\"} " + std::to_string(rejected) + "\n"),
            std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("vismem_connections_total{outcome=\"timed_out\"} 2\n"), std::string::npos) << m->body;
}

namespace {
// Peak resident memory of this process so far (VmHWM), in MB.
double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}
}  // namespace

TEST(ServerLimits, HostileBodiesCostLittleMemory) {
  Fixture f;
  Running s(Memory::open(f.t / "m.db"), {});  // default limits: 16 MiB body, depth 16, 1M values
  auto c = s.client();
  const std::string deep(16u << 20, '[');
  std::string many = "{\"embedding\": [";
  while (many.size() < (16u << 20) - 16) many += "1,";
  many += "1]}";
  const double before = peak_rss_mb();
  auto r = c.Post("/v1/search", deep, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  r = c.Post("/v1/search", many, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  // The old parser took ~75 bytes per '[' (1.2 GB here); now the body, a copy
  // or two and 1M parsed values at most.
  EXPECT_LT(peak_rss_mb() - before, 150.0);
  EXPECT_EQ(status_of_result(c.Get("/v1/info")), 200);
}

TEST(ServerLimits, AClientThatDoesNotReadIsCutAtTheWriteTimeout) {
  TempDir t;
  const int d = 8, n = 80;
  {
    // Long ids make a large answer cheaply: 512 queries x 80 neighbors x ~560 bytes.
    std::vector<std::string> ids, labels;
    for (int i = 0; i < n; ++i) {
      ids.push_back(std::string(500, 'x') + std::to_string(i));
      labels.push_back("c");
    }
    std::vector<float> x = random_unit(n, d, 77);
    Memory::create(t / "m.db", {.dim = d, .model_id = "test"}).add(ids, labels, x.data());
  }
  ServerOptions o;
  o.limits.write_timeout_s = 1;
  o.limits.max_queries = 512;
  Running s(Memory::open(t / "m.db"), o);
  // A ~23 MB answer: far more than the socket buffers hold.
  std::vector<float> q = random_unit(512, d, 76);
  const std::string body = json{{"embeddings", rows(q, 512, d)}, {"k", 100}}.dump();
  int fd = connect_local(s.port);
  ASSERT_GE(fd, 0);
  const std::string head = "POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), ssize_t(head.size()));
  ASSERT_EQ(send(fd, body.data(), body.size(), MSG_NOSIGNAL), ssize_t(body.size()));
  // Never read: within the write timeout (+ the watchdog's tick) the server gives up on it.
  auto c = s.client();
  std::string m;
  for (int i = 0; i < 100 && m.find("outcome=\"timed_out\"} 1\n") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto r = c.Get("/metrics");
    m = r ? r->body : "";
  }
  EXPECT_NE(m.find("vismem_connections_total{outcome=\"timed_out\"} 1\n"), std::string::npos) << m;
  EXPECT_EQ(status_of_result(c.Get("/v1/info")), 200);
  close(fd);
}

// ------------------------------------------------------------------ TLS, metrics, explain

TEST(ServerTls, SelfSignedCertificate) {
  Fixture f;
  const std::string cert = f.t / "cert.pem", key = f.t / "key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                          "subjectAltName=DNS:localhost -keyout " + key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a self-signed certificate";
  ServerOptions o;
  o.tls_cert = cert;
  o.tls_key = key;
  Running s(Memory::open(f.t / "m.db"), o);
  httplib::SSLClient c("localhost", s.port);
  c.set_ca_cert_path(cert.c_str());
  c.enable_server_certificate_verification(true);
  c.set_read_timeout(30, 0);
  auto r = c.Get("/v1/info");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(json::parse(r->body)["items"], f.n);
  std::vector<float> q = random_unit(1, f.d, 73);
  r = c.Post("/v1/search", json{{"embedding", q}, {"k", 2}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  Memory local = Memory::open(f.t / "m.db");
  EXPECT_EQ(json::parse(r->body)["results"][0][0]["id"], local.search(q.data(), 1, 2)[0][0].id);
  // Plain HTTP to the TLS port gets no answer; the service keeps serving TLS.
  httplib::Client plain("127.0.0.1", s.port);
  plain.set_read_timeout(3, 0);
  auto pr = plain.Get("/v1/info");
  EXPECT_TRUE(!pr || pr->status != 200);
  EXPECT_TRUE(c.Get("/healthz"));
  // A key that does not load: the service does not start.
  ServerOptions bad = o;
  bad.tls_key = cert;
  EXPECT_THROW(Server(Memory::open(f.t / "m.db"), bad), vismem::Error);
}

TEST(ServerMetrics, CountsItemsAndGeneration) {
  Fixture f;
  Running s(Memory::open(f.t / "m.db"), {});
  auto c = s.client();
  std::vector<float> q = random_unit(1, f.d, 74);
  for (int i = 0; i < 3; ++i) post(c, "/v1/classify", {{"embedding", q}, {"k", 2}}, 200);
  post(c, "/v1/classify", {{"embedding", q}, {"k", 0}}, 400);
  post(c, "/v1/remove", {{"ids", {"i3"}}}, 200);
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Content-Type").rfind("text/plain", 0), 0u);
  const std::string& m = r->body;
  const MemoryInfo info = Memory::open(f.t / "m.db").info();
  EXPECT_NE(m.find("vismem_requests_total{endpoint=\"/v1/classify\",code=\"200\"} 3\n"), std::string::npos) << m;
  EXPECT_NE(m.find("vismem_requests_total{endpoint=\"/v1/classify\",code=\"400\"} 1\n"), std::string::npos) << m;
  EXPECT_NE(m.find("vismem_request_duration_seconds_count{endpoint=\"/v1/classify\"} 4\n"), std::string::npos) << m;
  EXPECT_NE(m.find("vismem_request_duration_seconds_bucket{endpoint=\"/v1/classify\",le=\"+Inf\"} 4\n"), std::string::npos);
  EXPECT_NE(m.find("\nvismem_items " + std::to_string(f.n - 1) + "\n"), std::string::npos) << m;
  EXPECT_NE(m.find("\nvismem_generation " + std::to_string(info.generation) + "\n"), std::string::npos) << m;
  auto h = c.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
}

namespace {
std::string percent_encoded(const std::string& s) {
  std::string o;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '/' || ch == '.' || ch == '_' || ch == '-') o += static_cast<char>(ch);
    else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", ch);
      o += b;
    }
  }
  return o;
}
}  // namespace

TEST(ServerExplain, EqualsExplainJsonCli) {
  TempDir t;
  const std::string model = test::shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  const std::string data = test::shared_dir() + "/data/imagenette2";
  const std::string train = t / "train";
  for (std::string cls : {"n01440764", "n03888257"}) {
    std::filesystem::create_directories(train + "/" + cls);
    std::vector<std::filesystem::path> files;
    for (auto& e : std::filesystem::directory_iterator(data + "/train/" + cls)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < 3; ++i) std::filesystem::copy_file(files[i], train + "/" + cls + "/" + files[i].filename().string());
  }
  const std::string mem = t / "m.db";
  ASSERT_EQ(test::run_cli("create " + mem + " --model " + model).exit_code, 0);
  ASSERT_EQ(test::run_cli("add " + mem + " " + train).exit_code, 0);
  std::string query;
  for (auto& e : std::filesystem::directory_iterator(data + "/val/n03888257")) {
    query = e.path().string();
    break;
  }
  auto cli = test::run_cli("explain " + mem + " " + query + " --k 4 --show 4 --vote distance --json");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  const json want = json::parse(cli.out);

  Running s(Memory::open(mem), {});
  auto c = s.client();
  auto r = c.Post(("/v1/explain?k=4&show=4&vote=distance&id=" + percent_encoded(query)).c_str(),
                  test::read_file(query), "image/jpeg");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json got = json::parse(r->body);
  auto brief = [](json j) {
    for (auto& n : j["neighbors"]) n.erase("thumbnail");
    for (auto& n : j["residual"]["neighbors"]) n.erase("thumbnail");
    return j.dump();
  };
  EXPECT_EQ(got, want) << brief(got) << "\n" << brief(want);
  EXPECT_EQ(got["neighbors"].size(), 4u);
  EXPECT_EQ(got["neighbors"][0]["thumbnail"].get<std::string>().rfind("data:image/jpeg;base64,", 0), 0u);
  EXPECT_TRUE(got.contains("residual"));
  // By embedding too (no image): the same neighbors as a direct search.
  std::vector<float> e = Memory::open(mem).embedding(got["neighbors"][0]["id"]);
  r = c.Post("/v1/explain", json{{"embedding", e}, {"k", 2}}.dump(), "application/json");
  ASSERT_EQ(status_of(r), 200);
  EXPECT_EQ(json::parse(r->body)["neighbors"][0]["id"], got["neighbors"][0]["id"]);
  // An id that climbs out of the image folder gets no thumbnail (the file exists and is an image).
  std::filesystem::copy_file(query, t / "outside.jpg");
  std::vector<float> z = random_unit(1, static_cast<int>(e.size()), 75);
  post(c, "/v1/add", {{"ids", {"../outside.jpg"}}, {"labels", {"x"}}, {"embedding", z}}, 200);
  r = c.Post("/v1/explain", json{{"embedding", z}, {"k", 1}}.dump(), "application/json");
  ASSERT_EQ(status_of(r), 200);
  const json out = json::parse(r->body)["neighbors"][0];
  EXPECT_EQ(out["id"], "../outside.jpg");
  EXPECT_TRUE(out["thumbnail"].is_null());
}
