// A running service and the command line on one memory: the service answers
// from the latest commit of any process (issue: after `vismem remove --verify`
// the service still found the removed item, and its adds failed on ids the
// command line had added).
#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "memory.h"
#include "npy.h"
#include "server.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using json = nlohmann::json;

TEST(ServerCoherence, ServiceFollowsTheCommandLine) {
  test::TempDir t;
  const int d = 16;
  std::string p = t / "m.db";
  auto x = test::random_unit(40, d, 21);
  {
    Memory m = Memory::create(p, {.dim = d});
    std::vector<std::string> ids, labels;
    for (int i = 0; i < 20; ++i) {
      ids.push_back("i" + std::to_string(i));
      labels.push_back(i % 2 ? "odd" : "even");
    }
    ids[5] = "secret";
    m.add(ids, labels, x.data());
  }
  ServerOptions o;
  Server srv(Memory::open(p), o);
  int port = srv.bind("127.0.0.1", 0);
  std::thread th([&] { srv.run(); });
  httplib::Client c("127.0.0.1", port);
  auto post = [&](const std::string& path, const json& body) {
    auto r = c.Post(path, body.dump(), "application/json");
    EXPECT_TRUE(r);
    return r ? std::make_pair(r->status, json::parse(r->body, nullptr, false)) : std::make_pair(0, json());
  };
  std::vector<float> secret(x.begin() + 5 * d, x.begin() + 6 * d);
  auto top = [&](const std::vector<float>& q) {
    auto [st, j] = post("/v1/search", {{"embeddings", {q}}, {"k", 1}});
    EXPECT_EQ(st, 200) << j.dump();
    return j["results"][0][0]["id"].get<std::string>();
  };
  EXPECT_EQ(top(secret), "secret");
  // The command line removes it: the service no longer finds it, and its count follows.
  auto r = test::run_cli("remove " + p + " --id secret --verify");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("VERIFIED"), std::string::npos) << r.out;
  EXPECT_NE(top(secret), "secret");
  auto info = c.Get("/v1/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(json::parse(info->body)["items"], 19);
  EXPECT_NE(post("/v1/remove", {{"ids", {"secret"}}}).first, 200);
  // The command line adds: the service sees the items and refuses them as duplicates.
  write_npy_f32(t / "new.npy", x.data() + 20 * d, {2, d});
  write_lines(t / "new_ids.txt", {"cli0", "cli1"});
  write_lines(t / "new_labels.txt", {"odd", "odd"});
  r = test::run_cli("add " + p + " --embeddings " + t / "new.npy" + " --ids " + t / "new_ids.txt" + " --labels " +
                    t / "new_labels.txt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(top(std::vector<float>(x.begin() + 21 * d, x.begin() + 22 * d)), "cli1");
  std::vector<float> other(x.begin() + 30 * d, x.begin() + 31 * d);
  auto [st, j] = post("/v1/add", {{"ids", {"cli0"}}, {"labels", {"x"}}, {"embeddings", {other}}});
  EXPECT_EQ(st, 400) << j.dump();
  EXPECT_NE(j.dump().find("already"), std::string::npos) << j.dump();
  // And the service's own add is seen by the command line.
  auto [st2, j2] = post("/v1/add", {{"ids", {"srv0"}}, {"labels", {"even"}}, {"embeddings", {other}}});
  EXPECT_EQ(st2, 200) << j2.dump();
  EXPECT_TRUE(Memory::open(p).contains("srv0"));
  EXPECT_EQ(Memory::open(p).size(), 22);
  srv.stop();
  th.join();
}
