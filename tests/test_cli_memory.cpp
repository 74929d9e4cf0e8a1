// The memory commands end to end through the CLI: create/add/search/eval/classify/remove/info,
// and every bad input giving a clear error with the memory unchanged.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cpu.h"
#include "memory.h"
#include "npy.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::random_unit;
using vismem::test::run_cli;
using vismem::test::TempDir;

namespace {

struct CliFixture {
  TempDir t;
  std::string mem = t / "m.db";
  const int d = 16, n = 60;
  CliFixture() {
    std::vector<float> x = random_unit(n, d, 21);
    write_npy_f32(t / "x.npy", x.data(), {n, d});
    std::vector<std::string> labels, ids;
    for (int i = 0; i < n; ++i) {
      labels.push_back(i % 2 ? "odd" : "even");
      ids.push_back("id" + std::to_string(i));
    }
    write_lines(t / "labels.txt", labels);
    write_lines(t / "ids.txt", ids);
    EXPECT_EQ(run_cli("create " + mem + " --dim 16 --model-id test").exit_code, 0);
    auto r = run_cli("add " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "labels.txt" + " --ids " + t / "ids.txt");
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  int items() {
    auto r = run_cli("info " + mem + " --json");
    return nlohmann::json::parse(r.out)["items"].get<int>();
  }
  void expect_error(const std::string& args, const std::string& fragment) {
    auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << "stderr: " << r.err;
  }
};

}  // namespace

TEST(CliMemory, SearchEvalRoundTrip) {
  CliFixture s;
  EXPECT_EQ(s.items(), 60);
  auto r = run_cli("search " + s.mem + " --embeddings " + s.t / "x.npy" + " --ids " + s.t / "ids.txt" + " --labels " +
                   s.t / "labels.txt" + " --k 5 --exclude-self --out " + s.t / "nn.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto nn = nlohmann::json::parse(test::read_file(s.t / "nn.json"));
  ASSERT_EQ(nn.size(), 60u);
  EXPECT_EQ(nn["id0"]["neighbor_image_ids"].size(), 5u);
  for (auto& id : nn["id0"]["neighbor_image_ids"]) EXPECT_NE(id.get<std::string>(), "id0");
  // eval from the file == eval straight from the memory
  auto a = run_cli("eval --neighbors " + s.t / "nn.json" + " --json");
  auto b = run_cli("eval " + s.mem + " --embeddings " + s.t / "x.npy" + " --labels " + s.t / "labels.txt" + " --ids " +
                   s.t / "ids.txt" + " --exclude-self --k 5 --json");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(a.out), nlohmann::json::parse(b.out));
  EXPECT_EQ(nlohmann::json::parse(a.out)["queries"].get<int>(), 60);
}

TEST(CliMemory, ClassifyExplainsWithNeighbors) {
  CliFixture s;
  auto r = run_cli("classify " + s.mem + " --embeddings " + s.t / "x.npy" + " --k 3 --vote plurality --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 60u);
  // Each query is in the memory: its own item is neighbor 1 at distance ~0.
  EXPECT_EQ(j[0]["neighbors"][0]["id"], "id0");
  EXPECT_NEAR(j[0]["neighbors"][0]["distance"].get<double>(), 0.0, 1e-6);
  EXPECT_EQ(j[0]["neighbors"].size(), 3u);
  EXPECT_EQ(j[0]["neighbors"][0]["weight"].get<double>(), 1.0);
}

TEST(CliMemory, BadInputsAreClearErrorsAndChangeNothing) {
  CliFixture s;
  std::vector<float> w = random_unit(4, 8, 22);
  write_npy_f32(s.t / "wrong_dim.npy", w.data(), {4, 8});
  write_lines(s.t / "l4.txt", {"a", "b", "c", "d"});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "wrong_dim.npy" + " --labels " + s.t / "l4.txt",
                 "8 columns, the memory's dimension is 16");
  std::vector<float> ok = random_unit(4, 16, 23);
  write_npy_f32(s.t / "ok.npy", ok.data(), {4, 16});
  write_lines(s.t / "l3.txt", {"a", "b", "c"});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "ok.npy" + " --labels " + s.t / "l3.txt", "3 labels for 4");
  write_lines(s.t / "dup_ids.txt", {"new1", "id3", "new2", "new3"});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "ok.npy" + " --labels " + s.t / "l4.txt" + " --ids " +
                     s.t / "dup_ids.txt",
                 "already in the memory");
  ok[20] = std::nanf("");
  write_npy_f32(s.t / "nan.npy", ok.data(), {4, 16});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "nan.npy" + " --labels " + s.t / "l4.txt", "NaN");
  std::vector<uint8_t> u(64, 1);
  write_npy_u8(s.t / "u8.npy", u.data(), {4, 16});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "u8.npy" + " --labels " + s.t / "l4.txt", "float32 or float16");
  write_npy_f32(s.t / "three_d.npy", ok.data(), {2, 2, 16});
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "three_d.npy" + " --labels " + s.t / "l4.txt", "2-D");
  // A Fortran-order array, and a truncated file.
  std::string fortran = test::read_file(s.t / "x.npy");
  auto pos = fortran.find("False");
  fortran.replace(pos, 5, "True ");
  std::ofstream(s.t / "fortran.npy", std::ios::binary) << fortran;
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "fortran.npy" + " --labels " + s.t / "labels.txt", "Fortran");
  std::string trunc = test::read_file(s.t / "x.npy").substr(0, 500);
  std::ofstream(s.t / "trunc.npy", std::ios::binary) << trunc;
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "trunc.npy" + " --labels " + s.t / "labels.txt", "truncated");
  s.expect_error("add " + s.mem + " --embeddings " + s.t / "missing.npy" + " --labels " + s.t / "l4.txt", "cannot open");
  s.expect_error("search " + s.t / "nomem.db" + " --embeddings " + s.t / "x.npy" + " --out " + s.t / "o.json", "no such memory");
  s.expect_error("remove " + s.mem + " --id nope", "no item with id 'nope'");
  s.expect_error("create " + s.mem + " --dim 16", "already exists");
  EXPECT_EQ(s.items(), 60);
  // --upsert replaces
  write_lines(s.t / "up_ids.txt", {"id0", "id1", "z1", "z2"});
  std::vector<float> ok2 = random_unit(4, 16, 24);
  write_npy_f32(s.t / "ok2.npy", ok2.data(), {4, 16});
  auto r = run_cli("add " + s.mem + " --embeddings " + s.t / "ok2.npy" + " --labels " + s.t / "l4.txt" + " --ids " +
                   s.t / "up_ids.txt" + " --upsert");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(s.items(), 62);
}

TEST(CliMemory, RemoveByIdLabelAndFile) {
  CliFixture s;
  EXPECT_EQ(run_cli("remove " + s.mem + " --id id0 --id id1").exit_code, 0);
  EXPECT_EQ(s.items(), 58);
  write_lines(s.t / "rm.txt", {"id2", "id3"});
  EXPECT_EQ(run_cli("remove " + s.mem + " --ids-file " + s.t / "rm.txt").exit_code, 0);
  EXPECT_EQ(s.items(), 56);
  EXPECT_EQ(run_cli("remove " + s.mem + " --label odd").exit_code, 0);
  EXPECT_EQ(s.items(), 28);
  auto r = run_cli("info " + s.mem);
  EXPECT_NE(r.out.find("28 (1 labels)"), std::string::npos) << r.out;
}

TEST(CliMemory, RemoveVerifyPrintsAPassingReceipt) {
  CliFixture s;
  auto r = run_cli("remove " + s.mem + " --id id5 --id id6 --verify");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2 item(s) removed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no embedding bytes left in files: yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("same as a rebuilt memory:         yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("VERIFIED"), std::string::npos) << r.out;
  EXPECT_EQ(s.items(), 58);
  r = run_cli("remove " + s.mem + " --label even --verify");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("VERIFIED"), std::string::npos) << r.out;
  EXPECT_EQ(s.items(), 29);  // 30 even ids, id6 already gone
}

// `vismem version` names the kernel level chosen at run time, and VISMEM_ISA
// lowers it (the portable kernels run on any machine).
TEST(CliVersion, PrintsTheKernelsChosenForThisCpu) {
  auto r = run_cli("version");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(vismem::cpu_description()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory format v" + std::to_string(vismem::Memory::format_version)), std::string::npos);
  const char* before = std::getenv("VISMEM_ISA");
  const std::string saved = before ? before : "";
  setenv("VISMEM_ISA", "portable", 1);
  auto p = run_cli("version");
  if (before) setenv("VISMEM_ISA", saved.c_str(), 1); else unsetenv("VISMEM_ISA");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_NE(p.out.find("| kernels: portable"), std::string::npos) << p.out;
}
