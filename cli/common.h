// common.h: helpers shared by the vismem subcommands (the CLI edge).
//
// Each subcommand file registers itself with add_*_commands(app); handlers
// throw vismem::Error and main() turns it into "error: ..." and exit code 1.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "encoder.h"
#include "memory.h"

namespace vismem::cli {

// Integer options: CLI11 refuses a value that does not fit the variable (it
// never narrows: --k 4294967298 is an error, not 2); these bound the rest.
inline const CLI::Range kPositiveInt(1, 1 << 30, "POSITIVE");
inline const CLI::Range kThreadCount(0, 4096, "THREADS");
inline const CLI::Range kBatchSize(1, 4096, "BATCH");

// The k to ask a search for: at most the memory's size (a larger k would only
// size buffers for neighbors that do not exist).
int search_k(const Memory& mem, int64_t k);

// A .npy of embeddings: float32/float16, 2-D, C order. Returns n * d floats.
struct Matrix {
  int64_t rows = 0;
  int cols = 0;
  std::vector<float> data;
};
Matrix read_embeddings(const std::string& path);

// The same, without reading the file into memory when it is float32 with a
// plain header: the file is mapped read-only (a 5 GB .npy costs page cache,
// not process memory). Other dtypes are read and converted (read_embeddings).
struct EmbeddingView {
  int64_t rows = 0;
  int cols = 0;
  const float* data = nullptr;
  std::shared_ptr<void> keep;  // the mapping or the converted copy
};
EmbeddingView view_embeddings(const std::string& path);

// Text list with an expected length (0: any); the message names the file.
std::vector<std::string> read_list(const std::string& path, int64_t expected, const std::string& what);

// A progress line on stderr: "label  done/total  items/s  ETA", redrawn in place.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done);
  void finish();
 private:
  std::string label_;
  int64_t total_;
  double start_, last_ = 0;
  int64_t shown_ = -1;
};

// Memory::open, with a corrupt stored value (a number that does not parse)
// reported as a problem of this file, not a bare "stoi".
Memory open_memory(const std::string& path);
// Throws "PATH is empty: add items first" for a memory without items: every
// command that searches needs at least one neighbor.
void require_items(const Memory& mem);

// The encoder a memory was created with (or model_override), checked against
// the memory's fingerprint and dimension.
std::unique_ptr<Encoder> memory_encoder(const Memory& mem, const std::string& model_override);

// Embeds an ImageFolder (DIR/CLASS/IMAGE) into the memory in committed chunks
// (resumable: ids already present are skipped unless upsert), with a progress bar.
void add_image_folder(Memory& mem, const std::string& dir, const std::string& model, int batch, int threads, bool upsert);

// --nprobe, --ef, --rerank, --exact on a searching command; open_memory()
// applies them to the memory it opens (cmd_index.cpp).
void add_search_options(CLI::App* c);
SearchParams& cli_search_params();

void add_memory_commands(CLI::App& app);   // create, add, search, remove, info
void add_index_commands(CLI::App& app);    // index info|set|rebuild|train|tune
void add_eval_commands(CLI::App& app);     // eval, classify
void add_image_commands(CLI::App& app);    // embed
void add_prune_commands(CLI::App& app);    // prune
void add_explain_commands(CLI::App& app);  // explain
void add_experiment_commands(CLI::App& app);  // experiment
void add_serve_commands(CLI::App& app);    // serve

}  // namespace vismem::cli
