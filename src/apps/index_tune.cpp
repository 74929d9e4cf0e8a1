#include "index_tune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <unordered_set>

#include "error.h"

namespace vismem {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

TuneResult tune_index(const Memory& mem, const TuneOptions& o) {
  auto info = mem.index_info();
  if (!info) throw Error(mem.path() + ": no approximate index to tune (create the memory with --index, or `vismem index set`)");
  if (!info->built)
    throw Error(mem.path() + ": the index '" + info->factory + "' is not built yet (training needs " +
                std::to_string(info->train_min) + " items" +
                (mem.size() >= info->train_min ? "; `vismem index rebuild` builds it now)" : ")"));
  const int64_t n = mem.size();
  if (n < 2) throw Error(mem.path() + ": tuning needs at least 2 items");
  if (o.queries < 1 || o.k < 1) throw Error("tune: queries and k must be >= 1");
  const int d = mem.dim();
  const int k = static_cast<int>(std::min<int64_t>(o.k, n - 1));

  std::vector<ItemInfo> items = mem.items();
  std::mt19937 rng(2024);
  std::shuffle(items.begin(), items.end(), rng);
  const int nq = static_cast<int>(std::min<int64_t>(o.queries, n));
  std::vector<float> q;
  std::vector<std::string> self;
  for (int i = 0; i < nq; ++i) {
    std::vector<float> e = mem.embedding(items[i].id);
    q.insert(q.end(), e.begin(), e.end());
    self.push_back(items[i].id);
  }
  const int singles = std::min(nq, std::max(0, o.singles));

  TuneResult r;
  r.k = k;
  r.queries = nq;
  r.factory = info->factory;
  std::vector<std::unordered_set<int64_t>> truth;
  auto measure = [&](const std::string& name, int value, const SearchParams& sp) {
    (void)mem.search(q.data(), std::min(nq, 8), k, {self.begin(), self.begin() + std::min(nq, 8)}, o.threads, &sp);  // warm-up
    double t0 = now_s();
    auto res = mem.search(q.data(), nq, k, self, o.threads, &sp);
    const double batch = now_s() - t0;
    std::vector<double> one;
    for (int i = 0; i < singles; ++i) {
      t0 = now_s();
      (void)mem.search(q.data() + static_cast<size_t>(i) * d, 1, k, {self[i]}, o.threads, &sp);
      one.push_back((now_s() - t0) * 1e3);
    }
    TuneRow row;
    row.param = name;
    row.value = value;
    row.batch_qps = batch > 0 ? nq / batch : 0;
    row.single_ms = median(one);
    if (truth.empty()) {
      for (auto& nn : res) {
        std::unordered_set<int64_t> s;
        for (auto& x : nn) s.insert(x.seq);
        truth.push_back(std::move(s));
      }
    } else {
      int64_t hit = 0, want = 0;
      for (int i = 0; i < nq; ++i) {
        want += static_cast<int64_t>(truth[i].size());
        for (auto& x : res[i]) hit += truth[i].count(x.seq);
      }
      row.recall = want ? double(hit) / double(want) : 1.0;
    }
    r.rows.push_back(row);
  };
  measure("exact", 0, SearchParams{.exact = true});
  const bool hnsw = info->kind == "hnsw";
  const bool ivf = info->kind == "ivf";
  std::vector<int> values = o.values;
  if (values.empty()) {
    if (ivf)
      for (int64_t v = 1; v <= info->nlist; v *= 2) values.push_back(static_cast<int>(v));
    else if (hnsw)
      for (int v = 16; v <= 1024; v *= 2) values.push_back(v);
  }
  if (!ivf && !hnsw) {
    measure("codes", 0, SearchParams{});  // nothing to sweep: one row
  } else {
    for (int v : values) {
      if (v < 1) throw Error("tune: swept values must be >= 1");
      SearchParams sp;
      (ivf ? sp.nprobe : sp.ef) = v;
      measure(ivf ? "nprobe" : "ef", v, sp);
      if (ivf && v >= info->nlist) break;
    }
  }
  return r;
}

std::string TuneResult::table() const {
  std::ostringstream os;
  os << "index " << factory << ": recall@" << k << " against exact search, " << queries
     << " items of the memory as queries (leave-one-out)\n\n";
  os << "| search | recall@" << k << " | queries/s (batch) | ms/query (single) | speed-up vs exact (batch) |\n";
  os << "| --- | ---: | ---: | ---: | ---: |\n";
  const double base = rows.empty() ? 0 : rows[0].batch_qps;
  char buf[256];
  for (const TuneRow& t : rows) {
    const std::string what = t.param == "exact" ? "exact" : t.param == "codes" ? "index" : t.param + "=" + std::to_string(t.value);
    std::snprintf(buf, sizeof buf, "| %s | %.4f | %.1f | %.3f | %.2fx |\n", what.c_str(), t.recall, t.batch_qps,
                  t.single_ms, base > 0 ? t.batch_qps / base : 0.0);
    os << buf;
  }
  return os.str();
}

std::optional<int> TuneResult::smallest_with_recall(double recall) const {
  for (const TuneRow& t : rows)
    if ((t.param == "nprobe" || t.param == "ef") && t.recall >= recall) return t.value;
  return std::nullopt;
}

}  // namespace vismem
