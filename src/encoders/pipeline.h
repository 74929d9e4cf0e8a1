// pipeline.h: images to embeddings with an encoder, batched and multi-threaded.
//
// Basic usage:
//   auto enc = vismem::load_encoder("model.tflite");
//   vismem::EmbedResult r = vismem::embed_images(*enc, paths, {.batch = 32});
//   // r.embeddings: r.ok.size() * enc->dim(), L2-normalized, in the order of r.ok
//   // r.failed: (index, message) for unreadable files; nothing else stops the run
//
//   std::vector<vismem::LabeledImage> items = vismem::scan_image_folder("train/");  // ImageFolder
//
// Decoding + preprocessing run on a thread pool while the encoder runs the
// previous batch. Thread safety: reentrant; uses enc.forward() concurrently only
// as Encoder allows (it does).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "encoder.h"

namespace vismem {

struct EmbedOptions {
  int batch = 32;
  int threads = 0;          // 0 = default_threads()
  bool normalize = true;    // L2-normalize outputs
  std::function<void(int64_t done, int64_t total)> progress;
};

struct EmbedResult {
  std::vector<int64_t> ok;                              // indices into the input that were embedded
  std::vector<float> embeddings;                        // ok.size() * dim, row-major
  std::vector<std::pair<int64_t, std::string>> failed;  // (index, "PATH: why"): the message names the file once
};

EmbedResult embed_images(const Encoder& enc, const std::vector<std::string>& paths, const EmbedOptions& opt = {});

struct LabeledImage {
  std::string path;   // full path
  std::string id;     // path relative to the folder, '/'-separated
  std::string label;  // the class subfolder's name
};
// An ImageFolder: one subfolder per class, image files inside (recursively);
// sorted by (label, id) so runs are reproducible. Non-image files and hidden
// files and folders (name starting with '.', e.g. .ipynb_checkpoints) are
// ignored. Images whose id or label is not valid text (see check_item_text)
// are left out and, if skipped is given, listed there as "path: why".
std::vector<LabeledImage> scan_image_folder(const std::string& dir, std::vector<std::string>* skipped = nullptr);

}  // namespace vismem
