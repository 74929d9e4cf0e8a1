// The explanation page: the pure HTML builder (escaping, neighbors, residual,
// placeholders, inlined images), its base64 / JPEG helpers, and `vismem explain`
// end to end on a small Imagenette memory, rendered by headless Chromium.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <unordered_set>

#include "error.h"
#include "explain.h"
#include "textio.h"
#include "image.h"
#include "util_test.h"

using namespace vismem;
using vismem::test::run_cli;
using vismem::test::shared_dir;
using vismem::test::TempDir;
namespace fs = std::filesystem;

namespace {

Image gradient(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(255 * x / (w - 1));
      p[1] = uint8_t(255 * y / (h - 1));
      p[2] = uint8_t(128 + 100 * std::sin(x * 0.1) * std::cos(y * 0.1));
    }
  return img;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The payloads of every data: URI in the page, in order.
std::vector<std::string> data_uris(const std::string& html) {
  std::vector<std::string> out;
  const std::string key = ";base64,";
  for (size_t p = html.find("src=\"data:image/"); p != std::string::npos; p = html.find("src=\"data:image/", p + 1)) {
    size_t b = html.find(key, p) + key.size();
    out.push_back(html.substr(b, html.find('"', b) - b));
  }
  return out;
}

ExplainNeighbor neighbor(int rank, std::string id, std::string label, double d, double w,
                         std::vector<uint8_t> thumb = {}, bool excluded = false) {
  ExplainNeighbor n;
  n.rank = rank;
  n.id = std::move(id);
  n.label = std::move(label);
  n.distance = d;
  n.weight = w;
  n.thumbnail = std::move(thumb);
  n.excluded = excluded;
  return n;
}

Explanation sample(const std::vector<uint8_t>& thumb) {
  Explanation e;
  e.query_id = "q<1>.jpg";
  e.query_thumbnail = thumb;
  e.memory = "m.db";
  e.model_id = "mobilenet_v1";
  e.memory_items = 12;
  e.vote = "rank";
  e.k = 4;
  e.decision.prediction = "cat & dog";
  e.decision.scores = {{"cat & dog", 0.9}, {"<script>alert(1)</script>", 0.25}};
  e.decision.neighbor_weights = {0.5, 0.33, 0.25, 0};
  e.decision.score_share = 0.9 / 1.15;
  e.decision.vote_share = 0.5;
  e.decision.entropy = 0.75;
  e.decision.k = 4;
  e.ood_score = 0.2718;
  e.neighbors = {neighbor(1, "a/1.jpg", "cat & dog", 0.1234, 0.5, thumb),
                 neighbor(2, "b/\"quoted\".jpg", "<script>alert(1)</script>", 0.2345, 0.33, thumb),
                 neighbor(3, "a/missing.jpg", "cat & dog", 0.3456, 0.25),
                 neighbor(4, "a/pruned.jpg", "cat & dog", 0.4567, 0, thumb, true)};
  ExplainResidual r;
  r.subtracted_id = "a/1.jpg";
  r.norm = 0.61;
  r.decision.prediction = "hat";
  r.decision.scores = {{"hat", 0.8}};
  r.decision.neighbor_weights = {0.5, 0.3};
  r.decision.k = 2;
  r.neighbors = {neighbor(1, "h/7.jpg", "hat", 0.5678, 0.5, thumb), neighbor(2, "h/8.jpg", "hat", 0.6789, 0.3)};
  e.residual = r;
  return e;
}

}  // namespace

TEST(Explain, HtmlEscapeCoversMarkupAndQuotes) {
  EXPECT_EQ(html_escape("<a href='x' title=\"y\">&amp;</a>"),
            "&lt;a href=&#39;x&#39; title=&quot;y&quot;&gt;&amp;amp;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain ümlaut"), "plain ümlaut");
}

TEST(Explain, Base64KnownVectorsAndRoundTrip) {
  const std::vector<std::pair<std::string, std::string>> rfc = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (auto& [plain, enc] : rfc) {
    std::vector<uint8_t> b(plain.begin(), plain.end());
    EXPECT_EQ(base64_encode(b), enc);
    EXPECT_EQ(base64_decode(enc), b);
  }
  std::mt19937 rng(7);
  for (size_t n = 0; n < 70; ++n) {
    std::vector<uint8_t> b(n);
    for (auto& x : b) x = uint8_t(rng());
    EXPECT_EQ(base64_decode(base64_encode(b)), b) << n;
  }
  EXPECT_EQ(base64_decode("Zm9v\nYmFy"), std::vector<uint8_t>({'f', 'o', 'o', 'b', 'a', 'r'}));
  EXPECT_THROW(base64_decode("Zm9"), Error);
  EXPECT_THROW(base64_decode("Zm9*"), Error);
}

TEST(Explain, JpegEncodeDecodeRoundTrip) {
  Image img = gradient(67, 41);  // odd sizes: partial MCUs at both edges
  std::vector<uint8_t> jpg = encode_jpeg(img, 95);
  ASSERT_EQ(detect_image_format(jpg.data(), jpg.size()), "jpeg");
  Image back = decode_image(jpg.data(), jpg.size(), "roundtrip.jpg");
  ASSERT_EQ(back.width, 67);
  ASSERT_EQ(back.height, 41);
  double err = 0;
  for (size_t i = 0; i < img.rgb.size(); ++i) err += std::abs(int(img.rgb[i]) - int(back.rgb[i]));
  EXPECT_LT(err / img.rgb.size(), 3.0);
  // Lower quality: smaller file, still decodable.
  EXPECT_LT(encode_jpeg(img, 30).size(), jpg.size());
  EXPECT_THROW(encode_jpeg(img, 0), Error);
  EXPECT_THROW(encode_jpeg(Image{}, 85), Error);
  Image bad = img;
  bad.rgb.pop_back();
  EXPECT_THROW(encode_jpeg(bad, 85), Error);
}

TEST(Explain, ThumbnailKeepsAspectAndSmallImages) {
  Image t = thumbnail(gradient(300, 200), 128);
  EXPECT_EQ(t.width, 128);
  EXPECT_EQ(t.height, 85);
  Image tall = thumbnail(gradient(50, 400), 128);
  EXPECT_EQ(tall.width, 16);
  EXPECT_EQ(tall.height, 128);
  Image small = thumbnail(gradient(40, 30), 128);
  EXPECT_EQ(small.width, 40);
  EXPECT_EQ(small.rgb, gradient(40, 30).rgb);
}

TEST(Explain, HtmlHasEveryNeighborEscapedWithResidualAndPlaceholder) {
  const std::vector<uint8_t> thumb = thumbnail_jpeg(gradient(200, 150), 128);
  const Explanation e = sample(thumb);
  const std::string h = explain_html(e);
  // Self-contained: no external reference of any kind.
  EXPECT_EQ(h.find("http"), std::string::npos);
  EXPECT_EQ(h.find("src=\"file"), std::string::npos);
  // Escaping: the hostile label never appears raw, quotes in ids do not break attributes.
  EXPECT_EQ(h.find("<script>"), std::string::npos);
  EXPECT_NE(h.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(h.find("alt=\"b/&quot;quoted&quot;.jpg\""), std::string::npos);
  EXPECT_NE(h.find("q&lt;1&gt;.jpg"), std::string::npos);
  EXPECT_NE(h.find("<span class=\"pred\">cat &amp; dog</span>"), std::string::npos);
  // Every neighbor with rank and distance, in both rows.
  for (const auto* row : {&e.neighbors, &e.residual->neighbors})
    for (const ExplainNeighbor& n : *row) {
      EXPECT_NE(h.find(html_escape(n.id)), std::string::npos) << n.id;
      char d[32];
      std::snprintf(d, sizeof d, "d=%.4f", n.distance);
      EXPECT_NE(h.find(d), std::string::npos) << d;
    }
  EXPECT_EQ(count(h, "<figure class=\"tile"), 1 + e.neighbors.size() + e.residual->neighbors.size());
  // The missing images are grey placeholders naming the id; the excluded one is marked.
  EXPECT_NE(h.find("no image<br>a/missing.jpg"), std::string::npos);
  EXPECT_NE(h.find("no image<br>h/8.jpg"), std::string::npos);
  EXPECT_EQ(count(h, "excluded (pruned)"), 1u);
  // Residual row: what was subtracted, the second concept.
  EXPECT_NE(h.find("Compositionality residual"), std::string::npos);
  EXPECT_NE(h.find("second concept: <span class=\"pred\">hat</span>"), std::string::npos);
  // Per-class bars: one row per label, the winner highlighted.
  EXPECT_NE(h.find("<tr class=\"win\"><td>cat &amp; dog</td>"), std::string::npos);
  EXPECT_EQ(count(h, "<div class=\"bar\""), 2u);
  // Signals.
  EXPECT_NE(h.find("0.2718"), std::string::npos);  // OOD score
  EXPECT_NE(h.find("k = 4"), std::string::npos);
  // Images: query + 3 neighbors + 1 residual neighbor, each the exact JPEG bytes.
  auto uris = data_uris(h);
  ASSERT_EQ(uris.size(), 5u);
  for (auto& u : uris) EXPECT_EQ(base64_decode(u), thumb);
  EXPECT_EQ(h.find("re-ranker"), std::string::npos);  // none given
}

TEST(Explain, LabelNamesAreShownEscapedBesideLabels) {
  Explanation e = sample({});
  e.label_names = {{"hat", "top <hat>"}, {"cat & dog", "pets"}};
  std::string h = explain_html(e);
  EXPECT_NE(h.find("top &lt;hat&gt;"), std::string::npos);   // residual's second concept and its tiles
  EXPECT_NE(h.find("cat &amp; dog <span class=\"note\">pets</span>"), std::string::npos);
  EXPECT_EQ(h.find("top <hat>"), std::string::npos);
  EXPECT_NE(explain_text(e).find("prediction: cat & dog (pets)"), std::string::npos) << explain_text(e);
  // The file format: LABEL<TAB>NAME, comments and blank lines skipped, errors named.
  test::TempDir t;
  write_text_file(t / "names.tsv", "# label\tname\nn01\ttench, Tinca tinca\r\n\nn02\tspringer\n");
  auto names = read_label_names(t / "names.tsv");
  EXPECT_EQ(names.size(), 2u);
  EXPECT_EQ(names.at("n01"), "tench, Tinca tinca");
  write_text_file(t / "bad.tsv", "n01 tench\n");
  EXPECT_THROW(read_label_names(t / "bad.tsv"), Error);
  write_text_file(t / "dup.tsv", "n01\ta\nn01\tb\n");
  EXPECT_THROW(read_label_names(t / "dup.tsv"), Error);
}

TEST(Explain, ZeroResidualAndRerankAnswerAreStated) {
  Explanation e = sample({});
  e.residual->zero = true;
  e.residual->neighbors.clear();
  e.rerank = RerankAnswer{"<b>hat</b>", 0.75, "looks \"like\" a hat", ""};
  e.rerank_command = "python3 vlm.py";
  const std::string h = explain_html(e);
  EXPECT_NE(h.find("The residual is zero"), std::string::npos);
  EXPECT_EQ(h.find("second concept:"), std::string::npos);
  EXPECT_NE(h.find("&lt;b&gt;hat&lt;/b&gt;</span> (confidence 0.750) &mdash; differs from the vote"), std::string::npos);
  EXPECT_NE(h.find("looks &quot;like&quot; a hat"), std::string::npos);
  EXPECT_NE(h.find("python3 vlm.py"), std::string::npos);
  EXPECT_EQ(count(h, "no image<br>"), 5u);  // query + 4 neighbors, no thumbnail anywhere
  const std::string t = explain_text(e);
  EXPECT_NE(t.find("prediction: cat & dog"), std::string::npos);
  EXPECT_NE(t.find("re-ranker: <b>hat</b> (confidence 0.75), differs from the vote"), std::string::npos);
  EXPECT_NE(t.find("zero, the query equals its nearest neighbor"), std::string::npos);
  for (const ExplainNeighbor& n : e.neighbors) EXPECT_NE(t.find(n.id), std::string::npos);
}

// ---------------------------------------------------------------- end to end

namespace {

const char* kClasses[] = {"n01440764", "n02102040", "n03888257"};

// A memory of 3 Imagenette classes x 4 train images, built once for this program.
struct SmallMemory {
  TempDir t;
  std::string train = t / "train";
  std::string mem = t / "m.db";
  std::string query;
  std::string model = shared_dir() + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
  std::vector<std::string> ids;
  std::string error;
  SmallMemory() {
    const std::string src = shared_dir() + "/data/imagenette2";
    for (const char* c : kClasses) {
      std::vector<fs::path> files;
      for (auto& f : fs::directory_iterator(src + "/train/" + c)) files.push_back(f.path());
      std::sort(files.begin(), files.end());
      fs::create_directories(train + "/" + c);
      for (size_t i = 0; i < 4 && i < files.size(); ++i) {
        fs::copy_file(files[i], train + "/" + c + "/" + files[i].filename().string());
        ids.push_back(std::string(c) + "/" + files[i].filename().string());
      }
    }
    std::vector<fs::path> val;
    for (auto& f : fs::directory_iterator(src + "/val/n02102040")) val.push_back(f.path());
    std::sort(val.begin(), val.end());
    query = val.at(0).string();
    auto r = run_cli("create " + mem + " --model " + model);
    if (r.exit_code == 0) r = run_cli("add " + mem + " " + train);
    if (r.exit_code != 0) error = r.err;
  }
};

SmallMemory& small_memory() {
  static SmallMemory m;
  return m;
}

std::string find_chromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    for (const char* dir : {"/usr/bin/", "/usr/local/bin/", "/snap/bin/"}) {
      std::string p = std::string(dir) + name;
      if (access(p.c_str(), X_OK) == 0) return p;
    }
  }
  return "";
}

}  // namespace

TEST(ExplainCli, HtmlPageRendersInChromium) {
  SmallMemory& m = small_memory();
  ASSERT_TRUE(m.error.empty()) << m.error;
  // One neighbor's file is gone: it must become a placeholder, not an error.
  const std::string gone = m.ids[1];
  TempDir t;
  fs::rename(m.train + "/" + gone, t / "moved.jpg");
  const std::string page = t / "explain.html";
  auto r = run_cli("explain " + m.mem + " " + m.query + " --k 12 --show 12 --vote rank --html " + page);
  fs::rename(t / "moved.jpg", m.train + "/" + gone);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + page), std::string::npos);
  const std::string h = test::read_file(page);
  // Every memory item is one of the 12 neighbors; each but the moved one is inlined.
  for (const std::string& id : m.ids) EXPECT_NE(h.find(html_escape(id)), std::string::npos) << id;
  EXPECT_NE(h.find("no image<br>" + gone), std::string::npos);
  EXPECT_NE(h.find("Compositionality residual"), std::string::npos);
  EXPECT_NE(h.find("second concept:"), std::string::npos);
  EXPECT_EQ(h.find("http"), std::string::npos);
  // The query, then both rows (all 12 items each) less the moved file.
  EXPECT_EQ(data_uris(h).size(), 1u + 11u + 11u);

  const std::string chromium = find_chromium();
  ASSERT_FALSE(chromium.empty()) << "chromium is not installed: run scripts/setup.sh (it installs the Debian "
                                    "package chromium, which this test uses to render the page)";
  const std::string png = t / "shot.png";
  // `timeout`: a browser that hangs must fail the test, not stall CI.
  const std::string cmd = "timeout 120 " + chromium +
                          " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking"
                          " --no-first-run --hide-scrollbars --window-size=1200,1000 --user-data-dir=" +
                          t / "chromium-profile" + " --screenshot=" + png + " file://" + page + " >" + t / "chromium.log" +
                          " 2>&1";
  int rc = std::system(cmd.c_str());
  ASSERT_TRUE(fs::exists(png)) << "chromium wrote no screenshot (exit " << rc << "): " << test::read_file(t / "chromium.log");
  Image shot = decode_image_file(png);
  ASSERT_EQ(shot.width, 1200);
  ASSERT_EQ(shot.height, 1000);
  std::unordered_set<uint32_t> colors;
  size_t non_white = 0;
  const size_t px = size_t(shot.width) * shot.height;
  for (size_t i = 0; i < px; ++i) {
    const uint8_t* p = &shot.rgb[i * 3];
    colors.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
    if (p[0] < 245 || p[1] < 245 || p[2] < 245) ++non_white;
  }
  EXPECT_GT(colors.size(), 2000u);  // photos, not just text and boxes
  EXPECT_GT(double(non_white) / px, 0.10);
  // The query thumbnail (top left, 192 px box under the title) is a photo, not a flat box.
  std::set<uint32_t> q_colors;
  double sum = 0, sum2 = 0;
  int n = 0;
  for (int y = 90; y < 230; ++y)
    for (int x = 50; x < 190; ++x) {
      const uint8_t* p = &shot.rgb[(size_t(y) * shot.width + x) * 3];
      q_colors.insert(uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]);
      double g = (p[0] + p[1] + p[2]) / 3.0;
      sum += g;
      sum2 += g * g;
      ++n;
    }
  const double sd = std::sqrt(std::max(0.0, sum2 / n - (sum / n) * (sum / n)));
  EXPECT_GT(q_colors.size(), 500u);
  EXPECT_GT(sd, 10.0);
}

TEST(ExplainCli, TextSummaryImageRootsAndZeroResidual) {
  SmallMemory& m = small_memory();
  ASSERT_TRUE(m.error.empty()) << m.error;
  // Text: prediction, scores, the neighbors.
  auto r = run_cli("explain " + m.mem + " " + m.query + " --k 5 --show 3 --vote softmax");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("prediction: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("softmax vote over k=5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OOD score"), std::string::npos);
  EXPECT_NE(r.out.find("second concept"), std::string::npos);
  EXPECT_EQ(count(r.out, "  d="), 6u) << r.out;  // 3 neighbors + 3 residual neighbors

  // A memory item as the query: the residual is zero and the page says so.
  TempDir t;
  const std::string item = m.train + "/" + m.ids[5];
  r = run_cli("explain " + m.mem + " " + item + " --k 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("zero, the query equals its nearest neighbor"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("    1  d=0.0000"), std::string::npos) << r.out;

  // The image folder moved: --image-root finds the thumbnails again.
  const std::string moved = t / "elsewhere";
  fs::rename(m.train, moved);
  auto lost = run_cli("explain " + m.mem + " " + m.query + " --k 4 --show 4 --html " + t / "a.html");
  auto found = run_cli("explain " + m.mem + " " + m.query + " --k 4 --show 4 --image-root " + t / "nowhere" +
                       " --image-root " + moved + " --html " + t / "b.html");
  fs::rename(moved, m.train);
  ASSERT_EQ(lost.exit_code, 0) << lost.err;
  ASSERT_EQ(found.exit_code, 0) << found.err;
  EXPECT_EQ(data_uris(test::read_file(t / "a.html")).size(), 1u);  // the query only
  EXPECT_EQ(data_uris(test::read_file(t / "b.html")).size(), 1u + 4u + 4u);

  // Bad input: one-line errors.
  r = run_cli("explain " + m.mem + " " + t / "no_such.jpg");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no_such.jpg"), std::string::npos) << r.err;
}
