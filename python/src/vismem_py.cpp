// vismem_py.cpp: the Python module `vismem._vismem` (pybind11), the edge
// between Python and the library. The public Python API is python/vismem/__init__.py,
// which re-exports these and adds the pure-Python helpers.
//
// Conventions at this edge:
// - errors: vismem::Error becomes ValueError (bad input) or, for calls that
//   read or write files (open, create, encoders, images, neighbor files, the
//   memory's own file), OSError / FileNotFoundError; the message is the library's;
// - arrays in: float32 C-contiguous arrays are used in place (no copy); other
//   float dtypes or layouts are converted once;
// - arrays out: allocated by numpy and filled in place, or handed over from a
//   std::vector without a copy (embeddings);
// - the GIL is released around searching, adding, removing, pruning,
//   evaluating and embedding; a Memory handle is guarded by a reader/writer
//   lock, so Python threads may search one handle concurrently while writes
//   wait for exclusive access.
#include <cblas.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "aggregate.h"
#include "decision.h"
#include "encoder.h"
#include "error.h"
#include "eval.h"
#include "image.h"
#include "memory.h"
#include "neighbors.h"
#include "pipeline.h"
#include "preprocess.h"
#include "prune.h"
#include "server.h"
#include "textio.h"

namespace py = pybind11;
using namespace py::literals;

namespace vismem::python {

// ---------------------------------------------------------------- errors

// A failure about a file (the memory, a model, an image, a neighbor file): OSError.
struct FileError : Error {
  enum Kind { other, missing, exists };  // OSError, FileNotFoundError, FileExistsError
  FileError(const std::string& msg, Kind kind) : Error(msg), kind(kind) {}
  FileError(const std::string& msg, bool is_missing) : Error(msg), kind(is_missing ? missing : other) {}
  Kind kind;
};

bool path_exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

// Runs f; a vismem::Error it throws is about the file `path`.
template <class F>
auto file_op(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const FileError&) {
    throw;
  } catch (const Error& e) {
    throw FileError(e.what(), !path.empty() && !path_exists(path));
  }
}

using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using f64_array = py::array_t<double, py::array::c_style | py::array::forcecast>;

// A float array of one vector (d,) or rows (n, d), as float32 C order (no copy
// when it already is). single: it was 1-D.
struct Rows {
  f32_array a;
  int64_t n = 0;
  bool single = false;
  const float* data() const { return a.data(); }
};

Rows float_rows(const py::handle& obj, int dim, const std::string& what) {
  py::array raw = py::array::ensure(obj);
  if (!raw) throw Error(what + ": expected a float array of shape (n, " + std::to_string(dim) + ")");
  const char kind = raw.dtype().kind();
  if (kind != 'f') throw Error(what + ": expected a float array (float32 or float64), got dtype " + std::string(py::str(raw.dtype())));
  Rows r;
  if (raw.ndim() == 1) {
    r.single = true;
  } else if (raw.ndim() != 2) {
    throw Error(what + ": expected shape (n, " + std::to_string(dim) + ") or (" + std::to_string(dim) + ",), got " +
                std::to_string(raw.ndim()) + " dimensions");
  }
  r.a = f32_array::ensure(raw);
  if (!r.a) throw Error(what + ": cannot be converted to float32");
  const int64_t cols = r.single ? r.a.shape(0) : r.a.shape(1);
  r.n = r.single ? 1 : r.a.shape(0);
  if (cols != dim)
    throw Error(what + ": embeddings have " + std::to_string(cols) + " columns, the memory's dimension is " +
                std::to_string(dim));
  return r;
}

// A list of strings from any sequence of str (list, tuple, numpy str/object array); a
// single str is a list of one.
std::vector<std::string> string_list(const py::handle& obj, const std::string& what) {
  if (py::isinstance<py::str>(obj)) return {obj.cast<std::string>()};
  std::vector<std::string> out;
  if (!py::isinstance<py::iterable>(obj)) throw Error(what + ": expected a sequence of str");
  for (auto item : obj) {
    if (!py::isinstance<py::str>(item))
      throw Error(what + ": expected str items, got " + std::string(py::str(py::type::of(item).attr("__name__"))));
    out.push_back(item.cast<std::string>());
  }
  return out;
}

// nlohmann JSON to Python objects (doubles keep their bits).
template <class J>
py::object to_python(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.template get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.template get<double>());
    case nlohmann::json::value_t::string: return py::str(j.template get_ref<const std::string&>());
    case nlohmann::json::value_t::array: {
      py::list l;
      for (const auto& v : j) l.append(to_python(v));
      return std::move(l);
    }
    case nlohmann::json::value_t::object: {
      py::dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d[py::str(it.key())] = to_python(it.value());
      return std::move(d);
    }
    default: return py::none();
  }
}

// An (n, d) float32 array that owns a std::vector's buffer (no copy).
py::array_t<float> adopt(std::vector<float>&& v, int64_t n, int64_t d) {
  auto* heap = new std::vector<float>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>({n, d}, heap->data(), owner);
}

// An (n, k) numpy object array filled with Python str made by make(i, j).
template <class F>
py::array string_array(int64_t n, int64_t k, F&& make) {
  // numpy allocates object arrays zeroed (NULL items) and treats NULL as None; every item is set below.
  static const auto* object_dtype = new py::dtype("O");  // never freed: no Python call after the interpreter ends
  py::array out(*object_dtype, std::vector<py::ssize_t>{n, k});
  auto** p = static_cast<PyObject**>(out.mutable_data());
  for (int64_t i = 0; i < n * k; ++i) {
    PyObject* s = make(i / std::max<int64_t>(k, 1), i % std::max<int64_t>(k, 1));
    if (!s) throw py::error_already_set();
    Py_XDECREF(p[i]);
    p[i] = s;
  }
  return out;
}

PyObject* new_str(const std::string& s) { return PyUnicode_FromStringAndSize(s.data(), static_cast<Py_ssize_t>(s.size())); }

AddMode parse_mode(const std::string& m) {
  if (m == "strict") return AddMode::strict;
  if (m == "upsert") return AddMode::upsert;
  if (m == "skip_existing") return AddMode::skip_existing;
  throw Error("add: mode must be 'strict', 'upsert' or 'skip_existing', got '" + m + "'");
}

// ---------------------------------------------------------------- Memory

// A file's identity and state: any write by any process changes it.
struct Stamp {
  int64_t ino = 0, size = -1, mtime_ns = 0;
  bool operator==(const Stamp&) const = default;
};
Stamp stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_ino), static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

// Takes a lock with the GIL released: a thread holding a Memory lock may need
// the GIL (to finish its call), so no thread may wait for the lock holding it.
template <class Lock>
void lock_without_gil(Lock& lock) {
  if (PyGILState_Check()) {
    py::gil_scoped_release nogil;
    lock.lock();
  } else {
    lock.lock();
  }
}

class PyMemory {
 public:
  explicit PyMemory(Memory m) : mem_(std::make_unique<Memory>(std::move(m))) {
    path_ = mem_->path();
    stamps_ = stamps();
  }

  // Shared (read) access; reopens first if another process changed the file.
  template <class F>
  auto read(F&& f) {
    refresh_if_changed(false);
    std::shared_lock lock(mu_, std::defer_lock);
    lock_without_gil(lock);
    return f(get());
  }
  // Exclusive (write) access; the file's new state is this handle's own.
  template <class F>
  auto write(F&& f) {
    refresh_if_changed(false);
    std::unique_lock lock(mu_, std::defer_lock);
    lock_without_gil(lock);
    struct Restamp {
      PyMemory* self;
      ~Restamp() {
        if (self->mem_) self->stamps_ = self->stamps();
      }
    } restamp{this};
    return f(get());
  }

  // Reopen when the files changed since this handle last saw them (force: always).
  void refresh_if_changed(bool force) {
    {
      std::shared_lock lock(mu_, std::defer_lock);
      lock_without_gil(lock);
      get();
      if (!force && stamps() == stamps_) return;
    }
    std::unique_lock lock(mu_, std::defer_lock);
    lock_without_gil(lock);
    get();
    auto now = stamps();
    if (!force && now == stamps_) return;
    std::string path = path_;
    std::optional<py::gil_scoped_release> nogil;
    if (PyGILState_Check()) nogil.emplace();
    *mem_ = file_op(path, [&] { return Memory::open(path); });
    stamps_ = now;
  }

  void close() {
    std::unique_lock lock(mu_, std::defer_lock);
    lock_without_gil(lock);
    mem_.reset();
  }
  bool closed() const { return !mem_; }
  const std::string& path() const { return path_; }

 private:
  Memory& get() const {
    if (!mem_) throw Error(path_ + ": memory is closed");
    return *mem_;
  }
  std::pair<Stamp, Stamp> stamps() const { return {stamp_of(path_), stamp_of(path_ + "-wal")}; }

  std::unique_ptr<Memory> mem_;
  std::string path_;
  std::pair<Stamp, Stamp> stamps_;
  mutable std::shared_mutex mu_;
};

// Neighbors of nq queries, each list k long, ascending distance.
struct PySearchResult {
  std::vector<std::vector<Neighbor>> lists;
  int64_t k = 0;
  std::shared_ptr<PyMemory> memory;
  py::object distances_, ids_, labels_, seq_;  // built on first access

  int64_t nq() const { return static_cast<int64_t>(lists.size()); }

  py::object distances() {
    if (!distances_) {
      py::array_t<float> a({nq(), k});
      float* p = a.mutable_data();
      for (int64_t i = 0; i < nq(); ++i)
        for (int64_t j = 0; j < k; ++j) p[i * k + j] = lists[i][j].distance;
      distances_ = a;
    }
    return distances_;
  }
  py::object seq() {
    if (!seq_) {
      py::array_t<int64_t> a({nq(), k});
      int64_t* p = a.mutable_data();
      for (int64_t i = 0; i < nq(); ++i)
        for (int64_t j = 0; j < k; ++j) p[i * k + j] = lists[i][j].seq;
      seq_ = a;
    }
    return seq_;
  }
  py::object ids() {
    if (!ids_) ids_ = string_array(nq(), k, [&](int64_t i, int64_t j) { return new_str(lists[i][j].id); });
    return ids_;
  }
  py::object labels() {
    if (!labels_) {
      // Labels repeat: one Python str per distinct label.
      std::unordered_map<std::string, py::object> made;
      labels_ = string_array(nq(), k, [&](int64_t i, int64_t j) -> PyObject* {
        const std::string& l = lists[i][j].label;
        auto it = made.find(l);
        if (it == made.end()) it = made.emplace(l, py::reinterpret_steal<py::object>(new_str(l))).first;
        return it->second.inc_ref().ptr();
      });
    }
    return labels_;
  }

  std::vector<QueryNeighbors> query_neighbors(const py::object& query_ids, const py::object& true_labels,
                                              const py::object& featurizer) const {
    std::vector<std::string> qids, truths;
    if (!query_ids.is_none()) qids = string_list(query_ids, "query_ids");
    if (!true_labels.is_none()) truths = string_list(true_labels, "true_labels");
    if (!qids.empty() && static_cast<int64_t>(qids.size()) != nq())
      throw Error("query_ids: " + std::to_string(qids.size()) + " ids for " + std::to_string(nq()) + " queries");
    if (!truths.empty() && static_cast<int64_t>(truths.size()) != nq())
      throw Error("true_labels: " + std::to_string(truths.size()) + " labels for " + std::to_string(nq()) + " queries");
    std::string feat;
    if (!featurizer.is_none()) feat = featurizer.cast<std::string>();
    else if (memory && !memory->closed()) feat = memory->read([](Memory& m) { return m.info().model_id; });
    return to_query_neighbors(lists, qids, truths, feat);
  }
};

PySearchResult make_result(std::vector<std::vector<Neighbor>>&& lists, std::shared_ptr<PyMemory> mem) {
  PySearchResult r;
  r.k = lists.empty() ? 0 : static_cast<int64_t>(lists[0].size());
  for (const auto& l : lists)
    if (static_cast<int64_t>(l.size()) != r.k) throw Error("search: neighbor lists of different lengths");
  r.lists = std::move(lists);
  r.memory = std::move(mem);
  return r;
}

// ---------------------------------------------------------------- Encoder

class PyEncoder {
 public:
  explicit PyEncoder(std::shared_ptr<Encoder> e, std::string path) : enc_(std::move(e)), path_(std::move(path)) {}
  const Encoder& get() const { return *enc_; }
  const std::string& path() const { return path_; }

  py::array_t<float> embed(const py::object& inputs, int batch, int threads, bool normalize) const {
    if (batch < 1) throw Error("embed: batch must be >= 1");
    const int d = enc_->dim();
    if (py::isinstance<py::array>(inputs)) return embed_array(py::reinterpret_borrow<py::array>(inputs), threads, normalize);
    std::vector<std::string> paths;
    if (py::isinstance<py::str>(inputs) || py::isinstance(inputs, py::module_::import("os").attr("PathLike")))
      paths.push_back(inputs.cast<std::filesystem::path>().string());
    else
      for (auto item : inputs) paths.push_back(item.cast<std::filesystem::path>().string());
    EmbedOptions eo;
    eo.batch = batch;
    eo.threads = threads;
    eo.normalize = normalize;
    EmbedResult r;
    {
      py::gil_scoped_release nogil;
      r = embed_images(*enc_, paths, eo);
    }
    if (!r.failed.empty()) {
      // Rows must line up with the inputs: an unreadable image is an error (as `vismem embed`).
      std::string msg;
      for (auto& [i, m] : r.failed) msg += (msg.empty() ? " " : "; ") + m;  // m names the file
      bool missing = false;
      for (auto& [i, m] : r.failed) missing = missing || !path_exists(paths[i]);
      throw FileError(std::to_string(r.failed.size()) + " image(s) could not be read:" + msg, missing && r.failed.size() == 1);
    }
    const int64_t n = static_cast<int64_t>(r.ok.size());
    return adopt(std::move(r.embeddings), n, d);
  }

 private:
  // uint8 (N,S,S,3) / (S,S,3) RGB at the model's size, normalized with its
  // preset; or float (N,3,H,W) pixels already normalized (used in place).
  py::array_t<float> embed_array(py::array a, int threads, bool normalize) const {
    const int S = enc_->input_size(), d = enc_->dim();
    const PreprocessConfig& pc = enc_->preprocess();
    auto shape_str = [&] {
      std::string s = "(";
      for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
      return s + (a.ndim() == 1 ? ",)" : ")");
    };
    f32_array px;
    int64_t n = 0;
    int h = S, w = S;
    std::vector<float> converted;
    const float* pixels = nullptr;
    if (a.dtype().kind() == 'u' && a.itemsize() == 1) {
      std::vector<int64_t> sh(a.shape(), a.shape() + a.ndim());
      if (sh.size() == 3) sh.insert(sh.begin(), 1);
      if (sh.size() != 4 || sh[1] != S || sh[2] != S || sh[3] != 3)
        throw Error("embed: uint8 input must be (N," + std::to_string(S) + "," + std::to_string(S) + ",3) RGB, got " +
                    shape_str());
      n = sh[0];
      auto u8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a);
      const uint8_t* src = u8.data();
      converted.resize(static_cast<size_t>(n) * 3 * S * S);
      {
        py::gil_scoped_release nogil;
        for (int64_t i = 0; i < n; ++i) {
          Image img;
          img.width = img.height = S;
          img.rgb.assign(src + i * S * S * 3, src + (i + 1) * S * S * 3);
          normalize_to_chw(img, pc, converted.data() + i * 3 * S * S);
        }
      }
      pixels = converted.data();
    } else if (a.dtype().kind() == 'f') {
      if (a.ndim() != 4 || a.shape(1) != 3)
        throw Error("embed: float input must be (N,3,H,W) (" + std::to_string(S) + "x" + std::to_string(S) +
                    " for this model), got " + shape_str());
      px = f32_array::ensure(a);
      n = a.shape(0);
      h = static_cast<int>(a.shape(2));
      w = static_cast<int>(a.shape(3));
      pixels = px.data();
    } else {
      throw Error("embed: input must be uint8 (N,H,W,3) or float32 (N,3,H,W), got dtype " + std::string(py::str(a.dtype())));
    }
    py::array_t<float> out({n, static_cast<int64_t>(d)});
    float* o = out.mutable_data();
    if (n > 0) {
      py::gil_scoped_release nogil;
      enc_->forward_size(pixels, static_cast<int>(n), h, w, o, threads);
      if (normalize) l2_normalize_rows(o, n, d, "encoder output");
    }
    return out;
  }

  std::shared_ptr<Encoder> enc_;
  std::string path_;
};

// precision: "f32" / "int8"; None: VISMEM_PRECISION (default f32).
Precision precision_arg(const std::optional<std::string>& precision) {
  return precision ? parse_precision(*precision) : precision_from_env();
}

PyEncoder load_encoder_at(const std::string& path, Precision precision) {
  std::shared_ptr<Encoder> e;
  {
    py::gil_scoped_release nogil;
    e = file_op(path, [&] { return std::shared_ptr<Encoder>(load_encoder(path, precision)); });
  }
  return PyEncoder(std::move(e), path);
}

// ---------------------------------------------------------------- module

EvalOptions eval_options(int k, const py::object& exclude, const py::object& reliability, bool normalize,
                         const py::object& rules) {
  if (k < 0) throw Error("k must be >= 0 (0: the lists' length)");
  EvalOptions opt;
  opt.k = k;
  opt.normalize_distances = normalize;
  if (!exclude.is_none())
    for (auto& id : string_list(exclude, "exclude")) opt.exclude_ids.insert(id);
  if (!reliability.is_none()) {
    for (auto item : reliability.cast<py::dict>()) opt.reliability[item.first.cast<std::string>()] = item.second.cast<double>();
  }
  if (!rules.is_none()) {
    opt.votes.clear();
    for (auto& r : string_list(rules, "rules")) opt.votes.push_back(parse_vote(r));
  }
  return opt;
}

// read_neighbor_file, with an unreadable file an OSError and invalid content a ValueError.
std::vector<QueryNeighbors> neighbor_file(const std::string& path) {
  std::string text = file_op(path, [&] { return read_text_file(path); });
  return parse_neighbor_json(text, "neighbor file " + path);
}

py::object evaluate_queries(const std::vector<QueryNeighbors>& qs, const EvalOptions& opt) {
  EvalResult r;
  {
    py::gil_scoped_release nogil;
    r = evaluate(qs, opt);
  }
  return to_python(eval_json(r));
}

}  // namespace vismem::python

using namespace vismem;
using namespace vismem::python;

PYBIND11_MODULE(_vismem, m) {
  m.doc() = "vismem's compiled core (use the `vismem` package, which re-exports it).";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FileError& e) {
      PyErr_SetString(e.kind == FileError::missing  ? PyExc_FileNotFoundError
                      : e.kind == FileError::exists ? PyExc_FileExistsError
                                                    : PyExc_OSError,
                      e.what());
    } catch (const Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::filesystem::filesystem_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });

  // ---- SearchResult
  py::class_<PySearchResult>(m, "SearchResult", R"doc(
Neighbors of nq queries, k per query, in ascending distance (ties: the item
added earlier first). Arrays are built on first access and cached.

Attributes:
  distances: float32 (nq, k), cosine distance 1 - <q, m>, in [0, 2].
  ids:       object (nq, k) of str, the neighbors' item ids.
  labels:    object (nq, k) of str, the neighbors' labels.
  seq:       int64 (nq, k), the neighbors' insertion order (smaller: added earlier).
  k:         neighbors per query (min(k asked, items in memory); one less with self_ids
             when k reached the memory's size).
)doc")
      .def_property_readonly("distances", &PySearchResult::distances, "float32 (nq, k) cosine distances, ascending per row")
      .def_property_readonly("ids", &PySearchResult::ids, "object (nq, k) array of item ids (str)")
      .def_property_readonly("labels", &PySearchResult::labels, "object (nq, k) array of labels (str)")
      .def_property_readonly("seq", &PySearchResult::seq, "int64 (nq, k) insertion order of each neighbor")
      .def_property_readonly("k", [](const PySearchResult& r) { return r.k; }, "neighbors per query")
      .def_property_readonly("shape", [](const PySearchResult& r) { return py::make_tuple(r.nq(), r.k); }, "(nq, k)")
      .def("__len__", &PySearchResult::nq, "number of queries")
      .def("__getitem__",
           [](const PySearchResult& r, int64_t i) {
             if (i < 0) i += r.nq();
             if (i < 0 || i >= r.nq()) throw py::index_error("query index out of range");
             py::list l;
             for (const auto& n : r.lists[i]) l.append(py::make_tuple(n.id, n.label, n.distance, n.seq));
             return l;
           },
           "i"_a, "Query i's neighbors as a list of (id, label, distance, seq) tuples.")
      .def("to_dict",
           [](const PySearchResult& r, const py::object& query_ids, const py::object& true_labels, const py::object& featurizer) {
             auto qs = r.query_neighbors(query_ids, true_labels, featurizer);
             return py::module_::import("json").attr("loads")(neighbor_json(qs));
           },
           "query_ids"_a = py::none(), "true_labels"_a = py::none(), "featurizer"_a = py::none(),
           R"doc(
The neighbor-file dict (SPEC section 7), keyed by query id:
{qid: {"featurizer", "image_id", "image_class", "neighbor_image_ids",
"neighbor_classes", "neighbor_distances"}}; the same content `vismem search --out` writes.

query_ids:   nq str (default "q0", "q1", ...).
true_labels: nq str written as image_class (default: none).
featurizer:  default: the memory's model id.
Raises ValueError when a list has the wrong length.
)doc")
      .def("write",
           [](const PySearchResult& r, const std::filesystem::path& path, const py::object& query_ids,
              const py::object& true_labels, const py::object& featurizer) {
             auto qs = r.query_neighbors(query_ids, true_labels, featurizer);
             file_op(path.string(), [&] { write_neighbor_file(path.string(), qs); });
           },
           "path"_a, "query_ids"_a = py::none(), "true_labels"_a = py::none(), "featurizer"_a = py::none(),
           "Writes the neighbor file (JSON, SPEC section 7), byte for byte what `vismem search --out` writes. "
           "Raises OSError when the file cannot be written.");

  // ---- Memory
  py::class_<PyMemory, std::shared_ptr<PyMemory>>(m, "Memory", R"doc(
A visual memory: (id, label, embedding) items in one SQLite file plus an exact
index. Create or open one with Memory.create / Memory.open; use it as a context
manager to close it. Embeddings are float arrays (n, dim) (float32 is used in
place; other float dtypes are converted); stored L2-normalized.

A handle notices writes by other processes (the file's size/mtime change) and
reloads before its next call. Searches from several Python threads run
concurrently (the GIL is released); writes wait for exclusive access.
Errors: ValueError for bad input, OSError for file problems (FileNotFoundError
when the memory does not exist); messages are the CLI's.
)doc")
      .def_static(
          "create",
          [](const std::filesystem::path& path, std::optional<int> dim, std::optional<std::filesystem::path> model,
             std::optional<std::string> model_id, std::optional<std::string> index, int64_t index_fold_rows,
             std::optional<std::string> precision) {
            Memory::CreateOptions o;
            o.dim = dim.value_or(0);
            o.model_id = model_id.value_or("");
            o.index = index.value_or("");
            o.index_fold_rows = index_fold_rows;
            if (model) {
              PyEncoder enc = load_encoder_at(model->string(), precision_arg(precision));
              if (dim && *dim != enc.get().dim())
                throw Error("dim " + std::to_string(*dim) + " but the model makes " + std::to_string(enc.get().dim()) +
                            "-d embeddings");
              o.dim = enc.get().dim();
              o.fingerprint = enc.get().fingerprint();
              o.model_path = std::filesystem::absolute(*model).string();
              o.model_precision = precision_name(enc.get().precision());
              if (o.model_id.empty()) o.model_id = enc.get().name();
            } else if (precision) {
              throw Error("precision needs model (embeddings from anywhere carry no precision)");
            } else if (o.dim <= 0) {
              throw Error("give dim=D (embeddings from anywhere) or model=PATH (an encoder)");
            }
            if (o.dim > 65536) throw Error("memory dimension must be in 1..65536, got " + std::to_string(o.dim));
            std::string p = path.string();
            try {
              return std::make_shared<PyMemory>(file_op("", [&] { return Memory::create(p, o); }));
            } catch (const FileError& e) {
              throw FileError(e.what(), path_exists(p) ? FileError::exists : FileError::other);
            }
          },
          "path"_a, "dim"_a = py::none(), "model"_a = py::none(), "model_id"_a = py::none(), "index"_a = py::none(),
          "index_fold_rows"_a = 0, "precision"_a = py::none(),
          R"doc(
Creates an empty memory file.

path:     the file to create (must not exist).
dim:      embedding length (for embeddings from anywhere), 1..65536.
model:    an encoder (.tflite file or HF checkpoint folder): binds the memory to it
          (its sha256 + preprocessing are recorded; dim comes from it).
model_id: a name for the embedding model (default: the encoder's name).
index:    approximate search: a FAISS index-factory string ("IVF1024,PQ64", "HNSW32";
          None/"Flat": exact only). Built (trained on a sample) once the memory is
          large enough; answers carry exact distances (candidates are re-scored).
index_fold_rows: rows added past the index before they are folded in (0: 65536).
precision: the encoder's arithmetic, "f32" or "int8" (int8 GEMMs: faster, embeddings
          at cosine ~0.999 to float32's), recorded so later adds and queries use it
          (None: VISMEM_PRECISION, default "f32"). Needs model.
Raises ValueError without dim or model, or when they disagree; OSError when the
file exists or cannot be written, or the model cannot be loaded.
)doc")
      .def_static(
          "open",
          [](const std::filesystem::path& path) {
            std::string p = path.string();
            return std::make_shared<PyMemory>(file_op(p, [&] { return Memory::open(p); }));
          },
          "path"_a,
          "Opens a memory file. Raises FileNotFoundError when it does not exist, OSError when it is not a "
          "vismem memory or is unreadable.")
      .def("close", &PyMemory::close, "Closes the file; later calls raise ValueError.")
      .def("__enter__", [](std::shared_ptr<PyMemory> self) { return self; })
      .def("__exit__", [](PyMemory& self, py::args) { self.close(); })
      .def_property_readonly("closed", &PyMemory::closed, "True after close()")
      .def_property_readonly("path", &PyMemory::path, "the memory file's path")
      .def_property_readonly("dim", [](PyMemory& self) { return self.read([](Memory& m) { return m.dim(); }); },
                             "embedding length")
      .def("__len__", [](PyMemory& self) { return self.read([](Memory& m) { return m.size(); }); }, "number of items")
      .def("__contains__",
           [](PyMemory& self, const std::string& id) { return self.read([&](Memory& m) { return m.contains(id); }); },
           "id"_a, "True if an item has this id")
      .def("__repr__",
           [](PyMemory& self) {
             if (self.closed()) return "<vismem.Memory " + self.path() + " (closed)>";
             return self.read([&](Memory& m) {
               return "<vismem.Memory " + self.path() + ": " + std::to_string(m.size()) + " items, dim " +
                      std::to_string(m.dim()) + ">";
             });
           })
      .def_property_readonly(
          "info", [](PyMemory& self) { return to_python(self.read([](Memory& m) { return memory_info_json(m.info()); })); },
          R"doc(
The memory's description, the dict `vismem info --json` prints: path, dim, items,
labels (count), model_id, fingerprint, model_path, model_precision, format_version, created_at,
updated_at, generation (bumped by every write), pruning_mode, pruning_threshold,
counts_k, counts_stale, counts_computed, and "ood" when a threshold was fitted.
)doc")
      .def(
          "index_info",
          [](PyMemory& self) -> py::object {
            auto i = self.read([](Memory& m) { return m.index_info(true); });
            if (!i) return py::none();
            py::dict d;
            d["factory"] = i->factory;
            d["kind"] = i->kind;
            d["built"] = i->built;
            d["file"] = i->file;
            d["train_min"] = i->train_min;
            d["fold_rows"] = i->fold_rows;
            d["indexed_rows"] = i->indexed_rows;
            d["tail_rows"] = i->tail_rows;
            d["entries"] = i->entries;
            d["holes"] = i->holes;
            d["nlist"] = i->nlist;
            d["file_bytes"] = i->file_bytes;
            d["bytes_per_item"] = i->bytes_per_item;
            d["lossy"] = i->lossy;
            d["nprobe"] = i->nprobe;
            d["ef"] = i->ef;
            d["k_factor"] = i->k_factor;
            d["note"] = i->note;
            return d;
          },
          "The approximate index (the dict `vismem index info --json` prints), or None for exact search only.")
      .def(
          "set_index",
          [](PyMemory& self, const std::string& factory) {
            return self.write([&](Memory& m) { return m.set_index(factory); });
          },
          "factory"_a,
          "Sets the approximate index (a FAISS index-factory string; \"Flat\": none) and builds it when the memory "
          "is large enough. Returns whether it was built now. Raises ValueError for a string FAISS cannot build.")
      .def(
          "rebuild_index", [](PyMemory& self) { self.write([](Memory& m) { m.rebuild_index(); }); },
          "Builds the approximate index again from scratch (new training). Raises ValueError when too few items.")
      .def("refresh", [](PyMemory& self) { self.refresh_if_changed(true); },
           "Reloads the memory from its file now (calls do it by themselves when the file changed).")
      .def(
          "add",
          [](std::shared_ptr<PyMemory> self, const py::object& ids, const py::object& labels, const py::object& x,
             const std::string& mode) {
            auto id_list = string_list(ids, "ids");
            auto label_list = string_list(labels, "labels");
            AddMode am = parse_mode(mode);
            return self->write([&](Memory& mem) {
              Rows r = float_rows(x, mem.dim(), "x");
              if (static_cast<int64_t>(id_list.size()) != r.n)
                throw Error("add: " + std::to_string(id_list.size()) + " ids but x has " + std::to_string(r.n) + " rows");
              AddResult ar;
              {
                py::gil_scoped_release nogil;
                try {
                  ar = mem.add(id_list, label_list, r.data(), am);
                } catch (const Error& e) {
                  // Problems with the input name it ("add: ..." / "x: ..."); those naming the file are the file's.
                  std::string w = e.what();
                  if (w.rfind(mem.path() + ":", 0) == 0) throw FileError(w, false);
                  throw;
                }
              }
              return py::dict("added"_a = ar.added, "replaced"_a = ar.replaced, "skipped"_a = ar.skipped);
            });
          },
          "ids"_a, "labels"_a, "x"_a, "mode"_a = "strict",
          R"doc(
Adds n items in one transaction (all or nothing).

ids:    n unique non-empty str.
labels: n non-empty str.
x:      float (n, dim) (or (dim,) for one item), any norm, no NaN/Inf, no zero row;
        float32 C-contiguous arrays are read in place.
mode:   "strict" (an existing id is an error), "upsert" (replace it; it becomes
        the newest) or "skip_existing".
Returns {"added", "replaced", "skipped"} counts. Current pruning counts stay current.
Raises ValueError for bad input (nothing is written), OSError when the file cannot be written.
The GIL is released while writing.
)doc")
      .def(
          "search",
          [](std::shared_ptr<PyMemory> self, const py::object& q, int k, const py::object& self_ids, int threads,
             int nprobe, int ef, int k_factor, bool exact) {
            std::vector<std::string> sid;
            if (!self_ids.is_none()) sid = string_list(self_ids, "self_ids");
            if (nprobe < 0 || ef < 0 || k_factor < 0) throw Error("search: nprobe, ef and k_factor must be >= 0");
            const SearchParams sp{.exact = exact, .nprobe = nprobe, .ef = ef, .k_factor = k_factor};
            auto lists = self->read([&](Memory& mem) {
              Rows r = float_rows(q, mem.dim(), "q");
              py::gil_scoped_release nogil;
              return mem.search(r.data(), r.n, k, sid, threads, &sp);
            });
            return make_result(std::move(lists), self);
          },
          "q"_a, "k"_a = 100, "self_ids"_a = py::none(), "threads"_a = 0, "nprobe"_a = 0, "ef"_a = 0,
          "k_factor"_a = 0, "exact"_a = false,
          R"doc(
The k nearest items of each query (exact search, cosine distance).

q:        float (nq, dim) or (dim,), any norm (normalized here); float32 C-contiguous is read in place.
k:        neighbors per query (>= 1); lists have min(k, len(memory)) entries.
self_ids: nq str or None: leave-one-out (SPEC section 2): a query that is the item with
          this id is not its own neighbor (k+1 searched, its id dropped, else the last).
threads:  worker threads (0: all cores).
nprobe, ef, k_factor: approximate index settings (0: the memory's defaults, `vismem index tune`):
          IVF lists visited, HNSW efSearch, candidates per neighbor re-scored exactly.
exact:    scan every vector even when the memory has an approximate index.
Returns a SearchResult (distances float32 (nq, k), ids, labels, seq). The GIL is released.
Raises ValueError for a wrong shape/dtype, k < 1 or a self_ids length mismatch.
)doc")
      .def(
          "remove",
          [](PyMemory& self, const py::object& ids, bool ignore_missing) {
            auto list = string_list(ids, "ids");
            return self.write([&](Memory& mem) {
              py::gil_scoped_release nogil;
              return mem.remove(list, ignore_missing);
            });
          },
          "ids"_a, "ignore_missing"_a = false,
          R"doc(
Removes items for good (unlearning, one transaction): gone from the index, their
bytes zeroed in the file (secure_delete) and the WAL truncated.
ids: str or sequence of str. Returns the number removed.
Raises ValueError for an unknown id (nothing removed) unless ignore_missing.
)doc")
      .def(
          "remove_label",
          [](PyMemory& self, const std::string& label) {
            return self.write([&](Memory& mem) {
              py::gil_scoped_release nogil;
              return mem.remove_label(label);
            });
          },
          "label"_a, "Removes every item with this label (as remove). Returns the count; ValueError if none has it.")
      .def(
          "labels", [](PyMemory& self) { return self.read([](Memory& m) { return m.labels(); }); },
          "The distinct labels, sorted (list of str).")
      .def(
          "item",
          [](PyMemory& self, const std::string& id) -> py::object {
            auto it = self.read([&](Memory& m) { return m.item(id); });
            if (!it) return py::none();
            return py::dict("seq"_a = it->seq, "id"_a = it->id, "label"_a = it->label, "reliability"_a = it->reliability,
                            "wrong"_a = it->wrong, "correct"_a = it->correct);
          },
          "id"_a,
          "One item's record: {seq, id, label, reliability, wrong, correct}, or None.")
      .def(
          "items",
          [](PyMemory& self) {
            auto items = self.read([](Memory& m) { return m.items(); });
            const auto n = static_cast<int64_t>(items.size());
            py::array_t<int64_t> seq(n), wrong(n), correct(n);
            py::array_t<double> rel(n);
            py::list ids, labels;
            for (int64_t i = 0; i < n; ++i) {
              seq.mutable_at(i) = items[i].seq;
              wrong.mutable_at(i) = items[i].wrong;
              correct.mutable_at(i) = items[i].correct;
              rel.mutable_at(i) = items[i].reliability;
              ids.append(items[i].id);
              labels.append(items[i].label);
            }
            return py::dict("ids"_a = ids, "labels"_a = labels, "seq"_a = seq, "reliability"_a = rel, "wrong"_a = wrong,
                            "correct"_a = correct);
          },
          R"doc(
Every item in insertion order, as columns: {"ids": list of str, "labels": list of str,
"seq": int64 (n,), "reliability": float64 (n,) (soft-pruning weight), "wrong": int64 (n,),
"correct": int64 (n,)} (pruning counts, 0 until computed).
)doc")
      .def(
          "embedding",
          [](PyMemory& self, const std::string& id) {
            std::vector<float> v = self.read([&](Memory& m) { return m.embedding(id); });
            const int64_t d = static_cast<int64_t>(v.size());
            return adopt(std::move(v), 1, d).attr("reshape")(d);
          },
          "id"_a, "The stored (L2-normalized) embedding: float32 (dim,). ValueError for an unknown id.")
      .def(
          "classify",
          [](std::shared_ptr<PyMemory> self, const py::object& q, int k, const std::string& vote, std::optional<int> ood_k_arg,
             std::optional<double> ood_threshold_arg, bool abstain, const py::object& query_ids, int threads) -> py::object {
            Vote v = parse_vote(vote);
            if (k < 1) throw Error("k must be >= 1");
            if (ood_k_arg && *ood_k_arg < 1) throw Error("ood_k must be >= 1");
            std::vector<std::string> qids;
            if (!query_ids.is_none()) qids = string_list(query_ids, "query_ids");
            bool single = false;
            nlohmann::json out = self->read([&](Memory& mem) {
              if (mem.size() == 0) throw Error(mem.path() + " is empty: add items first");
              Rows r = float_rows(q, mem.dim(), "q");
              single = r.single;
              if (!qids.empty() && static_cast<int64_t>(qids.size()) != r.n)
                throw Error("query_ids: " + std::to_string(qids.size()) + " ids for " + std::to_string(r.n) + " queries");
              py::gil_scoped_release nogil;
              // As `vismem classify --json`.
              const MemoryInfo info = mem.info();
              double ood_threshold = ood_threshold_arg.value_or(-1);
              int ood_k = ood_k_arg ? *ood_k_arg : info.ood_k ? info.ood_k : 100;
              if (abstain && ood_threshold < 0) {
                if (info.ood_k == 0) throw Error("--abstain needs a threshold: run `vismem ood-fit` or give --ood-threshold");
                if (ood_k_arg && *ood_k_arg != info.ood_k)
                  throw Error("the stored OOD threshold was fitted with k=" + std::to_string(info.ood_k) +
                              ", not --ood-k " + std::to_string(*ood_k_arg));
                ood_threshold = info.ood_threshold;
              }
              ood_k = static_cast<int>(std::min<int64_t>(ood_k, mem.size()));
              auto res = mem.search(r.data(), r.n, std::max(k, ood_k), {}, threads);
              nlohmann::json arr = nlohmann::json::array();
              for (int64_t i = 0; i < r.n; ++i) {
                QueryDecision qd = decide_query(mem, res[i], v, k, ood_k);
                std::string qid = qids.empty() ? "q" + std::to_string(i) : qids[i];
                nlohmann::json j = decision_json(qid, vote, qd);
                const bool abstained = abstain && qd.ood > ood_threshold;
                if (abstained) j["prediction"] = nullptr;
                if (ood_threshold >= 0) {
                  j["ood_threshold"] = ood_threshold;
                  j["out_of_distribution"] = qd.ood > ood_threshold;
                }
                if (abstain) j["abstained"] = abstained;
                arr.push_back(std::move(j));
              }
              return arr;
            });
            if (single) return to_python(out[0]);
            return to_python(out);
          },
          "q"_a, "k"_a = 20, "vote"_a = "rank", "ood_k"_a = py::none(), "ood_threshold"_a = py::none(),
          "abstain"_a = false, "query_ids"_a = py::none(), "threads"_a = 0,
          R"doc(
Classifies queries by the vote of their k nearest items (the memory's pruning applied).

q:      float (nq, dim) -> a list of nq dicts; (dim,) -> one dict.
k:      neighbors that vote (>= 1). vote: "plurality", "distance", "softmax" or "rank".
ood_k:  neighbors for the OOD score (median distance; default: the fitted k, else 100).
ood_threshold / abstain: as `vismem classify --ood-threshold / --abstain`; with abstain
        an out-of-distribution query gets prediction None.
query_ids: nq str (default "q0", ...).
Each dict is what `vismem classify --json` prints: query, prediction, vote, k,
vote_share, score_share, entropy, ood_score, ood_k, scores [{label, score}],
neighbors [{rank, id, label, distance, weight}].
Raises ValueError for an empty memory, a wrong shape, an unknown vote or k < 1.
)doc")
      .def(
          "evaluate",
          [](std::shared_ptr<PyMemory> self, const py::object& q, const py::object& labels, int k, const py::object& ids,
             bool exclude_self, const std::string& pruning, bool normalize_distances, int threads) {
            if (k < 1) throw Error("k must be >= 1");
            if (pruning != "memory" && pruning != "none") throw Error("pruning must be 'memory' or 'none', got '" + pruning + "'");
            auto truths = string_list(labels, "labels");
            std::vector<std::string> qids;
            if (!ids.is_none()) qids = string_list(ids, "ids");
            if (exclude_self && qids.empty()) throw Error("--exclude-self needs --ids");
            EvalOptions opt;
            opt.normalize_distances = normalize_distances;
            std::vector<QueryNeighbors> qs = self->read([&](Memory& mem) {
              Rows r = float_rows(q, mem.dim(), "q");
              if (static_cast<int64_t>(truths.size()) != r.n)
                throw Error("labels: " + std::to_string(truths.size()) + " labels for " + std::to_string(r.n) + " queries");
              if (!qids.empty() && static_cast<int64_t>(qids.size()) != r.n)
                throw Error("ids: " + std::to_string(qids.size()) + " ids for " + std::to_string(r.n) + " queries");
              py::gil_scoped_release nogil;
              // As `vismem eval MEM --embeddings Q --labels L --json`.
              auto res = mem.search(r.data(), r.n, k, exclude_self ? qids : std::vector<std::string>{}, threads);
              opt.k = static_cast<int>(std::min<int64_t>(k, mem.size()));
              if (pruning == "memory") apply_memory_pruning(mem, opt);
              return to_query_neighbors(res, qids, truths, mem.info().model_id);
            });
            return evaluate_queries(qs, opt);
          },
          "q"_a, "labels"_a, "k"_a = 100, "ids"_a = py::none(), "exclude_self"_a = false, "pruning"_a = "memory",
          "normalize_distances"_a = false, "threads"_a = 0,
          R"doc(
Accuracy@k of the four voting rules for labeled queries, k = 1..K.

q: float (nq, dim); labels: nq true labels (str); k: K (<= memory size is used);
ids / exclude_self: leave-one-out for queries that are memory items;
pruning: "memory" applies the memory's pruning mode, "none" ignores it;
normalize_distances: min-max over the whole set first (SPEC section 3).
Returns the dict `vismem eval --json` prints: {"queries": nq, "methods": {rule:
{"accuracy_at_k": [percent for k = 1..K], "best": percent, "best_k": k}}}.
)doc")
      .def(
          "prune",
          [](PyMemory& self, std::optional<int> k_arg, std::optional<std::string> mode, std::optional<double> threshold,
             bool recompute, int threads) {
            if (k_arg && *k_arg < 1) throw Error("k must be >= 1");
            if (mode && *mode != "none" && *mode != "hard" && *mode != "soft")
              throw Error("pruning mode must be none, hard or soft, got '" + *mode + "'");
            if (mode && *mode == "hard" && (!threshold || *threshold <= 0))
              throw Error("--mode hard needs --threshold T (> 0)");
            struct Out {
              int k = 0;
              bool recomputed = false;
              std::vector<ItemInfo> items;
              std::string mode;
              int64_t excluded = 0;
            };
            Out o = self.write([&](Memory& mem) {
              py::gil_scoped_release nogil;
              // As `vismem prune`.
              Out o;
              MemoryInfo info = mem.info();
              o.k = k_arg ? *k_arg : (info.counts_k ? info.counts_k : 100);
              bool current = info.counts_generation >= 0 && !info.counts_stale() && info.counts_k == o.k;
              o.recomputed = !current || recompute;
              // Counts and mode in one transaction (as `vismem prune`).
              const double t = mode && *mode == "hard" ? *threshold : 0;
              if (o.recomputed) mem.set_counts(compute_prune_counts(mem, o.k, threads), o.k, mode ? *mode : "", t);
              else if (mode) mem.set_pruning(*mode, t);
              o.items = mem.items();
              for (const auto& it : o.items) o.excluded += mem.excluded(it);
              o.mode = mem.pruning_mode();
              return o;
            });
            const auto n = static_cast<int64_t>(o.items.size());
            py::array_t<int64_t> wrong(n), correct(n);
            py::list ids;
            for (int64_t i = 0; i < n; ++i) {
              wrong.mutable_at(i) = o.items[i].wrong;
              correct.mutable_at(i) = o.items[i].correct;
              ids.append(o.items[i].id);
            }
            return py::dict("k"_a = o.k, "recomputed"_a = o.recomputed, "ids"_a = ids, "wrong"_a = wrong,
                            "correct"_a = correct, "mode"_a = o.mode, "excluded"_a = o.excluded);
          },
          "k"_a = py::none(), "mode"_a = py::none(), "threshold"_a = py::none(), "recompute"_a = false, "threads"_a = 0,
          R"doc(
Leave-one-out pruning counts (SPEC section 4) and the pruning mode, as `vismem prune`.

k:         neighbors per self-query (default: the stored counts' k, else 100); counts
           are recomputed unless current for this k (or recompute=True).
mode:      None (unchanged), "none", "hard" (exclude items with wrong >= threshold) or
           "soft" (weight 1.75 / (1 + wrong)); classify/evaluate apply it.
threshold: for "hard" (> 0).
Returns {"k", "recomputed", "ids" (insertion order), "wrong" int64 (n,), "correct" int64 (n,),
"mode", "excluded" (items hard pruning excludes)}. The GIL is released while counting.
)doc")
      .def(
          "encoder",
          [](PyMemory& self, std::optional<std::filesystem::path> model) {
            // As the CLI: the memory's recorded model (or the one given), checked against its fingerprint.
            auto [path, dim, mem_path, recorded] = self.read([&](Memory& m) {
              const MemoryInfo info = m.info();
              return std::make_tuple(model ? model->string() : info.model_path, m.dim(), m.path(), info.model_precision);
            });
            if (path.empty())
              throw Error(mem_path + " is not bound to a model: create it with --model, or pass --model PATH");
            PyEncoder enc = load_encoder_at(path, recorded_precision(recorded));
            self.read([&](Memory& m) {
              m.check_fingerprint(enc.get().fingerprint(), "model " + path);
              return 0;
            });
            if (enc.get().dim() != dim)
              throw Error("model " + path + " makes " + std::to_string(enc.get().dim()) + "-d embeddings, the memory holds " +
                          std::to_string(dim) + "-d");
            return enc;
          },
          "model"_a = py::none(),
          "The encoder the memory is bound to (or `model`, which must match its fingerprint). "
          "Raises ValueError for a memory without a model or a different model, OSError when it cannot be loaded.");

  // ---- Encoder
  py::class_<PyEncoder>(m, "Encoder", R"doc(
An image encoder (MobileNet V1/V2 .tflite, DINOv2 or CLIP HF checkpoint), made by
vismem.load_encoder. Read-only after loading; embed() may run from several threads.
)doc")
      .def_property_readonly("name", [](const PyEncoder& e) { return e.get().name(); }, "e.g. 'mobilenet_v1', 'dinov2', 'clip'")
      .def_property_readonly("dim", [](const PyEncoder& e) { return e.get().dim(); }, "embedding length d")
      .def_property_readonly("input_size", [](const PyEncoder& e) { return e.get().input_size(); },
                             "S: the model's input is 3 x S x S")
      .def_property_readonly("fingerprint", [](const PyEncoder& e) { return e.get().fingerprint(); },
                             "sha256 of the weights + preprocessing: equal fingerprints, comparable embeddings")
      .def_property_readonly("preprocess", [](const PyEncoder& e) { return e.get().preprocess().describe(); },
                             "the preprocessing, as text (resize, crop, mean, std)")
      .def_property_readonly("path", &PyEncoder::path, "where it was loaded from")
      .def_property_readonly("precision", [](const PyEncoder& e) { return std::string(precision_name(e.get().precision())); },
                             "'f32' or 'int8' (int8 GEMMs)")
      .def("__repr__", [](const PyEncoder& e) {
        return "<vismem.Encoder " + e.get().name() + " (" + std::to_string(e.get().dim()) + "-d) from " + e.path() + ">";
      })
      .def("embed", &PyEncoder::embed, "inputs"_a, "batch"_a = 32, "threads"_a = 0, "normalize"_a = true,
           R"doc(
Embeddings of images: float32 (N, dim), L2-normalized rows unless normalize=False.

inputs: image file paths (str or os.PathLike, or a sequence of them; JPEG, PNG, WebP, BMP;
        decoded, resized and cropped as the model's preset, as `vismem embed`), or
        a uint8 array (N, S, S, 3) / (S, S, 3) of RGB pixels at the model's size
        (normalized with its preset), or a float array (N, 3, H, W) of pixels already
        normalized (float32 C-contiguous is read in place; ViTs take any H, W).
batch:  images per encoder batch (files only). threads: 0 = all cores.
Rows follow the input order. Raises OSError when an image cannot be read (the
message lists every such file; FileNotFoundError for one missing file),
ValueError for an array of the wrong shape or dtype. The GIL is released.
)doc");

  m.def(
      "load_encoder",
      [](const std::filesystem::path& path, std::optional<std::string> precision) {
        return load_encoder_at(path.string(), precision_arg(precision));
      },
      "path"_a, "precision"_a = py::none(),
      R"doc(
Loads an encoder: a .tflite file (MobileNet V1 embedder, MobileNet V2) or a Hugging Face
checkpoint folder (config.json + model.safetensors) of DINOv2 or CLIP.
precision: "f32" or "int8" (the big matrix products as int8 GEMMs; its fingerprint
then ends in "|int8", MobileNet's in "|int8|a8"); None: VISMEM_PRECISION, default "f32".
Raises FileNotFoundError / OSError when it is missing or not a model vismem reads,
ValueError for another precision.
)doc");

  m.def(
      "scan_image_folder",
      [](const std::filesystem::path& dir) {
        std::string d = dir.string();
        auto items = file_op(d, [&] { return vismem::scan_image_folder(d); });
        py::list out;
        for (auto& li : items) out.append(py::make_tuple(li.path, li.id, li.label));
        return out;
      },
      "dir"_a,
      "An ImageFolder (DIR/CLASS/IMAGE): a list of (path, id, label) tuples sorted by (label, id); the id is the path "
      "relative to DIR, the label the class folder's name. Raises OSError when DIR cannot be read.");

  // ---- voting (over label codes; the package's vote() interns labels first)
  m.def(
      "_vote_codes",
      [](py::array_t<int32_t, py::array::c_style | py::array::forcecast> codes,
         py::array_t<double, py::array::c_style | py::array::forcecast> distances, const std::string& rule,
         std::optional<py::array_t<uint8_t, py::array::c_style | py::array::forcecast>> excluded,
         std::optional<py::array_t<double, py::array::c_style | py::array::forcecast>> reliability, bool normalize,
         double distance_power, double temperature, double rank_offset) {
        Vote v = parse_vote(rule);
        if (codes.ndim() != 2) throw Error("labels: expected shape (nq, K)");
        const int64_t nq = codes.shape(0), K = codes.shape(1);
        auto same_shape = [&](const py::array& a, const char* what) {
          if (a.ndim() != 2 || a.shape(0) != nq || a.shape(1) != K)
            throw Error(std::string(what) + ": expected shape (" + std::to_string(nq) + ", " + std::to_string(K) +
                        ") like labels");
        };
        same_shape(distances, "distances");
        if (excluded) same_shape(*excluded, "excluded");
        if (reliability) same_shape(*reliability, "reliability");
        if (K < 1) throw Error("vote: needs at least one neighbor per query");
        VoteParams p;
        p.distance_power = distance_power;
        p.temperature = temperature;
        p.rank_offset = rank_offset;
        const int32_t* c = codes.data();
        const double* d = distances.data();
        const uint8_t* ex = excluded ? excluded->data() : nullptr;
        const double* rel = reliability ? reliability->data() : nullptr;
        py::array_t<int32_t> out({nq, K});
        int32_t* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          std::vector<VoteInput> ins(nq);
          for (int64_t i = 0; i < nq; ++i) {
            ins[i].labels.assign(c + i * K, c + (i + 1) * K);
            ins[i].distances.assign(d + i * K, d + (i + 1) * K);
            for (int64_t j = 0; j < K; ++j) {
              if (ins[i].labels[j] < 0) throw Error("labels: codes must be >= 0");
              if (!std::isfinite(ins[i].distances[j])) throw Error("distances: NaN or infinite value in query " + std::to_string(i));
            }
            if (ex) ins[i].excluded.assign(ex + i * K, ex + (i + 1) * K);
            if (rel) ins[i].reliability.assign(rel + i * K, rel + (i + 1) * K);
          }
          if (normalize) minmax_normalize(ins);
          for (int64_t i = 0; i < nq; ++i) {
            std::vector<int32_t> pred = predict_all_k(v, ins[i], p);
            std::copy(pred.begin(), pred.end(), o + i * K);
          }
        }
        return out;
      },
      "codes"_a, "distances"_a, "rule"_a, "excluded"_a = py::none(), "reliability"_a = py::none(), "normalize"_a = false,
      "distance_power"_a = 1.0, "temperature"_a = 0.07, "rank_offset"_a = 2.0,
      "Predictions (int32 (nq, K), codes) at every k for label codes int32 (nq, K) >= 0; see vismem.vote.");

  m.def(
      "_vote_breakdown",
      [](std::vector<int32_t> codes, std::vector<double> distances, int k, const std::string& rule,
         std::vector<uint8_t> excluded, std::vector<double> reliability, double distance_power, double temperature,
         double rank_offset) {
        VoteInput in{std::move(codes), std::move(distances), std::move(excluded), std::move(reliability)};
        const size_t K = in.labels.size();
        if (K == 0 || in.distances.size() != K || (!in.excluded.empty() && in.excluded.size() != K) ||
            (!in.reliability.empty() && in.reliability.size() != K))
          throw Error("vote_breakdown: labels, distances (and excluded, reliability) need the same K >= 1 entries");
        if (k < 1 || static_cast<size_t>(k) > K) throw Error("vote_breakdown: k must be in 1.." + std::to_string(K));
        VoteParams p;
        p.distance_power = distance_power;
        p.temperature = temperature;
        p.rank_offset = rank_offset;
        VoteBreakdown b = vote_breakdown(parse_vote(rule), in, k, p);
        return py::make_tuple(b.prediction, b.scores, b.neighbor_weights);
      },
      "codes"_a, "distances"_a, "k"_a, "rule"_a, "excluded"_a, "reliability"_a, "distance_power"_a, "temperature"_a,
      "rank_offset"_a, "(prediction code, [(code, score)], weights) after the first k; see vismem.vote_breakdown.");

  m.def(
      "_evaluate_neighbors",
      [](const std::string& source, bool is_text, int k, const py::object& exclude, const py::object& reliability,
         bool normalize, const py::object& rules) {
        EvalOptions opt = eval_options(k, exclude, reliability, normalize, rules);
        std::vector<QueryNeighbors> qs;
        if (is_text) qs = parse_neighbor_json(source, "neighbors");
        else qs = neighbor_file(source);
        return evaluate_queries(qs, opt);
      },
      "source"_a, "is_text"_a, "k"_a, "exclude"_a, "reliability"_a, "normalize"_a, "rules"_a,
      "eval_json of a neighbor file (path) or its JSON text; see vismem.evaluate.");

  m.def(
      "_read_neighbors",
      [](const std::string& source, bool is_text) {
        std::vector<QueryNeighbors> qs;
        if (is_text) qs = parse_neighbor_json(source, "neighbors");
        else qs = neighbor_file(source);
        int64_t K = qs.empty() ? 0 : static_cast<int64_t>(qs[0].neighbor_ids.size());
        for (auto& q : qs)
          if (static_cast<int64_t>(q.neighbor_ids.size()) != K)
            throw Error("neighbors: query '" + q.query_id + "' has " + std::to_string(q.neighbor_ids.size()) +
                        " neighbors, the first has " + std::to_string(K) + " (arrays need equal lengths)");
        const int64_t nq = static_cast<int64_t>(qs.size());
        py::list qids, image_ids, truths, featurizers;
        py::array_t<double> dist({nq, K});
        double* dp = dist.mutable_data();
        for (int64_t i = 0; i < nq; ++i) {
          qids.append(qs[i].query_id);
          image_ids.append(qs[i].image_id);
          truths.append(py::cast(qs[i].true_labels));
          featurizers.append(qs[i].featurizer);
          std::copy(qs[i].distances.begin(), qs[i].distances.end(), dp + i * K);
        }
        py::array ids = string_array(nq, K, [&](int64_t i, int64_t j) { return new_str(qs[i].neighbor_ids[j]); });
        py::array labels = string_array(nq, K, [&](int64_t i, int64_t j) { return new_str(qs[i].neighbor_labels[j]); });
        return py::make_tuple(qids, image_ids, truths, featurizers, ids, labels, dist);
      },
      "source"_a, "is_text"_a, "Columns of a neighbor file; see vismem.read_neighbors.");

  m.def("blas_core", [] { return std::string(openblas_get_corename()); },
        "The OpenBLAS kernel family in use (e.g. 'Haswell', 'SkylakeX'; 'Prescott' is the slow fallback).");
}
