#include "unlearn.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <unordered_set>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

#include "aggregate.h"
#include "error.h"
#include "textio.h"

namespace vismem {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Neighbors (ids and distance bits) and every prediction, for exact comparison.
std::vector<std::string> fingerprint_answers(const Memory& m, const std::vector<float>& q, int64_t nq, int k) {
  std::vector<std::string> out;
  // Exact answers: an approximate index may nominate other candidates in a
  // memory built in another order; the items and their distances are what must match.
  const SearchParams exact{.exact = true};
  for (const auto& nn : m.search(q.data(), nq, k, {}, 0, &exact)) {
    std::ostringstream os;
    VoteInput in;
    std::vector<std::string> names;
    for (const Neighbor& n : nn) {
      uint32_t bits;
      std::memcpy(&bits, &n.distance, 4);
      os << n.id << ':' << bits << ' ';
      auto it = std::find(names.begin(), names.end(), n.label);
      in.labels.push_back(static_cast<int32_t>(it - names.begin()));
      if (it == names.end()) names.push_back(n.label);
      in.distances.push_back(n.distance);
    }
    for (Vote v : all_votes)
      for (int32_t p : predict_all_k(v, in)) os << names[p] << ',';
    out.push_back(os.str());
  }
  return out;
}

}  // namespace

bool contains_embedding_bytes(const std::string& bytes, const std::vector<std::vector<float>>& vecs, int d) {
  // Windows of 16 floats (64 bytes) with at least 4 nonzero values: post-ReLU
  // embeddings (MobileNet) are full of exact zeros, and a window of zeros
  // would match any zeroed page.
  const int win = std::min(16, d);
  // One pass over the bytes for all windows at once: each window is indexed by
  // 8 of its bytes (two nonzero floats); a file position whose 8 bytes hit the
  // index is compared in full. A per-window std::search costs minutes on a
  // 100 MB memory.
  struct Window {
    const char* bytes;
    int anchor;  // byte offset of the 8 indexed bytes inside the window
  };
  std::vector<Window> windows;
  std::unordered_multimap<uint64_t, size_t> by_key;
  std::vector<uint64_t> filter(1 << 14, 0);  // 2^20-bit prefilter on the keys' hash
  auto bucket = [](uint64_t key) { return static_cast<uint32_t>((key * 0x9E3779B97F4A7C15ull) >> 44); };
  for (const auto& v : vecs)
    for (int off = 0; off + win <= d; off += 4) {
      if (std::count_if(v.begin() + off, v.begin() + off + win, [](float f) { return f != 0.0f; }) < std::min(4, win))
        continue;
      int a = -1;
      for (int j = off; j + 1 < off + win; ++j)
        if (v[j] != 0.0f && v[j + 1] != 0.0f) {
          a = j - off;
          break;
        }
      if (a < 0) continue;  // no two adjacent nonzero floats: too sparse to be a telling sequence
      uint64_t key;
      std::memcpy(&key, v.data() + off + a, 8);
      by_key.emplace(key, windows.size());
      windows.push_back({reinterpret_cast<const char*>(v.data() + off), 4 * a});
      uint32_t b = bucket(key);
      filter[b >> 6] |= 1ull << (b & 63);
    }
  const size_t wbytes = static_cast<size_t>(4 * win);
  for (size_t p = 0; p + 8 <= bytes.size(); ++p) {
    uint64_t key;
    std::memcpy(&key, bytes.data() + p, 8);
    uint32_t b = bucket(key);
    if (!(filter[b >> 6] >> (b & 63) & 1)) continue;
    auto [lo, hi] = by_key.equal_range(key);
    for (auto it = lo; it != hi; ++it) {
      const Window& w = windows[it->second];
      if (p < static_cast<size_t>(w.anchor) || p - w.anchor + wbytes > bytes.size()) continue;
      if (std::memcmp(bytes.data() + p - w.anchor, w.bytes, wbytes) == 0) return true;
    }
  }

  return false;
}

UnlearnReceipt remove_verified(Memory& mem, const std::vector<std::string>& ids, int sample, int k) {
  UnlearnReceipt r;
  r.k = k;
  const int d = mem.dim();
  // Sample queries, taken before the removal: the removed items themselves
  // (their old neighborhoods are where a trace would show) and random others.
  std::vector<float> q;
  std::vector<std::vector<float>> removed_vecs;
  for (const auto& id : ids) {
    std::vector<float> e = mem.embedding(id);  // throws on an unknown id: nothing removed yet
    removed_vecs.push_back(e);
    if (static_cast<int>(removed_vecs.size()) <= sample) q.insert(q.end(), e.begin(), e.end());
  }
  std::vector<ItemInfo> all = mem.items();
  std::mt19937 rng(12345);
  std::shuffle(all.begin(), all.end(), rng);
  int added = 0;
  for (const auto& it : all) {
    if (added >= sample) break;
    if (std::find(ids.begin(), ids.end(), it.id) != ids.end()) continue;
    std::vector<float> e = mem.embedding(it.id);
    q.insert(q.end(), e.begin(), e.end());
    ++added;
  }
  r.sample_queries = static_cast<int64_t>(q.size()) / d;
  std::unordered_set<int64_t> removed_rows;
  for (const auto& id : ids)
    if (auto it = mem.item(id)) removed_rows.insert(it->row);

  auto t0 = std::chrono::steady_clock::now();
  r.removed = mem.remove(ids);
  r.remove_seconds = seconds_since(t0);

  r.gone_from_store = true;
  r.gone_from_index = true;
  for (const auto& id : ids) {
    if (mem.item(id)) r.gone_from_store = false;
    try {
      mem.embedding(id);
      r.gone_from_index = false;
    } catch (const Error&) {
    }
  }
  // The approximate index (if any) holds no entry for a removed row.
  for (int64_t row : mem.index_rows())
    if (removed_rows.count(row)) r.gone_from_index = false;
  // Byte scan of every file the memory owns (catalog, WAL, vector files), in
  // chunks that overlap by one window less a byte, so no window is missed.
  r.no_bytes_left = true;
  for (const std::string& p : mem.owned_files()) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw Error("cannot read " + p);
    const size_t chunk = 64u << 20, overlap = 63;
    std::string buf, tail;
    for (;;) {
      buf.assign(tail);
      buf.resize(tail.size() + chunk);
      f.read(buf.data() + tail.size(), static_cast<std::streamsize>(chunk));
      const size_t got = static_cast<size_t>(f.gcount());
      buf.resize(tail.size() + got);
      r.bytes_scanned += static_cast<int64_t>(got);
      if (contains_embedding_bytes(buf, removed_vecs, d)) r.no_bytes_left = false;
      if (got < chunk) break;
      tail = buf.substr(buf.size() - std::min(overlap, buf.size()));
    }
  }

  // Rebuild from scratch without the removed items, in the same insertion order.
  namespace fs = std::filesystem;
  fs::path tmp = fs::temp_directory_path() / ("vismem_rebuild_" + std::to_string(::getpid()) + ".db");
  Memory::remove_files(tmp.string());
  t0 = std::chrono::steady_clock::now();
  {
    Memory rebuilt = Memory::create(tmp.string(), {.dim = d});
    std::vector<ItemInfo> keep = mem.items();
    std::vector<std::string> kid, klabel;
    std::vector<float> kx;
    kx.reserve(keep.size() * d);
    for (const auto& it : keep) {
      kid.push_back(it.id);
      klabel.push_back(it.label);
      std::vector<float> e = mem.embedding(it.id);
      kx.insert(kx.end(), e.begin(), e.end());
    }
    if (!kid.empty()) rebuilt.add(kid, klabel, kx.data());
    r.rebuild_seconds = seconds_since(t0);
    r.same_as_rebuild = mem.size() == 0 || fingerprint_answers(mem, q, r.sample_queries, k) ==
                                               fingerprint_answers(rebuilt, q, r.sample_queries, k);
  }
  Memory::remove_files(tmp.string());
  return r;
}

std::string UnlearnReceipt::summary() const {
  std::ostringstream os;
  auto mark = [](bool b) { return b ? "yes" : "NO"; };
  os << "unlearning receipt: " << removed << " item(s) removed\n"
     << "  gone from the store:              " << mark(gone_from_store) << "\n"
     << "  gone from the index:              " << mark(gone_from_index) << "\n"
     << "  no embedding bytes left in files: " << mark(no_bytes_left) << " (" << bytes_scanned << " bytes scanned)\n"
     << "  same as a rebuilt memory:         " << mark(same_as_rebuild) << " (" << sample_queries
     << " sample queries, k=" << k << ": neighbors, distances bit for bit, predictions of 4 rules at every k)\n"
     << "  time: removal " << remove_seconds << " s, rebuild " << rebuild_seconds << " s\n"
     << "  verdict: " << (ok() ? "VERIFIED" : "FAILED") << "\n";
  return os.str();
}

}  // namespace vismem
