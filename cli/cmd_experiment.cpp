// experiment: the paper's capabilities measured on real data (SPEC section 5),
// written as markdown reports with SVG plots.
#include <filesystem>
#include <iostream>
#include <map>

#include "common.h"
#include "error.h"
#include "experiment.h"
#include "textio.h"

namespace vismem::cli {

namespace {
// "f32", or the int8 part of an encoder fingerprint ("int8", "int8|a8"; encoder.h).
std::string precision_tag(const std::string& fingerprint) {
  const size_t at = fingerprint.rfind("|int8");
  return at == std::string::npos ? "f32" : fingerprint.substr(at + 1);
}
}  // namespace

namespace fs = std::filesystem;

void add_experiment_commands(CLI::App& app) {
  auto* c = app.add_subcommand("experiment",
                               "Run an experiment (lifelong, lifelong-split, pruning, scaling, hierarchy, ood, or all) "
                               "and write a markdown report with plots");
  struct A {
    std::string name, data = "../shared/data", model = "../shared/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
                      cache = ".cache/experiments", out = "results", taxonomy;
    uint64_t seed = 0;
    int seeds = 3, k = 100, threads = 0, batch = 32;
  };
  auto a = std::make_shared<A>();
  c->add_option("name", a->name, "lifelong | lifelong-split | pruning | scaling | hierarchy | ood | all")->required();
  c->add_option("--data", a->data, "Folder with tiny-imagenet/ and imagenette2/ (ImageFolder splits)");
  auto* model_opt = c->add_option("--model", a->model,
                                  "Encoder for embedding the sets (sets already cached must have been made with it)");
  c->add_option("--cache", a->cache,
                "Embedded sets, one memory per split: tiny_train.db, tiny_val.db, imagenette_train.db, imagenette_val.db "
                "(built on first use; any memory with these names is used as it is)");
  c->add_option("--out", a->out, "Results folder: OUT/NAME/report.md, plots (SVG), numbers.json");
  c->add_option("--taxonomy", a->taxonomy, "Taxonomy for the hierarchy experiment (default: DATA/tiny-imagenet/hierarchy_wordnet.tsv)");
  c->add_option("--seed", a->seed, "Seed for random subsets and class splits");
  c->add_option("--seeds", a->seeds, "Random draws per memory size (scaling)")->check(kPositiveInt);
  c->add_option("--k", a->k, "Largest k evaluated")->check(kPositiveInt);
  c->add_option("--threads", a->threads, "Threads (default: all cores)")->check(kThreadCount);
  c->add_option("--batch", a->batch, "Images per encoder batch (embedding the sets)")->check(kBatchSize);
  c->callback([a, model_opt] {
    std::vector<std::string> names = a->name == "all" ? experiment_names() : std::vector<std::string>{a->name};
    std::vector<std::string> needed;
    for (auto& n : names)
      for (auto& s : experiment_sets(n))
        if (std::find(needed.begin(), needed.end(), s) == needed.end()) needed.push_back(s);
    const std::map<std::string, std::pair<std::string, std::string>> where = {
        {"tiny/train", {"tiny-imagenet/train", "tiny_train.db"}},
        {"tiny/val", {"tiny-imagenet/val", "tiny_val.db"}},
        {"imagenette/train", {"imagenette2/train", "imagenette_train.db"}},
        {"imagenette/val", {"imagenette2/val", "imagenette_val.db"}}};
    fs::create_directories(a->cache);
    std::map<std::string, Memory> mems;
    std::map<std::string, LabeledSet> sets;
    std::string model_id, model_fp, explicit_fp;
    for (auto& s : needed) {
      auto [folder, file] = where.at(s);
      std::string db = (fs::path(a->cache) / file).string();
      if (!fs::exists(db)) {
        std::string dir = (fs::path(a->data) / folder).string();
        if (!fs::is_directory(dir)) throw Error(dir + ": no such folder (set --data, or put " + db + " in place)");
        std::cerr << "embedding " << dir << " into " << db << " (once; cached)\n";
        auto enc = load_encoder(a->model);
        Memory::CreateOptions co;
        co.dim = enc->dim();
        co.model_id = enc->name();
        co.fingerprint = enc->fingerprint();
        co.model_path = fs::absolute(a->model).string();
        co.model_precision = precision_name(enc->precision());
        // Built under a temporary name: an interrupted run never leaves a partial set behind.
        std::string tmp = db + ".partial";
        if (!fs::exists(tmp)) Memory::create(tmp, co);
        else Memory::migrate(tmp);
        {
          Memory m = open_memory(tmp);
          add_image_folder(m, dir, "", a->batch, a->threads, false);
        }
        Memory::rename_files(tmp, db);
      }
      Memory::migrate(db);  // a cache made by an older vismem
      Memory m = open_memory(db);
      if (m.size() == 0) throw Error(db + " is empty");
      const MemoryInfo info = m.info();
      if (model_opt->count() > 0) {
        // An explicit model must be the one the cached set was embedded with.
        if (explicit_fp.empty()) explicit_fp = load_encoder(a->model)->fingerprint();
        if (info.fingerprint != explicit_fp)
          throw Error(db + " was embedded with " + info.model_id + " (" + precision_tag(info.fingerprint) + "), not " +
                      a->model + " (" + precision_tag(explicit_fp) + "); use another --cache folder for this model");
      }
      // The sets must share the whole fingerprint: the same model at another
      // precision (or int8 revision) differs only in its end.
      std::string id = info.model_id + (info.fingerprint.empty() ? "" : " (" + info.fingerprint.substr(0, 12) + ", " +
                                                                      precision_tag(info.fingerprint) + ")");
      if (!model_id.empty() && info.fingerprint != model_fp)
        throw Error(db + ": embedded with " + id + ", the other sets with " + model_id);
      model_id = id;
      model_fp = info.fingerprint;
      sets.emplace(s, load_set(m));
      mems.emplace(s, std::move(m));
    }
    ExperimentData data;
    data.get = [&](const std::string& n) -> const LabeledSet& { return sets.at(n); };
    data.memory = [&](const std::string& n) -> const Memory& { return mems.at(n); };
    std::string tax = a->taxonomy.empty() ? (fs::path(a->data) / "tiny-imagenet/hierarchy_wordnet.tsv").string() : a->taxonomy;
    if (std::find(names.begin(), names.end(), "hierarchy") != names.end()) data.taxonomy = Taxonomy::read(tax);
    data.description = "Encoder: " + model_id + "; embedded sets cached in `" + a->cache + "`.";
    ExperimentOptions opt;
    opt.seed = a->seed;
    opt.seeds = a->seeds;
    opt.k = a->k;
    opt.threads = a->threads;
    std::string index = "# vismem experiments\n\n";
    for (auto& n : names) {
      std::cerr << "running " << n << " ...\n";
      ExperimentReport r = run_experiment(n, data, opt);
      fs::path dir = fs::path(a->out) / n;
      fs::create_directories(dir);
      write_text_file((dir / "report.md").string(), r.markdown);
      for (auto& [f, text] : r.files) write_text_file((dir / f).string(), text);
      write_text_file((dir / "numbers.json").string(), r.numbers.dump(2) + "\n");
      std::cout << "wrote " << (dir / "report.md").string() << "  (" << r.title << ")\n";
      index += "- [" + r.title + "](" + n + "/report.md)\n";
    }
    if (names.size() > 1) write_text_file((fs::path(a->out) / "README.md").string(), index);
  });
}

}  // namespace vismem::cli
