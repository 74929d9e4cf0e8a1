#include "memory.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "error.h"
#include "faiss_index.h"
#include "flat_index.h"
#include "linalg.h"
#include "prune.h"
#include "textio.h"

namespace vismem {

namespace {

namespace fs = std::filesystem;

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string errno_text() { return std::strerror(errno); }

// Fault injection for the crash tests: VISMEM_CRASH_AT=NAME makes the process
// die (as kill -9 would: no cleanup) when it reaches the point NAME.
void crash_point(const char* name) {
  static const char* at = std::getenv("VISMEM_CRASH_AT");
  if (at && std::strcmp(at, name) == 0) ::_exit(137);
}

// ---------------------------------------------------------------------------
// The vector files. Each is a 4096-byte header, then one fixed-size record per
// row: mem.db.vec ld float32 (rows zero padded to 16 floats, 64-byte aligned,
// the layout flat_search() reads), mem.db.f16 ld float16, mem.db.keys one
// int64 (the item's insertion sequence, -1 once removed). Rows are only ever
// appended; the catalog's meta 'rows' says how many are committed, so bytes
// past it (a killed add) are never read and are cut off by the next writer.
// ---------------------------------------------------------------------------
constexpr int64_t kHeader = 4096;
constexpr char kMagic[8] = {'V', 'I', 'S', 'M', 'E', 'M', 'V', '2'};

struct FileHeader {
  char magic[8];
  uint32_t kind;  // 0 f32, 1 f16, 2 keys
  uint32_t dim;
  uint32_t ld;
  uint32_t elem_bytes;
};

enum VecKind { kF32 = 0, kF16 = 1, kKeys = 2 };
const char* kSuffix[3] = {".vec", ".f16", ".keys"};

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd, o.fd);
    return *this;
  }
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

void pwrite_all(int fd, const void* p, size_t n, int64_t off, const std::string& what) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, c, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(what + ": write failed: " + errno_text());
    }
    c += w;
    n -= static_cast<size_t>(w);
    off += w;
  }
}

void sync_fd(int fd, const std::string& what) {
  if (::fdatasync(fd) != 0) throw Error(what + ": fsync failed: " + errno_text());
}

// OFD locks on mem.db.lock (per open file description, so each handle and
// each scan holds its own). Byte 0: one writer at a time, across processes.
// Byte 1: scans hold it shared; a scrub takes it exclusively, so a scan never
// reads a row half overwritten.
class FileLock {
 public:
  FileLock(const std::string& lock_path, int byte, bool exclusive, bool wait = true) {
    fd_ = Fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd_.fd < 0) throw Error(lock_path + ": cannot open the lock file: " + errno_text());
    struct flock fl {};
    fl.l_type = exclusive ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    for (;;) {
      if (::fcntl(fd_.fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) {
        held_ = true;
        return;
      }
      if (errno == EINTR) continue;
      if (!wait && (errno == EAGAIN || errno == EACCES)) return;
      throw Error(lock_path + ": cannot lock: " + errno_text());
    }
  }
  bool held() const { return held_; }

 private:
  Fd fd_;  // closing it releases the lock
  bool held_ = false;
};

// A read-only shared mapping of the first `bytes` of a file.
struct Map {
  void* p = nullptr;
  size_t bytes = 0;
  Map() = default;
  Map(const Map&) = delete;
  Map& operator=(const Map&) = delete;
  ~Map() {
    if (p) ::munmap(p, bytes);
  }
};

// The three mappings a search reads; shared so a scan in progress keeps the
// one it started with while another thread maps a larger one.
struct Mapping {
  int64_t rows = 0;
  std::string tag;  // which set of vector files
  Map f32, f16, keys;
  const float* x() const { return reinterpret_cast<const float*>(static_cast<const char*>(f32.p) + kHeader); }
  const uint16_t* half() const {
    return f16.p ? reinterpret_cast<const uint16_t*>(static_cast<const char*>(f16.p) + kHeader) : nullptr;
  }
  const int64_t* key() const { return reinterpret_cast<const int64_t*>(static_cast<const char*>(keys.p) + kHeader); }
};

}  // namespace

// ---------------------------------------------------------------------------
// The catalog connection.
// ---------------------------------------------------------------------------
struct Db {
  sqlite3* h = nullptr;
  std::string path;
  ~Db() {
    if (h) sqlite3_close_v2(h);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ": " + what + ": " + (h ? sqlite3_errmsg(h) : "cannot open"));
  }
  void exec(const std::string& sql) const {
    char* err = nullptr;
    if (sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      throw Error(path + ": " + msg + " (in: " + sql.substr(0, 60) + ")");
    }
  }
};

namespace {

// A prepared statement; finalized on scope exit.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  const Db* db;
  Stmt(const Db& d, const char* sql) : db(&d) {
    if (sqlite3_prepare_v2(d.h, sql, -1, &s, nullptr) != SQLITE_OK) d.fail(std::string("prepare ") + sql);
  }
  Stmt(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(s); }
  Stmt& text(int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& i64(int i, int64_t v) {
    sqlite3_bind_int64(s, i, v);
    return *this;
  }
  Stmt& real(int i, double v) {
    sqlite3_bind_double(s, i, v);
    return *this;
  }
  bool step() {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db->fail("step");
  }
  void reset() {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
  void run() {
    step();
    reset();
  }
  std::string col_text(int i) const {
    auto p = sqlite3_column_text(s, i);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s, i)) : std::string();
  }
  int64_t col_i64(int i) const { return sqlite3_column_int64(s, i); }
  double col_real(int i) const { return sqlite3_column_double(s, i); }
};

// A write transaction: rolled back unless commit() is reached.
struct Txn {
  const Db& db;
  bool done = false;
  explicit Txn(const Db& d) : db(d) { db.exec("BEGIN IMMEDIATE"); }
  void commit() {
    db.exec("COMMIT");
    done = true;
  }
  ~Txn() {
    if (!done) sqlite3_exec(db.h, "ROLLBACK", nullptr, nullptr, nullptr);
  }
};

std::unique_ptr<Db> open_db(const std::string& path, bool create) {
  auto db = std::make_unique<Db>();
  db->path = path;
  // FULLMUTEX (serialized): the const accessors may run on several threads at once (the HTTP service).
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db->h, flags, nullptr) != SQLITE_OK) db->fail("cannot open memory");
  sqlite3_busy_timeout(db->h, 10000);
  // Connection settings only: nothing here writes to the file.
  // secure_delete: removed items' catalog bytes are overwritten, not just unlinked (unlearning).
  db->exec("PRAGMA secure_delete=ON");
  // FULL: a committed write survives power loss, not only a killed process.
  db->exec("PRAGMA synchronous=FULL");
  return db;
}

bool has_table(const Db& db, const char* name) {
  Stmt s(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?");
  s.text(1, name);
  s.step();
  return sqlite3_column_int(s.s, 0) > 0;
}

const char* kItemCols =
    "SELECT items.seq, id, label, row, reliability, wrong, correct, coalesce(prune_kth.kth, -1) FROM items "
    "LEFT JOIN prune_kth ON prune_kth.seq = items.seq ";

ItemInfo read_item(const Stmt& s) {
  ItemInfo it;
  it.seq = s.col_i64(0);
  it.id = s.col_text(1);
  it.label = s.col_text(2);
  it.row = s.col_i64(3);
  it.reliability = s.col_real(4);
  it.wrong = s.col_i64(5);
  it.correct = s.col_i64(6);
  it.kth = s.col_real(7);
  return it;
}

}  // namespace

// What a handle knows of the committed state (refreshed when data_version moves).
struct State {
  int64_t rows = 0, items = 0, generation = 0;
  std::string prune_mode = "none";
  double prune_threshold = 0;
  std::vector<int64_t> pending;  // rows removed in the catalog, not yet scrubbed (never answered)
  // The approximate index (meta index_*): factory "" = none; file "" = not built yet.
  std::string index_factory, index_file;
  int64_t index_rows = 0, fold_rows = Memory::kIndexFoldRows;
  int nprobe = 0, ef = 0, k_factor = 0;
};

namespace {
// The index file's tag records what it covers, so a handle never pairs an
// index with the wrong vector set: "rows=N files=TAG".
std::string index_tag(int64_t rows, const std::string& files) { return "rows=" + std::to_string(rows) + " files=" + files; }
bool parse_index_tag(const std::string& t, int64_t* rows, std::string* files) {
  const auto sp = t.find(" files=");
  if (t.rfind("rows=", 0) != 0 || sp == std::string::npos) return false;
  try {
    *rows = std::stoll(t.substr(5, sp - 5));
  } catch (...) {
    return false;
  }
  *files = t.substr(sp + 7);
  return true;
}
}  // namespace

struct Memory::Impl {
  std::string path;
  std::unique_ptr<Db> db;
  int dim = 0, ld = 0;
  bool f16 = false;

  mutable int writer_depth = 0;  // > 0 while this handle holds the writer lock (writes nest: add -> set_counts)

  mutable std::mutex mu;  // guards everything below
  mutable int64_t data_version = -1;
  mutable State st;
  mutable std::shared_ptr<Mapping> map;
  mutable std::unordered_map<int64_t, ItemInfo> by_seq;  // items read so far (a cache)
  mutable std::unordered_map<std::string, int64_t> seq_of;
  mutable std::unique_ptr<Stmt> q_by_seq, q_by_id;  // prepared once: resolving neighbors is per result
  // The approximate index as loaded (lazily, by the first search that uses it).
  mutable std::shared_ptr<const FaissIndex> ann;
  mutable std::string ann_file;    // which file it came from
  mutable int64_t ann_rows = 0;    // rows [0, ann_rows) it covers

  // Vector files are named path + tag + suffix; compact() writes a new set
  // under a new tag and switches meta 'files' in one transaction.
  mutable std::string tag;
  std::string file(VecKind k, const std::string& t) const { return path + t + kSuffix[k]; }
  std::string file(VecKind k) const { return file(k, tag); }
  void load_tag() const { tag = meta("files", ""); }
  std::string lock_path() const { return path + ".lock"; }
  std::string index_path(const std::string& t) const { return path + t + ".faiss"; }
  int64_t record_bytes(VecKind k) const {
    return k == kF32 ? int64_t{4} * ld : k == kF16 ? int64_t{2} * ld : int64_t{8};
  }

  std::string meta(const std::string& key, const std::string& fallback = "") const {
    Stmt s(*db, "SELECT value FROM meta WHERE key=?");
    s.text(1, key);
    return s.step() ? s.col_text(0) : fallback;
  }
  void set_meta(const std::string& key, const std::string& value) const {
    Stmt s(*db, "INSERT INTO meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value");
    s.text(1, key).text(2, value).run();
  }
  void touch() const {  // inside a write transaction
    set_meta("generation", std::to_string(std::stoll(meta("generation", "0")) + 1));
    set_meta("updated_at", now_utc());
  }

  // The whole meta table (a few dozen rows) in one read.
  std::map<std::string, std::string> meta_all() const {
    std::map<std::string, std::string> m;
    Stmt s(*db, "SELECT key, value FROM meta");
    while (s.step()) m[s.col_text(0)] = s.col_text(1);
    return m;
  }

  int64_t read_data_version() const {
    Stmt s(*db, "PRAGMA data_version");
    s.step();
    return s.col_i64(0);
  }

  // Catches up with the latest committed state (caller holds mu). Cheap when
  // nothing changed: one PRAGMA, no file read.
  void refresh_locked(bool force, bool retried = false) const {
    int64_t v = read_data_version();
    if (!force && v == data_version && map) return;
    const std::map<std::string, std::string> m = meta_all();
    auto get = [&](const char* k, const char* def) { return m.count(k) ? m.at(k) : std::string(def); };
    State ns;
    ns.rows = std::stoll(get("rows", "0"));
    ns.items = std::stoll(get("items", "0"));
    ns.generation = std::stoll(get("generation", "0"));
    ns.prune_mode = get("pruning_mode", "none");
    ns.prune_threshold = std::stod(get("pruning_threshold", "0"));
    ns.index_factory = get("index_factory", "");
    ns.index_file = get("index_file", "");
    ns.index_rows = std::stoll(get("index_rows", "0"));
    ns.fold_rows = std::stoll(get("index_fold_rows", "65536"));
    ns.nprobe = std::stoi(get("index_nprobe", "0"));
    ns.ef = std::stoi(get("index_ef", "0"));
    ns.k_factor = std::stoi(get("index_k_factor", "0"));
    tag = get("files", "");
    const bool moved = map && map->tag != tag;
    {
      Stmt s(*db, "SELECT row FROM scrub ORDER BY row");
      while (s.step()) ns.pending.push_back(s.col_i64(0));
    }
    // Items may have changed (labels by upsert, counts by prune): drop the cache.
    by_seq.clear();
    seq_of.clear();
    if (!map || moved || map->rows < ns.rows || (map->f16.p == nullptr) != !f16) {
      try {
        map = map_files(ns.rows);
      } catch (const Error&) {
        // A compaction in another process may have switched sets between the
        // meta read and the open: read the state again once.
        if (retried || get("files", "") == meta("files", "")) throw;
        refresh_locked(true, true);
        return;
      }
    }
    st = std::move(ns);
    data_version = v;
  }
  void refresh(bool force = false) const {
    std::lock_guard<std::mutex> g(mu);
    refresh_locked(force);
  }
  void invalidate() const {
    std::lock_guard<std::mutex> g(mu);
    data_version = -1;
  }

  std::shared_ptr<Mapping> map_files(int64_t rows) const {
    auto m = std::make_shared<Mapping>();
    m->rows = rows;
    m->tag = tag;
    if (rows == 0) return m;
    for (VecKind k : {kF32, kF16, kKeys}) {
      if (k == kF16 && !f16) continue;
      const std::string p = file(k);
      Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
      if (fd.fd < 0) throw Error(p + ": cannot open the vector file: " + errno_text());
      struct stat sb;
      if (::fstat(fd.fd, &sb) != 0) throw Error(p + ": " + errno_text());
      const int64_t need = kHeader + rows * record_bytes(k);
      if (sb.st_size < need)
        throw Error(p + ": vector file is truncated (" + std::to_string(sb.st_size) + " bytes, the catalog needs " +
                    std::to_string(need) + ")");
      Map& mm = k == kF32 ? m->f32 : k == kF16 ? m->f16 : m->keys;
      void* p0 = ::mmap(nullptr, static_cast<size_t>(need), PROT_READ, MAP_SHARED, fd.fd, 0);
      if (p0 == MAP_FAILED) throw Error(p + ": cannot map the vector file: " + errno_text());
      mm.p = p0;
      mm.bytes = static_cast<size_t>(need);
      check_header(p, static_cast<const char*>(p0), k);
    }
    return m;
  }

  void check_header(const std::string& p, const char* bytes, VecKind k) const {
    FileHeader h;
    std::memcpy(&h, bytes, sizeof h);
    if (std::memcmp(h.magic, kMagic, 8) != 0 || h.kind != static_cast<uint32_t>(k))
      throw Error(p + ": not a vismem vector file (bad header)");
    if (h.dim != static_cast<uint32_t>(dim) || h.ld != static_cast<uint32_t>(ld))
      throw Error(p + ": vector file is for dimension " + std::to_string(h.dim) + ", the catalog says " +
                  std::to_string(dim));
  }

  // Creates a vector file with its header (or checks an existing one).
  void ensure_file(VecKind k, const std::string& t) const {
    const std::string p = file(k, t);
    Fd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (fd.fd < 0) throw Error(p + ": cannot create the vector file: " + errno_text());
    struct stat sb;
    if (::fstat(fd.fd, &sb) != 0) throw Error(p + ": " + errno_text());
    if (sb.st_size >= kHeader) {
      char buf[sizeof(FileHeader)];
      if (::pread(fd.fd, buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf)) throw Error(p + ": cannot read header");
      check_header(p, buf, k);
      return;
    }
    std::vector<char> header(kHeader, 0);
    FileHeader h{};
    std::memcpy(h.magic, kMagic, 8);
    h.kind = k;
    h.dim = static_cast<uint32_t>(dim);
    h.ld = static_cast<uint32_t>(ld);
    h.elem_bytes = k == kF32 ? 4 : k == kF16 ? 2 : 8;
    std::memcpy(header.data(), &h, sizeof h);
    pwrite_all(fd.fd, header.data(), header.size(), 0, p);
    sync_fd(fd.fd, p);
  }

  void ensure_file(VecKind k) const { ensure_file(k, tag); }
  Fd open_rw(VecKind k, const std::string& t) const {
    Fd fd(::open(file(k, t).c_str(), O_RDWR | O_CLOEXEC));
    if (fd.fd < 0) throw Error(file(k, t) + ": cannot open the vector file for writing: " + errno_text());
    return fd;
  }
  Fd open_rw(VecKind k) const { return open_rw(k, tag); }

  // Vector files of other tags: a compaction's new set that never committed,
  // or the old set of one that did. Readers that still map them keep them.
  // Index files other than the current one are overwritten with zeros before
  // they go: one written before a removal holds the removed items' codes.
  void remove_stale_sets() const {
    const std::string index_file = meta("index_file", "");
    for (const std::string& f : Memory::files(path)) {
      bool current = f == path || f.rfind("-wal") == f.size() - 4 || f.rfind("-shm") == f.size() - 4 ||
                     f == path + ".lock";
      for (VecKind k : {kF32, kF16, kKeys}) current = current || f == file(k);
      if (!index_file.empty()) current = current || f == index_path(index_file);
      if (current) continue;
      if (f.size() > 6 && f.compare(f.size() - 6, 6, ".faiss") == 0) scrub_file(f);
      std::error_code ec;
      fs::remove(f, ec);
    }
  }

  // Overwrites a whole file with zeros and syncs it, under the scan fence (a
  // search may be reading it). Caller is the writer.
  void scrub_file(const std::string& f) const {
    Fd fd(::open(f.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.fd < 0) return;  // gone already
    struct stat sb;
    if (::fstat(fd.fd, &sb) != 0) return;
    FileLock fence(lock_path(), 1, /*exclusive=*/true);
    const std::vector<char> zeros(1 << 20, 0);
    for (int64_t off = 0; off < sb.st_size; off += static_cast<int64_t>(zeros.size()))
      pwrite_all(fd.fd, zeros.data(), static_cast<size_t>(std::min<int64_t>(zeros.size(), sb.st_size - off)), off, f);
    sync_fd(fd.fd, f);
  }

  // Cuts bytes past the committed rows (left by a killed add): caller is the writer.
  void truncate_to(int64_t rows) const {
    for (VecKind k : {kF32, kF16, kKeys}) {
      if (k == kF16 && !f16) continue;
      if (!file_exists(file(k))) continue;
      Fd fd = open_rw(k);
      struct stat sb;
      if (::fstat(fd.fd, &sb) != 0) throw Error(file(k) + ": " + errno_text());
      const int64_t want = kHeader + rows * record_bytes(k);
      if (sb.st_size > want) {
        if (::ftruncate(fd.fd, want) != 0) throw Error(file(k) + ": cannot truncate: " + errno_text());
        sync_fd(fd.fd, file(k));
      }
    }
  }

  // Overwrites the rows listed in the scrub table in every vector file, syncs,
  // then clears the list and truncates the WAL. Caller is the writer.
  void scrub() const {
    std::vector<int64_t> rows;
    {
      Stmt s(*db, "SELECT row FROM scrub ORDER BY row");
      while (s.step()) rows.push_back(s.col_i64(0));
    }
    if (!rows.empty()) {
      FileLock fence(lock_path(), 1, /*exclusive=*/true);  // waits for scans in progress
      const std::vector<char> zeros(static_cast<size_t>(record_bytes(kF32)), 0);
      const int64_t gone = -1;
      for (VecKind k : {kF32, kF16, kKeys}) {
        if (k == kF16 && !f16) continue;
        Fd fd = open_rw(k);
        for (int64_t r : rows) {
          crash_point("scrub");
          const int64_t off = kHeader + r * record_bytes(k);
          if (k == kKeys) pwrite_all(fd.fd, &gone, sizeof gone, off, file(k));
          else pwrite_all(fd.fd, zeros.data(), static_cast<size_t>(record_bytes(k)), off, file(k));
        }
        sync_fd(fd.fd, file(k));
      }
    }
    // The rows leave the approximate index too: a new index file without
    // them, switched to in the transaction that clears the list (a crash
    // before it redoes the whole scrub; removing an absent row is a no-op).
    std::function<void()> clear = [&] {
      db->exec("DELETE FROM scrub");
      set_meta("catalog_scrub", "1");
    };
    std::unique_ptr<FaissIndex> idx;
    const std::string cur = meta("index_file", "");
    int64_t covered = 0;
    std::string files;
    if (!cur.empty() && !rows.empty()) {
      try {
        idx = read_index_file(cur, &covered, &files);
        std::vector<int64_t> in_index;
        for (int64_t r : rows)
          if (r < covered) in_index.push_back(r);
        idx->remove(static_cast<int64_t>(in_index.size()), in_index.data());
      } catch (const Error& e) {
        // A damaged index file (or one FAISS fails to remove from) must not
        // hold a removal hostage: it is dropped (zeroed and deleted), searches
        // go exact, and `index info` says why until `index rebuild`.
        idx.reset();
        auto also = clear;
        const std::string why = e.what();
        clear = [&, also, why] {
          also();
          drop_index_meta(why);
        };
      }
    }
    if (idx) {
      commit_index(*idx, covered, files, clear);
      maybe_rebuild_holes(*idx);
    } else {
      Txn t(*db);
      clear();
      t.commit();
      invalidate();
      if (!cur.empty() && meta("index_file", "").empty()) {
        scrub_file(index_path(cur));
        std::error_code ec;
        fs::remove(index_path(cur), ec);
      }
    }
    checkpoint_or_defer();
  }

  // ---- The approximate index ----------------------------------------------

  // Live rows (keys >= 0) in [from, to) of a mapping, ascending.
  static std::vector<int64_t> live_rows(const Mapping& m, int64_t from, int64_t to) {
    std::vector<int64_t> out;
    const int64_t* key = m.key();
    for (int64_t r = from; r < to; ++r)
      if (key[r] >= 0) out.push_back(r);
    return out;
  }
  // The rows' vectors as one n * dim row-major matrix (FAISS wants them unpadded).
  std::vector<float> gather(const Mapping& m, const int64_t* rows, int64_t n) const {
    std::vector<float> x(static_cast<size_t>(n) * dim);
    for (int64_t i = 0; i < n; ++i) std::memcpy(x.data() + i * dim, m.x() + rows[i] * ld, sizeof(float) * dim);
    return x;
  }
  void add_rows(FaissIndex& idx, const Mapping& m, const std::vector<int64_t>& rows) const {
    const size_t chunk = 65536;
    for (size_t i = 0; i < rows.size(); i += chunk) {
      const int64_t n = static_cast<int64_t>(std::min(chunk, rows.size() - i));
      std::vector<float> x = gather(m, rows.data() + i, n);
      idx.add(n, x.data(), rows.data() + i);
    }
  }
  // map: read-only, IVF lists memory-mapped (searches); else a writable copy (writers).
  std::unique_ptr<FaissIndex> read_index_file(const std::string& t, int64_t* covered, std::string* files,
                                              bool map = false) const {
    std::string tag_text;
    auto idx = FaissIndex::read(index_path(t), &tag_text, map);
    if (!parse_index_tag(tag_text, covered, files) || idx->dim() != dim)
      throw Error(index_path(t) + ": not this memory's index file (bad tag)");
    return idx;
  }

  // The index as this handle uses it for searching (caller holds mu and the
  // scan fence): loaded on first use, again after another write switched files.
  std::shared_ptr<const FaissIndex> ann_locked(const State& s, const Mapping& m) const {
    if (s.index_file.empty()) return nullptr;
    if (ann && ann_file == s.index_file) return ann;
    int64_t covered = 0;
    std::string files;
    std::shared_ptr<const FaissIndex> idx = read_index_file(s.index_file, &covered, &files, /*map=*/true);
    if (files != m.tag || covered > s.rows)
      throw Error(index_path(s.index_file) + ": the index file does not match the vector files (rebuild it: `vismem index rebuild " + path + "`)");
    ann = std::move(idx);
    ann_file = s.index_file;
    ann_rows = covered;
    return ann;
  }

  // Inside a write transaction: the catalog forgets its index file (the file
  // itself is zeroed and deleted by the caller), noting why.
  void drop_index_meta(const std::string& why) const {
    set_meta("index_file", "");
    set_meta("index_rows", "0");
    set_meta("index_note", "dropped at " + now_utc() + " after an error: " + why +
                               " (searches are exact; `vismem index rebuild` builds a new one)");
  }
  // The index failed after a write committed: drop it rather than report a
  // committed write as failed. Caller is the writer.
  void drop_index(const std::string& why) const {
    const std::string cur = meta("index_file", "");
    {
      Txn t(*db);
      drop_index_meta(why);
      t.commit();
    }
    invalidate();
    if (!cur.empty()) {
      scrub_file(index_path(cur));
      std::error_code ec;
      fs::remove(index_path(cur), ec);
    }
  }
  // HNSW removals leave holes that degrade the graph: past a quarter of the
  // nodes, the index is rebuilt from the live items (best effort).
  void maybe_rebuild_holes(const FaissIndex& idx) const {
    if (idx.kind() != FaissIndex::Kind::hnsw || idx.holes() * 4 <= idx.size() + idx.holes()) return;
    try {
      index_update(/*rebuild=*/true);
    } catch (const Error& e) {
      drop_index(e.what());
    }
  }

  // Writes idx under a new name; then one transaction points the catalog at
  // it (with `also`'s statements); then the old file is zeroed and deleted.
  // Caller is the writer.
  void commit_index(const FaissIndex& idx, int64_t covered, const std::string& files_tag,
                    const std::function<void()>& also = {}) const {
    const int64_t gen = std::stoll(meta("index_gen", "0")) + 1;
    const std::string t = ".i" + std::to_string(gen);
    idx.write(index_path(t), index_tag(covered, files_tag));
    crash_point("index-before-commit");
    const std::string old = meta("index_file", "");
    {
      Txn tx(*db);
      set_meta("index_file", t);
      set_meta("index_gen", std::to_string(gen));
      set_meta("index_rows", std::to_string(covered));
      set_meta("index_note", "");
      if (also) also();
      tx.commit();
    }
    crash_point("index-after-commit");
    invalidate();
    if (!old.empty() && old != t) {
      scrub_file(index_path(old));
      std::error_code ec;
      fs::remove(index_path(old), ec);
    }
  }

  // After a write: builds the index once the memory is large enough, or folds
  // the rows added since into it once there are fold_rows of them. rebuild:
  // build from scratch now (throws when too few items to train). Caller is the writer.
  void index_update(bool rebuild) const {
    const std::string factory = meta("index_factory", "");
    if (factory.empty()) return;
    const int64_t rows = std::stoll(meta("rows", "0"));
    const int64_t fold = std::stoll(meta("index_fold_rows", "65536"));
    const std::string cur = meta("index_file", "");
    std::shared_ptr<Mapping> m = map_files(rows);
    std::unique_ptr<FaissIndex> idx;
    if (cur.empty() || rebuild) {
      idx = std::make_unique<FaissIndex>(dim, factory);
      const std::vector<int64_t> live = rows ? live_rows(*m, 0, rows) : std::vector<int64_t>{};
      const int64_t n = static_cast<int64_t>(live.size());
      if (n < idx->train_min() || (!rebuild && rows < fold)) {
        if (!rebuild) return;  // not yet: searches stay exact
        throw Error(path + ": the index '" + factory + "' needs at least " + std::to_string(idx->train_min()) +
                    " items to train; the memory holds " + std::to_string(n));
      }
      if (!idx->is_trained()) {
        // A fixed-seed sample, in row order (the same memory trains the same way).
        std::vector<int64_t> sample = live;
        const int64_t want = std::min<int64_t>(n, idx->train_sample());
        std::mt19937_64 rng(0x5eed);
        for (int64_t i = 0; i < want; ++i) std::swap(sample[i], sample[i + static_cast<int64_t>(rng() % (n - i))]);
        sample.resize(want);
        std::sort(sample.begin(), sample.end());
        std::vector<float> x = gather(*m, sample.data(), want);
        idx->train(want, x.data());
      }
      add_rows(*idx, *m, live);
    } else {
      int64_t covered = 0;
      std::string files;
      idx = read_index_file(cur, &covered, &files);
      if (rows - covered < fold) return;
      add_rows(*idx, *m, live_rows(*m, covered, rows));
    }
    commit_index(*idx, rows, m->tag);
  }

  // Truncates the WAL so no page of a removed item's catalog row stays there.
  // A reader holding an old snapshot blocks that; then it is left to the next
  // write or open (meta catalog_scrub), never reported as a failed removal.
  bool checkpoint_or_defer(int wait_ms = 1000) const {
    int log = 0, ckpt = 0;
    sqlite3_busy_timeout(db->h, wait_ms);
    int rc = sqlite3_wal_checkpoint_v2(db->h, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
    sqlite3_busy_timeout(db->h, 10000);
    if (rc != SQLITE_OK) return false;
    // The flag itself goes through the WAL: clear it and truncate again.
    if (meta("catalog_scrub", "0") != "0") {
      Txn t(*db);
      set_meta("catalog_scrub", "0");
      t.commit();
      sqlite3_wal_checkpoint_v2(db->h, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
    }
    return true;
  }

  // Unfinished business of a process that died: a scrub after its commit, or
  // rows past the committed end. Run by open() and by every writer.
  void recover(bool have_writer_lock) const {
    bool pending = false, catalog = false;
    {
      Stmt s(*db, "SELECT count(*) FROM scrub");
      s.step();
      pending = s.col_i64(0) > 0;
    }
    catalog = meta("catalog_scrub", "0") != "0";
    std::optional<FileLock> wl;
    if (!have_writer_lock) {
      // A pending scrub must finish before this open answers: wait for the writer lock.
      wl.emplace(lock_path(), 0, true, /*wait=*/pending);
      if (!wl->held()) return;  // a live writer holds it: it recovers itself
    }
    // Only now, under the writer lock: a compaction may have switched sets
    // while this process waited, and the set named before is gone or stale.
    load_tag();
    if (pending || catalog) scrub();
    truncate_to(std::stoll(meta("rows", "0")));
    remove_stale_sets();
  }

  // seq -> item, through the cache (caller holds mu).
  const ItemInfo* by_seq_locked(int64_t seq) const {
    auto it = by_seq.find(seq);
    if (it != by_seq.end()) return &it->second;
    if (!q_by_seq) q_by_seq = std::make_unique<Stmt>(*db, (std::string(kItemCols) + "WHERE items.seq=?").c_str());
    Stmt& s = *q_by_seq;
    s.i64(1, seq);
    const bool found = s.step();
    ItemInfo info;
    if (found) info = read_item(s);
    s.reset();
    if (!found) return nullptr;
    seq_of[info.id] = seq;
    return &by_seq.emplace(seq, std::move(info)).first->second;
  }
  std::optional<ItemInfo> by_id_locked(const std::string& id) const {
    auto it = seq_of.find(id);
    if (it != seq_of.end()) return by_seq.at(it->second);
    if (!q_by_id) q_by_id = std::make_unique<Stmt>(*db, (std::string(kItemCols) + "WHERE id=?").c_str());
    Stmt& s = *q_by_id;
    s.text(1, id);
    const bool found = s.step();
    ItemInfo info;
    if (found) info = read_item(s);
    s.reset();
    if (!found) return std::nullopt;
    seq_of[info.id] = info.seq;
    by_seq.emplace(info.seq, info);
    return info;
  }
};

namespace {

// The writer lock for this handle; nested writes (an add's count upkeep
// calling set_counts) reuse the one already held.
struct WriterGuard {
  const Memory::Impl& impl;
  std::optional<FileLock> lock;
  explicit WriterGuard(const Memory::Impl& i) : impl(i) {
    if (impl.writer_depth == 0) lock.emplace(impl.lock_path(), 0, true);
    ++impl.writer_depth;
  }
  ~WriterGuard() { --impl.writer_depth; }
  WriterGuard(const WriterGuard&) = delete;
};

}  // namespace

// ---------------------------------------------------------------------------

namespace {

// Squared norm of row i (d floats) in double; throws naming the row on NaN/Inf or all zeros.
double checked_norm2(const float* row, int d, const std::string& what, int64_t i) {
  double ss = 0;
  for (int j = 0; j < d; ++j) {
    if (!std::isfinite(row[j]))
      throw Error(what + ": row " + std::to_string(i) + " has a NaN or infinite value at column " + std::to_string(j));
    ss += static_cast<double>(row[j]) * row[j];
  }
  if (ss == 0) throw Error(what + ": row " + std::to_string(i) + " is all zeros (cannot be normalized)");
  return ss;
}

}  // namespace

void l2_normalize_rows(float* x, int64_t n, int d, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = x + i * d;
    double inv = 1.0 / std::sqrt(checked_norm2(row, d, what, i));
    for (int j = 0; j < d; ++j) row[j] = static_cast<float>(row[j] * inv);
  }
}

Memory::Memory() : impl_(std::make_unique<Impl>()) {}
Memory::Memory(Memory&&) noexcept = default;
Memory& Memory::operator=(Memory&&) noexcept = default;
Memory::~Memory() = default;

std::vector<std::string> Memory::files(const std::string& path) {
  std::vector<std::string> out = {path, path + "-wal", path + "-shm", path + ".vec", path + ".f16", path + ".keys",
                                  path + ".lock"};
  // Sets written by compact(): PATH.gN.vec / .f16 / .keys.
  const fs::path p(path);
  const std::string base = p.filename().string() + ".g";
  std::error_code ec;
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(base, 0) != 0) continue;
    size_t i = base.size();
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
    if (i == base.size()) continue;
    const std::string rest = name.substr(i);
    // Spelled as `path` is (relative stays relative): callers compare these names.
    if (rest == ".vec" || rest == ".f16" || rest == ".keys") out.push_back(path + name.substr(base.size() - 2));
  }
  // Approximate index files: PATH.iN.faiss.
  const std::string ibase = p.filename().string() + ".i";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(ibase, 0) != 0) continue;
    size_t i = ibase.size();
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
    if (i > ibase.size() && name.substr(i) == ".faiss") out.push_back(path + name.substr(ibase.size() - 2));
  }
  return out;
}

void Memory::remove_files(const std::string& path) {
  for (const auto& f : files(path)) {
    std::error_code ec;
    fs::remove(f, ec);
  }
}

void Memory::rename_files(const std::string& from, const std::string& to) {
  // The catalog last: until it moves, `to` is no memory at all.
  auto src = files(from);
  for (size_t i = src.size(); i-- > 0;)
    if (file_exists(src[i])) fs::rename(src[i], to + src[i].substr(from.size()));
}

void Memory::copy_files(const std::string& from, const std::string& to) {
  for (const auto& f : files(from))
    if (file_exists(f) && f != from + ".lock")
      fs::copy_file(f, to + f.substr(from.size()), fs::copy_options::overwrite_existing);
}

namespace {

void create_schema(const Db& db) {
  db.exec(
      "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE items("
      "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"  // insertion order, never reused
      "  id TEXT NOT NULL UNIQUE,"
      "  label TEXT NOT NULL,"
      "  row INTEGER NOT NULL,"                   // its row in mem.db.vec / .f16 / .keys
      "  reliability REAL NOT NULL DEFAULT 1.0,"
      "  wrong INTEGER NOT NULL DEFAULT 0,"
      "  correct INTEGER NOT NULL DEFAULT 0,"
      "  added_at TEXT NOT NULL);"
      "CREATE TABLE labels(label TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;"
      "CREATE TABLE scrub(row INTEGER PRIMARY KEY);"
      "CREATE TABLE IF NOT EXISTS prune_kth(seq INTEGER PRIMARY KEY, kth REAL NOT NULL);");
}

// The first bytes of every SQLite database file.
bool looks_like_sqlite(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char buf[16] = {};
  size_t n = std::fread(buf, 1, 16, f);
  std::fclose(f);
  return n == 16 && std::memcmp(buf, "SQLite format 3\0", 16) == 0;
}

}  // namespace

Memory Memory::create(const std::string& path, const CreateOptions& opt) {
  if (opt.dim <= 0 || opt.dim > 65536) throw Error("memory dimension must be in 1..65536, got " + std::to_string(opt.dim));
  if (file_exists(path)) throw Error(path + " already exists (open it, or remove it first)");
  if (opt.f16 && !flat_f16_supported()) throw Error("--f16 needs a CPU with F16C (x86-64-v3)");
  if (opt.index_fold_rows < 0) throw Error("index fold rows must be >= 0");
  const std::string index = wants_faiss_index(opt.index, opt.dim) ? opt.index : "";  // throws on a bad string
  Memory m;
  Impl& I = *m.impl_;
  I.path = path;
  I.dim = opt.dim;
  I.ld = flat_row_stride(opt.dim);
  I.f16 = opt.f16;
  // Stale side files of an earlier memory at this path (its catalog deleted by hand) must not be adopted.
  for (size_t i = 1; i < files(path).size(); ++i) {
    std::error_code ec;
    fs::remove(files(path)[i], ec);
  }
  try {
    I.ensure_file(kF32);
    I.ensure_file(kKeys);
    if (opt.f16) I.ensure_file(kF16);
    I.db = open_db(path, true);
    I.db->exec("PRAGMA journal_mode=WAL");
    Txn t(*I.db);
    create_schema(*I.db);
    std::string now = now_utc();
    for (auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"format_version", std::to_string(format_version)},
             {"dim", std::to_string(opt.dim)},
             {"model_id", opt.model_id},
             {"fingerprint", opt.fingerprint},
             {"model_path", opt.model_path},
             {"model_precision", opt.model_precision},
             {"created_at", now},
             {"updated_at", now},
             {"generation", "0"},
             {"counts_generation", "-1"},
             {"counts_k", "0"},
             {"pruning_mode", "none"},
             {"pruning_threshold", "0"},
             {"rows", "0"},
             {"items", "0"},
             {"f16", opt.f16 ? "1" : "0"},
             {"index_factory", index},
             {"index_fold_rows", std::to_string(opt.index_fold_rows > 0 ? opt.index_fold_rows : kIndexFoldRows)}})
      I.set_meta(k, v);
    t.commit();
  } catch (...) {
    I.db.reset();
    remove_files(path);
    throw;
  }
  I.refresh(true);
  return m;
}

namespace {

// Opens the catalog of an existing memory. Checked before SQLite opens it,
// and before any setting is written: a command that rejects a file leaves it
// exactly as it was.
void open_catalog(Memory::Impl& I, const std::string& path) {
  if (!file_exists(path)) throw Error(path + ": no such memory (create it with `vismem create`)");
  if (!looks_like_sqlite(path)) throw Error(path + ": not a vismem memory (not an SQLite file)");
  I.path = path;
  I.db = open_db(path, false);
  if (!has_table(*I.db, "meta") || !has_table(*I.db, "items"))
    throw Error(path + ": not a vismem memory (no meta/items tables)");
}

}  // namespace

Memory Memory::open(const std::string& path) {
  Memory m;
  Impl& I = *m.impl_;
  open_catalog(I, path);
  int v = std::stoi(I.meta("format_version", "0"));
  if (v == 1)
    throw Error(path + ": memory format version 1 (vectors inside the catalog); run `vismem migrate " + path +
                "` once to upgrade it to version " + std::to_string(format_version));
  if (v != format_version)
    throw Error(path + ": memory format version " + std::to_string(v) + ", this vismem reads version " +
                std::to_string(format_version));
  I.dim = std::stoi(I.meta("dim", "0"));
  if (I.dim <= 0 || I.dim > 65536) throw Error(path + ": memory has no valid dimension");
  I.ld = flat_row_stride(I.dim);
  I.f16 = I.meta("f16", "0") == "1";
  I.db->exec("PRAGMA journal_mode=WAL");
  I.recover(/*have_writer_lock=*/false);
  I.refresh(true);
  return m;
}

bool Memory::migrate(const std::string& path) {
  Impl I;
  open_catalog(I, path);
  FileLock wl(I.lock_path(), 0, true);
  int v = std::stoi(I.meta("format_version", "0"));
  if (v == format_version) return false;
  if (v != 1) throw Error(path + ": memory format version " + std::to_string(v) + " cannot be migrated");
  I.db->exec("PRAGMA journal_mode=WAL");
  I.dim = std::stoi(I.meta("dim", "0"));
  if (I.dim <= 0 || I.dim > 65536) throw Error(path + ": memory has no valid dimension");
  I.ld = flat_row_stride(I.dim);
  // 1. The vector files, from the blobs in insertion order (fresh files: a
  //    migration killed earlier left only files the catalog never referenced).
  for (VecKind k : {kF32, kKeys}) {
    std::error_code ec;
    fs::remove(I.file(k), ec);
    I.ensure_file(k);
  }
  int64_t rows = 0;
  std::vector<std::pair<int64_t, int64_t>> seq_row;
  {
    Fd vf = I.open_rw(kF32), kf = I.open_rw(kKeys);
    Stmt s(*I.db, "SELECT seq, id, embedding FROM items ORDER BY seq");
    std::vector<float> rec(static_cast<size_t>(I.ld), 0.0f);
    while (s.step()) {
      const int64_t seq = s.col_i64(0);
      const int bytes = sqlite3_column_bytes(s.s, 2);
      if (bytes != I.dim * 4) throw Error(path + ": item '" + s.col_text(1) + "' has a corrupt embedding");
      std::memcpy(rec.data(), sqlite3_column_blob(s.s, 2), static_cast<size_t>(bytes));
      pwrite_all(vf.fd, rec.data(), rec.size() * 4, kHeader + rows * I.record_bytes(kF32), I.file(kF32));
      pwrite_all(kf.fd, &seq, 8, kHeader + rows * 8, I.file(kKeys));
      seq_row.emplace_back(seq, rows++);
    }
    sync_fd(vf.fd, I.file(kF32));
    sync_fd(kf.fd, I.file(kKeys));
  }
  // 2. One transaction switches the catalog to format 2 (secure_delete zeroes the blobs' pages).
  {
    Txn t(*I.db);
    I.db->exec(
        "CREATE TABLE items2(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, label TEXT NOT NULL,"
        " row INTEGER NOT NULL, reliability REAL NOT NULL DEFAULT 1.0, wrong INTEGER NOT NULL DEFAULT 0,"
        " correct INTEGER NOT NULL DEFAULT 0, added_at TEXT NOT NULL);"
        "CREATE TEMP TABLE seq_row(seq INTEGER PRIMARY KEY, row INTEGER NOT NULL);");
    {
      Stmt ins(*I.db, "INSERT INTO seq_row(seq,row) VALUES(?,?)");
      for (auto& [seq, row] : seq_row) ins.i64(1, seq).i64(2, row).run();
    }
    I.db->exec(
        "INSERT INTO items2(seq,id,label,row,reliability,wrong,correct,added_at)"
        " SELECT i.seq, i.id, i.label, r.row, i.reliability, i.wrong, i.correct, i.added_at"
        " FROM items i JOIN seq_row r ON r.seq = i.seq;"
        "DROP TABLE items; ALTER TABLE items2 RENAME TO items; DROP TABLE temp.seq_row;"
        "CREATE TABLE labels(label TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO labels SELECT label, count(*) FROM items GROUP BY label;"
        "CREATE TABLE scrub(row INTEGER PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS prune_kth(seq INTEGER PRIMARY KEY, kth REAL NOT NULL);");
    I.set_meta("rows", std::to_string(rows));
    I.set_meta("items", std::to_string(rows));
    I.set_meta("f16", "0");
    I.set_meta("format_version", std::to_string(format_version));
    t.commit();
  }
  // 3. Compact the catalog (the blobs' pages are free now) and truncate the WAL.
  I.db->exec("VACUUM");
  I.checkpoint_or_defer();
  return true;
}

std::vector<std::string> Memory::owned_files() const {
  std::vector<std::string> out;
  for (const auto& f : files(impl_->path))
    if (file_exists(f)) out.push_back(f);
  return out;
}

void Memory::add_image_root(const std::string& dir) {
  std::error_code ec;
  std::string abs = fs::absolute(dir, ec).lexically_normal().string();
  if (ec) throw Error(dir + ": " + ec.message());
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  WriterGuard wl(*impl_);
  auto roots = image_roots();
  if (std::find(roots.begin(), roots.end(), abs) != roots.end()) return;
  roots.push_back(abs);
  std::string v;
  for (auto& r : roots) v += r + "\n";
  Txn t(*impl_->db);
  impl_->set_meta("image_roots", v);
  t.commit();
}

std::vector<std::string> Memory::image_roots() const {
  std::vector<std::string> out;
  std::string v = impl_->meta("image_roots"), line;
  for (char c : v) {
    if (c == '\n') {
      if (!line.empty()) out.push_back(line);
      line.clear();
    } else {
      line += c;
    }
  }
  if (!line.empty()) out.push_back(line);
  return out;
}

std::optional<std::string> Memory::find_image(const std::string& id) const {
  for (auto& r : image_roots()) {
    fs::path p = fs::path(r) / id;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return std::nullopt;
}

int Memory::dim() const { return impl_->dim; }

int64_t Memory::size() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->refresh_locked(false);
  return impl_->st.items;
}

const std::string& Memory::path() const { return impl_->path; }

std::string Memory::pruning_mode() const {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->refresh_locked(false);
  return impl_->st.prune_mode;
}

MemoryInfo Memory::info() const {
  const Impl& I = *impl_;
  const std::map<std::string, std::string> m = I.meta_all();
  auto get = [&](const char* k, const char* def) { return m.count(k) ? m.at(k) : std::string(def); };
  MemoryInfo i;
  i.path = I.path;
  i.dim = I.dim;
  i.items = std::stoll(get("items", "0"));
  {
    Stmt s(*I.db, "SELECT count(*) FROM labels");
    s.step();
    i.labels = s.col_i64(0);
  }
  i.model_id = get("model_id", "");
  i.fingerprint = get("fingerprint", "");
  i.model_path = get("model_path", "");
  i.model_precision = get("model_precision", "");
  i.format_version = std::stoi(get("format_version", "0"));
  i.f16 = I.f16;
  i.rows = std::stoll(get("rows", "0"));
  i.vector_bytes = i.rows * (I.record_bytes(kF32) + I.record_bytes(kKeys) + (I.f16 ? I.record_bytes(kF16) : 0));
  i.created_at = get("created_at", "");
  i.updated_at = get("updated_at", "");
  i.generation = std::stoll(get("generation", "0"));
  i.counts_generation = std::stoll(get("counts_generation", "-1"));
  i.counts_k = std::stoi(get("counts_k", "0"));
  i.pruning_mode = get("pruning_mode", "none");
  i.pruning_threshold = std::stod(get("pruning_threshold", "0"));
  i.ood_k = std::stoi(get("ood_k", "0"));
  i.ood_threshold = std::stod(get("ood_threshold", "0"));
  i.ood_fpr = std::stod(get("ood_fpr", "0"));
  i.ood_generation = std::stoll(get("ood_generation", "-1"));
  i.index = get("index_factory", "");
  return i;
}

AddResult Memory::add(const std::vector<std::string>& ids, const std::vector<std::string>& labels, const float* x,
                      AddMode mode, const std::function<void(int64_t, int64_t)>& progress) {
  Impl& I = *impl_;
  const int d = I.dim;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (labels.size() != ids.size())
    throw Error("add: " + std::to_string(ids.size()) + " ids but " + std::to_string(labels.size()) + " labels");
  if (n > 0 && !x) throw Error("add: no vectors");
  // Validate the whole batch before touching any file: values (the same
  // normalization is redone row by row while writing, so nothing is copied whole).
  for (int64_t i = 0; i < n; ++i) {
    checked_norm2(x + i * d, d, "add", i);
  }
  std::unordered_set<std::string> batch;
  batch.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i].empty()) throw Error("add: item " + std::to_string(i) + " has an empty id");
    if (labels[i].empty()) throw Error("add: item '" + ids[i] + "' has an empty label");
    check_item_text("add: id", ids[i]);
    check_item_text("add: label of '" + ids[i] + "':", labels[i]);
    if (!batch.insert(ids[i]).second) throw Error("add: id '" + ids[i] + "' appears twice in the batch");
  }
  WriterGuard writer(I);  // one writer at a time, in any process
  I.recover(/*have_writer_lock=*/true);
  I.refresh(true);
  AddResult r;
  std::vector<uint8_t> action(static_cast<size_t>(n), 0);  // 0 insert, 1 replace, 2 skip
  std::vector<ItemInfo> replaced;
  {
    Stmt s(*I.db, (std::string(kItemCols) + "WHERE id=?").c_str());
    for (int64_t i = 0; i < n; ++i) {
      s.text(1, ids[i]);
      if (s.step()) {
        if (mode == AddMode::strict)
          throw Error("add: id '" + ids[i] + "' is already in the memory (use --upsert to replace it)");
        action[i] = mode == AddMode::upsert ? 1 : 2;
        if (action[i] == 1) replaced.push_back(read_item(s));
      }
      s.reset();
    }
  }
  auto normalized = [&](int64_t i, float* out) {
    std::copy(x + i * d, x + (i + 1) * d, out);
    l2_normalize_rows(out, 1, d, "add");
  };
  // Current pruning counts stay current: the upkeep looks at the memory before
  // the change and searches again only the lists the new items can enter.
  std::optional<CountsUpkeep> upkeep;
  if (counts_upkeep_ && counts_current()) {
    std::vector<std::string> up_ids;
    std::vector<float> up_x;
    for (int64_t i = 0; i < n; ++i)
      if (action[i] != 2) {
        up_ids.push_back(ids[i]);
        up_x.resize(up_x.size() + d);
        normalized(i, up_x.data() + up_x.size() - d);
      }
    if (!up_ids.empty())
      upkeep = CountsUpkeep::before_add(*this, up_ids, up_x.data(), static_cast<int64_t>(up_ids.size()));
  }
  const std::string now = now_utc();
  {
    Txn t(*I.db);
    const int64_t rows0 = std::stoll(I.meta("rows", "0"));
    I.truncate_to(rows0);
    Stmt del(*I.db, "DELETE FROM items WHERE seq=?");
    Stmt delk(*I.db, "DELETE FROM prune_kth WHERE seq=?");
    Stmt scrub(*I.db, "INSERT OR IGNORE INTO scrub(row) VALUES(?)");
    Stmt ins(*I.db, "INSERT INTO items(id,label,row,added_at) VALUES(?,?,?,?)");
    Stmt lab_up(*I.db, "INSERT INTO labels(label,n) VALUES(?,?) ON CONFLICT(label) DO UPDATE SET n = n + excluded.n");
    Stmt lab_gc(*I.db, "DELETE FROM labels WHERE n <= 0");
    for (const ItemInfo& old : replaced) {
      del.i64(1, old.seq).run();
      delk.i64(1, old.seq).run();
      scrub.i64(1, old.row).run();
      lab_up.text(1, old.label).i64(2, -1).run();
    }
    Fd vf = I.open_rw(kF32), kf = I.open_rw(kKeys);
    Fd hf;
    if (I.f16) hf = I.open_rw(kF16);
    // Rows go out in chunks (bounded memory for any batch size).
    const int64_t chunk = 4096;
    std::vector<float> rec;
    std::vector<uint16_t> half;
    std::vector<int64_t> keys;
    std::unordered_map<std::string, int64_t> label_delta;
    int64_t row = rows0, pending = 0, written = 0;
    auto flush = [&] {
      if (pending == 0) return;
      const int64_t first = row - pending;
      pwrite_all(vf.fd, rec.data(), rec.size() * 4, kHeader + first * I.record_bytes(kF32), I.file(kF32));
      pwrite_all(kf.fd, keys.data(), keys.size() * 8, kHeader + first * 8, I.file(kKeys));
      if (I.f16) {
        half.resize(rec.size());
        flat_to_half(rec.data(), half.data(), static_cast<int64_t>(rec.size()));
        pwrite_all(hf.fd, half.data(), half.size() * 2, kHeader + first * I.record_bytes(kF16), I.file(kF16));
      }
      rec.clear();
      keys.clear();
      pending = 0;
    };
    for (int64_t i = 0; i < n; ++i) {
      if (action[i] == 2) {
        ++r.skipped;
        continue;
      }
      ++(action[i] == 1 ? r.replaced : r.added);
      ins.text(1, ids[i]).text(2, labels[i]).i64(3, row).text(4, now).run();
      keys.push_back(sqlite3_last_insert_rowid(I.db->h));
      ++label_delta[labels[i]];
      rec.resize(rec.size() + I.ld, 0.0f);
      normalized(i, rec.data() + rec.size() - I.ld);
      ++row;
      ++written;
      if (++pending == chunk) flush();
      if (progress && (written % 1024 == 0)) progress(i, n);
    }
    flush();
    for (auto& [l, c] : label_delta) lab_up.text(1, l).i64(2, c).run();
    lab_gc.run();
    if (r.added + r.replaced > 0) {
      // The rows are durable before the transaction that references them commits.
      sync_fd(vf.fd, I.file(kF32));
      sync_fd(kf.fd, I.file(kKeys));
      if (I.f16) sync_fd(hf.fd, I.file(kF16));
      crash_point("add-before-commit");
      I.set_meta("rows", std::to_string(row));
      I.set_meta("items", std::to_string(std::stoll(I.meta("items", "0")) + r.added));
      I.touch();
    }
    t.commit();
  }
  crash_point("add-after-commit");
  I.invalidate();
  if (progress) progress(n, n);
  if (!replaced.empty()) I.scrub();  // replaced vectors must not linger in any file
  try {
    I.index_update(/*rebuild=*/false);
  } catch (const Error& e) {
    I.drop_index(e.what());  // the add itself committed: it must not read as failed
  }
  if (upkeep) upkeep->after(*this);
  return r;
}

int64_t Memory::remove(const std::vector<std::string>& ids, bool ignore_missing) {
  Impl& I = *impl_;
  WriterGuard writer(I);
  I.recover(/*have_writer_lock=*/true);
  I.refresh(true);
  std::vector<ItemInfo> gone;
  std::unordered_set<std::string> seen;
  for (const auto& id : ids) {
    if (!seen.insert(id).second) continue;
    auto it = item(id);
    if (!it) {
      if (ignore_missing) continue;
      throw Error("remove: no item with id '" + id + "' (nothing was removed)");
    }
    gone.push_back(*it);
  }
  if (gone.empty()) return 0;
  std::vector<std::string> present;
  for (const auto& g : gone) present.push_back(g.id);
  // Current counts are updated exactly (the removed items' votes go away, the
  // lists they were in are searched again). Stale counts would keep the removed
  // items' influence, so they are cleared in the same transaction.
  std::optional<CountsUpkeep> upkeep;
  if (counts_upkeep_) upkeep = CountsUpkeep::before_remove(*this, present);
  const bool clear_counts = !upkeep && I.meta("counts_generation", "-1") != "-1";
  {
    Txn t(*I.db);
    Stmt del(*I.db, "DELETE FROM items WHERE seq=?");
    Stmt dk(*I.db, "DELETE FROM prune_kth WHERE seq=?");
    Stmt scrub(*I.db, "INSERT OR IGNORE INTO scrub(row) VALUES(?)");
    Stmt lab(*I.db, "UPDATE labels SET n = n - 1 WHERE label=?");
    for (const auto& g : gone) {
      del.i64(1, g.seq).run();
      dk.i64(1, g.seq).run();
      scrub.i64(1, g.row).run();
      lab.text(1, g.label).run();
    }
    I.db->exec("DELETE FROM labels WHERE n <= 0");
    if (clear_counts) {
      I.db->exec("UPDATE items SET wrong=0, correct=0, reliability=1.0 WHERE wrong != 0 OR correct != 0 OR reliability != 1.0");
      I.db->exec("DELETE FROM prune_kth");
      I.set_meta("counts_generation", "-1");
      I.set_meta("counts_k", "0");
    }
    I.set_meta("items", std::to_string(std::stoll(I.meta("items", "0")) - static_cast<int64_t>(gone.size())));
    I.touch();
    t.commit();
  }
  crash_point("remove-after-commit");
  I.invalidate();
  // Committed: from here on the removal is a fact. The scrub overwrites the
  // rows in every vector file before this returns; if this process dies
  // first, the next open finishes it (the scrub table lists the rows).
  I.scrub();
  if (upkeep) upkeep->after(*this);
  return static_cast<int64_t>(gone.size());
}

int64_t Memory::compact() {
  Impl& I = *impl_;
  WriterGuard writer(I);
  I.recover(/*have_writer_lock=*/true);
  I.refresh(true);
  std::vector<std::pair<int64_t, int64_t>> live;  // (row, seq) in row order
  {
    Stmt s(*I.db, "SELECT row, seq FROM items ORDER BY row");
    while (s.step()) live.emplace_back(s.col_i64(0), s.col_i64(1));
  }
  const int64_t rows = std::stoll(I.meta("rows", "0"));
  if (static_cast<int64_t>(live.size()) == rows) return 0;
  const std::string new_tag = ".g" + std::to_string(std::stoll(I.meta("files_gen", "0")) + 1);
  // 1. The new set: live rows in their order (so insertion order = row order still).
  std::shared_ptr<Mapping> map = I.map_files(rows);
  for (VecKind k : {kF32, kF16, kKeys}) {
    if (k == kF16 && !I.f16) continue;
    std::error_code ec;
    fs::remove(I.file(k, new_tag), ec);
    I.ensure_file(k, new_tag);
    Fd fd = I.open_rw(k, new_tag);
    const int64_t rb = I.record_bytes(k);
    const char* src = static_cast<const char*>(k == kF32 ? map->f32.p : k == kF16 ? map->f16.p : map->keys.p) + kHeader;
    std::vector<char> buf;
    const int64_t chunk = std::max<int64_t>(1, (8 << 20) / rb);
    for (size_t i = 0; i < live.size(); i += static_cast<size_t>(chunk)) {
      const size_t m = std::min(live.size() - i, static_cast<size_t>(chunk));
      buf.resize(m * static_cast<size_t>(rb));
      for (size_t j = 0; j < m; ++j) std::memcpy(buf.data() + j * rb, src + live[i + j].first * rb, static_cast<size_t>(rb));
      pwrite_all(fd.fd, buf.data(), buf.size(), kHeader + static_cast<int64_t>(i) * rb, I.file(k, new_tag));
    }
    sync_fd(fd.fd, I.file(k, new_tag));
  }
  // The index, renumbered to the new rows, under a new name (its tag names the new set).
  std::string new_index;
  int64_t new_covered = 0;
  const int64_t index_gen = std::stoll(I.meta("index_gen", "0")) + 1;
  std::string index_dropped;
  if (const std::string cur = I.meta("index_file", ""); !cur.empty()) try {
    int64_t covered = 0;
    std::string files;
    std::unique_ptr<FaissIndex> idx = I.read_index_file(cur, &covered, &files);
    std::vector<int64_t> new_row(static_cast<size_t>(rows), -1);
    for (size_t i = 0; i < live.size(); ++i) {
      new_row[live[i].first] = static_cast<int64_t>(i);
      if (live[i].first < covered) new_covered = static_cast<int64_t>(i) + 1;
    }
    idx->remap_keys([&](int64_t r) {
      if (r < 0 || r >= rows || new_row[r] < 0) throw Error(I.index_path(cur) + ": the index holds a removed row");
      return new_row[r];
    });
    new_index = ".i" + std::to_string(index_gen);
    idx->write(I.index_path(new_index), index_tag(new_covered, new_tag));
  } catch (const Error& e) {
    new_index.clear();
    index_dropped = e.what();
  }
  crash_point("compact-before-commit");
  // 2. One transaction points the catalog at the new set. Items, their order
  //    and the generation are unchanged (pruning counts stay current).
  {
    Txn t(*I.db);
    if (!index_dropped.empty()) I.drop_index_meta(index_dropped);
    if (!new_index.empty()) {
      I.set_meta("index_file", new_index);
      I.set_meta("index_gen", std::to_string(index_gen));
      I.set_meta("index_rows", std::to_string(new_covered));
    }
    Stmt up(*I.db, "UPDATE items SET row=? WHERE seq=?");
    for (size_t i = 0; i < live.size(); ++i) up.i64(1, static_cast<int64_t>(i)).i64(2, live[i].second).run();
    I.set_meta("rows", std::to_string(live.size()));
    I.set_meta("files", new_tag);
    I.set_meta("files_gen", new_tag.substr(2));
    t.commit();
  }
  crash_point("compact-after-commit");
  map.reset();
  I.invalidate();
  // 3. The old set goes (a reader still mapping it keeps its pages until it catches up).
  I.load_tag();
  I.remove_stale_sets();
  return rows - static_cast<int64_t>(live.size());
}

int64_t Memory::remove_label(const std::string& label) {
  std::vector<std::string> ids;
  {
    Stmt s(*impl_->db, "SELECT id FROM items WHERE label=?");
    s.text(1, label);
    while (s.step()) ids.push_back(s.col_text(0));
  }
  if (ids.empty()) throw Error("remove: no item has label '" + label + "'");
  return remove(ids);
}

void Memory::checkpoint() const {
  if (!impl_->checkpoint_or_defer(10000))
    impl_->db->fail("WAL checkpoint (another process is reading the memory)");
}

namespace {

// Approximate search: the index's candidates among rows [0, covered),
// re-scored with their exact vectors, merged with an exact scan of the rows
// added after the index was written. Same output layout as flat_search
// (keys are insertion sequences; -1 / +inf padding).
void approximate_search(const FaissIndex& ann, int64_t covered, const Mapping& map, int64_t rows, int d, int ld,
                        const SearchParams& sp, const State& st, int64_t nq, const float* qn, int want,
                        float* dist, int64_t* keys, int threads) {
  const int k_factor = sp.k_factor > 0 ? sp.k_factor : st.k_factor > 0 ? st.k_factor : ann.lossy() ? 4 : 2;
  const FaissIndex::Params fp{sp.nprobe > 0 ? sp.nprobe : st.nprobe, sp.ef > 0 ? sp.ef : st.ef};
  const int kc = static_cast<int>(std::min<int64_t>(int64_t{want} * k_factor, std::max<int64_t>(1, ann.size())));
  std::vector<float> cd(static_cast<size_t>(nq) * kc);
  std::vector<int64_t> crow(static_cast<size_t>(nq) * kc);
  ann.search(nq, qn, kc, cd.data(), crow.data(), fp, threads);
  const int64_t tail = rows - covered;
  std::vector<float> td;
  std::vector<int64_t> tk;
  if (tail > 0) {
    td.resize(static_cast<size_t>(nq) * want);
    tk.resize(static_cast<size_t>(nq) * want);
    FlatRows t{map.x() + covered * ld, map.half() ? map.half() + covered * ld : nullptr, map.key() + covered, tail,
               1.0 + 1e-5};
    FlatIndex::Options o;
    o.storage = t.half ? FlatIndex::Storage::f16 : FlatIndex::Storage::f32;
    flat_search(t, d, o, nq, qn, want, td.data(), tk.data(), threads);
  }
  const int64_t* key = map.key();
#pragma omp parallel for schedule(dynamic) num_threads(threads > 0 ? threads : default_threads()) if (nq > 4)
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<float, int64_t>> c;
    c.reserve(static_cast<size_t>(kc + (tail > 0 ? want : 0)));
    for (int j = 0; j < kc; ++j) {
      const int64_t r = crow[i * kc + j];
      if (r < 0 || r >= covered || key[r] < 0) continue;  // padding, or removed since the index was written
      c.emplace_back(FlatIndex::distance(qn + i * d, map.x() + r * ld, d), key[r]);
    }
    for (int j = 0; j < want && tail > 0; ++j)
      if (tk[i * want + j] >= 0) c.emplace_back(td[i * want + j], tk[i * want + j]);
    const size_t m = std::min(c.size(), static_cast<size_t>(want));
    std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(m), c.end());  // distance, then sequence
    for (int j = 0; j < want; ++j) {
      const bool have = static_cast<size_t>(j) < m;
      dist[i * want + j] = have ? c[j].first : std::numeric_limits<float>::infinity();
      keys[i * want + j] = have ? c[j].second : -1;
    }
  }
  // A query the index gave fewer candidates than it needs (few lists probed
  // over small lists, a graph cut by removals) is answered by the exact scan:
  // every list has min(k, items) neighbors, as exact search gives.
  const int64_t need = std::min<int64_t>(want, st.items);
  std::vector<int64_t> short_q;
  for (int64_t i = 0; i < nq; ++i) {
    int have = 0;
    while (have < want && keys[i * want + have] >= 0) ++have;
    if (have < need) short_q.push_back(i);
  }
  if (!short_q.empty()) {
    const int64_t ns = static_cast<int64_t>(short_q.size());
    std::vector<float> sq(static_cast<size_t>(ns) * d), sd(static_cast<size_t>(ns) * want);
    std::vector<int64_t> sk(static_cast<size_t>(ns) * want);
    for (int64_t s = 0; s < ns; ++s) std::copy(qn + short_q[s] * d, qn + (short_q[s] + 1) * d, sq.begin() + s * d);
    FlatRows all{map.x(), map.half(), map.key(), rows, 1.0 + 1e-5};
    FlatIndex::Options o;
    o.storage = all.half ? FlatIndex::Storage::f16 : FlatIndex::Storage::f32;
    flat_search(all, d, o, ns, sq.data(), want, sd.data(), sk.data(), threads);
    for (int64_t s = 0; s < ns; ++s) {
      std::copy(sd.begin() + s * want, sd.begin() + (s + 1) * want, dist + short_q[s] * want);
      std::copy(sk.begin() + s * want, sk.begin() + (s + 1) * want, keys + short_q[s] * want);
    }
  }
}

}  // namespace

std::vector<std::vector<Neighbor>> Memory::search(const float* q, int64_t nq, int k,
                                                  const std::vector<std::string>& self_ids, int threads,
                                                  const SearchParams* params) const {
  const Impl& I = *impl_;
  const SearchParams& sp = params ? *params : params_;
  const int d = I.dim;
  if (k < 1) throw Error("search: k must be >= 1");
  if (nq < 0) throw Error("search: negative query count");
  if (!self_ids.empty() && static_cast<int64_t>(self_ids.size()) != nq)
    throw Error("search: " + std::to_string(nq) + " queries but " + std::to_string(self_ids.size()) + " query ids");
  std::vector<float> qn(q, q + nq * d);
  l2_normalize_rows(qn.data(), nq, d, "query");
  const bool loo = !self_ids.empty();
  const int64_t kk = loo ? int64_t{k} + 1 : int64_t{k};
  for (int attempt = 0;; ++attempt) {
    // Scans hold the fence shared: a scrub waits for them, so no row read here
    // is half overwritten; rows removed but not yet scrubbed are filtered.
    FileLock fence(I.lock_path(), 1, /*exclusive=*/false);
    std::shared_ptr<Mapping> map;
    State st;
    std::shared_ptr<const FaissIndex> ann;
    int64_t covered = 0;
    {
      std::lock_guard<std::mutex> g(I.mu);
      I.refresh_locked(false);
      map = I.map;
      st = I.st;
      if (!sp.exact && nq > 0) {
        ann = I.ann_locked(st, *map);
        covered = I.ann_rows;
      }
    }
    const int64_t extra = static_cast<int64_t>(st.pending.size());
    // No list is longer than the rows: a huge k costs no more than the memory's size.
    const int want = static_cast<int>(std::min<int64_t>(kk + extra, std::max<int64_t>(1, st.rows)));
    std::vector<float> dist(static_cast<size_t>(nq * want));
    std::vector<int64_t> keys(static_cast<size_t>(nq * want), -1);
    if (ann && st.rows > 0) {
      approximate_search(*ann, covered, *map, st.rows, d, I.ld, sp, st, nq, qn.data(), want, dist.data(), keys.data(),
                         threads);
    } else if (nq > 0 && st.rows > 0) {
      FlatRows rows{map->x(), map->half(), map->key(), st.rows, 1.0 + 1e-5};
      FlatIndex::Options o;
      o.storage = map->half() ? FlatIndex::Storage::f16 : FlatIndex::Storage::f32;
      flat_search(rows, d, o, nq, qn.data(), want, dist.data(), keys.data(), threads);
    }
    std::unordered_set<int64_t> pending_seq;
    if (extra > 0)
      for (int64_t r : st.pending) {
        int64_t s = map->key()[r];
        if (s >= 0) pending_seq.insert(s);
      }
    std::vector<std::vector<Neighbor>> out(static_cast<size_t>(nq));
    bool stale = false;
    {
      std::lock_guard<std::mutex> g(I.mu);
      for (int64_t i = 0; i < nq && !stale; ++i) {
        std::vector<const ItemInfo*> found;
        std::vector<float> fd;
        for (int j = 0; j < want && static_cast<int>(found.size()) < kk; ++j) {
          int64_t key = keys[i * want + j];
          if (key < 0) break;
          if (pending_seq.count(key)) continue;
          const ItemInfo* it = I.by_seq_locked(key);
          if (!it) {  // removed by another process after our snapshot: answer from the newer state
            stale = true;
            break;
          }
          found.push_back(it);
          fd.push_back(dist[i * want + j]);
        }
        const int have = static_cast<int>(found.size());
        int drop = -1;
        if (loo) {
          for (int j = 0; j < have; ++j)
            if (found[j]->id == self_ids[i]) {
              drop = j;
              break;
            }
          // Not among them: drop the last, so every list has k entries (SPEC section 2).
          if (drop < 0 && have == kk) drop = have - 1;
        }
        auto& row = out[i];
        for (int j = 0; j < have; ++j)
          if (j != drop) row.push_back({found[j]->seq, found[j]->id, found[j]->label, fd[j]});
      }
    }
    if (!stale) return out;
    if (attempt >= 5)
      throw Error(I.path + ": a neighbor's key names no item: the memory kept changing during the search (try again), or " +
                  I.file(kKeys) + " is corrupt");
    I.invalidate();
  }
}

bool Memory::contains(const std::string& id) const { return item(id).has_value(); }

std::optional<ItemInfo> Memory::item(const std::string& id) const {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->refresh_locked(false);
  return impl_->by_id_locked(id);
}

std::vector<ItemInfo> Memory::items() const {
  std::vector<ItemInfo> out;
  Stmt s(*impl_->db, (std::string(kItemCols) + "ORDER BY items.seq").c_str());
  while (s.step()) out.push_back(read_item(s));
  return out;
}

std::vector<float> Memory::embedding(const std::string& id) const {
  const Impl& I = *impl_;
  std::lock_guard<std::mutex> g(I.mu);
  I.refresh_locked(false);
  auto it = I.by_id_locked(id);
  if (!it) throw Error("no item with id '" + id + "'");
  if (it->row < 0 || it->row >= I.map->rows) throw Error(I.path + ": item '" + id + "' points past the vector file");
  const float* p = I.map->x() + it->row * I.ld;
  return std::vector<float>(p, p + I.dim);
}

std::vector<std::string> Memory::labels() const {
  std::vector<std::string> out;
  Stmt s(*impl_->db, "SELECT label FROM labels ORDER BY label");
  while (s.step()) out.push_back(s.col_text(0));
  return out;
}

void Memory::set_counts(const Counts& c, int k, const std::string& mode, double threshold) {
  Impl& I = *impl_;
  if (c.ids.size() != c.wrong.size() || c.ids.size() != c.correct.size() || (!c.kth.empty() && c.kth.size() != c.ids.size()))
    throw Error("set_counts: length mismatch");
  if (!mode.empty() && mode != "none" && mode != "hard" && mode != "soft")
    throw Error("pruning mode must be none, hard or soft, got '" + mode + "'");
  WriterGuard writer(I);
  {
    Txn t(*I.db);
    // Counts computed on another state than the current one would be wrong while looking current.
    if (c.generation >= 0 && std::to_string(c.generation) != I.meta("generation", "0"))
      throw Error(I.path + ": the memory changed while the counts were computed (another writer); run prune again");
    Stmt seq(*I.db, "SELECT seq FROM items WHERE id=?");
    Stmt up(*I.db, "UPDATE items SET wrong=?, correct=?, reliability=? WHERE seq=?");
    Stmt kt(*I.db, "INSERT OR REPLACE INTO prune_kth(seq, kth) VALUES(?,?)");
    for (size_t i = 0; i < c.ids.size(); ++i) {
      seq.text(1, c.ids[i]);
      if (!seq.step()) throw Error("set_counts: no item with id '" + c.ids[i] + "'");
      const int64_t s = seq.col_i64(0);
      seq.reset();
      up.i64(1, c.wrong[i]).i64(2, c.correct[i]).real(3, reliability_weight(c.wrong[i])).i64(4, s).run();
      if (!c.kth.empty()) kt.i64(1, s).real(2, c.kth[i]).run();
    }
    I.set_meta("counts_generation", I.meta("generation", "0"));
    I.set_meta("counts_k", std::to_string(k));
    if (!mode.empty()) {
      I.set_meta("pruning_mode", mode);
      I.set_meta("pruning_threshold", std::to_string(threshold));
    }
    t.commit();
  }
  I.invalidate();
}

bool Memory::counts_current() const {
  std::string cg = impl_->meta("counts_generation", "-1");
  return cg != "-1" && cg == impl_->meta("generation", "0");
}

void Memory::set_pruning(const std::string& mode, double threshold) {
  if (mode != "none" && mode != "hard" && mode != "soft")
    throw Error("pruning mode must be none, hard or soft, got '" + mode + "'");
  WriterGuard wl(*impl_);
  Txn t(*impl_->db);
  impl_->set_meta("pruning_mode", mode);
  impl_->set_meta("pruning_threshold", std::to_string(threshold));
  t.commit();
  impl_->invalidate();
}

void Memory::set_ood_threshold(double threshold, int k, double fpr) {
  if (k < 1 || !std::isfinite(threshold) || !(fpr >= 0 && fpr <= 1)) throw Error("OOD threshold: invalid k, threshold or rate");
  WriterGuard wl(*impl_);
  Txn t(*impl_->db);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", threshold);  // round-trips exactly
  impl_->set_meta("ood_threshold", buf);
  impl_->set_meta("ood_k", std::to_string(k));
  std::snprintf(buf, sizeof buf, "%.17g", fpr);
  impl_->set_meta("ood_fpr", buf);
  impl_->set_meta("ood_generation", impl_->meta("generation", "0"));
  t.commit();
  impl_->invalidate();
}

bool Memory::excluded(const ItemInfo& it) const {
  std::lock_guard<std::mutex> g(impl_->mu);
  if (impl_->data_version < 0) impl_->refresh_locked(true);  // this handle wrote since
  return impl_->st.prune_mode == "hard" && static_cast<double>(it.wrong) >= impl_->st.prune_threshold;
}

double Memory::weight(const ItemInfo& it) const {
  std::lock_guard<std::mutex> g(impl_->mu);
  if (impl_->data_version < 0) impl_->refresh_locked(true);
  return impl_->st.prune_mode == "soft" ? it.reliability : 1.0;
}

bool Memory::set_index(const std::string& factory) {
  Impl& I = *impl_;
  WriterGuard writer(I);
  I.recover(/*have_writer_lock=*/true);
  const std::string f = wants_faiss_index(factory, I.dim) ? factory : "";  // throws on a bad string
  {
    Txn t(*I.db);
    I.set_meta("index_factory", f);
    I.set_meta("index_file", "");
    I.set_meta("index_rows", "0");
    I.set_meta("index_note", "");
    for (const char* k : {"index_nprobe", "index_ef", "index_k_factor"}) I.set_meta(k, "0");  // tuned for the old index
    t.commit();
  }
  I.invalidate();
  I.remove_stale_sets();  // the old index file, zeroed
  if (f.empty()) return false;
  FaissIndex probe(I.dim, f);
  if (size() < probe.train_min()) return false;  // built by the add that reaches train_min
  I.index_update(/*rebuild=*/true);
  return true;
}

void Memory::rebuild_index() {
  Impl& I = *impl_;
  WriterGuard writer(I);
  I.recover(/*have_writer_lock=*/true);
  if (I.meta("index_factory", "").empty())
    throw Error(I.path + ": the memory has no approximate index (set one: `vismem index set " + I.path + " FACTORY`)");
  I.index_update(/*rebuild=*/true);
}

std::vector<int64_t> Memory::index_rows() const {
  const Impl& I = *impl_;
  FileLock fence(I.lock_path(), 1, /*exclusive=*/false);
  std::lock_guard<std::mutex> g(I.mu);
  I.refresh_locked(false);
  auto ann = I.ann_locked(I.st, *I.map);
  return ann ? ann->keys() : std::vector<int64_t>{};
}

void Memory::set_index_defaults(int nprobe, int ef, int k_factor) {
  if (nprobe < 0 || ef < 0 || k_factor < 0) throw Error("index defaults must be >= 0 (0: the built-in default)");
  Impl& I = *impl_;
  WriterGuard writer(I);
  Txn t(*I.db);
  I.set_meta("index_nprobe", std::to_string(nprobe));
  I.set_meta("index_ef", std::to_string(ef));
  I.set_meta("index_k_factor", std::to_string(k_factor));
  t.commit();
  I.invalidate();
}

std::optional<IndexInfo> Memory::index_info(bool load) const {
  const Impl& I = *impl_;
  State st;
  std::shared_ptr<Mapping> map;
  {
    std::lock_guard<std::mutex> g(I.mu);
    I.refresh_locked(false);
    st = I.st;
    map = I.map;
  }
  if (st.index_factory.empty()) return std::nullopt;
  IndexInfo r;
  r.factory = st.index_factory;
  FaissIndex probe(I.dim, st.index_factory);
  r.kind = probe.kind_name();
  r.train_min = probe.train_min();
  r.nlist = probe.nlist();
  r.lossy = probe.lossy();
  r.fold_rows = st.fold_rows;
  r.note = I.meta("index_note", "");
  r.built = !st.index_file.empty();
  r.file = r.built ? I.index_path(st.index_file) : "";
  r.indexed_rows = r.built ? st.index_rows : 0;
  r.tail_rows = st.rows - r.indexed_rows;
  r.nprobe = st.nprobe > 0 ? st.nprobe : probe.default_nprobe();
  r.ef = st.ef > 0 ? st.ef : probe.default_ef();
  r.k_factor = st.k_factor > 0 ? st.k_factor : probe.lossy() ? 4 : 2;
  if (r.built) {
    std::error_code ec;
    r.file_bytes = static_cast<int64_t>(fs::file_size(r.file, ec));
    if (load) {
      FileLock fence(I.lock_path(), 1, /*exclusive=*/false);
      std::lock_guard<std::mutex> g(I.mu);
      auto ann = I.ann_locked(st, *map);
      r.entries = ann->size();
      r.holes = ann->holes();
      if (r.entries > 0) r.bytes_per_item = double(r.file_bytes) / double(r.entries);
    }
  }
  return r;
}

void Memory::check_fingerprint(const std::string& fingerprint, const std::string& what) const {
  std::string mine = impl_->meta("fingerprint");
  if (mine.empty() || mine == fingerprint) return;
  // Encoders mark int8 embeddings by a "|int8" suffix (encoder.h), possibly
  // followed by a revision of their int8 numerics ("|int8|a8"): the same model
  // at the other precision, or at another int8 revision, gets its own message.
  const auto split = [](const std::string& fp) {
    const size_t at = fp.rfind("|int8");
    return at == std::string::npos ? std::pair<std::string, std::string>{fp, ""}
                                   : std::pair<std::string, std::string>{fp.substr(0, at), fp.substr(at + 1)};
  };
  const auto [mine_model, mine_int8] = split(mine);
  const auto [given_model, given_int8] = split(fingerprint);
  if (mine_model == given_model && mine_int8.empty() != given_int8.empty()) {
    const bool mem_int8 = !mine_int8.empty();
    throw Error(what + " runs at " + (mem_int8 ? "f32" : "int8") + " precision, but this memory's embeddings are " +
                (mem_int8 ? "int8" : "f32") + " (same model): use --precision " + (mem_int8 ? "int8" : "f32") +
                " or VISMEM_PRECISION=" + (mem_int8 ? "int8" : "f32"));
  }
  if (mine_model == given_model)
    throw Error(what + " makes the int8 embeddings of another vismem version than this memory's (same model; this "
                "memory: " + mine_int8 + ", this build: " + given_int8 + "): they differ in their last digits and "
                "must not be mixed; create a new memory with --precision int8 and add its images again");
  // Fingerprints are "sha256|preprocessing[|int8...]": show where they differ.
  size_t at = 0;
  while (at < mine.size() && at < fingerprint.size() && mine[at] == fingerprint[at]) ++at;
  const size_t from = at < 8 ? 0 : at - 8;
  throw Error(what + " was made with a different model than this memory (memory: " + impl_->meta("model_id") +
              ", fingerprint " + (from ? "..." : "") + mine.substr(from, 24) + "...; given: " + (from ? "..." : "") +
              fingerprint.substr(from, 24) + "...)");
}

}  // namespace vismem
