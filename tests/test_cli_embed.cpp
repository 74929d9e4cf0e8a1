// `vismem embed --input FILE.npy --raw` (the form outside checks use) against
// the reference fixtures, for every encoder family.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <sqlite3.h>

#include "npy.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::run_cli;
using vismem::test::shared_dir;
using vismem::test::TempDir;

namespace {
double rel_err(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - ref[i]));
    den = std::max(den, std::abs(double(ref[i])));
  }
  return num / den;
}
}  // namespace

TEST(CliEmbed, Dinov2RawMatchesHF) {
  TempDir t;
  std::string f = shared_dir() + "/fixtures/dinov2_tiny";
  for (int s : {70, 56, 42}) {
    std::string in = f + "/input_" + std::to_string(s) + ".npy";
    auto r = run_cli("embed --model " + f + " --input " + in + " --raw --out " + t / "o.npy");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    NpyArray o = read_npy(t / "o.npy");
    NpyArray ref = read_npy(f + "/pooler_" + std::to_string(s) + ".npy");
    ASSERT_EQ(o.shape, ref.shape);
    EXPECT_LT(rel_err(o.to_float(), ref.to_float()), 1e-4) << s;
  }
}

TEST(CliEmbed, ClipRawMatchesHF) {
  TempDir t;
  std::string f = shared_dir() + "/fixtures/clip_tiny_f16";
  auto r = run_cli("embed --model " + f + " --input " + f + "/input_48.npy --raw --out " + t / "o.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  NpyArray o = read_npy(t / "o.npy");
  NpyArray ref = read_npy(f + "/image_embeds_48.npy");
  ASSERT_EQ(o.shape, ref.shape);
  EXPECT_LT(rel_err(o.to_float(), ref.to_float()), 1e-4);
}

TEST(CliEmbed, MobileNetUint8InputMatchesOpenCV) {
  TempDir t;
  std::string fx = shared_dir() + "/fixtures/mobilenet_v1/grace_hopper";
  std::string model = shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  auto r = run_cli("embed --model " + model + " --input " + fx + ".input_u8.npy --raw --out " + t / "o.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> o = read_npy(t / "o.npy").to_float();
  std::vector<float> ref = read_npy(fx + ".opencv_f32.npy").to_float();
  ASSERT_EQ(o.size(), 1024u);
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    dot += double(o[i]) * ref[i];
    na += double(o[i]) * o[i];
    nb += double(ref[i]) * ref[i];
  }
  EXPECT_GE(dot / std::sqrt(na * nb), 0.9999);
  // Without --raw the rows are unit length.
  r = run_cli("embed --model " + model + " --input " + fx + ".input_u8.npy --out " + t / "n.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> n = read_npy(t / "n.npy").to_float();
  double ss = 0;
  for (float v : n) ss += double(v) * v;
  EXPECT_NEAR(ss, 1.0, 1e-5);
  // A wrong-size input is a clear error.
  r = run_cli("embed --model " + model + " --input " + shared_dir() + "/fixtures/dinov2_tiny/input_70.npy --out " + t / "x.npy");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("224x224"), std::string::npos) << r.err;
  // A NaN pixel is refused at both precisions (int8's quantized products pass
  // the NaN on, as float32's do), and nothing is written.
  std::vector<float> px(size_t(3) * 224 * 224, 0.25f);
  px[1000] = std::nanf("");
  vismem::write_npy_f32(t / "nan.npy", px.data(), {1, 3, 224, 224});
  for (const char* precision : {"f32", "int8"}) {
    r = run_cli("embed --model " + model + " --precision " + precision + " --input " + t / "nan.npy" + " --out " +
                t / "nan_out.npy");
    EXPECT_EQ(r.exit_code, 1) << precision;
    EXPECT_NE(r.err.find("NaN or infinite"), std::string::npos) << precision << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(t / "nan_out.npy")) << precision;
  }
}

TEST(CliEmbed, ImagesInArgumentOrderAndCorruptFileIsAnError) {
  TempDir t;
  std::string model = shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  std::string a = shared_dir() + "/fixtures/preprocess/img1_240x321.jpg";
  std::string b = shared_dir() + "/fixtures/preprocess/img0_320x240.png";
  auto r = run_cli("embed --model " + model + " " + a + " " + b + " --out " + t / "ab.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("embed --model " + model + " " + b + " --out " + t / "b.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<float> ab = read_npy(t / "ab.npy").to_float(), bb = read_npy(t / "b.npy").to_float();
  ASSERT_EQ(ab.size(), 2048u);
  for (int i = 0; i < 1024; ++i) EXPECT_NEAR(ab[1024 + i], bb[i], 1e-5);
  std::string bad = t / "bad.jpg";
  std::string bytes = test::read_file(a).substr(0, 300);
  FILE* f = fopen(bad.c_str(), "wb");
  fwrite(bytes.data(), 1, bytes.size(), f);
  fclose(f);
  r = run_cli("embed --model " + model + " " + bad + " --out " + t / "x.npy");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.jpg"), std::string::npos) << r.err;
}

// --precision int8: `embed` runs the int8 GEMMs (close to, not equal to, f32);
// `create` records the precision, so a later `add` of images uses it without
// being told (a float encoder would fail the memory's fingerprint check).
TEST(CliEmbed, Int8PrecisionIsRecordedAtCreate) {
  TempDir t;
  const std::string model = shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  const std::string a = shared_dir() + "/fixtures/preprocess/img1_240x321.jpg";
  const std::string b = shared_dir() + "/fixtures/preprocess/img0_320x240.png";
  auto r = run_cli("embed --model " + model + " " + a + " " + b + " --out " + t / "f.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("embed --model " + model + " --precision int8 " + a + " " + b + " --out " + t / "q.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<float> f = read_npy(t / "f.npy").to_float(), q = read_npy(t / "q.npy").to_float();
  ASSERT_EQ(q.size(), 2048u);
  for (int i = 0; i < 2; ++i) {
    double dot = 0;  // rows are L2-normalized
    for (int j = 0; j < 1024; ++j) dot += double(f[i * 1024 + j]) * q[i * 1024 + j];
    EXPECT_GT(dot, 0.99);
    EXPECT_LT(dot, 1.0 - 1e-7);  // int8 really ran
  }
  EXPECT_NE(run_cli("embed --model " + model + " --precision int4 " + a + " --out " + t / "x.npy").exit_code, 0);

  // A folder of two classes, added to an int8 memory with no precision given.
  for (const char* cls : {"one", "two"}) std::filesystem::create_directories(t / (std::string("imgs/") + cls));
  std::filesystem::copy_file(a, t / "imgs/one/a.jpg");
  std::filesystem::copy_file(b, t / "imgs/two/b.png");
  const std::string mem = t / "m.db";
  r = run_cli("create " + mem + " --model " + model + " --precision int8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("info " + mem);
  EXPECT_NE(r.out.find("precision   int8"), std::string::npos) << r.out;
  r = run_cli("add " + mem + " " + t / "imgs");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("classify " + mem + " " + a + " --k 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("one"), std::string::npos) << r.out;
  // The same model at the other precision is refused with a message that says so.
  r = run_cli("classify " + mem + " " + a + " --model " + model);  // recorded int8, with --model: fine
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string fmem = t / "f.db";
  ASSERT_EQ(run_cli("create " + fmem + " --model " + model + " --precision f32").exit_code, 0);
  ASSERT_EQ(run_cli("add " + fmem + " " + t / "imgs").exit_code, 0);
  {
    // A memory made before the precision was recorded: VISMEM_PRECISION decides,
    // and a wrong one is named in the error.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(fmem.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DELETE FROM meta WHERE key='model_precision'", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
    setenv("VISMEM_PRECISION", "int8", 1);
    r = run_cli("classify " + fmem + " " + a);
    unsetenv("VISMEM_PRECISION");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("runs at int8 precision, but this memory's embeddings are f32"), std::string::npos) << r.err;
    EXPECT_EQ(run_cli("classify " + fmem + " " + a).exit_code, 0);
  }
  {
    // int8 embeddings of an earlier int8 revision (7-bit activations: the
    // fingerprint ended in "|int8"): refused, with a message that says so.
    const std::string old_mem = t / "old8.db";
    ASSERT_EQ(run_cli("create " + old_mem + " --model " + model + " --precision int8").exit_code, 0);
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(old_mem.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value = substr(value, 1, length(value) - 3) WHERE key='fingerprint'",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    r = run_cli("add " + old_mem + " " + t / "imgs");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("int8 embeddings of another vismem version than this memory's (same model; this memory: "
                         "int8, this build: int8|a8)"),
              std::string::npos)
        << r.err;
    r = run_cli("info " + old_mem);
    EXPECT_NE(r.out.find("items       0"), std::string::npos) << r.out;
  }
  // A typo in VISMEM_PRECISION is said even where the recorded precision decides.
  setenv("VISMEM_PRECISION", "INT8", 1);
  r = run_cli("classify " + mem + " " + a);
  unsetenv("VISMEM_PRECISION");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: VISMEM_PRECISION=INT8 is not f32|int8"), std::string::npos) << r.err;
  // Without a model there is nothing to record.
  r = run_cli("create " + (t / "n.db") + " --dim 8 --precision int8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--precision needs --model"), std::string::npos) << r.err;
}
