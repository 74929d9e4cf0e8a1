// The fuzz targets' driver without libFuzzer (any compiler): replays the
// given seed files (or folders of them), then runs a fixed number of
// deterministic mutations of them (bit flips, interesting values, cuts,
// repeats, splices). ctest runs each target this way for a few seconds;
// scripts/fuzz.sh builds the same targets with libFuzzer for long runs.
//
//   fuzz_image [--iterations N] [--seed S] fuzz/corpus/image [crash-file ...]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

void mutate(Bytes& b, std::mt19937_64& rng, const std::vector<Bytes>& seeds) {
  auto pick = [&](size_t n) { return n ? size_t(rng() % n) : 0; };
  static const uint32_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff,
                                         0x80000000, 0xffffffff};
  switch (rng() % 8) {
    case 0:  // flip a bit
      if (!b.empty()) b[pick(b.size())] ^= uint8_t(1u << (rng() % 8));
      break;
    case 1:  // a random byte
      if (!b.empty()) b[pick(b.size())] = uint8_t(rng());
      break;
    case 2: {  // an interesting 1/2/4-byte value, either byte order
      const uint32_t v = interesting[pick(std::size(interesting))];
      const size_t w = size_t(1) << (rng() % 3);
      if (b.size() < w) break;
      const size_t at = pick(b.size() - w + 1);
      const bool big = rng() & 1;
      for (size_t i = 0; i < w; ++i) b[at + i] = uint8_t(v >> (8 * (big ? w - 1 - i : i)));
      break;
    }
    case 3:  // cut the end
      b.resize(pick(b.size() + 1));
      break;
    case 4: {  // delete a range
      if (b.empty()) break;
      const size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(64, b.size() - at));
      b.erase(b.begin() + long(at), b.begin() + long(at + n));
      break;
    }
    case 5: {  // repeat a range
      if (b.empty() || b.size() > (1 << 20)) break;
      const size_t at = pick(b.size()), n = 1 + pick(std::min<size_t>(64, b.size() - at));
      Bytes r(b.begin() + long(at), b.begin() + long(at + n));
      b.insert(b.begin() + long(pick(b.size() + 1)), r.begin(), r.end());
      break;
    }
    case 6: {  // splice in part of another seed
      const Bytes& o = seeds[pick(seeds.size())];
      if (o.empty()) break;
      const size_t at = pick(o.size()), n = 1 + pick(std::min<size_t>(256, o.size() - at));
      const size_t to = pick(b.size() + 1);
      b.resize(std::max(b.size(), to + n));
      std::memcpy(b.data() + to, o.data() + at, n);
      break;
    }
    default:  // a digit or sign in text formats (JSON, .npy headers)
      if (!b.empty()) b[pick(b.size())] = uint8_t("0123456789-+.eE,:[]{}\"9"[pick(23)]);
  }
}

// The input being run, written to fuzz-crash-input when the target dies, so
// that the crash can be replayed (pass the file back to the driver).
const Bytes* current = nullptr;

extern "C" void save_current(int sig) {
  if (current) {
    int fd = open("fuzz-crash-input", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      if (write(fd, current->data(), current->size()) < 0) {}
      close(fd);
    }
    const char msg[] = "fuzz driver: the input is in ./fuzz-crash-input\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void run(const Bytes& b) {
  current = &b;
  LLVMFuzzerTestOneInput(b.data(), b.size());
  current = nullptr;
}

Bytes read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  long iterations = 2000;
  uint64_t seed = 1;
  std::vector<Bytes> seeds;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) iterations = std::strtol(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (std::filesystem::is_directory(a)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(a))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // the same order, so the same mutations, every run
      for (const auto& f : files) seeds.push_back(read_all(f));
    } else if (std::filesystem::is_regular_file(a)) {
      seeds.push_back(read_all(a));
    } else {
      std::fprintf(stderr, "fuzz driver: no such file or folder: %s\n", a.c_str());
      return 2;
    }
  }
  seeds.push_back({});  // the empty input, always
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) signal(sig, save_current);
  for (const Bytes& s : seeds) run(s);
  std::mt19937_64 rng(seed);
  for (long it = 0; it < iterations; ++it) {
    Bytes b = seeds[rng() % seeds.size()];
    for (int m = 1 + int(rng() % 4); m > 0; --m) mutate(b, rng, seeds);
    run(b);
  }
  std::printf("%zu seeds and %ld mutations: no crash, every refusal a vismem::Error\n", seeds.size(), iterations);
  return 0;
}
