// Inputs from the field (issue 10): each test is one small input that used to
// crash, answer wrongly in silence or break a whole command, run the way a
// user meets it (mostly through the CLI), with the value it must give now.
#include <gtest/gtest.h>

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "error.h"
#include "image.h"
#include "json_text.h"
#include "memory.h"
#include "npy.h"
#include "pipeline.h"
#include "textio.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::run_cli;
using vismem::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kModel = test::shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";

// A small photo-like JPEG (a smooth gradient, different per seed).
void write_jpeg(const std::string& path, int seed) {
  Image img;
  img.width = 64;
  img.height = 48;
  img.rgb.resize(size_t(img.width) * img.height * 3);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c)
        img.rgb[(size_t(y) * img.width + x) * 3 + c] = uint8_t((x * (c + 1) * 3 + y * (seed + 2) * 5 + seed * 40) % 256);
  auto bytes = encode_jpeg(img, 90);
  write_text_file(path, std::string(bytes.begin(), bytes.end()));
}

// A .npy file with a hand-written header (shapes numpy itself cannot allocate).
void write_raw_npy(const std::string& path, const std::string& descr, const std::string& shape, const std::string& data) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  h += std::string((64 - (10 + h.size() + 1) % 64) % 64, ' ') + "\n";
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8);
  bytes += char(h.size() & 0xff);
  bytes += char(h.size() >> 8);
  write_text_file(path, bytes + h + data);
}

nlohmann::json info(const std::string& mem) {
  auto r = run_cli("info " + mem + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

// Each of `fragments` occurs in text.
void expect_has(const std::string& text, std::initializer_list<std::string> fragments) {
  for (const auto& f : fragments) EXPECT_NE(text.find(f), std::string::npos) << "'" << f << "' not in: " << text;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// A memory of d = 4 embeddings on the axes: ids i0.., the given labels.
std::string axis_memory(const TempDir& t, const std::vector<std::string>& labels) {
  const std::string mem = t / "m.db";
  std::vector<float> x(labels.size() * 4, 0.f);
  std::vector<std::string> ids;
  for (size_t i = 0; i < labels.size(); ++i) {
    x[i * 4 + i % 4] = 1.f;
    x[i * 4 + (i + 1) % 4] = 0.1f * float(i / 4);
    ids.push_back("i" + std::to_string(i));
  }
  write_npy_f32(t / "x.npy", x.data(), {int64_t(labels.size()), 4});
  write_lines(t / "labels.txt", labels);
  write_lines(t / "ids.txt", ids);
  EXPECT_EQ(run_cli("create " + mem + " --dim 4").exit_code, 0);
  auto r = run_cli("add " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "labels.txt" + " --ids " + t / "ids.txt");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return mem;
}

}  // namespace

// 1. Every command that searches an empty memory says so (eval crashed with SIGSEGV).
TEST(FieldInputs, EmptyMemoryIsAnErrorEverywhere) {
  TempDir t;
  const std::string e = t / "e.db";
  ASSERT_EQ(run_cli("create " + e + " --dim 4").exit_code, 0);
  std::vector<float> q = {0.1f, 0.2f, 0.3f, 0.4f};
  write_npy_f32(t / "q.npy", q.data(), {1, 4});
  write_lines(t / "q_labels.txt", {"a"});
  write_lines(t / "q_ids.txt", {"a0"});
  const std::string emb = " --embeddings " + t / "q.npy";
  for (const std::string& args :
       {"eval " + e + emb + " --labels " + t / "q_labels.txt" + " --json",
        "eval " + e + emb + " --labels " + t / "q_labels.txt" + " --ids " + t / "q_ids.txt" + " --exclude-self",
        "search " + e + emb + " --out " + t / "nn.json", "classify " + e + emb, "ood-fit " + e + emb}) {
    auto r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_EQ(r.err, "error: " + e + " is empty: add items first\n") << args;
  }
  EXPECT_FALSE(fs::exists(t / "nn.json"));
  // The same with a query image folder on an empty model-bound memory.
  const std::string m = t / "m.db";
  ASSERT_EQ(run_cli("create " + m + " --model " + kModel).exit_code, 0);
  fs::create_directories(t / "val/cat");
  write_jpeg(t / "val/cat/a.jpg", 1);
  auto r = run_cli("eval " + m + " " + t / "val" + " --json");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err, "error: " + m + " is empty: add items first\n");
}

// 2. A .npy shape whose byte count wraps past 2^64 is refused as too large
// (it passed the size check with one image's bytes and crashed `embed`).
TEST(FieldInputs, NpyShapeThatWrapsIsRefused) {
  TempDir t;
  const std::string one_image(224 * 224 * 3, '\0');
  write_raw_npy(t / "x.npy", "|u1", "(18014398509481985, 224, 224, 3)", one_image);  // 2**54 + 1 images
  try {
    read_npy(t / "x.npy");
    ADD_FAILURE() << "a wrapped shape was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), t / "x.npy" + ": shape (18014398509481985, 224, 224, 3) is too large (more than "
                                                     "2^63 bytes; the file has 150528)");
  }
  auto r = run_cli("embed --model " + kModel + " --input " + t / "x.npy" + " --out " + t / "o.npy");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  expect_has(r.err, {"x.npy: shape (18014398509481985, 224, 224, 3) is too large"});
  EXPECT_FALSE(fs::exists(t / "o.npy"));
  // A real truncation still reports both sizes, and they differ.
  write_raw_npy(t / "y.npy", "<f4", "(2, 4)", std::string(12, '\0'));
  r = run_cli("add " + axis_memory(t, {"a", "b"}) + " --embeddings " + t / "y.npy" + " --labels " + t / "labels.txt");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"y.npy: truncated .npy data: shape (2, 4) needs 32 bytes, file has 12"});
  // Dimensions that are not whole numbers, or do not fit, are refused, not wrapped.
  write_raw_npy(t / "z.npy", "<f4", "(1, 99999999999999999999)", "");
  EXPECT_THROW(read_npy(t / "z.npy"), Error);
  // A shape that is not a tuple (found by fuzz_npy: it escaped as std::out_of_range).
  write_raw_npy(t / "s.npy", "<f4", "", "");
  EXPECT_THROW(read_npy(t / "s.npy"), Error);
}

// 3. Integer inputs are range-checked, never narrowed: --k 4294967298 is not
// k = 2, and a .npy of (0, 2^32 + 4) is not 4-d.
TEST(FieldInputs, IntegersAreRangeCheckedNotNarrowed) {
  TempDir t;
  const std::string mem = axis_memory(t, {"a", "b", "c", "d"});
  for (const std::string& opt : {"--k 4294967298", "--k -1", "--k 0", "--threads 4294967298", "--batch 4294967297"}) {
    auto r = run_cli("classify " + mem + " --embeddings " + t / "x.npy" + " " + opt + " --json");
    EXPECT_EQ(r.exit_code, 1) << opt;
    expect_has(r.err, {"error: --", "not in range"});
    EXPECT_EQ(count(r.err, "\n"), 1u) << "one line: " << r.err;
  }
  auto r = run_cli("search " + mem + " --embeddings " + t / "x.npy" + " --k 99999999999999999999 --out " + t / "nn.json");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"error: --k"});
  write_raw_npy(t / "wide.npy", "<f4", "(0, 4294967300)", "");
  r = run_cli("add " + mem + " --embeddings " + t / "wide.npy" + " --labels " + t / "labels.txt");
  EXPECT_EQ(r.exit_code, 1);
  write_raw_npy(t / "wide1.npy", "<f4", "(1, 4294967300)", "");
  r = run_cli("search " + mem + " --embeddings " + t / "wide1.npy" + " --out " + t / "nn.json");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"wide1.npy: "});
  EXPECT_EQ(info(mem)["items"], 4);
  // The same parser for numbers in files and headers.
  EXPECT_EQ(parse_int(" 42 ", 1, 100, "k"), 42);
  EXPECT_THROW(parse_int("4294967298", 1, INT32_MAX, "k"), Error);
  EXPECT_THROW(parse_int("99999999999999999999", 0, INT64_MAX, "k"), Error);
  EXPECT_THROW(parse_int("2.5", 0, 10, "k"), Error);
  EXPECT_THROW(parse_int("", 0, 10, "k"), Error);
}

// 4. Hidden files and folders are not data: .ipynb_checkpoints is no class.
TEST(FieldInputs, HiddenFilesAndFoldersAreNotData) {
  TempDir t;
  const std::string root = t / "train";
  for (const char* d : {"fish", "dog", ".ipynb_checkpoints", "fish/.hidden", "dog/sub"}) fs::create_directories(root + "/" + d);
  write_jpeg(root + "/fish/a.jpg", 1);
  write_jpeg(root + "/dog/b.jpg", 2);
  write_jpeg(root + "/dog/sub/c.jpg", 3);
  write_jpeg(root + "/.ipynb_checkpoints/x.jpg", 4);
  write_jpeg(root + "/fish/.hidden/y.jpg", 5);
  write_jpeg(root + "/fish/._a.jpg", 6);  // a macOS resource fork beside a.jpg
  std::vector<std::string> ids, labels;
  for (const auto& li : scan_image_folder(root)) ids.push_back(li.id), labels.push_back(li.label);
  EXPECT_EQ(ids, (std::vector<std::string>{"dog/b.jpg", "dog/sub/c.jpg", "fish/a.jpg"}));
  EXPECT_EQ(labels, (std::vector<std::string>{"dog", "dog", "fish"}));
  // Through add: two classes, three items; classifying the hidden copy answers a real class.
  const std::string mem = t / "m.db";
  ASSERT_EQ(run_cli("create " + mem + " --model " + kModel).exit_code, 0);
  auto r = run_cli("add " + mem + " " + root);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(info(mem)["items"], 3);
  EXPECT_EQ(info(mem)["labels"], 2);
  r = run_cli("classify " + mem + " " + root + "/.ipynb_checkpoints/x.jpg --k 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(nlohmann::json::parse(r.out)["prediction"], ".ipynb_checkpoints");
}

// 6. Query labels that the memory lacks are reported, not silently scored 0.
TEST(FieldInputs, EvalSaysWhenQueryLabelsAreNotInTheMemory) {
  TempDir t;
  const std::string mem = axis_memory(t, {"0", "1", "2"});
  write_lines(t / "q_labels.txt", {"n01", "n02", "n03"});
  auto r = run_cli("eval " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "q_labels.txt" + " --k 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["methods"]["plurality"]["best"], 0.0);
  expect_has(r.err, {"warning: no query label occurs in the memory", "'n01'", "'0'", "every accuracy is 0"});
  // Some known, some not: how many.
  write_lines(t / "q_labels.txt", {"0", "n02", "2"});
  r = run_cli("eval " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "q_labels.txt" + " --k 1 --json " +
              "--out-neighbors " + t / "nn.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["methods"]["plurality"]["accuracy_at_k"][0].get<double>(), 200.0 / 3, 1e-9);
  expect_has(r.err, {"warning: 1 of 3 queries have a label the memory lacks (e.g. 'n02')"});
  // From a neighbor file: the labels its lists hold.
  r = run_cli("eval --neighbors " + t / "nn.json" + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_has(r.err, {"warning: 1 of 3 queries have a label the neighbor lists lacks"});
  // All labels known: no warning.
  write_lines(t / "q_labels.txt", {"0", "1", "2"});
  r = run_cli("eval " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "q_labels.txt" + " --k 1 --json");
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

// 7, 8. Ids and labels are UTF-8 text without control characters: refused
// where they enter (every add path, id and label lists), so no JSON or TSV
// output meets one it cannot write.
TEST(FieldInputs, IdsAndLabelsMustBeCleanTextWhereverTheyEnter) {
  TempDir t;
  const std::string mem = axis_memory(t, {"a", "b"});
  const std::string cafe = "caf\xe9.jpg";
  const nlohmann::json before = info(mem);
  std::vector<float> x = {0.f, 0.f, 1.f, 0.f};
  write_npy_f32(t / "n.npy", x.data(), {1, 4});
  struct Case {
    std::string id, label, message;
  } cases[] = {
      {cafe, "a", "ids.txt:1: 'caf\\xe9.jpg' is not valid UTF-8"},
      {"x", "c\td", "labels.txt:1: 'c\\td' contains a tab"},
      {"x", "c\x01", "labels.txt:1: 'c\\x01' contains a control character"},
      {"x\x7f", "c", "ids.txt:1: 'x\\x7f' contains a control character"},
  };
  for (const auto& c : cases) {
    write_text_file(t / "n_ids.txt", c.id + "\n");
    write_text_file(t / "n_labels.txt", c.label + "\n");
    auto r = run_cli("add " + mem + " --embeddings " + t / "n.npy" + " --labels " + t / "n_labels.txt" + " --ids " +
                     t / "n_ids.txt");
    EXPECT_EQ(r.exit_code, 1) << c.message;
    expect_has(r.err, {c.message, "ids and labels must be UTF-8 text without tabs, line breaks or other control characters"});
    EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  }
  EXPECT_EQ(info(mem), before);
  // The library refuses them too (the HTTP service adds through it).
  Memory m = Memory::open(mem);
  EXPECT_THROW(m.add({cafe}, {"a"}, x.data()), Error);
  EXPECT_THROW(m.add({"ok"}, {"line\nbreak"}, x.data()), Error);
  EXPECT_THROW(m.add({"ok"}, {"cr\r"}, x.data()), Error);
  EXPECT_EQ(m.size(), 2);
  // Accepted: any valid UTF-8 text with inner spaces.
  write_text_file(t / "n_ids.txt", "caf\xc3\xa9 \xe6\x97\xa5.jpg\n");
  write_text_file(t / "n_labels.txt", "tench fish\n");
  auto r = run_cli("add " + mem + " --embeddings " + t / "n.npy" + " --labels " + t / "n_labels.txt" + " --ids " +
                   t / "n_ids.txt");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("classify " + mem + " --embeddings " + t / "n.npy" + " --k 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["neighbors"][0]["id"], "caf\xc3\xa9 \xe6\x97\xa5.jpg");
  r = run_cli("prune " + mem + " --k 1 --out " + t / "counts.tsv");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(test::read_file(t / "counts.tsv"), "\n"), 3u);
  // Writers: a TSV field with a tab or line break is refused; JSON never fails on bytes.
  EXPECT_THROW(tsv_field("a\tb", "id"), Error);
  EXPECT_EQ(tsv_field("caf\xc3\xa9", "id"), "caf\xc3\xa9");
  EXPECT_EQ(json_text(nlohmann::json(cafe)), "\"caf\xef\xbf\xbd.jpg\"");  // U+FFFD
}

// 7. In an image folder a file name that is not UTF-8 is reported and skipped
// (like an unreadable file); the rest is added, and every output stays valid.
TEST(FieldInputs, FolderFileNameThatIsNotUtf8IsSkippedAndReported) {
  TempDir t;
  const std::string root = t / "train";
  fs::create_directories(root + "/fish");
  fs::create_directories(root + "/dog");
  write_jpeg(root + "/fish/a.jpg", 1);
  write_jpeg(root + "/fish/caf\xe9.jpg", 2);
  write_jpeg(root + "/dog/b.jpg", 3);
  const std::string mem = t / "m.db";
  ASSERT_EQ(run_cli("create " + mem + " --model " + kModel).exit_code, 0);
  auto r = run_cli("add " + mem + " " + root);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_has(r.err, {"skipped " + root + "/fish/caf\\xe9.jpg: file name is not valid UTF-8"});
  expect_has(r.out, {"added 2 images, 1 unreadable or badly named (skipped)"});
  EXPECT_EQ(info(mem)["items"], 2);
  // A query whose own path is not UTF-8 is still classified; the JSON is valid.
  r = run_cli("classify " + mem + " " + root + "/fish/caf\xe9.jpg --k 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["neighbors"].size(), 2u);
  r = run_cli("eval " + mem + " " + root + " --json --out-neighbors " + t / "nn.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["queries"], 2);
  EXPECT_EQ(nlohmann::json::parse(test::read_file(t / "nn.json")).size(), 2u);
}

// 10. `add DIR` where no image can be read fails and records nothing.
TEST(FieldInputs, AddFolderWithNothingReadableFailsAndChangesNothing) {
  TempDir t;
  const std::string root = t / "bad";
  fs::create_directories(root + "/c");
  write_text_file(root + "/c/x.jpg", "not an image");
  write_jpeg(root + "/c/y.jpg", 1);
  std::string y = test::read_file(root + "/c/y.jpg");
  write_text_file(root + "/c/y.jpg", y.substr(0, y.size() / 2));  // truncated
  const std::string mem = t / "m.db";
  ASSERT_EQ(run_cli("create " + mem + " --model " + kModel).exit_code, 0);
  const nlohmann::json before = info(mem);
  auto r = run_cli("add " + mem + " " + root);
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"error: " + root + ": none of the 2 images could be read", "the memory is unchanged"});
  EXPECT_EQ(info(mem), before);
  EXPECT_TRUE(Memory::open(mem).image_roots().empty());
}

// 11. Messages name the file once, and a corrupt stored value names the memory.
TEST(FieldInputs, MessagesNameTheFileOnce) {
  TempDir t;
  fs::create_directories(t / "imgs");
  write_text_file(t / "imgs/bomb.png", "\x89PNG\r\n\x1a\n garbage");
  auto r = run_cli("embed --model " + kModel + " " + t / "imgs/bomb.png" + " --out " + t / "o.npy");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(count(r.err, "bomb.png"), 1u) << r.err;
  EXPECT_EQ(count(r.err, "\n"), 1u) << r.err;
  // Through a folder add: "skipped PATH: why", the path once.
  fs::create_directories(t / "train/c");
  write_text_file(t / "train/c/bomb.png", "\x89PNG\r\n\x1a\n garbage");
  write_jpeg(t / "train/c/ok.jpg", 1);
  const std::string mem = t / "m.db";
  ASSERT_EQ(run_cli("create " + mem + " --model " + kModel).exit_code, 0);
  r = run_cli("add " + mem + " " + t / "train");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, "bomb.png"), 1u) << r.err;
  // A stored number that does not parse: the file and the problem, not a bare "stoi".
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(mem.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value='x' WHERE key='generation'", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  r = run_cli("info " + mem);
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"error: " + mem + ": corrupt memory file: a stored value is not a valid number"});
}

// 12. Leave-one-out on a tiny memory uses the k that exists, and says so.
TEST(FieldInputs, ExcludeSelfUsesTheNeighborsThatExist) {
  TempDir t;
  const std::string mem = axis_memory(t, {"a", "b", "a"});
  auto r = run_cli("eval " + mem + " --embeddings " + t / "x.npy" + " --labels " + t / "labels.txt" + " --ids " +
                   t / "ids.txt" + " --exclude-self --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["methods"]["rank"]["accuracy_at_k"].size(), 2u);
  expect_has(r.err, {"note: k=100 (default) but " + mem + " has 3 items (one left out per query): using k=2"});
  // search prints the k its lists hold.
  r = run_cli("search " + mem + " --embeddings " + t / "x.npy" + " --ids " + t / "ids.txt" + " --exclude-self --out " +
              t / "nn.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_has(r.out, {"(k=2)"});
  auto nn = nlohmann::json::parse(test::read_file(t / "nn.json"));
  EXPECT_EQ(nn["i0"]["neighbor_image_ids"].size(), 2u);
  // One item cannot leave itself out.
  const std::string one = t / "one.db";
  ASSERT_EQ(run_cli("create " + one + " --dim 4").exit_code, 0);
  write_lines(t / "one_labels.txt", {"a"});
  write_lines(t / "one_ids.txt", {"i0"});
  std::vector<float> x = {1.f, 0.f, 0.f, 0.f};
  write_npy_f32(t / "one.npy", x.data(), {1, 4});
  ASSERT_EQ(run_cli("add " + one + " --embeddings " + t / "one.npy" + " --labels " + t / "one_labels.txt" + " --ids " +
                    t / "one_ids.txt").exit_code, 0);
  r = run_cli("eval " + one + " --embeddings " + t / "one.npy" + " --labels " + t / "one_labels.txt" + " --ids " +
              t / "one_ids.txt" + " --exclude-self");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"--exclude-self needs a memory of at least 2 items"});
  r = run_cli("search " + one + " --embeddings " + t / "one.npy" + " --ids " + t / "one_ids.txt" + " --exclude-self --out " +
              t / "one.json");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"--exclude-self needs a memory of at least 2 items"});
  r = run_cli("ood-fit " + one + " --self");
  EXPECT_EQ(r.exit_code, 1);
  expect_has(r.err, {"ood-fit --self needs a memory of at least 2 items"});
}
