#include "faiss_index.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>

#include <faiss/IndexAdditiveQuantizer.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFAdditiveQuantizer.h>
#include <faiss/IndexIVFFastScan.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>

#include "error.h"

namespace vismem {

namespace {

constexpr char kMagic[8] = {'V', 'M', 'F', 'A', 'I', 'S', 'S', '1'};
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t dim;
  uint32_t factory_len;
  uint32_t tag_len;
  uint8_t reserved[40];
};
static_assert(sizeof(Header) == 64);

// FAISS's reason without its source location ("Error in F at FILE:LINE: reason").
std::string faiss_reason(const std::string& msg) {
  if (msg.rfind("Error in ", 0) == 0)
    if (auto at = msg.find(" at "); at != std::string::npos)
      if (auto colon = msg.find(": ", at); colon != std::string::npos) return msg.substr(colon + 2);
  return msg;
}

bool is_flat_name(const std::string& f) {
  std::string l;
  for (char c : f) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return l.empty() || l == "flat";
}

std::unique_ptr<faiss::Index> build(int dim, const std::string& factory) {
  try {
    std::unique_ptr<faiss::Index> idx(faiss::index_factory(dim, factory.c_str(), faiss::METRIC_L2));
    return idx;
  } catch (const faiss::FaissException& e) {
    throw Error("index '" + factory + "': FAISS cannot build it (" + faiss_reason(e.msg) + ")");
  }
}

// The index under an IndexIDMap, if there is one.
faiss::Index* core_of(faiss::Index* top) {
  if (auto* m = dynamic_cast<faiss::IndexIDMap*>(top)) return m->index;
  return top;
}

faiss::ProductQuantizer* pq_of(faiss::Index* core) {
  if (auto* p = dynamic_cast<faiss::IndexIVFPQ*>(core)) return &p->pq;
  if (auto* p = dynamic_cast<faiss::IndexPQ*>(core)) return &p->pq;
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(core))
    if (auto* p = dynamic_cast<faiss::IndexPQ*>(h->storage)) return &p->pq;
  return nullptr;
}

template <class F>
auto faiss_call(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const faiss::FaissException& e) {
    throw Error(std::string("index ") + what + ": " + faiss_reason(e.msg));
  }
}

}  // namespace

bool wants_faiss_index(const std::string& factory, int dim) {
  if (is_flat_name(factory)) return false;
  FaissIndex probe(dim, factory);  // throws with FAISS's reason
  return true;
}

FaissIndex::FaissIndex() : ef_mu_(std::make_unique<std::shared_mutex>()) {}

FaissIndex::FaissIndex(int dim, const std::string& factory)
    : dim_(dim), factory_(factory), ef_mu_(std::make_unique<std::shared_mutex>()) {
  if (dim <= 0) throw Error("index: dimension must be positive");
  if (is_flat_name(factory))
    throw Error("index 'Flat': exact search is the memory's own scan; no FAISS index is needed");
  index_ = build(dim, factory);
  if (dynamic_cast<faiss::IndexPreTransform*>(index_.get()))
    throw Error("index '" + factory +
                "': pre-transforms (PCA, OPQ, ...) are not supported; use IVF/PQ/SQ/HNSW on the memory's own vectors");
  if (dynamic_cast<faiss::IndexIDMap*>(index_.get()))
    throw Error("index '" + factory + "': vismem adds the id map itself; give the index alone (e.g. HNSW32)");
  if (dynamic_cast<faiss::IndexFlat*>(index_.get()))
    throw Error("index '" + factory + "': a flat FAISS index is exact search; leave --index out (the default)");
  // Only kinds FAISS can physically remove from (unlearning), with sane sizes.
  const std::string supported = "; supported: IVFn,{Flat|PQm|SQ8|...}, HNSWm[,Flat|PQm|SQ8], PQm, SQ8, LSH, RQ";
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get())) {
    if (dynamic_cast<faiss::IndexIVFFastScan*>(ivf) || !dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists))
      throw Error("index '" + factory + "': FAISS cannot remove items from this kind (fast-scan lists)" + supported);
    if (ivf->nlist < 1) throw Error("index '" + factory + "': an IVF index needs at least 1 list");
  } else if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index_.get())) {
    if (!dynamic_cast<faiss::IndexFlatCodes*>(h->storage))
      throw Error("index '" + factory + "': its HNSW storage cannot be scrubbed" + supported);
    if (h->hnsw.cum_nneighbor_per_level.size() < 2 || h->hnsw.nb_neighbors(0) < 4) throw Error("index '" + factory + "': HNSW needs M >= 2");
  } else if (!dynamic_cast<faiss::IndexFlatCodes*>(index_.get())) {
    throw Error("index '" + factory + "': FAISS cannot remove items from this kind (needed for unlearning)" + supported);
  }
  // Polysemous training (FAISS's default for PQ from the factory) orders the
  // codes for Hamming-distance filtering, which searches here never use; it
  // costs more than the rest of the training.
  if (auto* p = dynamic_cast<faiss::IndexIVFPQ*>(index_.get())) p->do_polysemous_training = false;
  if (auto* p = dynamic_cast<faiss::IndexPQ*>(index_.get())) p->do_polysemous_training = false;
  if (!dynamic_cast<faiss::IndexIVF*>(index_.get())) {
    auto* m = new faiss::IndexIDMap(index_.release());
    m->own_fields = true;
    index_.reset(m);
  }
  classify_kind();
}

FaissIndex::~FaissIndex() = default;
FaissIndex::FaissIndex(FaissIndex&&) noexcept = default;
FaissIndex& FaissIndex::operator=(FaissIndex&&) noexcept = default;

void FaissIndex::classify_kind() {
  faiss::Index* c = core_of(index_.get());
  if (dynamic_cast<faiss::IndexIVF*>(c)) kind_ = Kind::ivf;
  else if (dynamic_cast<faiss::IndexHNSW*>(c)) kind_ = Kind::hnsw;
  else kind_ = Kind::codes;
  holes_ = 0;
  if (auto* m = dynamic_cast<faiss::IndexIDMap*>(index_.get()))
    holes_ = std::count(m->id_map.begin(), m->id_map.end(), int64_t{-1});
}

const char* FaissIndex::kind_name() const {
  switch (kind_) {
    case Kind::ivf: return "ivf";
    case Kind::hnsw: return "hnsw";
    default: return "codes";
  }
}

int64_t FaissIndex::size() const { return index_->ntotal - holes_; }
int64_t FaissIndex::holes() const { return holes_; }

int64_t FaissIndex::nlist() const {
  auto* ivf = dynamic_cast<faiss::IndexIVF*>(core_of(index_.get()));
  return ivf ? static_cast<int64_t>(ivf->nlist) : 0;
}

bool FaissIndex::lossy() const {
  faiss::Index* c = core_of(index_.get());
  if (dynamic_cast<faiss::IndexIVFFlat*>(c)) return false;
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(c)) return !dynamic_cast<faiss::IndexFlat*>(h->storage);
  return true;
}

int64_t FaissIndex::code_bytes() const {
  faiss::Index* c = core_of(index_.get());
  int64_t code = 0;
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(c)) code = static_cast<int64_t>(ivf->code_size);
  else if (auto* fc = dynamic_cast<faiss::IndexFlatCodes*>(c)) code = static_cast<int64_t>(fc->code_size);
  else if (auto* h = dynamic_cast<faiss::IndexHNSW*>(c)) {
    if (auto* s = dynamic_cast<faiss::IndexFlatCodes*>(h->storage)) code = static_cast<int64_t>(s->code_size);
    // links: 2M at level 0, 4 bytes each (upper levels add ~1/M of that)
    code += static_cast<int64_t>(h->hnsw.nb_neighbors(0)) * 4;
  }
  return code + 8;
}

bool FaissIndex::is_trained() const { return index_->is_trained; }

int64_t FaissIndex::train_min() const {
  if (is_trained()) return 0;
  int64_t need = 1000;
  if (int64_t nl = nlist()) need = std::max<int64_t>(need, 39 * nl);
  if (faiss::ProductQuantizer* pq = pq_of(core_of(index_.get())))
    need = std::max<int64_t>(need, 39 * static_cast<int64_t>(pq->ksub));
  faiss::Index* c = core_of(index_.get());
  if (dynamic_cast<faiss::IndexAdditiveQuantizer*>(c) || dynamic_cast<faiss::IndexIVFAdditiveQuantizer*>(c))
    need = std::max<int64_t>(need, 39 * 256);  // 8-bit codebooks
  return need;
}

int64_t FaissIndex::train_sample() const {
  if (is_trained()) return 0;
  int64_t s = std::max<int64_t>(train_min(), 64 * nlist());
  if (faiss::ProductQuantizer* pq = pq_of(core_of(index_.get())))
    s = std::max<int64_t>(s, 64 * static_cast<int64_t>(pq->ksub));
  return s;
}

void FaissIndex::train(int64_t n, const float* x) {
  if (n < train_min())
    throw Error("index '" + factory_ + "': training needs at least " + std::to_string(train_min()) + " vectors, got " +
                std::to_string(n));
  faiss_call("train", [&] { index_->train(n, x); });
}

int FaissIndex::default_nprobe() const {
  const int64_t nl = nlist();
  return static_cast<int>(std::clamp<int64_t>(nl / 32, 1, std::max<int64_t>(1, nl)));
}
int FaissIndex::default_ef() const { return 64; }

void FaissIndex::add(int64_t n, const float* x, const int64_t* keys) {
  check_writable("add");
  if (n == 0) return;
  if (!is_trained()) throw Error("index '" + factory_ + "': add before training");
  for (int64_t i = 0; i < n; ++i)
    if (keys[i] < 0) throw Error("index add: negative key " + std::to_string(keys[i]));
  faiss_call("add", [&] { index_->add_with_ids(n, x, keys); });
}

void FaissIndex::search(int64_t nq, const float* q, int k, float* distances, int64_t* keys, int threads) const {
  search(nq, q, k, distances, keys, Params{}, threads);
}

void FaissIndex::search(int64_t nq, const float* q, int k, float* distances, int64_t* keys, const Params& p,
                        int threads) const {
  if (k < 0) throw Error("index search: k must be >= 0");
  if (nq <= 0 || k == 0) return;
  // FAISS parallelizes over queries: a batch smaller than the thread count
  // would only make idle threads wait at the region's end (which, on busy
  // cores, costs a scheduler time slice per query).
  const int prev_threads = omp_get_max_threads();
  const int use = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads > 0 ? threads : prev_threads, nq)));
  omp_set_num_threads(use);
  struct Restore {
    int n;
    ~Restore() { omp_set_num_threads(n); }
  } restore{prev_threads};
  std::fill(distances, distances + nq * k, std::numeric_limits<float>::infinity());
  std::fill(keys, keys + nq * k, int64_t{-1});
  if (index_->ntotal == 0) return;
  faiss::Index* c = core_of(index_.get());
  faiss_call("search", [&] {
    if (kind_ == Kind::ivf) {
      faiss::SearchParametersIVF sp;
      sp.nprobe = static_cast<size_t>(std::min<int64_t>(p.nprobe > 0 ? p.nprobe : default_nprobe(), nlist()));
      c->search(nq, q, k, distances, keys, &sp);
    } else if (kind_ == Kind::hnsw) {
      // FAISS 1.7.3 ignores SearchParametersHNSW::efSearch in parts of its
      // search, so the index's own field is set; searches that agree on it run
      // together, a different value waits for them.
      auto* h = dynamic_cast<faiss::IndexHNSW*>(c);
      // efSearch beyond the node count only costs time and memory.
      const int want = static_cast<int>(
          std::max<int64_t>(std::min<int64_t>(p.ef > 0 ? p.ef : default_ef(), std::max<int64_t>(index_->ntotal, 16)), k));
      for (int attempt = 0;; ++attempt) {
        if (attempt < 3) {
          std::shared_lock<std::shared_mutex> lock(*ef_mu_);
          if (h->hnsw.efSearch == want) {
            c->search(nq, q, k, distances, keys);
            break;
          }
        }
        std::unique_lock<std::shared_mutex> lock(*ef_mu_);
        h->hnsw.efSearch = want;
        if (attempt >= 3) {
          c->search(nq, q, k, distances, keys);
          break;
        }
      }
    } else {
      c->search(nq, q, k, distances, keys);
    }
  });
  // Internal positions -> keys (HNSW holes are never linked, so never found;
  // a -1 from the map is dropped all the same).
  if (auto* m = dynamic_cast<const faiss::IndexIDMap*>(index_.get())) {
    for (int64_t i = 0; i < nq * k; ++i)
      if (keys[i] >= 0) {
        keys[i] = m->id_map[static_cast<size_t>(keys[i])];
        if (keys[i] < 0) distances[i] = std::numeric_limits<float>::infinity();
      }
  }
}

void FaissIndex::check_writable(const char* what) const {
  if (read_only_) throw Error(std::string("index ") + what + ": this copy of '" + factory_ + "' is mapped read-only");
}

int64_t FaissIndex::remove(int64_t n, const int64_t* keys) {
  check_writable("remove");
  if (n <= 0) return 0;
  const std::unordered_set<int64_t> gone(keys, keys + n);
  if (kind_ != Kind::hnsw) {
    faiss::IDSelectorBatch sel(n, keys);
    return static_cast<int64_t>(faiss_call("remove", [&] { return index_->remove_ids(sel); }));
  }
  // HNSW: cut the nodes out of the graph.
  auto* m = dynamic_cast<faiss::IndexIDMap*>(index_.get());
  auto* h = dynamic_cast<faiss::IndexHNSW*>(m->index);
  faiss::HNSW& g = h->hnsw;
  auto* storage = dynamic_cast<faiss::IndexFlatCodes*>(h->storage);
  if (!storage) throw Error("index '" + factory_ + "': its HNSW storage cannot be scrubbed");
  const int64_t ntotal = h->ntotal;
  std::vector<char> cut(static_cast<size_t>(ntotal), 0);
  int64_t removed = 0;
  for (int64_t i = 0; i < ntotal; ++i)
    if (m->id_map[i] >= 0 && gone.count(m->id_map[i])) {
      cut[i] = 1;
      m->id_map[i] = -1;
      std::memset(storage->codes.data() + i * storage->code_size, 0, storage->code_size);
      ++removed;
    }
  if (removed == 0) return 0;
  holes_ += removed;
  for (int64_t i = 0; i < ntotal; ++i) {
    for (int level = 0; level < g.levels[i]; ++level) {
      size_t b, e;
      g.neighbor_range(i, level, &b, &e);
      if (cut[i]) {
        std::fill(g.neighbors.begin() + b, g.neighbors.begin() + e, -1);
        continue;
      }
      size_t w = b;
      for (size_t r = b; r < e; ++r) {
        const int v = g.neighbors[r];
        if (v < 0) break;
        if (!cut[v]) g.neighbors[w++] = v;
      }
      std::fill(g.neighbors.begin() + w, g.neighbors.begin() + e, -1);
    }
  }
  if (g.entry_point >= 0 && cut[g.entry_point]) {
    int64_t best = -1;
    for (int64_t i = 0; i < ntotal; ++i)
      if (!cut[i] && m->id_map[i] >= 0 && (best < 0 || g.levels[i] > g.levels[best])) best = i;
    if (best < 0) {
      // Nothing live is left: start over (training, if any, is kept).
      index_->reset();
      holes_ = 0;
    } else {
      g.entry_point = static_cast<int>(best);
      g.max_level = g.levels[best] - 1;
    }
  }
  return removed;
}

bool FaissIndex::reconstruct(int64_t key, float* out) const {
  if (lossy() || key < 0) return false;
  faiss::Index* c = core_of(index_.get());
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(c)) {
    for (size_t l = 0; l < ivf->nlist; ++l) {
      const size_t n = ivf->invlists->list_size(l);
      const faiss::Index::idx_t* ids = ivf->invlists->get_ids(l);
      for (size_t j = 0; j < n; ++j)
        if (ids[j] == key) {
          std::memcpy(out, ivf->invlists->get_single_code(l, j), sizeof(float) * dim_);
          return true;
        }
    }
    return false;
  }
  auto* m = dynamic_cast<faiss::IndexIDMap*>(index_.get());
  for (size_t i = 0; i < m->id_map.size(); ++i)
    if (m->id_map[i] == key) {
      c->reconstruct(static_cast<faiss::Index::idx_t>(i), out);
      return true;
    }
  return false;
}

void FaissIndex::remap_keys(const std::function<int64_t(int64_t)>& new_key) {
  check_writable("renumber");
  if (auto* m = dynamic_cast<faiss::IndexIDMap*>(index_.get())) {
    for (auto& id : m->id_map)
      if (id >= 0) id = new_key(id);
    return;
  }
  auto* ivf = dynamic_cast<faiss::IndexIVF*>(index_.get());
  auto* lists = ivf ? dynamic_cast<faiss::ArrayInvertedLists*>(ivf->invlists) : nullptr;
  if (!lists) throw Error("index '" + factory_ + "': its inverted lists cannot be renumbered");
  for (auto& ids : lists->ids)
    for (auto& id : ids) id = new_key(id);
}

std::vector<int64_t> FaissIndex::keys() const {
  std::vector<int64_t> out;
  if (auto* m = dynamic_cast<const faiss::IndexIDMap*>(index_.get())) {
    for (int64_t id : m->id_map)
      if (id >= 0) out.push_back(id);
    return out;
  }
  auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get());
  for (size_t l = 0; l < ivf->nlist; ++l) {
    const size_t n = ivf->invlists->list_size(l);
    const faiss::Index::idx_t* ids = ivf->invlists->get_ids(l);
    out.insert(out.end(), ids, ids + n);
  }
  return out;
}

// Structural checks of a loaded index, so that damaged bytes FAISS accepts
// give an error here rather than a fault during a search or a removal.
void FaissIndex::validate(const std::string& path) const {
  auto bad = [&](const std::string& what) { throw Error(path + ": index file is corrupt (" + what + ")"); };
  const int64_t ntotal = index_->ntotal;
  if (ntotal < 0) bad("negative size");
  auto* m = dynamic_cast<const faiss::IndexIDMap*>(index_.get());
  if (m && static_cast<int64_t>(m->id_map.size()) != ntotal) bad("id map size");
  if (m && m->index->ntotal != ntotal) bad("inner size");
  faiss::Index* c = core_of(index_.get());
  if (auto* h = dynamic_cast<const faiss::IndexHNSW*>(c)) {
    const faiss::HNSW& g = h->hnsw;
    if (!h->storage || h->storage->ntotal != ntotal) bad("HNSW storage size");
    if (static_cast<int64_t>(g.levels.size()) != ntotal || static_cast<int64_t>(g.offsets.size()) != ntotal + 1) bad("HNSW tables");
    const int nlevels = static_cast<int>(g.cum_nneighbor_per_level.size()) - 1;
    if (nlevels < 1 || g.offsets[0] != 0) bad("HNSW levels");
    for (int64_t i = 0; i < ntotal; ++i) {
      const int l = g.levels[i];
      if (l < 1 || l > nlevels) bad("HNSW node level");
      if (g.offsets[i + 1] < g.offsets[i] ||
          g.offsets[i + 1] - g.offsets[i] != static_cast<size_t>(g.cum_nneighbor_per_level[l]))
        bad("HNSW offsets");
    }
    if (g.offsets[ntotal] != g.neighbors.size()) bad("HNSW link table size");
    for (int v : g.neighbors)
      if (v < -1 || v >= ntotal) bad("HNSW link out of range");
    if (ntotal > 0 && (g.entry_point < 0 || g.entry_point >= ntotal || g.max_level != g.levels[g.entry_point] - 1))
      bad("HNSW entry point");
  }
  if (auto* ivf = dynamic_cast<const faiss::IndexIVF*>(c)) {
    if (ivf->nlist < 1 || !ivf->quantizer || ivf->quantizer->ntotal != static_cast<int64_t>(ivf->nlist)) bad("IVF lists");
    if (auto* al = dynamic_cast<const faiss::ArrayInvertedLists*>(ivf->invlists)) {
      int64_t total = 0;
      for (size_t l = 0; l < ivf->nlist; ++l) {
        if (al->codes[l].size() != al->ids[l].size() * al->code_size) bad("IVF list sizes");
        for (auto id : al->ids[l])
          if (id < 0) bad("negative id");
        total += static_cast<int64_t>(al->ids[l].size());
      }
      if (total != ntotal) bad("IVF entry count");
    }
  }
  if (auto* fc = dynamic_cast<const faiss::IndexFlatCodes*>(c))
    if (fc->codes.size() != static_cast<size_t>(ntotal) * fc->code_size) bad("code array size");
}

void FaissIndex::write(const std::string& path, const std::string& tag) const {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(path + ": cannot create the index file: " + std::strerror(errno));
  bool ok = true;
  std::string err;
  try {
    Header h{};
    std::memcpy(h.magic, kMagic, 8);
    h.version = 1;
    h.dim = static_cast<uint32_t>(dim_);
    h.factory_len = static_cast<uint32_t>(factory_.size());
    h.tag_len = static_cast<uint32_t>(tag.size());
    ok = std::fwrite(&h, sizeof h, 1, f) == 1 && std::fwrite(factory_.data(), 1, factory_.size(), f) == factory_.size() &&
         std::fwrite(tag.data(), 1, tag.size(), f) == tag.size();
    if (ok) {
      faiss::FileIOWriter w(f);
      faiss::write_index(index_.get(), &w);
    }
    ok = ok && std::fflush(f) == 0 && ::fdatasync(fileno(f)) == 0;
    if (!ok) err = std::strerror(errno);
  } catch (const faiss::FaissException& e) {
    ok = false;
    err = e.msg;
  }
  std::fclose(f);
  if (!ok) {
    std::remove(path.c_str());
    throw Error(path + ": cannot write the index file: " + err);
  }
}

std::unique_ptr<FaissIndex> FaissIndex::read(const std::string& path, std::string* tag, bool map) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open the index file: " + std::strerror(errno));
  std::unique_ptr<FaissIndex> out(new FaissIndex());
  try {
    Header h{};
    if (std::fread(&h, sizeof h, 1, f) != 1 || std::memcmp(h.magic, kMagic, 8) != 0 || h.version != 1 ||
        h.dim == 0 || h.factory_len > 4096 || h.tag_len > 4096)
      throw Error(path + ": not a vismem index file (bad header)");
    std::string factory(h.factory_len, '\0'), t(h.tag_len, '\0');
    if (std::fread(factory.data(), 1, factory.size(), f) != factory.size() || std::fread(t.data(), 1, t.size(), f) != t.size())
      throw Error(path + ": index file is truncated");
    out->dim_ = static_cast<int>(h.dim);
    out->factory_ = factory;
    try {
      faiss::FileIOReader r(f);
      // IO_FLAG_MMAP: IVF lists stay in the file, mapped read-only (FAISS's
      // OnDiskInvertedLists); other kinds are read whole whatever the flag.
      out->index_.reset(faiss::read_index(&r, map ? faiss::IO_FLAG_MMAP : 0));
      out->read_only_ = map && dynamic_cast<faiss::IndexIVF*>(out->index_.get());
      // A mapped list past the end of a truncated file would fault when read: check them all now.
      if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(out->index_.get()))
        if (auto* od = dynamic_cast<faiss::OnDiskInvertedLists*>(ivf->invlists))
          for (const auto& l : od->lists)
            if (l.offset + l.capacity * (od->code_size + sizeof(faiss::Index::idx_t)) > od->totsize)
              throw Error(path + ": index file is truncated (an inverted list ends past the end of the file)");
    } catch (const faiss::FaissException& e) {
      throw Error(path + ": index file is corrupt or truncated (" + faiss_reason(e.msg).substr(0, 160) + ")");
    }
    if (out->index_->d != out->dim_) throw Error(path + ": index file dimension does not match its header");
    out->classify_kind();
    out->validate(path);
    if (tag) *tag = t;
  } catch (...) {
    std::fclose(f);
    throw;
  }
  std::fclose(f);
  return out;
}

}  // namespace vismem
