// create, add, search, remove, info.
#include <filesystem>
#include <set>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "encoder.h"
#include "error.h"
#include "json_text.h"
#include "eval.h"
#include "neighbors.h"
#include "pipeline.h"
#include "prune.h"
#include "server.h"
#include "textio.h"
#include "unlearn.h"

namespace vismem::cli {

namespace {

std::vector<std::string> default_ids(const std::string& npy, int64_t n) {
  std::string base = std::filesystem::path(npy).filename().string();
  std::vector<std::string> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = base + "#" + std::to_string(i);
  return ids;
}

void check_dim(const Memory& mem, const Matrix& m, const std::string& path) {
  if (m.cols != mem.dim())
    throw Error(path + ": embeddings have " + std::to_string(m.cols) + " columns, the memory's dimension is " +
                std::to_string(mem.dim()));
}

}  // namespace

// The encoder a memory was created with (or the one given), checked against its fingerprint.
std::unique_ptr<Encoder> memory_encoder(const Memory& mem, const std::string& model_override) {
  MemoryInfo info = mem.info();
  std::string path = model_override.empty() ? info.model_path : model_override;
  if (path.empty())
    throw Error(mem.path() + " is not bound to a model: create it with --model, or pass --model PATH");
  auto enc = load_encoder(path, recorded_precision(info.model_precision));
  mem.check_fingerprint(enc->fingerprint(), "model " + path);
  if (enc->dim() != mem.dim())
    throw Error("model " + path + " makes " + std::to_string(enc->dim()) + "-d embeddings, the memory holds " +
                std::to_string(mem.dim()) + "-d");
  return enc;
}

void add_image_folder(Memory& mem, const std::string& dir, const std::string& model, int batch, int threads,
                      bool upsert) {
  auto enc = memory_encoder(mem, model);
  std::vector<std::string> skipped;
  std::vector<LabeledImage> all = scan_image_folder(dir, &skipped);
  for (auto& s : skipped) std::cerr << "skipped " << s << "\n";
  if (all.empty())
    throw Error(dir + ": no images found (expected one subfolder per class" +
                (skipped.empty() ? ")" : "; " + std::to_string(skipped.size()) + " skipped)"));
  std::vector<LabeledImage> todo;
  for (auto& li : all)
    if (upsert || !mem.contains(li.id)) todo.push_back(li);
  std::cerr << dir << ": " << all.size() << " images in " << [&] {
    std::set<std::string> l;
    for (auto& li : all) l.insert(li.label);
    return l.size();
  }() << " classes; " << (all.size() - todo.size()) << " already in the memory, " << todo.size() << " to add\n";
  // Chunks of a few thousand: each chunk is committed on its own, so an
  // interrupted run resumes where it stopped (ids already present are skipped).
  const size_t chunk = 2048;
  // Current pruning counts: for more than one chunk, one recount at the end
  // is cheaper than an incremental upkeep per chunk (each would reach much
  // of the memory). A killed run leaves them stale, which info reports.
  const int counts_k = mem.info().counts_k;
  const bool recount = mem.counts_current() && todo.size() > chunk;
  if (recount) mem.set_counts_upkeep(false);
  Progress bar("embedding", static_cast<int64_t>(todo.size()));
  int64_t added = 0, failed = 0;
  bool root_recorded = false;
  for (size_t start = 0; start < todo.size(); start += chunk) {
    size_t end = std::min(todo.size(), start + chunk);
    std::vector<std::string> paths;
    for (size_t i = start; i < end; ++i) paths.push_back(todo[i].path);
    EmbedOptions eo;
    eo.batch = batch;
    eo.threads = threads;
    eo.progress = [&](int64_t done, int64_t) { bar.update(static_cast<int64_t>(start) + done); };
    EmbedResult r = embed_images(*enc, paths, eo);
    for (auto& [i, msg] : r.failed) {
      std::cerr << "\nskipped " << msg << "\n";
      ++failed;
    }
    if (r.ok.empty()) continue;  // nothing to write: the memory stays as it was
    // The folder is where explanations find images: record it once an image from it is in.
    if (!root_recorded) mem.add_image_root(dir);
    root_recorded = true;
    std::vector<std::string> ids, labels;
    for (int64_t i : r.ok) {
      ids.push_back(todo[start + i].id);
      labels.push_back(todo[start + i].label);
    }
    AddResult ar = mem.add(ids, labels, r.embeddings.data(), upsert ? AddMode::upsert : AddMode::skip_existing);
    added += ar.added + ar.replaced;
  }
  bar.finish();
  if (!todo.empty() && added == 0 && failed == static_cast<int64_t>(todo.size())) {
    if (recount) mem.set_counts_upkeep(true);
    throw Error(dir + ": none of the " + std::to_string(todo.size()) +
                " images could be read (see the messages above); the memory is unchanged");
  }
  if (recount) {
    std::cerr << "recounting pruning counts (k=" << counts_k << ") for " << mem.size() << " items\n";
    mem.set_counts(compute_prune_counts(mem, counts_k, threads), counts_k);
    mem.set_counts_upkeep(true);
  }
  std::cout << "added " << added << " images, " << failed + static_cast<int64_t>(skipped.size())
            << " unreadable or badly named (skipped); memory now holds " << mem.size() << " items\n";
}

void add_memory_commands(CLI::App& app) {
  // create
  {
    auto* c = app.add_subcommand("create", "Create an empty memory file");
    auto mem = std::make_shared<std::string>();
    auto dim = std::make_shared<int>(0);
    auto model_id = std::make_shared<std::string>();
    auto model = std::make_shared<std::string>();
    auto f16 = std::make_shared<bool>(false);
    auto index = std::make_shared<std::string>();
    auto fold = std::make_shared<int64_t>(0);
    auto precision = std::make_shared<std::string>();
    c->add_option("memory", *mem, "Memory file to create (the SQLite catalog; vectors go beside it)")->required();
    c->add_option("--index", *index,
                  "Approximate search: a FAISS index-factory string, e.g. IVF1024,PQ64 or HNSW32 (default Flat: exact). "
                  "Built once the memory is large enough; candidates are re-scored with the exact vectors");
    c->add_option("--index-fold", *fold, "Rows added past the index before they are folded into it (default 65536)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
    c->add_flag("--f16", *f16, "Also keep a float16 copy of the vectors: small batches scan half the bytes (same results)");
    c->add_option("--dim", *dim, "Embedding dimension (for embeddings from .npy files)");
    c->add_option("--model-id", *model_id, "A name for the embedding model");
    c->add_option("--model", *model, "Bind the memory to an encoder (.tflite file or HF checkpoint folder)");
    c->add_option("--precision", *precision,
                  "The encoder's arithmetic, recorded so later adds and queries use it: f32 or int8 (int8 GEMMs: "
                  "faster, embeddings at cosine ~0.999 to f32's). Default: VISMEM_PRECISION, else f32")
        ->check(CLI::IsMember({"f32", "int8"}));
    c->callback([=] {
      Memory::CreateOptions o;
      o.dim = *dim;
      o.model_id = *model_id;
      o.f16 = *f16;
      o.index = *index;
      o.index_fold_rows = *fold;
      if (!model->empty()) {
        auto enc = load_encoder(*model, precision->empty() ? precision_from_env() : parse_precision(*precision));
        if (*dim && *dim != enc->dim())
          throw Error("--dim " + std::to_string(*dim) + " but the model makes " + std::to_string(enc->dim()) + "-d embeddings");
        o.dim = enc->dim();
        o.fingerprint = enc->fingerprint();
        o.model_path = std::filesystem::absolute(*model).string();
        o.model_precision = precision_name(enc->precision());
        if (o.model_id.empty()) o.model_id = enc->name();
      } else if (!precision->empty()) {
        throw Error("--precision needs --model (embeddings from files carry no precision)");
      } else if (*dim <= 0) {
        throw Error("give --dim D (embeddings from files) or --model PATH (an encoder)");
      }
      Memory m = Memory::create(*mem, o);
      std::cout << "created " << *mem << " (dim " << m.dim() << (o.model_id.empty() ? "" : ", model " + o.model_id)
                << (m.info().index.empty() ? "" : ", index " + m.info().index) << ")\n";
    });
  }
  // add
  {
    auto* c = app.add_subcommand("add", "Add items: embeddings from .npy, or an image folder (one subfolder per class)");
    struct A {
      std::string mem, dir, emb, labels, ids, model;
      bool upsert = false;
      int batch = 32, threads = 0;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("folder", a->dir, "Image folder: DIR/CLASS/IMAGE (needs a memory bound to a model)");
    c->add_option("--embeddings", a->emb, "Embeddings .npy (n, d) float32/float16");
    c->add_option("--labels", a->labels, "Labels, one per line (with --embeddings)");
    c->add_option("--ids", a->ids, "Ids, one per line (default: FILE#ROW)");
    c->add_flag("--upsert", a->upsert, "Replace items whose id exists (default: duplicate ids are an error; for folders: skipped)");
    c->add_option("--model", a->model, "Encoder to use instead of the one recorded at create (must match its fingerprint)");
    c->add_option("--batch", a->batch, "Images per encoder batch")->check(kBatchSize);
    c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
    c->callback([a] {
      Memory mem = open_memory(a->mem);
      if (!a->dir.empty()) {
        if (!a->emb.empty()) throw Error("give either an image folder or --embeddings, not both");
        add_image_folder(mem, a->dir, a->model, a->batch, a->threads, a->upsert);
        return;
      }
      if (a->emb.empty() || a->labels.empty()) throw Error("add needs --embeddings X.npy --labels L.txt, or an image folder");
      EmbeddingView m = view_embeddings(a->emb);
      if (m.cols != mem.dim())
        throw Error(a->emb + ": embeddings have " + std::to_string(m.cols) + " columns, the memory's dimension is " +
                    std::to_string(mem.dim()));
      auto labels = read_list(a->labels, m.rows, "labels");
      auto ids = a->ids.empty() ? default_ids(a->emb, m.rows) : read_list(a->ids, m.rows, "ids");
      Progress bar("adding", m.rows);
      AddResult r = mem.add(ids, labels, m.data, a->upsert ? AddMode::upsert : AddMode::strict,
                            [&](int64_t d, int64_t) { bar.update(d); });
      bar.finish();
      std::cout << "added " << r.added << ", replaced " << r.replaced << "; memory now holds " << mem.size() << " items\n";
    });
  }
  // search
  {
    auto* c = app.add_subcommand("search", "Nearest neighbors of query embeddings, written as a neighbor file");
    struct A {
      std::string mem, emb, ids, labels, out;
      int k = 100, threads = 0;
      bool exclude_self = false;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("--embeddings", a->emb, "Query embeddings .npy (n, d)")->required();
    c->add_option("--ids", a->ids, "Query ids, one per line (default q0, q1, ...)");
    c->add_option("--labels", a->labels, "Query labels, one per line (written as image_class)");
    c->add_option("--k", a->k, "Neighbors per query")->check(kPositiveInt);
    c->add_option("--out", a->out, "Neighbor file to write (JSON, SPEC section 7)")->required();
    add_search_options(c);
    c->add_flag("--exclude-self", a->exclude_self, "Leave-one-out: a query id found in the memory is not its own neighbor");
    c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
    c->callback([a] {
      Memory mem = open_memory(a->mem);
      require_items(mem);
      Matrix q = read_embeddings(a->emb);
      check_dim(mem, q, a->emb);
      auto ids = a->ids.empty() ? std::vector<std::string>{} : read_list(a->ids, q.rows, "ids");
      if (a->exclude_self && ids.empty()) throw Error("--exclude-self needs --ids (the queries' memory ids)");
      if (a->exclude_self && mem.size() < 2) throw Error("--exclude-self needs a memory of at least 2 items");
      auto labels = a->labels.empty() ? std::vector<std::string>{} : read_list(a->labels, q.rows, "labels");
      auto res = mem.search(q.data.data(), q.rows, search_k(mem, a->k), a->exclude_self ? ids : std::vector<std::string>{}, a->threads);
      write_neighbor_file(a->out, to_query_neighbors(res, ids, labels, mem.info().model_id));
      // Leave-one-out lists hold one neighbor fewer than the memory has items.
      const int64_t k = std::min<int64_t>(a->k, mem.size() - (a->exclude_self ? 1 : 0));
      std::cout << "wrote " << q.rows << " neighbor lists (k=" << k << ") to " << a->out << "\n";
    });
  }
  // remove
  {
    auto* c = app.add_subcommand("remove", "Remove items for good (unlearning): from the index and the file's bytes");
    struct A {
      std::string mem, label, ids_file;
      std::vector<std::string> ids;
      bool verify = false;
    };
    auto a = std::make_shared<A>();
    c->add_option("memory", a->mem, "Memory file")->required();
    c->add_option("--id", a->ids, "Item id (repeatable)");
    c->add_option("--label", a->label, "Remove every item with this label");
    c->add_option("--ids-file", a->ids_file, "Ids to remove, one per line");
    c->add_flag("--verify", a->verify, "Print a receipt: ids gone from store and index, no bytes left, same answers as a rebuild");
    c->callback([a] {
      Memory mem = open_memory(a->mem);
      int given = !a->ids.empty() + !a->label.empty() + !a->ids_file.empty();
      if (given != 1) throw Error("remove needs exactly one of --id, --label, --ids-file");
      int64_t n = 0;
      if (a->verify) {
        std::vector<std::string> ids = a->ids.empty() ? std::vector<std::string>{} : a->ids;
        if (!a->ids_file.empty()) ids = read_lines(a->ids_file);
        if (!a->label.empty())
          for (const ItemInfo& it : mem.items())
            if (it.label == a->label) ids.push_back(it.id);
        if (ids.empty()) throw Error("remove: nothing matches");
        UnlearnReceipt r = remove_verified(mem, ids);
        std::cout << r.summary();
        if (!r.ok()) throw Error("unlearning verification failed");
        return;
      }
      if (!a->label.empty()) n = mem.remove_label(a->label);
      else n = mem.remove(a->ids.empty() ? read_lines(a->ids_file) : a->ids);
      std::cout << "removed " << n << " items; memory now holds " << mem.size() << " items\n";
    });
  }
  // info
  {
    auto* c = app.add_subcommand("info", "Describe a memory");
    auto mem = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    c->add_option("memory", *mem, "Memory file")->required();
    c->add_flag("--json", *json, "JSON output");
    c->callback([=] {
      Memory m = open_memory(*mem);
      MemoryInfo i = m.info();
      std::string counts = i.counts_generation < 0 ? "not computed"
                           : i.counts_stale()      ? "STALE (memory changed since; run `vismem prune` again)"
                                                   : "current (k=" + std::to_string(i.counts_k) + ")";
      if (*json) {
        nlohmann::json j = memory_info_json(i);
        std::cout << json_text(j, 2) << "\n";
        return;
      }
      std::cout << "memory      " << i.path << "\n"
                << "items       " << i.items << " (" << i.labels << " labels)\n"
                << "dimension   " << i.dim << "\n"
                << "model       " << (i.model_id.empty() ? "-" : i.model_id) << "\n"
                << "model path  " << (i.model_path.empty() ? "-" : i.model_path) << "\n"
                << "precision   " << (i.model_path.empty() ? "-" : i.model_precision.empty() ? "not recorded (VISMEM_PRECISION, default f32)" : i.model_precision) << "\n"
                << "fingerprint " << (i.fingerprint.empty() ? "- (embeddings from files)" : i.fingerprint) << "\n"
                << "format      v" << i.format_version << " (vectors: " << i.rows << " rows"
                << (i.rows > i.items ? " (" + std::to_string(i.rows - i.items) + " removed: `vismem compact` drops them)" : "")
                << ", "
                << i.vector_bytes / 1e6 << " MB" << (i.f16 ? ", with a float16 copy" : "") << ")\n"
                << "created     " << i.created_at << "\n"
                << "updated     " << i.updated_at << " (generation " << i.generation << ")\n"
                << "pruning     " << i.pruning_mode
                << (i.pruning_mode == "hard" ? " (wrong >= " + std::to_string(i.pruning_threshold) + ")" : "") << "\n"
                << "counts      " << counts << "\n"
                << "index       " << (i.index.empty() ? "Flat (exact)" : i.index + " (`vismem index info` for details)")
                << "\n";
      if (i.ood_k > 0)
        std::cout << "ood         median distance to " << i.ood_k << " neighbors > " << i.ood_threshold
                  << " (fitted for FPR " << i.ood_fpr << ")" << (i.ood_stale() ? " STALE (memory changed since)" : "")
                  << "\n";
    });
  }
  // compact
  {
    auto* c = app.add_subcommand("compact", "Rewrite the vector files without the rows removed items left behind");
    auto mem = std::make_shared<std::string>();
    c->add_option("memory", *mem, "Memory file")->required();
    c->callback([=] {
      Memory m = Memory::open(*mem);
      const MemoryInfo before = m.info();
      const int64_t dropped = m.compact();
      const MemoryInfo after = m.info();
      std::cout << "compacted " << *mem << ": " << dropped << " removed rows dropped, " << after.rows << " rows ("
                << (before.vector_bytes - after.vector_bytes) / 1e6 << " MB freed)\n";
    });
  }
  // migrate
  {
    auto* c = app.add_subcommand("migrate", "Upgrade a memory written by an older vismem to the current format, in place");
    auto mem = std::make_shared<std::string>();
    c->add_option("memory", *mem, "Memory file")->required();
    c->callback([=] {
      bool changed = Memory::migrate(*mem);
      Memory m = Memory::open(*mem);
      std::cout << (changed ? "migrated " : "already current: ") << *mem << " (format v" << Memory::format_version
                << ", " << m.size() << " items)\n";
    });
  }
}

}  // namespace vismem::cli
