#include "common.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>

#include "error.h"
#include "npy.h"
#include "textio.h"

namespace vismem::cli {

Matrix read_embeddings(const std::string& path) {
  NpyArray a = read_npy(path);
  if (a.dtype != DType::f32 && a.dtype != DType::f16)
    throw Error(path + ": embeddings must be float32 or float16, not another dtype");
  if (a.shape.size() != 2) throw Error(path + ": embeddings must be a 2-D array (n, d), got shape " + a.shape_str());
  if (a.shape[0] < 1) throw Error(path + ": embeddings have no rows, shape " + a.shape_str());
  // d is an int everywhere after this: refuse it rather than narrow it.
  if (a.shape[1] < 1 || a.shape[1] > (1 << 24))
    throw Error(path + ": embedding dimension " + std::to_string(a.shape[1]) + " is out of range [1, 16777216]");
  Matrix m;
  m.rows = a.shape[0];
  m.cols = static_cast<int>(a.shape[1]);
  m.data = a.to_float();
  return m;
}

EmbeddingView view_embeddings(const std::string& path) {
  EmbeddingView v;
  // Header: magic, version, little-endian header length, then a Python dict literal.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat sb;
    unsigned char pre[12];
    if (::fstat(fd, &sb) == 0 && ::pread(fd, pre, sizeof pre, 0) == static_cast<ssize_t>(sizeof pre) &&
        std::memcmp(pre, "\x93NUMPY", 6) == 0 && (pre[6] == 1 || pre[6] == 2 || pre[6] == 3)) {
      const bool v1 = pre[6] == 1;
      const uint64_t hlen = v1 ? (pre[8] | (pre[9] << 8)) : (pre[8] | (pre[9] << 8) | (pre[10] << 16) | (uint64_t(pre[11]) << 24));
      const uint64_t off = (v1 ? 10 : 12) + hlen;
      std::string h(static_cast<size_t>(std::min<uint64_t>(hlen, 1 << 16)), '\0');
      if (hlen < (1 << 16) && ::pread(fd, h.data(), h.size(), v1 ? 10 : 12) == static_cast<ssize_t>(h.size()) &&
          h.find("'descr': '<f4'") != std::string::npos && h.find("'fortran_order': False") != std::string::npos) {
        long long n = -1, d = -1;
        int used = -1;
        auto sp = h.find("'shape': (");
        if (sp != std::string::npos && std::sscanf(h.c_str() + sp + 10, "%lld, %lld)%n", &n, &d, &used) == 2 && used > 0 && n >= 0 &&
            d > 0 && d <= 65536 && n <= (int64_t{1} << 40)) {
          const uint64_t need = off + static_cast<uint64_t>(n) * static_cast<uint64_t>(d) * 4;
          if (need <= static_cast<uint64_t>(sb.st_size) && off % 4 == 0) {
            void* p = n == 0 ? nullptr : ::mmap(nullptr, need, PROT_READ, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) {
              ::close(fd);
              v.rows = n;
              v.cols = static_cast<int>(d);
              if (p) {
                ::madvise(p, need, MADV_SEQUENTIAL);
                v.data = reinterpret_cast<const float*>(static_cast<const char*>(p) + off);
                v.keep = std::shared_ptr<void>(p, [need](void* q) { ::munmap(q, need); });
              }
              return v;
            }
          }
        }
      }
    }
    ::close(fd);
  }
  auto m = std::make_shared<Matrix>(read_embeddings(path));
  v.rows = m->rows;
  v.cols = m->cols;
  v.data = m->data.data();
  v.keep = m;
  return v;
}

std::vector<std::string> read_list(const std::string& path, int64_t expected, const std::string& what) {
  auto lines = read_lines(path);
  if (expected > 0 && static_cast<int64_t>(lines.size()) != expected)
    throw Error(path + ": " + std::to_string(lines.size()) + " " + what + " for " + std::to_string(expected) +
                " embeddings (one per line expected)");
  for (size_t i = 0; i < lines.size(); ++i) check_item_text(path + ":" + std::to_string(i + 1) + ":", lines[i]);
  return lines;
}

Memory open_memory(const std::string& path) {
  try {
    Memory m = Memory::open(path);
    (void)m.info();  // parses every stored value once, so a corrupt one is reported here
    m.set_search_params(cli_search_params());
    return m;
  } catch (const std::logic_error& e) {  // std::stoi and friends: invalid_argument, out_of_range
    throw Error(path + ": corrupt memory file: a stored value is not a valid number (" + e.what() + ")");
  }
}

int search_k(const Memory& mem, int64_t k) { return static_cast<int>(std::max<int64_t>(1, std::min(k, mem.size()))); }

void require_items(const Memory& mem) {
  if (mem.size() == 0) throw Error(mem.path() + " is empty: add items first");
}

static double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total) : label_(std::move(label)), total_(total), start_(now_s()) {}

void Progress::update(int64_t done) {
  if (done == shown_) return;
  double t = now_s();
  if (t - last_ < (isatty(2) ? 0.25 : 10.0) && done < total_) return;
  last_ = t;
  shown_ = done;
  double el = t - start_;
  double rate = el > 0 ? done / el : 0;
  double eta = rate > 0 ? (total_ - done) / rate : 0;
  int width = 30;
  int fill = total_ > 0 ? static_cast<int>(width * done / total_) : width;
  std::string bar(fill, '#');
  bar += std::string(width - fill, '.');
  std::fprintf(stderr, "\r%s [%s] %lld/%lld  %.1f items/s  ETA %.0fs   ", label_.c_str(), bar.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), rate, eta);
  if (!isatty(2)) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

void Progress::finish() {
  last_ = 0;
  update(total_);
  if (isatty(2)) std::fprintf(stderr, "\n");
}

}  // namespace vismem::cli
