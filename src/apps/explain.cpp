#include "explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "error.h"
#include "preprocess.h"

namespace vismem {

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string num(double v, int prec = 4) {
  if (std::isnan(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// Scores of the four rules span 1e-30 (softmax) to 100 (plurality): %g reads better than fixed.
std::string score_str(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string data_uri(const std::vector<uint8_t>& bytes) {
  const std::string fmt = detect_image_format(bytes.data(), bytes.size());
  if (fmt.empty()) return "";
  return "data:image/" + fmt + ";base64," + base64_encode(bytes);
}

constexpr const char* kStyle = R"css(
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 12px}
h2{font-size:16px;margin:20px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.head{display:flex;gap:20px;align-items:flex-start}
.facts td{padding:2px 10px 2px 0;vertical-align:top}
.facts td:first-child{color:#666}
.pred{font-size:18px;font-weight:bold;color:#0a5}
.row{display:flex;flex-wrap:wrap;gap:10px}
.tile{width:140px;margin:0;padding:4px;border:1px solid #ccc;border-top:4px solid #3a7;border-radius:4px;font-size:11px;background:#fafafa}
.tile.other{border-top-color:#d55}
.tile.excluded{opacity:.55;border-style:dashed}
.tile img,.ph{width:128px;height:128px;object-fit:contain;display:block;margin:0 auto 4px;background:#eee}
.ph{background:#bbb;color:#333;font-size:10px;display:flex;align-items:center;justify-content:center;text-align:center;word-break:break-all;padding:4px;box-sizing:border-box}
.query img,.query .ph{width:192px;height:192px}
.query{width:200px;border-top-color:#36c}
.id{color:#666;word-break:break-all}
.lab{font-weight:bold}
.ex{color:#b00;font-weight:bold}
table.bars{border-collapse:collapse;font-size:13px}
table.bars td{padding:2px 8px}
table.bars tr.win{background:#fff3c4;font-weight:bold}
.bar{height:14px;background:#6a9fd4;min-width:1px}
tr.win .bar{background:#e8a200}
.barcell{width:420px}
.note{color:#555;font-size:13px}
.rerank{font-weight:bold;color:#639}
)css";

using Names = std::unordered_map<std::string, std::string>;

// A label as HTML, with its readable name when one is known.
std::string label_html(const std::string& label, const Names& names) {
  auto it = names.find(label);
  std::string h = html_escape(label);
  if (it != names.end() && it->second != label) h += " <span class=\"note\">" + html_escape(it->second) + "</span>";
  return h;
}

void tile(std::string& h, const ExplainNeighbor& n, const std::string& prediction, const Names& names) {
  std::string cls = "tile";
  if (n.label != prediction) cls += " other";
  if (n.excluded) cls += " excluded";
  h += "<figure class=\"" + cls + "\">";
  const std::string uri = n.thumbnail.empty() ? "" : data_uri(n.thumbnail);
  if (!uri.empty()) h += "<img src=\"" + uri + "\" alt=\"" + html_escape(n.id) + "\">";
  else h += "<div class=\"ph\">no image<br>" + html_escape(n.id) + "</div>";
  h += "<figcaption><b>#" + std::to_string(n.rank) + "</b> <span class=\"lab\">" + label_html(n.label, names) + "</span><br>";
  h += "<span class=\"id\">" + html_escape(n.id) + "</span><br>";
  h += "d=" + num(n.distance) + " &middot; w=" + score_str(n.weight);
  if (n.excluded) h += "<br><span class=\"ex\">excluded (pruned)</span>";
  h += "</figcaption></figure>\n";
}

void score_bars(std::string& h, const Decision& d, const Names& names) {
  double total = 0, top = 0;
  for (auto& [l, s] : d.scores) {
    total += s;
    top = std::max(top, s);
  }
  h += "<table class=\"bars\"><tr><th>label</th><th></th><th>score</th><th>share</th></tr>\n";
  for (auto& [l, s] : d.scores) {
    if (!(s > 0)) continue;
    const double width = top > 0 ? 100.0 * s / top : 0;
    h += std::string("<tr") + (l == d.prediction ? " class=\"win\"" : "") + "><td>" + label_html(l, names) +
         "</td><td class=\"barcell\"><div class=\"bar\" style=\"width:" + num(width, 1) + "%\"></div></td><td>" +
         score_str(s) + "</td><td>" + num(total > 0 ? s / total : 0, 3) + "</td></tr>\n";
  }
  h += "</table>\n";
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string base64_encode(const uint8_t* p, size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = uint32_t(p[i]) << 16 | uint32_t(p[i + 1]) << 8 | p[i + 2];
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = uint32_t(p[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (n - i == 2) {
    uint32_t v = uint32_t(p[i]) << 16 | uint32_t(p[i + 1]) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(const std::string& text) {
  std::string s;
  for (char c : text)
    if (!(c == ' ' || c == '\n' || c == '\r' || c == '\t')) s += c;
  if (s.size() % 4) throw Error("base64: length " + std::to_string(s.size()) + " is not a multiple of 4");
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  out.reserve(s.size() / 4 * 3);
  for (size_t i = 0; i < s.size(); i += 4) {
    const bool last = i + 4 == s.size();
    int pad = 0;
    if (last && s[i + 3] == '=') pad = s[i + 2] == '=' ? 2 : 1;
    uint32_t v = 0;
    for (int j = 0; j < 4; ++j) {
      int x = j >= 4 - pad ? 0 : val(s[i + j]);
      if (x < 0) throw Error(std::string("base64: invalid character '") + s[i + j] + "'");
      v = v << 6 | uint32_t(x);
    }
    out.push_back(uint8_t(v >> 16));
    if (pad < 2) out.push_back(uint8_t(v >> 8));
    if (pad < 1) out.push_back(uint8_t(v));
  }
  return out;
}

Image thumbnail(const Image& img, int max_side) {
  if (max_side < 1) throw Error("thumbnail: size must be positive");
  const int longer = std::max(img.width, img.height);
  if (longer <= max_side) return img;
  const double s = double(max_side) / longer;
  const int w = std::max(1, int(std::lround(img.width * s)));
  const int h = std::max(1, int(std::lround(img.height * s)));
  return resize_bicubic(img, w, h);
}

std::vector<uint8_t> thumbnail_jpeg(const Image& img, int max_side, int quality) {
  return encode_jpeg(thumbnail(img, max_side), quality);
}

namespace {

// A neighbor whose file is gone or unreadable is still explained, with a placeholder.
std::vector<uint8_t> thumbnail_or_empty(const std::string& path, int side, std::vector<std::string>* warnings) {
  if (path.empty()) return {};
  try {
    return thumbnail_jpeg(decode_image_file(path), side);
  } catch (const Error& e) {
    if (warnings) warnings->push_back(std::string(e.what()) + " (shown as a placeholder)");
    return {};
  }
}

std::vector<ExplainNeighbor> shown_neighbors(const Memory& mem, const std::vector<Neighbor>& nn, const NeighborVotes& nv,
                                             const Decision& d, const ExplainOptions& o,
                                             std::vector<std::string>* warnings) {
  std::vector<ExplainNeighbor> out;
  for (size_t r = 0; r < nn.size() && r < static_cast<size_t>(o.show); ++r) {
    ExplainNeighbor n;
    n.rank = static_cast<int>(r) + 1;
    n.id = nn[r].id;
    n.label = nn[r].label;
    n.distance = nn[r].distance;
    n.weight = r < d.neighbor_weights.size() ? d.neighbor_weights[r] : 0.0;
    // With every neighbor excluded the vote falls back to all of them (SPEC
    // section 3): then none is shown as excluded.
    n.excluded = !nv.excluded.empty() && nv.excluded[r] && n.weight == 0;
    n.thumbnail = thumbnail_or_empty(find_neighbor_image(mem, o.image_roots, nn[r].id), o.thumb_side, warnings);
    out.push_back(std::move(n));
  }
  return out;
}

// The query and its nearest neighbor are both unit vectors normalized by
// slightly different code paths: the same image differs by ~1e-6, a different
// one by far more than 1e-4.
constexpr double kZeroResidual = 1e-4;

nlohmann::json neighbors_json(const std::vector<ExplainNeighbor>& nn) {
  nlohmann::json a = nlohmann::json::array();
  for (const ExplainNeighbor& n : nn) {
    const std::string uri = data_uri(n.thumbnail);
    a.push_back({{"rank", n.rank},
                 {"id", n.id},
                 {"label", n.label},
                 {"distance", n.distance},
                 {"weight", n.weight},
                 {"excluded", n.excluded},
                 {"thumbnail", uri.empty() ? nlohmann::json(nullptr) : nlohmann::json(uri)}});
  }
  return a;
}

nlohmann::json scores_json(const Decision& d) {
  nlohmann::json a = nlohmann::json::array();
  for (auto& [l, s] : d.scores) a.push_back({{"label", l}, {"score", s}});
  return a;
}

}  // namespace

// The neighbor's image: --image-root folders first (the user's override), then
// the roots the memory recorded. Only files under a root: an id with ".."
// must not reach files outside the image folders.
std::string find_neighbor_image(const Memory& mem, const std::vector<std::string>& roots, const std::string& id) {
  std::vector<std::string> all = roots;
  for (auto& r : mem.image_roots()) all.push_back(r);
  for (const std::string& r : all) {
    // Lexical, not canonical: a dataset folder of symlinks stays usable; an
    // id whose ".." climbs out of the root does not.
    std::filesystem::path root = std::filesystem::path(r).lexically_normal();
    if (!root.has_filename()) root = root.parent_path();  // "dir/" as "dir"
    const std::filesystem::path p = (root / id).lexically_normal();
    const auto rel = p.lexically_relative(root);
    if (rel.empty() || *rel.begin() == ".." || std::filesystem::path(id).is_absolute()) continue;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

Explanation explain_query(const Memory& mem, const float* q, const ExplainOptions& o, std::vector<std::string>* warnings) {
  if (mem.size() == 0) throw Error(mem.path() + " is empty: add items first");
  std::vector<Neighbor> nn = mem.search(q, 1, o.k, {}, o.threads).at(0);
  const int k = static_cast<int>(nn.size());
  NeighborVotes nv = neighbor_votes(mem, nn, true);
  Explanation e;
  e.decision = decide(o.vote, nv, k);
  MemoryInfo info = mem.info();
  e.memory = mem.path();
  e.model_id = info.model_id;
  e.memory_items = info.items;
  e.vote = o.vote_name;
  e.k = k;
  e.ood_score = ood_score(nv.distances, k);
  e.neighbors = shown_neighbors(mem, nn, nv, e.decision, o, warnings);

  // Compositionality (SPEC section 5): what is left of the query after
  // taking away its nearest neighbor.
  ExplainResidual res;
  res.subtracted_id = nn[0].id;
  const std::vector<float> nearest = mem.embedding(nn[0].id);
  const size_t d = nearest.size();
  std::vector<float> rq(d);
  double ss = 0;
  for (size_t i = 0; i < d; ++i) {
    rq[i] = q[i] - nearest[i];
    ss += double(rq[i]) * rq[i];
  }
  res.norm = std::sqrt(ss);
  res.zero = res.norm < kZeroResidual;
  if (!res.zero) {
    for (float& v : rq) v = static_cast<float>(v / res.norm);
    std::vector<Neighbor> rnn = mem.search(rq.data(), 1, o.k, {}, o.threads).at(0);
    NeighborVotes rnv = neighbor_votes(mem, rnn, true);
    res.decision = decide(o.vote, rnv, static_cast<int>(rnn.size()));
    res.neighbors = shown_neighbors(mem, rnn, rnv, res.decision, o, warnings);
  }
  e.residual = std::move(res);
  return e;
}

nlohmann::json explanation_json(const Explanation& e) {
  const Decision& d = e.decision;
  nlohmann::json j = {{"query", e.query_id},
                      {"memory", e.memory},
                      {"model_id", e.model_id},
                      {"items", e.memory_items},
                      {"vote", e.vote},
                      {"k", e.k},
                      {"prediction", d.prediction},
                      {"score_share", d.score_share},
                      {"vote_share", d.vote_share},
                      {"entropy", d.entropy},
                      {"ood_score", e.ood_score},
                      {"scores", scores_json(d)},
                      {"neighbors", neighbors_json(e.neighbors)}};
  if (!e.label_names.empty()) {
    nlohmann::json names = nlohmann::json::object();
    for (auto& [l, n] : e.label_names) names[l] = n;
    j["label_names"] = names;
  }
  if (e.residual) {
    const ExplainResidual& r = *e.residual;
    j["residual"] = {{"subtracted_id", r.subtracted_id}, {"norm", r.norm}, {"zero", r.zero},
                     {"prediction", r.zero ? nlohmann::json(nullptr) : nlohmann::json(r.decision.prediction)},
                     {"score_share", r.decision.score_share}, {"neighbors", neighbors_json(r.neighbors)}};
  }
  if (e.rerank) {
    j["rerank"] = {{"label", e.rerank->label},
                   {"confidence", e.rerank->confidence ? nlohmann::json(*e.rerank->confidence) : nlohmann::json(nullptr)},
                   {"reason", e.rerank->reason},
                   {"command", e.rerank_command}};
  }
  return j;
}

std::string explain_html(const Explanation& e) {
  const Decision& d = e.decision;
  std::string h;
  h.reserve(64 * 1024);
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>vismem explain: " +
       html_escape(e.query_id) + "</title>\n<style>" + kStyle + "</style></head><body>\n";
  h += "<h1>vismem explain: " + html_escape(e.query_id) + "</h1>\n";

  // (1) the query and the decision's signals
  h += "<div class=\"head\">";
  {
    std::string uri = e.query_thumbnail.empty() ? "" : data_uri(e.query_thumbnail);
    h += "<figure class=\"tile query\">";
    if (!uri.empty()) h += "<img src=\"" + uri + "\" alt=\"query\">";
    else h += "<div class=\"ph\">no image<br>" + html_escape(e.query_id) + "</div>";
    h += "<figcaption><b>query</b><br><span class=\"id\">" + html_escape(e.query_id) + "</span></figcaption></figure>";
  }
  h += "<table class=\"facts\">\n";
  auto fact = [&](const std::string& k, const std::string& v_html) {
    h += "<tr><td>" + k + "</td><td>" + v_html + "</td></tr>\n";
  };
  fact("prediction", "<span class=\"pred\">" + label_html(d.prediction, e.label_names) + "</span>");
  if (e.rerank) {
    std::string v = "<span class=\"rerank\">" + html_escape(e.rerank->label) + "</span>";
    if (e.rerank->confidence) v += " (confidence " + num(*e.rerank->confidence, 3) + ")";
    v += e.rerank->label == d.prediction ? " &mdash; agrees with the vote" : " &mdash; differs from the vote";
    if (!e.rerank->reason.empty()) v += "<br><span class=\"note\">" + html_escape(e.rerank->reason) + "</span>";
    if (!e.rerank_command.empty()) v += "<br><span class=\"note\">command: <code>" + html_escape(e.rerank_command) + "</code></span>";
    fact("re-ranker", v);
  }
  fact("vote rule", html_escape(e.vote) + ", k = " + std::to_string(e.k));
  fact("score share", num(d.score_share, 3) + " <span class=\"note\">(winner's score / all scores)</span>");
  fact("vote share", num(d.vote_share, 3) + " <span class=\"note\">(most frequent label among the k)</span>");
  fact("label entropy", num(d.entropy, 3) + " <span class=\"note\">(normalized, 0 = one label)</span>");
  fact("OOD score", num(e.ood_score) + " <span class=\"note\">(median distance to the k neighbors; larger = more unusual)</span>");
  if (!e.memory.empty())
    fact("memory", html_escape(e.memory) + " (" + std::to_string(e.memory_items) + " items" +
                       (e.model_id.empty() ? "" : ", " + html_escape(e.model_id)) + ")");
  h += "</table></div>\n";

  // (2) the neighbors that decided
  h += "<h2>Nearest neighbors (" + std::to_string(e.neighbors.size()) + " of k = " + std::to_string(e.k) + ")</h2>\n";
  h += "<div class=\"row\">\n";
  for (const ExplainNeighbor& n : e.neighbors) tile(h, n, d.prediction, e.label_names);
  h += "</div>\n";

  // (3) per-class totals
  h += "<h2>Class scores (" + html_escape(e.vote) + " vote)</h2>\n";
  score_bars(h, d, e.label_names);

  // (4) compositionality residual
  h += "<h2>Compositionality residual</h2>\n";
  if (!e.residual) {
    h += "<p class=\"note\">not computed</p>\n";
  } else {
    const ExplainResidual& r = *e.residual;
    h += "<p class=\"note\">residual = query embedding &minus; embedding of the nearest neighbor <b>" +
         html_escape(r.subtracted_id) + "</b>, L2-normalized (norm before: " + num(r.norm) +
         "); its nearest items show what the query has that its nearest neighbor lacks.</p>\n";
    if (r.zero) {
      h += "<p><b>The residual is zero</b>: the query's embedding equals its nearest neighbor's, so there is no second "
           "concept to search for.</p>\n";
    } else {
      h += "<p>second concept: <span class=\"pred\">" + label_html(r.decision.prediction, e.label_names) + "</span> <span class=\"note\">(" +
           html_escape(e.vote) + " vote over k = " + std::to_string(r.decision.k) + ", score share " +
           num(r.decision.score_share, 3) + ")</span></p>\n";
      h += "<div class=\"row\">\n";
      for (const ExplainNeighbor& n : r.neighbors) tile(h, n, r.decision.prediction, e.label_names);
      h += "</div>\n";
    }
  }
  h += "</body></html>\n";
  return h;
}

std::string explain_text(const Explanation& e) {
  const Decision& d = e.decision;
  std::string t = e.query_id + "\n";
  auto named = [&](const std::string& l) {
    auto it = e.label_names.find(l);
    return it == e.label_names.end() || it->second == l ? l : l + " (" + it->second + ")";
  };
  t += "  prediction: " + named(d.prediction) + "  (" + e.vote + " vote over k=" + std::to_string(e.k) + "; score share " +
       num(d.score_share, 2) + ", vote share " + num(d.vote_share, 2) + ", entropy " + num(d.entropy, 2) +
       ", OOD score " + num(e.ood_score) + ")\n";
  if (e.rerank) {
    t += "  re-ranker: " + e.rerank->label;
    if (e.rerank->confidence) t += " (confidence " + num(*e.rerank->confidence, 2) + ")";
    t += e.rerank->label == d.prediction ? ", agrees with the vote" : ", differs from the vote";
    if (!e.rerank->reason.empty()) t += ": " + e.rerank->reason;
    t += "\n";
  }
  t += "  scores:";
  for (size_t i = 0; i < std::min<size_t>(d.scores.size(), 5); ++i)
    t += " " + d.scores[i].first + "=" + score_str(d.scores[i].second);
  t += "\n  nearest:\n";
  auto rows = [&t](const std::vector<ExplainNeighbor>& nn) {
    for (const ExplainNeighbor& n : nn) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "    %3d  d=%.4f  w=%-8s ", n.rank, n.distance, score_str(n.weight).c_str());
      t += buf + n.label + "  " + n.id + (n.excluded ? "  (excluded)" : "") + "\n";
    }
  };
  rows(e.neighbors);
  if (e.residual) {
    const ExplainResidual& r = *e.residual;
    if (r.zero) {
      t += "  residual (query - " + r.subtracted_id + "): zero, the query equals its nearest neighbor\n";
    } else {
      t += "  residual (query - " + r.subtracted_id + ", norm " + num(r.norm) + "): second concept " +
           r.decision.prediction + " (score share " + num(r.decision.score_share, 2) + ")\n";
      rows(r.neighbors);
    }
  }
  return t;
}

}  // namespace vismem
