// mobilenet.h: MobileNet V1 / V2 encoders, run in float32 from Coral's uint8 TFLite files.
//
// Basic usage:
//   std::unique_ptr<vismem::MobileNet> net = vismem::MobileNet::load("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite");
//   std::vector<float> px(n * 3 * 224 * 224);   // CHW, (x - 128) / 128 (net->preprocess())
//   std::vector<float> emb(n * net->dim());
//   net->forward(px.data(), n, emb.data());      // V1: the 1024-d pool; V2: the 1280-d pool
//   std::vector<float> probs(n * net->output_dim());
//   net->run_full(px.data(), n, probs.data());   // V2: the 1001-class softmax
//
// The weights are dequantized once at load ((q - zero_point) * scale, int32
// biases with input_scale * weight_scale) and the graph runs in float32, NHWC,
// without the intermediate requantizations of the uint8 model: outputs match
// the dequantized float network (OpenCV / ONNX) to cosine ~1, and the uint8
// model (Arm NN) to cosine > 0.998. The embedding is the output of the graph's
// last global AVERAGE_POOL_2D, taken as float (the model's final uint8
// requantization is skipped); the graph runs only up to it.
// Operators: CONV_2D, DEPTHWISE_CONV_2D, AVERAGE_POOL_2D, ADD, SOFTMAX,
// RESHAPE / SQUEEZE / QUANTIZE / DEQUANTIZE (as copies); fused NONE / RELU /
// RELU6 / RELU_N1_TO_1. Anything else throws vismem::Error at load.
// int8 (load(path, Precision::int8)): the 1x1 convs with 64 or more input
// channels (~90% of V1's multiply-adds) run as int8 GEMMs (qgemm.h: the
// weights on 8 bits per output channel, activations on 8 bits per pixel at run
// time, bias and ReLU6 fused into the epilogue); the first 3x3 conv, the first
// 1x1 conv (32 inputs: its int8 form was slower than float and gave ~30% of
// int8's error), the depthwise convs and the pooling stay float32. The file's
// uint8 weights are kept exactly (quantize_rows' grid) but for the few channels
// whose codes reach past 127 from the zero point.
// Embeddings: cosine >= 0.9997 to float32's. fingerprint() ends in "|int8|a8"
// (the earlier int8 revision, 7-bit activations, ended in "|int8").
// Kernels: per vector ISA level (portable, AVX2, AVX-512; mobilenet_kernels.inl),
// chosen at run time by cpu_isa(). The float convs (all of them in float32,
// the first two in int8) run on weights packed at load (pmatmul,
// packed_gemm.h) where packed_gemm_preferred() (avx2; avx512 without OpenBLAS AVX-512 kernels): an image's
// embedding is then bit-identical whatever the batch and threads. Elsewhere
// they are OpenBLAS sgemm, and batch size and threads move the embeddings
// slightly (float32 ~1e-7; int8 cosine > 0.9995: a last-bit difference in a
// float layer can flip a rounding of the next layer's activations).
// Thread safety: read-only after load; forward() / run_full() may run from
// several threads at once: one pass at a time uses the process's kept team of
// threads and the arena kept beside it (team.h, TeamLease), the others a team
// and an arena of their own. They thread themselves and so set OpenBLAS to
// one thread (set_blas_threads(1)).
#pragma once
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "encoder.h"

namespace vismem {

class MobileNet final : public Encoder {
 public:
  // Reads, validates and dequantizes a .tflite file. Throws vismem::Error on a
  // corrupt or unsupported model.
  static std::unique_ptr<MobileNet> load(const std::string& path, Precision precision = Precision::f32);
  // The same from the file's bytes; name is used in messages and as path.
  static std::unique_ptr<MobileNet> load(std::vector<uint8_t> bytes, const std::string& name,
                                         Precision precision = Precision::f32);
  ~MobileNet() override;

  std::string name() const override;  // "mobilenet_v2" if the graph has residual ADDs, else "mobilenet_v1"
  int dim() const override;           // channels of the pooled embedding
  int input_size() const override;    // the model's input height (224)
  const PreprocessConfig& preprocess() const override;  // PreprocessConfig::mobilenet(), crop = input_size()
  std::string fingerprint() const override;             // sha256 of the file + "|" + preprocess().describe() (+ "|int8|a8")
  Precision precision() const override;
  // pixels: n x 3 x S x S CHW; out: n x dim(). threads: 0 = default_threads().
  void forward(const float* pixels, int n, float* out, int threads = 0) const override;

  // The whole graph up to the model's output tensor: n x output_dim() floats.
  int output_dim() const;
  void run_full(const float* pixels, int n, float* out, int threads = 0) const;

  const std::string& embedding_tensor() const;  // name of the tensor forward() returns
  const std::string& output_tensor() const;     // name of the tensor run_full() returns
  // One line per operator run: "CONV_2D 3x3/2 [112,112,32] <- [224,224,3] ...".
  std::string summary() const;

  struct Impl;  // Config + Weights + run plans (mobilenet.cpp)

 private:
  explicit MobileNet(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vismem
