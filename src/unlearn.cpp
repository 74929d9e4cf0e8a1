#include "unlearn.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
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
  for (const auto& nn : m.search(q.data(), nq, k)) {
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
  // Byte scan of the database files (main file and WAL, after the checkpoint remove() does).
  std::string bytes;
  for (const std::string& p : {mem.path(), mem.path() + "-wal"})
    if (std::filesystem::exists(p)) bytes += read_text_file(p);
  r.bytes_scanned = static_cast<int64_t>(bytes.size());
  r.no_bytes_left = true;
  // Windows of 16 floats (64 bytes) with at least 4 nonzero values: post-ReLU
  // embeddings (MobileNet) are full of exact zeros, and a window of zeros
  // would match any zeroed page.
  const int win = std::min(16, d);
  for (const auto& v : removed_vecs)
    for (int off = 0; off + win <= d && r.no_bytes_left; off += 4) {
      if (std::count_if(v.begin() + off, v.begin() + off + win, [](float f) { return f != 0.0f; }) < std::min(4, win))
        continue;
      const char* needle = reinterpret_cast<const char*>(v.data() + off);
      if (std::search(bytes.begin(), bytes.end(), needle, needle + 4 * win) != bytes.end()) r.no_bytes_left = false;
    }

  // Rebuild from scratch without the removed items, in the same insertion order.
  namespace fs = std::filesystem;
  fs::path tmp = fs::temp_directory_path() / ("vismem_rebuild_" + std::to_string(::getpid()) + ".db");
  fs::remove(tmp);
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
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(tmp.string() + suffix);
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
