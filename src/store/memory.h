// memory.h: the visual memory: (id, label, embedding) items in a SQLite catalog
// plus memory-mapped vector files, searched exactly.
//
// Basic usage:
//   auto mem = vismem::Memory::create("mem.db", {.dim = 1024, .model_id = "mobilenet_v1"});
//   mem.add(ids, labels, x.data());                  // x: n * dim, row-major; normalized on insert
//   auto nn = mem.search(q.data(), nq, 100);         // nq lists of up to 100 neighbors, ascending distance
//   mem.remove({"img_17.jpg"});                      // gone from every file of the memory
//   vismem::Memory again = vismem::Memory::open("mem.db");   // costs the same at any size
//
// Files (docs/DESIGN.md): mem.db is the SQLite catalog (ids, labels, insertion
// order, counts, meta; WAL mode); mem.db.vec holds the L2-normalized float32
// rows, append-only and memory-mapped; mem.db.keys the row -> insertion
// sequence map (-1: a removed row); mem.db.f16 an optional float16 copy;
// mem.db.lock serializes writers across processes and fences scans from scrubs.
//
// Guarantees. Every write is one catalog transaction, acknowledged once
// durable; the vector rows it adds are written and synced before the
// transaction that references them, so a process killed at any moment leaves
// the memory as before or as after. A removal commits, then overwrites the
// removed rows in every vector file, syncs and truncates the WAL before it
// returns; a removal interrupted after its commit is finished by the next
// open. Every handle answers from the latest committed state: each call checks
// the catalog's data_version (no file read when nothing changed) and follows
// other processes' writes incrementally. Writers (in any process) are serialized.
// Thread safety: search() and the const accessors may run concurrently;
// add(), remove() and the setters need exclusive access within a process.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>


struct sqlite3;

namespace vismem {

struct Neighbor {
  int64_t seq = -1;      // insertion sequence number (ties: smaller first)
  std::string id;
  std::string label;
  float distance = 0;    // 1 - <q, m>
};

struct ItemInfo {
  int64_t seq = -1;
  int64_t row = -1;          // its row in the vector files
  std::string id;
  std::string label;
  double reliability = 1.0;  // soft-pruning weight rho
  int64_t wrong = 0;         // pruning counts (SPEC section 4)
  int64_t correct = 0;
  double kth = -1;           // distance of its k-th leave-one-out neighbor when counted (-1: unknown)
};

struct MemoryInfo {
  std::string path;
  int dim = 0;
  int64_t items = 0;
  int64_t labels = 0;
  std::string model_id;
  std::string fingerprint;
  std::string model_path;
  std::string model_precision;    // "f32" / "int8" as recorded at create ("" before vismem recorded it)
  int format_version = 0;
  bool f16 = false;               // a float16 copy of the vectors is kept (mem.db.f16)
  int64_t rows = 0;               // rows in the vector files (items + removed rows not yet compacted)
  int64_t vector_bytes = 0;       // size of the vector files
  std::string created_at, updated_at;
  int64_t generation = 0;         // bumped by every write
  int64_t counts_generation = -1; // generation the pruning counts were computed at (-1: never)
  int counts_k = 0;
  std::string pruning_mode;       // "none", "hard", "soft"
  double pruning_threshold = 0;
  bool counts_stale() const { return counts_generation >= 0 && counts_generation != generation; }
  // OOD threshold (vismem ood-fit): a query whose median distance to its
  // ood_k neighbors exceeds ood_threshold is out of distribution. ood_k == 0: none fitted.
  double ood_threshold = 0;
  int ood_k = 0;
  double ood_fpr = 0;             // target false-positive rate it was fitted to
  int64_t ood_generation = -1;    // generation it was fitted at
  bool ood_stale() const { return ood_k > 0 && ood_generation != generation; }
  std::string index;              // approximate index (FAISS factory string); "" = exact search only
};

// How one search runs (Memory::search). Defaults come from the memory
// (`vismem index tune --set`), then from the index kind.
struct SearchParams {
  bool exact = false;  // scan every row even when the memory has an approximate index
  int nprobe = 0;      // IVF lists visited per query (0: the memory's default)
  int ef = 0;          // HNSW efSearch (0: the memory's default)
  int k_factor = 0;    // candidates taken from the index per neighbor asked, re-scored exactly (0: default)
};

// The approximate index of a memory (vismem index info).
struct IndexInfo {
  std::string factory;        // FAISS index-factory string, e.g. "IVF1024,PQ64"
  std::string kind;           // "ivf", "hnsw", "codes"
  std::string file;           // the index file ("" until the index is built)
  bool built = false;         // trained (where needed) and written
  int64_t train_min = 0;      // items needed before it is built automatically
  int64_t fold_rows = 0;      // rows added past the index before they are folded into it
  int64_t indexed_rows = 0;   // rows [0, indexed_rows) are in the index (or removed)
  int64_t tail_rows = 0;      // rows after them, searched exactly
  int64_t entries = 0;        // live entries in the index (0 unless loaded)
  int64_t holes = 0;          // HNSW nodes cut out by removals (until rebuild)
  int64_t nlist = 0;
  int64_t file_bytes = 0;
  double bytes_per_item = 0;  // index file bytes / entries
  bool lossy = false;         // codes are compressed (PQ, SQ): candidates are re-scored from the vectors
  int nprobe = 0, ef = 0, k_factor = 0;  // the defaults searches use now
  std::string note;           // why the index was dropped (a damaged file), until it is built again
};

enum class AddMode {
  strict,         // a duplicate id is an error; nothing is written
  upsert,         // a duplicate id replaces the item (it becomes the newest)
  skip_existing,  // a duplicate id is left as it is (resumable adds)
};

struct AddResult {
  int64_t added = 0, replaced = 0, skipped = 0;
};

class Memory {
 public:
  struct CreateOptions {
    int dim = 0;
    std::string model_id;      // free text, e.g. the encoder name
    std::string fingerprint;   // encoder fingerprint; empty = embeddings from anywhere
    std::string model_path;    // where the encoder was loaded from (a hint for later adds)
    std::string model_precision;  // the encoder's precision ("f32" / "int8"; with model_path)
    bool f16 = false;          // keep a float16 copy: small batches scan half the bytes (same results)
    // Approximate search: a FAISS index-factory string ("IVF1024,PQ64",
    // "HNSW32", "IVF4096,SQ8"; "" or "Flat": exact search only). The index is
    // built (trained on a sample) once the memory holds train_min() items and
    // at least index_fold_rows rows; until then, and for the rows added since
    // the index was last written (fewer than index_fold_rows), search is exact.
    std::string index;
    int64_t index_fold_rows = 0;  // 0: kIndexFoldRows
  };
  static constexpr int64_t kIndexFoldRows = 65536;
  // 2: vectors in memory-mapped files beside the catalog. 1: vectors as SQLite
  // blobs (read by migrate() only).
  static constexpr int format_version = 2;

  static Memory create(const std::string& path, const CreateOptions& opt);
  // Throws vismem::Error for a missing file, a file that is not a vismem
  // memory (left untouched) or an older format (naming `vismem migrate`).
  static Memory open(const std::string& path);
  // Upgrades a format-1 memory in place (crash safe: the old file stays valid
  // until one transaction switches it). Returns false if it was already current.
  static bool migrate(const std::string& path);
  // Every file a memory at `path` may own (whether present or not).
  static std::vector<std::string> files(const std::string& path);
  // Deletes / renames all of a memory's files (no open handle may remain).
  static void remove_files(const std::string& path);
  static void rename_files(const std::string& from, const std::string& to);
  static void copy_files(const std::string& from, const std::string& to);
  Memory(Memory&&) noexcept;
  Memory& operator=(Memory&&) noexcept;
  ~Memory();

  int dim() const;
  int64_t size() const;
  MemoryInfo info() const;
  const std::string& path() const;

  // Validates everything first (lengths, dimension, NaN/Inf, zero vectors,
  // empty or duplicate ids in the batch, existing ids per mode), then writes
  // the whole batch in one transaction. x: n * dim() row-major, any norm.
  // Current pruning counts stay current (CountsUpkeep, prune.h).
  // progress(done, total) is called from the writing thread now and then.
  AddResult add(const std::vector<std::string>& ids, const std::vector<std::string>& labels, const float* x,
                AddMode mode = AddMode::strict,
                const std::function<void(int64_t, int64_t)>& progress = {});

  // Removes the items (one transaction), zeroes their bytes on disk and
  // truncates the WAL. Unknown ids are an error unless ignore_missing.
  // Current pruning counts are updated exactly (CountsUpkeep, prune.h);
  // stale ones are cleared, since they would keep the removed items' votes.
  int64_t remove(const std::vector<std::string>& ids, bool ignore_missing = false);
  int64_t remove_label(const std::string& label);

  // Rewrites the vector files without the rows removed items left (zeroed
  // tombstones that every scan still reads), under a new name, and switches
  // the catalog to them in one transaction; then deletes the old set. Items,
  // insertion order, answers and pruning counts are unchanged. Returns the
  // rows dropped (0: nothing to do). Crash safe like every write.
  int64_t compact();

  // q: nq * dim() row-major, any norm (normalized here). Each result list has
  // min(k, size()) neighbors. self_ids (nq entries, or empty): leave-one-out
  // per SPEC section 2 (search k+1, drop the query's own id or else the last).
  //
  // With an approximate index (CreateOptions::index) the index nominates
  // k * k_factor candidates among the rows it holds, the rows added since are
  // scanned exactly, and every candidate is re-scored with its exact vector:
  // reported distances are always the exact ones (bit for bit those of the
  // exact scan); only the set of neighbors may differ. params: null = this
  // handle's set_search_params().
  std::vector<std::vector<Neighbor>> search(const float* q, int64_t nq, int k,
                                            const std::vector<std::string>& self_ids = {}, int threads = 0,
                                            const SearchParams* params = nullptr) const;
  void set_search_params(const SearchParams& p) { params_ = p; }
  const SearchParams& search_params() const { return params_; }

  // The approximate index (nullopt: exact search only). entries/holes are
  // filled only when load is true (reads the index file).
  std::optional<IndexInfo> index_info(bool load = false) const;
  // Sets the index kind and builds it now from every item (training on a
  // sample); "" or "Flat" drops the index. Throws if the memory holds fewer
  // items than training needs. One write: crash safe like every write.
  // Returns whether it was built now (false: dropped, or too few items yet).
  bool set_index(const std::string& factory);
  // Builds the index again from scratch (new training, no holes).
  void rebuild_index();
  // The rows the index file holds entries for (the unlearning receipt checks
  // that removed items' rows are not among them). Empty without an index.
  std::vector<int64_t> index_rows() const;
  // Defaults for searches that do not set them (0: the built-in default).
  void set_index_defaults(int nprobe, int ef, int k_factor);

  bool contains(const std::string& id) const;
  std::optional<ItemInfo> item(const std::string& id) const;
  std::vector<ItemInfo> items() const;           // insertion order
  std::vector<float> embedding(const std::string& id) const;  // the stored, normalized vector
  std::vector<std::string> labels() const;       // distinct labels, sorted

  // Pruning state (SPEC section 4), written in one transaction. ids may be a
  // subset (an incremental update); kth: per id, or empty (not stored).
  // mode (optional): the pruning mode written in the same transaction.
  struct Counts {
    std::vector<std::string> ids;
    std::vector<int64_t> wrong, correct;
    std::vector<double> kth;
    int64_t generation = -1;  // the memory's generation they were computed at (-1: not checked)
  };
  void set_counts(const Counts& counts, int k, const std::string& mode = "", double threshold = 0);
  bool counts_current() const;  // computed, and nothing changed since
  // Incremental upkeep of current counts in add/remove (on by default; this
  // handle only). A caller adding many batches turns it off and recounts once
  // at the end; until then the counts read as stale.
  void set_counts_upkeep(bool on) { counts_upkeep_ = on; }
  // mode: "none" | "hard" | "soft"; classify/eval apply it through excluded() and weight().
  void set_pruning(const std::string& mode, double threshold);
  // OOD threshold fitted on in-distribution queries (see MemoryInfo).
  void set_ood_threshold(double threshold, int k, double fpr);
  std::string pruning_mode() const;  // cheap: no file read unless another handle wrote
  bool excluded(const ItemInfo& it) const;   // hard pruning in effect and wrong >= threshold
  double weight(const ItemInfo& it) const;   // soft pruning in effect: rho, else 1

  // Model binding: throws vismem::Error unless the fingerprint matches (or the memory has none).
  void check_fingerprint(const std::string& fingerprint, const std::string& what) const;

  // Image folders the items were added from (`vismem add MEM DIR` records DIR,
  // absolute): an item id is a path relative to one of them. Explanations use
  // them to show the neighbors' images. Not a write to the items: the
  // generation (and pruning counts) stay as they are.
  void add_image_root(const std::string& dir);
  std::vector<std::string> image_roots() const;
  // The first root/id that exists as a file, or nullopt (moved or never an image).
  std::optional<std::string> find_image(const std::string& id) const;

  // For the unlearning receipt: checkpoint the WAL into the main file and
  // truncate it (waits for readers up to the busy timeout; throws if they stay).
  void checkpoint() const;
  // The files this memory owns now (catalog, WAL, vector files, lock).
  std::vector<std::string> owned_files() const;

  struct Impl;  // the catalog connection, the mappings, the item cache (memory.cpp)

 private:
  Memory();
  std::unique_ptr<Impl> impl_;
  bool counts_upkeep_ = true;
  SearchParams params_;
};

// L2-normalizes each of the n rows of x (n * d) in place; the norm is taken in
// double. Throws vismem::Error (naming the row) on NaN/Inf or an all-zero row.
void l2_normalize_rows(float* x, int64_t n, int d, const std::string& what);

}  // namespace vismem
