#include "pipeline.h"

#include <algorithm>
#include <filesystem>
#include <string_view>

#include "error.h"
#include "image.h"
#include "linalg.h"
#include "memory.h"
#include "textio.h"

namespace vismem {

namespace fs = std::filesystem;

EmbedResult embed_images(const Encoder& enc, const std::vector<std::string>& paths, const EmbedOptions& opt) {
  const int S = enc.input_size();
  const int d = enc.dim();
  const int64_t per = 3LL * S * S;
  const int batch = std::max(1, opt.batch);
  const int threads = opt.threads > 0 ? opt.threads : default_threads();
  const int64_t n = static_cast<int64_t>(paths.size());
  EmbedResult r;
  std::vector<float> pixels(batch * per);
  std::vector<std::string> errors(batch);
  std::vector<uint8_t> good(batch);
  std::vector<float> out(batch * d);
  for (int64_t s = 0; s < n; s += batch) {
    int b = static_cast<int>(std::min<int64_t>(batch, n - s));
    // Decode + preprocess in parallel; a bad file only marks its slot.
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < b; ++i) {
      try {
        Image img = decode_image_file(paths[s + i]);
        preprocess(img, enc.preprocess(), pixels.data() + i * per);
        good[i] = 1;
      } catch (const std::exception& e) {
        good[i] = 0;
        // Decoder messages already start with the path; name it exactly once.
        const std::string& path = paths[s + i];
        errors[i] = std::string_view(e.what()).starts_with(path + ":") ? e.what() : path + ": " + e.what();
      }
    }
    // Compact the good images to the front so the encoder sees one dense batch.
    int m = 0;
    std::vector<int64_t> idx;
    for (int i = 0; i < b; ++i) {
      if (!good[i]) {
        r.failed.emplace_back(s + i, errors[i]);
        continue;
      }
      if (m != i) std::copy(pixels.begin() + i * per, pixels.begin() + (i + 1) * per, pixels.begin() + m * per);
      idx.push_back(s + i);
      ++m;
    }
    if (m > 0) {
      enc.forward(pixels.data(), m, out.data(), threads);
      if (opt.normalize) l2_normalize_rows(out.data(), m, d, "encoder output");
      r.embeddings.insert(r.embeddings.end(), out.begin(), out.begin() + m * d);
      r.ok.insert(r.ok.end(), idx.begin(), idx.end());
    }
    if (opt.progress) opt.progress(s + b, n);
  }
  return r;
}

namespace {

// ".ipynb_checkpoints", ".DS_Store", "._photo.jpg" (macOS resource forks):
// tools' leftovers, never data.
bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

}  // namespace

std::vector<LabeledImage> scan_image_folder(const std::string& dir, std::vector<std::string>* skipped) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error(dir + ": not a directory");
  std::vector<LabeledImage> out;
  auto skip = [&](const fs::path& p, const std::string& why) {
    if (skipped) skipped->push_back(printable(p.string()) + ": " + why);
  };
  for (const auto& cls : fs::directory_iterator(dir)) {
    if (!cls.is_directory() || hidden(cls.path())) continue;
    std::string label = cls.path().filename().string();
    if (std::string why = item_text_problem(label); !why.empty()) {
      skip(cls.path(), "class folder name " + why + " (a label must be UTF-8 without control characters; rename it)");
      continue;
    }
    for (auto it = fs::recursive_directory_iterator(cls.path()); it != fs::recursive_directory_iterator(); ++it) {
      const fs::directory_entry& f = *it;
      if (hidden(f.path())) {
        if (f.is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (!f.is_regular_file() || !is_image_path(f.path().string())) continue;
      LabeledImage li;
      li.path = f.path().string();
      li.id = f.path().lexically_relative(fs::path(dir)).generic_string();
      li.label = label;
      if (std::string why = item_text_problem(li.id); !why.empty()) {
        skip(f.path(), "file name " + why + " (an id must be UTF-8 without control characters; rename it)");
        continue;
      }
      out.push_back(std::move(li));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const LabeledImage& a, const LabeledImage& b) { return std::tie(a.label, a.id) < std::tie(b.label, b.id); });
  return out;
}

}  // namespace vismem
