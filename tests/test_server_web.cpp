// The web page at / in a real browser: headless Chromium (Debian's
// /usr/bin/chromium) driven by puppeteer-core (npm, installed into
// tests/web/node_modules on first run) uploads a photo to `vismem serve`'s
// page; the prediction it shows must equal `vismem classify`, the neighbor it
// removes (with a write token) must be the CLI's nearest one and leave the
// memory. Saves the screenshot as test_server_web.png in the working directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "hash.h"
#include "image.h"
#include "memory.h"
#include "server.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::TempDir;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string quote(const std::string& s) { return "'" + s + "'"; }

// puppeteer-core in tests/web/node_modules; installed from the npm registry
// when missing. Returns "" or why it is not available.
std::string ensure_puppeteer(const fs::path& web) {
  if (fs::exists(web / "node_modules/puppeteer-core/package.json")) return "";
  const std::string log = (web / "npm-install.log").string();
  const std::string cmd = "cd " + quote(web.string()) + " && timeout 300 npm install --no-audit --no-fund >" + quote(log) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc == 0 && fs::exists(web / "node_modules/puppeteer-core/package.json")) return "";
  std::string tail = test::read_file(log);
  if (tail.size() > 2000) tail = tail.substr(tail.size() - 2000);
  return "npm could not install puppeteer-core into " + (web / "node_modules").string() +
         " (is the npm registry reachable? scripts/setup.sh installs it too): " + tail;
}

}  // namespace

TEST(ServerWeb, PageInChromiumPredictsLikeClassifyAndRemoves) {
  // Not __FILE__: with ccache's base_dir it is relative to the build folder.
  const fs::path web = fs::path(VISMEM_SOURCE_DIR) / "tests" / "web";
  const std::string why = ensure_puppeteer(web);
  ASSERT_TRUE(why.empty()) << why;  // fails clearly: never a silent pass without a browser
  ASSERT_EQ(std::system("command -v node >/dev/null 2>&1"), 0) << "node is not installed (Debian package nodejs)";
  ASSERT_TRUE(fs::exists("/usr/bin/chromium")) << "chromium is not installed: run scripts/setup.sh";

  // A memory of 12 Imagenette photos (3 classes), bound to the default model.
  TempDir t;
  const std::string model = test::shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  const std::string data = test::shared_dir() + "/data/imagenette2";
  const std::string train = t / "train";
  for (std::string cls : {"n01440764", "n02102040", "n03888257"}) {
    fs::create_directories(train + "/" + cls);
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(data + "/train/" + cls)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < 4 && i < files.size(); ++i) fs::copy_file(files[i], train + "/" + cls + "/" + files[i].filename().string());
  }
  const std::string mem = t / "m.db";
  auto r = test::run_cli("create " + quote(mem) + " --model " + quote(model));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_cli("add " + quote(mem) + " " + quote(train));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<fs::path> val;
  for (auto& e : fs::directory_iterator(data + "/val/n02102040")) val.push_back(e.path());
  std::sort(val.begin(), val.end());
  const std::string photo = fs::canonical(val.at(0)).string();  // Chromium refuses file paths with ".."

  // The oracle: the CLI's answer with the page's defaults (k 20, rank).
  r = test::run_cli("classify " + quote(mem) + " " + quote(photo) + " --k 20 --vote rank --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json cj = json::parse(r.out);
  if (cj.is_object() && cj.contains("results")) cj = cj["results"];
  if (cj.is_array()) cj = cj.at(0);
  const std::string expected = cj.at("prediction");
  const std::string nearest = cj.at("neighbors").at(0).at("id");

  const std::string token = new_token();
  ServerOptions o;
  o.tokens = {{sha256_hex(token.data(), token.size()), true, "test"}};
  Server srv(Memory::open(mem), o);
  const int port = srv.bind("127.0.0.1", 0);
  std::thread th([&] { srv.run(); });

  const std::string shot = t / "shot.png", out = t / "node.out", err = t / "node.err";
  const std::string cmd = "cd " + quote(web.string()) + " && timeout 180 node browser_test.js " +
                          quote("http://127.0.0.1:" + std::to_string(port) + "/") + " " + quote(photo) + " " + quote(token) +
                          " " + quote(shot) + " " + quote(t / "profile") + " >" + quote(out) + " 2>" + quote(err);
  const int rc = std::system(cmd.c_str());
  srv.stop();
  th.join();
  ASSERT_EQ(rc, 0) << test::read_file(err) << test::read_file(out);
  const json page = json::parse(test::read_file(out));

  EXPECT_EQ(page["state"], "done") << page.dump();
  EXPECT_EQ(page["error"], "");
  EXPECT_EQ(page["prediction"], expected);
  EXPECT_NE(page["info"].get<std::string>().find("12 items"), std::string::npos) << page["info"];
  ASSERT_EQ(page["neighbors"].size(), 12u);  // k = 20 over 12 items: every one, each with its thumbnail
  for (const json& n : page["neighbors"]) EXPECT_TRUE(n["image"].get<bool>()) << n.dump();
  EXPECT_EQ(page["scores"].at(0), expected);
  EXPECT_EQ(page["console_errors"].size(), 0u) << page["console_errors"].dump();

  // Removal through the page: the nearest neighbor (the CLI's), gone from the file.
  EXPECT_EQ(page["removed"], nearest);
  EXPECT_EQ(page["removed_shown"], nearest);
  EXPECT_EQ(page["error_after_remove"], "");
  Memory after = Memory::open(mem);
  EXPECT_EQ(after.size(), 11);
  EXPECT_FALSE(after.contains(nearest));

  // The screenshot: a page with photos on it.
  Image img = decode_image_file(shot);
  EXPECT_EQ(img.width, 1280);
  EXPECT_GE(img.height, 900);
  std::set<uint32_t> colors;
  for (size_t i = 0; i < size_t(img.width) * img.height; i += 7)
    colors.insert(uint32_t(img.rgb[i * 3]) << 16 | uint32_t(img.rgb[i * 3 + 1]) << 8 | img.rgb[i * 3 + 2]);
  EXPECT_GT(colors.size(), 2000u);
  fs::copy_file(shot, "test_server_web.png", fs::copy_options::overwrite_existing);
}
