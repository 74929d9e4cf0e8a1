#include "memory.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <set>
#include <unordered_set>

#include "error.h"
#include "flat_index.h"
#include "prune.h"
#include "textio.h"
#include <optional>

namespace vismem {

namespace {

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

}  // namespace

// The SQLite connection and the statements used on hot paths.
struct Memory::Db {
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
  const Memory::Db* db;
  Stmt(const Memory::Db& d, const char* sql) : db(&d) {
    if (sqlite3_prepare_v2(d.h, sql, -1, &s, nullptr) != SQLITE_OK) d.fail(std::string("prepare ") + sql);
  }
  ~Stmt() { sqlite3_finalize(s); }
  Stmt& text(int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& blob(int i, const void* p, size_t n) {
    sqlite3_bind_blob(s, i, p, static_cast<int>(n), SQLITE_STATIC);
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
  void run() {
    step();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
  std::string col_text(int i) const {
    auto p = sqlite3_column_text(s, i);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s, i)) : std::string();
  }
};

// A transaction: rolled back unless commit() is reached.
struct Txn {
  const Memory::Db& db;
  bool done = false;
  explicit Txn(const Memory::Db& d) : db(d) { db.exec("BEGIN IMMEDIATE"); }
  void commit() {
    db.exec("COMMIT");
    done = true;
  }
  ~Txn() {
    if (!done) sqlite3_exec(db.h, "ROLLBACK", nullptr, nullptr, nullptr);
  }
};

std::unique_ptr<Memory::Db> open_db(const std::string& path, bool create) {
  auto db = std::make_unique<Memory::Db>();
  db->path = path;
  // FULLMUTEX (serialized): the const accessors that read the file (info(),
  // image_roots(), ...) may run on several threads at once, e.g. in the HTTP service.
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db->h, flags, nullptr) != SQLITE_OK) db->fail("cannot open memory");
  sqlite3_busy_timeout(db->h, 10000);
  // secure_delete: removed items' bytes are overwritten, not just unlinked (unlearning).
  db->exec("PRAGMA secure_delete=ON");
  db->exec("PRAGMA journal_mode=WAL");
  // FULL: a committed add survives power loss, not only a killed process.
  db->exec("PRAGMA synchronous=FULL");
  return db;
}

}  // namespace

void l2_normalize_rows(float* x, int64_t n, int d, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    float* row = x + i * d;
    double ss = 0;
    for (int j = 0; j < d; ++j) {
      if (!std::isfinite(row[j]))
        throw Error(what + ": row " + std::to_string(i) + " has a NaN or infinite value at column " + std::to_string(j));
      ss += static_cast<double>(row[j]) * row[j];
    }
    if (ss == 0) throw Error(what + ": row " + std::to_string(i) + " is all zeros (cannot be normalized)");
    double inv = 1.0 / std::sqrt(ss);
    for (int j = 0; j < d; ++j) row[j] = static_cast<float>(row[j] * inv);
  }
}

Memory::Memory(Memory&&) noexcept = default;
Memory& Memory::operator=(Memory&&) noexcept = default;
Memory::~Memory() = default;

bool has_table(const Memory::Db& db, const char* name) {
  Stmt s(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?");
  s.text(1, name);
  s.step();
  return sqlite3_column_int(s.s, 0) > 0;
}

Memory Memory::create(const std::string& path, const CreateOptions& opt) {
  if (opt.dim <= 0 || opt.dim > 65536) throw Error("memory dimension must be in 1..65536, got " + std::to_string(opt.dim));
  if (file_exists(path)) throw Error(path + " already exists (open it, or remove it first)");
  Memory m;
  m.db_ = open_db(path, true);
  m.path_ = path;
  {
    Txn t(*m.db_);
    m.db_->exec(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE items("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"  // insertion order, never reused
        "  id TEXT NOT NULL UNIQUE,"
        "  label TEXT NOT NULL,"
        "  embedding BLOB NOT NULL,"                // dim float32 little-endian, L2-normalized
        "  reliability REAL NOT NULL DEFAULT 1.0,"
        "  wrong INTEGER NOT NULL DEFAULT 0,"
        "  correct INTEGER NOT NULL DEFAULT 0,"
        "  added_at TEXT NOT NULL);");
    std::string now = now_utc();
    m.set_meta("format_version", std::to_string(format_version));
    m.set_meta("dim", std::to_string(opt.dim));
    m.set_meta("model_id", opt.model_id);
    m.set_meta("fingerprint", opt.fingerprint);
    m.set_meta("model_path", opt.model_path);
    m.set_meta("created_at", now);
    m.set_meta("updated_at", now);
    m.set_meta("generation", "0");
    m.set_meta("counts_generation", "-1");
    m.set_meta("counts_k", "0");
    m.set_meta("pruning_mode", "none");
    m.set_meta("pruning_threshold", "0");
    t.commit();
  }
  m.load();
  return m;
}

Memory Memory::open(const std::string& path) {
  if (!file_exists(path)) throw Error(path + ": no such memory (create it with `vismem create`)");
  Memory m;
  m.db_ = open_db(path, false);
  m.path_ = path;
  {
    Stmt s(*m.db_, "SELECT count(*) FROM sqlite_master WHERE name IN ('meta','items')");
    s.step();
    if (sqlite3_column_int(s.s, 0) != 2) throw Error(path + ": not a vismem memory (no meta/items tables)");
  }
  int v = std::stoi(m.meta("format_version", "0"));
  if (v != format_version)
    throw Error(path + ": memory format version " + std::to_string(v) + ", this vismem reads version " +
                std::to_string(format_version));
  m.load();
  return m;
}

std::string Memory::meta(const std::string& key, const std::string& fallback) const {
  Stmt s(*db_, "SELECT value FROM meta WHERE key=?");
  s.text(1, key);
  return s.step() ? s.col_text(0) : fallback;
}

void Memory::set_meta(const std::string& key, const std::string& value) {
  Stmt s(*db_, "INSERT INTO meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  s.text(1, key).text(2, value).run();
}

void Memory::add_image_root(const std::string& dir) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) throw Error(dir + ": " + ec.message());
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  auto roots = image_roots();
  if (std::find(roots.begin(), roots.end(), abs) != roots.end()) return;
  roots.push_back(abs);
  std::string v;
  for (auto& r : roots) v += r + "\n";
  set_meta("image_roots", v);
}

std::vector<std::string> Memory::image_roots() const {
  std::vector<std::string> out;
  std::string v = meta("image_roots"), line;
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
    std::filesystem::path p = std::filesystem::path(r) / id;
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return std::nullopt;
}

void Memory::touch() {
  set_meta("generation", std::to_string(std::stoll(meta("generation", "0")) + 1));
  set_meta("updated_at", now_utc());
}

void Memory::load() {
  dim_ = std::stoi(meta("dim", "0"));
  if (dim_ <= 0) throw Error(path_ + ": memory has no valid dimension");
  prune_mode_ = meta("pruning_mode", "none");
  prune_threshold_ = std::stod(meta("pruning_threshold", "0"));
  index_ = std::make_unique<FlatIndex>(dim_);
  by_seq_.clear();
  seq_of_.clear();
  Stmt s(*db_, "SELECT seq, id, label, embedding, reliability, wrong, correct FROM items ORDER BY seq");
  const int64_t chunk = 4096;
  std::vector<float> x;
  std::vector<int64_t> keys;
  x.reserve(chunk * dim_);
  auto flush = [&] {
    if (!keys.empty()) index_->add(static_cast<int64_t>(keys.size()), x.data(), keys.data());
    x.clear();
    keys.clear();
  };
  while (s.step()) {
    ItemInfo it;
    it.seq = sqlite3_column_int64(s.s, 0);
    it.id = s.col_text(1);
    it.label = s.col_text(2);
    const void* blob = sqlite3_column_blob(s.s, 3);
    int bytes = sqlite3_column_bytes(s.s, 3);
    if (bytes != dim_ * 4) throw Error(path_ + ": item '" + it.id + "' has a corrupt embedding (" + std::to_string(bytes) + " bytes)");
    it.reliability = sqlite3_column_double(s.s, 4);
    it.wrong = sqlite3_column_int64(s.s, 5);
    it.correct = sqlite3_column_int64(s.s, 6);
    size_t off = x.size();
    x.resize(off + dim_);
    std::memcpy(x.data() + off, blob, bytes);
    keys.push_back(it.seq);
    seq_of_[it.id] = it.seq;
    by_seq_.emplace(it.seq, std::move(it));
    if (static_cast<int64_t>(keys.size()) == chunk) flush();
  }
  flush();
  if (has_table(*db_, "prune_kth")) {
    Stmt k(*db_, "SELECT seq, kth FROM prune_kth");
    while (k.step()) {
      auto it = by_seq_.find(sqlite3_column_int64(k.s, 0));
      if (it != by_seq_.end()) it->second.kth = sqlite3_column_double(k.s, 1);
    }
  }
}

int Memory::dim() const { return dim_; }
int64_t Memory::size() const { return static_cast<int64_t>(by_seq_.size()); }
const std::string& Memory::path() const { return path_; }

MemoryInfo Memory::info() const {
  MemoryInfo i;
  i.path = path_;
  i.dim = dim_;
  i.items = size();
  i.labels = static_cast<int64_t>(labels().size());
  i.model_id = meta("model_id");
  i.fingerprint = meta("fingerprint");
  i.model_path = meta("model_path");
  i.format_version = std::stoi(meta("format_version", "0"));
  i.created_at = meta("created_at");
  i.updated_at = meta("updated_at");
  i.generation = std::stoll(meta("generation", "0"));
  i.counts_generation = std::stoll(meta("counts_generation", "-1"));
  i.counts_k = std::stoi(meta("counts_k", "0"));
  i.pruning_mode = prune_mode_;
  i.pruning_threshold = prune_threshold_;
  i.ood_k = std::stoi(meta("ood_k", "0"));
  i.ood_threshold = std::stod(meta("ood_threshold", "0"));
  i.ood_fpr = std::stod(meta("ood_fpr", "0"));
  i.ood_generation = std::stoll(meta("ood_generation", "-1"));
  return i;
}

AddResult Memory::add(const std::vector<std::string>& ids, const std::vector<std::string>& labels, const float* x,
                      AddMode mode, const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t n = static_cast<int64_t>(ids.size());
  if (labels.size() != ids.size())
    throw Error("add: " + std::to_string(ids.size()) + " ids but " + std::to_string(labels.size()) + " labels");
  // Validate the whole batch before touching the file.
  std::vector<float> rows(x, x + n * dim_);
  l2_normalize_rows(rows.data(), n, dim_, "add");
  std::unordered_set<std::string> batch;
  AddResult r;
  std::vector<uint8_t> action(n, 0);  // 0 insert, 1 replace, 2 skip
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i].empty()) throw Error("add: item " + std::to_string(i) + " has an empty id");
    if (labels[i].empty()) throw Error("add: item '" + ids[i] + "' has an empty label");
    check_item_text("add: id", ids[i]);
    check_item_text("add: label of '" + ids[i] + "':", labels[i]);
    if (!batch.insert(ids[i]).second) throw Error("add: id '" + ids[i] + "' appears twice in the batch");
    if (seq_of_.count(ids[i])) {
      if (mode == AddMode::strict)
        throw Error("add: id '" + ids[i] + "' is already in the memory (use --upsert to replace it)");
      action[i] = mode == AddMode::upsert ? 1 : 2;
    }
  }
  // Current pruning counts stay current: the upkeep looks at the memory before
  // the change and searches again only the lists the new items can enter.
  std::optional<CountsUpkeep> upkeep;
  {
    std::vector<std::string> up_ids;
    std::vector<float> up_x;
    for (int64_t i = 0; i < n; ++i)
      if (action[i] != 2) {
        up_ids.push_back(ids[i]);
        up_x.insert(up_x.end(), rows.begin() + i * dim_, rows.begin() + (i + 1) * dim_);
      }
    if (!up_ids.empty() && counts_upkeep_)
      upkeep = CountsUpkeep::before_add(*this, up_ids, up_x.data(), static_cast<int64_t>(up_ids.size()));
  }
  std::string now = now_utc();
  std::vector<int64_t> new_seq(n, -1);
  std::vector<int64_t> replaced_seq;
  {
    Txn t(*db_);
    Stmt del(*db_, "DELETE FROM items WHERE id=?");
    Stmt ins(*db_, "INSERT INTO items(id,label,embedding,added_at) VALUES(?,?,?,?)");
    for (int64_t i = 0; i < n; ++i) {
      if (action[i] == 2) {
        ++r.skipped;
        continue;
      }
      if (action[i] == 1) {
        del.text(1, ids[i]).run();
        replaced_seq.push_back(seq_of_.at(ids[i]));
        ++r.replaced;
      } else {
        ++r.added;
      }
      ins.text(1, ids[i]).text(2, labels[i]).blob(3, rows.data() + i * dim_, dim_ * sizeof(float)).text(4, now).run();
      new_seq[i] = sqlite3_last_insert_rowid(db_->h);
      if (progress && (i % 1024 == 0)) progress(i, n);
    }
    if (r.added + r.replaced > 0) touch();
    t.commit();
  }
  if (progress) progress(n, n);
  // The file is committed; now mirror it in the index and the maps.
  if (!replaced_seq.empty()) {
    index_->remove(static_cast<int64_t>(replaced_seq.size()), replaced_seq.data());
    for (int64_t s : replaced_seq) by_seq_.erase(s);
  }
  std::vector<float> add_x;
  std::vector<int64_t> add_keys;
  for (int64_t i = 0; i < n; ++i) {
    if (new_seq[i] < 0) continue;
    add_x.insert(add_x.end(), rows.begin() + i * dim_, rows.begin() + (i + 1) * dim_);
    add_keys.push_back(new_seq[i]);
    ItemInfo it;
    it.seq = new_seq[i];
    it.id = ids[i];
    it.label = labels[i];
    seq_of_[it.id] = it.seq;
    by_seq_.emplace(it.seq, std::move(it));
  }
  if (!add_keys.empty()) index_->add(static_cast<int64_t>(add_keys.size()), add_x.data(), add_keys.data());
  if (upkeep) upkeep->after(*this);
  if (r.replaced > 0) checkpoint();  // replaced vectors must not linger in the WAL
  return r;
}

int64_t Memory::remove(const std::vector<std::string>& ids, bool ignore_missing) {
  std::vector<int64_t> seqs;
  std::unordered_set<std::string> seen;
  for (const auto& id : ids) {
    if (!seen.insert(id).second) continue;
    auto it = seq_of_.find(id);
    if (it == seq_of_.end()) {
      if (ignore_missing) continue;
      throw Error("remove: no item with id '" + id + "' (nothing was removed)");
    }
    seqs.push_back(it->second);
  }
  if (seqs.empty()) return 0;
  std::vector<std::string> present;
  for (int64_t s : seqs) present.push_back(by_seq_.at(s).id);
  // Current counts are updated exactly (the removed items' votes go away, the
  // lists they were in are searched again). Stale counts would keep the removed
  // items' influence, so they are cleared in the same transaction.
  std::optional<CountsUpkeep> upkeep;
  if (counts_upkeep_) upkeep = CountsUpkeep::before_remove(*this, present);
  const bool clear_counts = !upkeep && meta("counts_generation", "-1") != "-1";
  const bool kth_table = has_table(*db_, "prune_kth");
  {
    Txn t(*db_);
    Stmt del(*db_, "DELETE FROM items WHERE seq=?");
    for (int64_t s : seqs) del.i64(1, s).run();
    if (kth_table) {
      Stmt dk(*db_, "DELETE FROM prune_kth WHERE seq=?");
      for (int64_t s : seqs) dk.i64(1, s).run();
    }
    if (clear_counts) {
      db_->exec("UPDATE items SET wrong=0, correct=0, reliability=1.0");
      if (kth_table) db_->exec("DELETE FROM prune_kth");
      set_meta("counts_generation", "-1");
      set_meta("counts_k", "0");
    }
    touch();
    t.commit();
  }
  index_->remove(static_cast<int64_t>(seqs.size()), seqs.data());
  for (int64_t s : seqs) {
    seq_of_.erase(by_seq_.at(s).id);
    by_seq_.erase(s);
  }
  if (clear_counts)
    for (auto& [s, it] : by_seq_) {
      it.wrong = it.correct = 0;
      it.reliability = 1.0;
      it.kth = -1;
    }
  if (upkeep) upkeep->after(*this);
  checkpoint();
  return static_cast<int64_t>(seqs.size());
}

int64_t Memory::remove_label(const std::string& label) {
  std::vector<std::string> ids;
  for (const auto& [s, it] : by_seq_)
    if (it.label == label) ids.push_back(it.id);
  if (ids.empty()) throw Error("remove: no item has label '" + label + "'");
  return remove(ids);
}

void Memory::checkpoint() const {
  int log = 0, ckpt = 0;
  int rc = sqlite3_wal_checkpoint_v2(db_->h, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
  if (rc != SQLITE_OK) db_->fail("WAL checkpoint (another process may be reading the memory)");
}

std::vector<std::vector<Neighbor>> Memory::search(const float* q, int64_t nq, int k,
                                                  const std::vector<std::string>& self_ids, int threads) const {
  if (k < 1) throw Error("search: k must be >= 1");
  if (!self_ids.empty() && static_cast<int64_t>(self_ids.size()) != nq)
    throw Error("search: " + std::to_string(nq) + " queries but " + std::to_string(self_ids.size()) + " query ids");
  std::vector<float> qn(q, q + nq * dim_);
  l2_normalize_rows(qn.data(), nq, dim_, "query");
  const bool loo = !self_ids.empty();
  const int kk = loo ? k + 1 : k;
  std::vector<float> dist(nq * kk);
  std::vector<int64_t> keys(nq * kk);
  if (nq > 0 && size() > 0) index_->search(nq, qn.data(), kk, dist.data(), keys.data(), threads);
  std::vector<std::vector<Neighbor>> out(nq);
  const int have = static_cast<int>(std::min<int64_t>(kk, size()));
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<Neighbor>& row = out[i];
    int drop = -1;
    if (loo) {
      for (int j = 0; j < have; ++j)
        if (by_seq_.at(keys[i * kk + j]).id == self_ids[i]) {
          drop = j;
          break;
        }
      // Not among them: drop the last, so every list has k entries (SPEC section 2).
      if (drop < 0 && have == kk) drop = have - 1;
    }
    for (int j = 0; j < have; ++j) {
      if (j == drop) continue;
      const ItemInfo& it = by_seq_.at(keys[i * kk + j]);
      row.push_back({it.seq, it.id, it.label, dist[i * kk + j]});
    }
  }
  return out;
}

bool Memory::contains(const std::string& id) const { return seq_of_.count(id) > 0; }

std::optional<ItemInfo> Memory::item(const std::string& id) const {
  auto it = seq_of_.find(id);
  if (it == seq_of_.end()) return std::nullopt;
  return by_seq_.at(it->second);
}

std::vector<ItemInfo> Memory::items() const {
  std::vector<ItemInfo> out;
  out.reserve(by_seq_.size());
  for (const auto& [s, it] : by_seq_) out.push_back(it);
  std::sort(out.begin(), out.end(), [](const ItemInfo& a, const ItemInfo& b) { return a.seq < b.seq; });
  return out;
}

std::vector<float> Memory::embedding(const std::string& id) const {
  auto it = seq_of_.find(id);
  if (it == seq_of_.end()) throw Error("no item with id '" + id + "'");
  std::vector<float> v(dim_);
  if (!index_->reconstruct(it->second, v.data())) throw Error("index lost item '" + id + "'");
  return v;
}

std::vector<std::string> Memory::labels() const {
  std::set<std::string> s;
  for (const auto& [k, it] : by_seq_) s.insert(it.label);
  return {s.begin(), s.end()};
}

void Memory::set_counts(const Counts& c, int k) {
  if (c.ids.size() != c.wrong.size() || c.ids.size() != c.correct.size() || (!c.kth.empty() && c.kth.size() != c.ids.size()))
    throw Error("set_counts: length mismatch");
  {
    Txn t(*db_);
    db_->exec("CREATE TABLE IF NOT EXISTS prune_kth(seq INTEGER PRIMARY KEY, kth REAL NOT NULL)");
    Stmt up(*db_, "UPDATE items SET wrong=?, correct=?, reliability=? WHERE id=?");
    Stmt kt(*db_, "INSERT OR REPLACE INTO prune_kth(seq, kth) VALUES(?,?)");
    for (size_t i = 0; i < c.ids.size(); ++i) {
      auto at = seq_of_.find(c.ids[i]);
      if (at == seq_of_.end()) throw Error("set_counts: no item with id '" + c.ids[i] + "'");
      double rho = reliability_weight(c.wrong[i]);
      up.i64(1, c.wrong[i]).i64(2, c.correct[i]).real(3, rho).text(4, c.ids[i]).run();
      if (!c.kth.empty()) kt.i64(1, at->second).real(2, c.kth[i]).run();
    }
    set_meta("counts_generation", meta("generation", "0"));
    set_meta("counts_k", std::to_string(k));
    t.commit();
  }
  for (size_t i = 0; i < c.ids.size(); ++i) {
    ItemInfo& it = by_seq_.at(seq_of_.at(c.ids[i]));
    it.wrong = c.wrong[i];
    it.correct = c.correct[i];
    it.reliability = reliability_weight(c.wrong[i]);
    if (!c.kth.empty()) it.kth = c.kth[i];
  }
}

bool Memory::counts_current() const {
  std::string cg = meta("counts_generation", "-1");
  return cg != "-1" && cg == meta("generation", "0");
}

void Memory::set_pruning(const std::string& mode, double threshold) {
  if (mode != "none" && mode != "hard" && mode != "soft")
    throw Error("pruning mode must be none, hard or soft, got '" + mode + "'");
  Txn t(*db_);
  set_meta("pruning_mode", mode);
  set_meta("pruning_threshold", std::to_string(threshold));
  t.commit();
  prune_mode_ = mode;
  prune_threshold_ = threshold;
}

void Memory::set_ood_threshold(double threshold, int k, double fpr) {
  if (k < 1 || !std::isfinite(threshold) || !(fpr >= 0 && fpr <= 1)) throw Error("OOD threshold: invalid k, threshold or rate");
  Txn t(*db_);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", threshold);  // round-trips exactly
  set_meta("ood_threshold", buf);
  set_meta("ood_k", std::to_string(k));
  std::snprintf(buf, sizeof buf, "%.17g", fpr);
  set_meta("ood_fpr", buf);
  set_meta("ood_generation", meta("generation", "0"));
  t.commit();
}

bool Memory::excluded(const ItemInfo& it) const {
  return prune_mode_ == "hard" && static_cast<double>(it.wrong) >= prune_threshold_;
}

double Memory::weight(const ItemInfo& it) const { return prune_mode_ == "soft" ? it.reliability : 1.0; }

void Memory::check_fingerprint(const std::string& fingerprint, const std::string& what) const {
  std::string mine = meta("fingerprint");
  if (mine.empty() || mine == fingerprint) return;
  throw Error(what + " was made with a different model than this memory (memory: " + meta("model_id") +
              ", fingerprint " + mine.substr(0, 16) + "...; given: " + fingerprint.substr(0, 16) + "...)");
}

}  // namespace vismem
