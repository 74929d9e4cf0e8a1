// bench_encoder_opencv: MobileNet V1 embeddings per second, vismem vs OpenCV 4.6 DNN
// running the same network (models/mnv1_embedder_fp32.onnx), same images, same threads.
//
// Usage: bench_encoder_opencv [--threads 2] [--images 64] [--reps 9] [--shared DIR] [--int8]
//        VISMEM_ISA=portable bench_encoder_opencv ...   (our kernels at a lower level)
// --int8 also times vismem's opt-in int8 mode (Precision::int8) in the same
// alternation, and prints its lowest cosine to the float32 embeddings.
//
// For batch 1 and batch 32 it prints medians of
//   network only: ms per image for a ready [n,3,224,224] float input;
//   end to end:   images/s for decode (JPEG) + preprocess + network, where both
//                 sides decode and preprocess with vismem's code (on the same
//                 threads), so the difference is the network.
// Runs alternate between the two engines so machine noise hits both alike.
// OpenBLAS picks its kernels by CPU model at load time and falls back to
// generic SSE3 ("Prescott") on CPUs it does not know: the core in use is
// printed; OPENBLAS_CORETYPE=SkylakeX (or Haswell) selects better ones.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

// OpenCV 4.6's headers predate C++20's deprecation of mixed-enum arithmetic.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#pragma GCC diagnostic pop

#include "cpu.h"
#include "error.h"
#include "image.h"
#include "linalg.h"
#include "mobilenet.h"
#include "preprocess.h"

extern "C" char* openblas_get_corename(void);

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::vector<std::string> jpegs(const std::string& dir, size_t limit) {
  std::vector<std::string> all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file() && vismem::is_image_path(e.path().string())) all.push_back(e.path().string());
  std::sort(all.begin(), all.end());
  // Every k-th file, so all ten classes (and their varied sizes) are in the set.
  std::vector<std::string> out;
  const size_t step = std::max<size_t>(1, all.size() / limit);
  for (size_t i = 0; i < all.size() && out.size() < limit; i += step) out.push_back(all[i]);
  return out;
}

// The lowest cosine between rows of a and b (n x d).
double min_cosine(const std::vector<float>& a, const std::vector<float>& b, int n, int d) {
  double lo = 1;
  for (int i = 0; i < n; ++i) {
    double ab = 0, aa = 0, bb = 0;
    for (int j = 0; j < d; ++j) {
      const double x = a[size_t(i) * d + j], y = b[size_t(i) * d + j];
      ab += x * y, aa += x * x, bb += y * y;
    }
    lo = std::min(lo, ab / std::sqrt(aa * bb));
  }
  return lo;
}

// Decode + preprocess paths[b, b+n) into px on `threads` threads (vismem code for both sides).
void load_pixels(const std::vector<std::string>& paths, size_t b, int n, const vismem::PreprocessConfig& pc,
                 float* px, int threads) {
  const int64_t img = 3 * int64_t{pc.crop} * pc.crop;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int i = 0; i < n; ++i) vismem::preprocess(vismem::decode_image_file(paths[b + i]), pc, px + i * img);
}

struct OpenCvNet {
  cv::dnn::Net net;
  explicit OpenCvNet(const std::string& onnx) : net(cv::dnn::readNetFromONNX(onnx)) {
    net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  }
  // px: n x 3 x 224 x 224 -> out: n x 1024
  void forward(float* px, int n, float* out) {
    const int dims[4] = {n, 3, 224, 224};
    cv::Mat blob(4, dims, CV_32F, px);
    net.setInput(blob);
    cv::Mat y = net.forward();
    std::memcpy(out, y.ptr<float>(), sizeof(float) * n * 1024);
  }
};

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, images = 64, reps = 9;
  bool int8 = false;
  std::string shared = "../shared";
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--int8") {
      int8 = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--images") images = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--shared") shared = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const std::string model = shared + "/models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite";
    auto ours = vismem::MobileNet::load(model);
    auto ours8 = int8 ? vismem::MobileNet::load(model, vismem::Precision::int8) : nullptr;
    OpenCvNet theirs(shared + "/models/mnv1_embedder_fp32.onnx");
    cv::setNumThreads(threads);
    const vismem::PreprocessConfig pc = ours->preprocess();
    const std::vector<std::string> paths = jpegs(shared + "/data/imagenette2/val", images);
    if (paths.size() < 32) throw vismem::Error("need at least 32 JPEGs under " + shared + "/data/imagenette2/val");
    std::printf("vismem MobileNet V1 (float32 from the uint8 .tflite) vs OpenCV %s DNN (ONNX)\n", CV_VERSION);
    std::printf("threads %d, %zu imagenette JPEGs, %d runs per cell, OpenBLAS core: %s\n", threads, paths.size(), reps,
                openblas_get_corename());
    std::printf("%s (VISMEM_ISA=portable|avx2|avx512 lowers the kernel level)\n", vismem::cpu_description().c_str());

    const int64_t img = 3 * 224 * 224;
    std::vector<float> px(32 * img), out_ours(32 * 1024), out_cv(32 * 1024);
    load_pixels(paths, 0, 32, pc, px.data(), threads);
    // Sanity: the two engines compute the same embeddings.
    ours->forward(px.data(), 32, out_ours.data(), threads);
    std::vector<float> px_copy = px;
    theirs.forward(px_copy.data(), 32, out_cv.data());
    std::printf("min cosine vismem vs OpenCV over 32 images: %.7f\n", min_cosine(out_ours, out_cv, 32, 1024));
    if (ours8) {
      std::vector<float> out8(32 * 1024);
      ours8->forward(px.data(), 32, out8.data(), threads);
      std::printf("min cosine vismem int8 vs vismem float32 over 32 images: %.5f\n", min_cosine(out8, out_ours, 32, 1024));
    }
    std::printf("\n");

    std::printf("%-34s %12s %12s %8s\n", "median", "vismem", "OpenCV", "ratio");
    for (int batch : {1, 32}) {
      // Network only: ms per image. With --int8 the int8 network takes its turn
      // in the same alternation (ours float32, OpenCV, ours int8).
      std::vector<double> t_ours, t_cv, t_8;
      for (int r = 0; r < reps; ++r) {
        const size_t b = (static_cast<size_t>(r) * batch) % (32 - batch + 1);
        auto t0 = Clock::now();
        ours->forward(px.data() + b * img, batch, out_ours.data(), threads);
        t_ours.push_back(ms_since(t0) / batch);
        std::copy(px.begin() + b * img, px.begin() + (b + batch) * img, px_copy.begin());
        t0 = Clock::now();
        theirs.forward(px_copy.data(), batch, out_cv.data());
        t_cv.push_back(ms_since(t0) / batch);
        if (ours8) {
          t0 = Clock::now();
          ours8->forward(px.data() + b * img, batch, out_ours.data(), threads);
          t_8.push_back(ms_since(t0) / batch);
        }
      }
      const double mo = median(t_ours), mc = median(t_cv);
      std::printf("network, batch %2d (ms/image)       %12.2f %12.2f %7.2fx\n", batch, mo, mc, mc / mo);
      if (ours8) {
        const double m8 = median(t_8);
        std::printf("network int8, batch %2d (ms/image)  %12.2f %12.2f %7.2fx   (int8 vs float32: %.2fx)\n", batch, m8,
                    mc, mc / m8, mo / m8);
      }

      // End to end: decode + preprocess + network, images/s.
      std::vector<double> r_ours, r_cv;
      std::vector<float> buf(batch * img), out(batch * 1024);
      for (int r = 0; r < reps; ++r) {
        const size_t b = (static_cast<size_t>(r) * batch) % (paths.size() - batch + 1);
        auto t0 = Clock::now();
        load_pixels(paths, b, batch, pc, buf.data(), threads);
        ours->forward(buf.data(), batch, out.data(), threads);
        r_ours.push_back(batch * 1000.0 / ms_since(t0));
        t0 = Clock::now();
        load_pixels(paths, b, batch, pc, buf.data(), threads);
        theirs.forward(buf.data(), batch, out.data());
        r_cv.push_back(batch * 1000.0 / ms_since(t0));
      }
      const double eo = median(r_ours), ec = median(r_cv);
      std::printf("decode+preprocess+net, batch %2d (img/s) %7.1f %12.1f %7.2fx\n", batch, eo, ec, eo / ec);
    }
    std::printf("\nratio: how many times faster vismem is (OpenCV ms / vismem ms; vismem img/s / OpenCV img/s)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_encoder_opencv: %s\n", e.what());
    return 1;
  }
  return 0;
}
