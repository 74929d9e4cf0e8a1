// tflite_builder.h: writes small TFLite flatbuffers by hand, for tests.
//
// Basic usage:
//   vismem::test::ModelSpec spec;  // opcodes, tensors, operators, buffers as schema.fbs names them
//   spec.tensors.push_back({.shape = {1, 6, 6, 3}, .name = "input"});
//   std::vector<uint8_t> bytes = vismem::test::build_model(spec);
//
// Objects are written front to back (a parent's reference fields are patched
// once its child is written), with the field numbers of schema.fbs; an
// independent writer, so the reader is checked against the schema, not itself.
// Thread safety: pure functions over values.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace vismem::test {

struct Fb {
  std::vector<uint8_t> b;
  size_t here() const { return b.size(); }
  void pad(size_t a) {
    while (b.size() % a) b.push_back(0);
  }
  template <class T>
  void raw(T v) {
    uint8_t t[sizeof(T)];
    std::memcpy(t, &v, sizeof v);
    b.insert(b.end(), t, t + sizeof v);
  }
  void patch_ref(size_t at, size_t target) {
    uint32_t off = static_cast<uint32_t>(target - at);
    std::memcpy(&b[at], &off, 4);
  }
};

using Writer = std::function<size_t(Fb&)>;  // writes an object, returns its position

struct Field {
  int id = 0;
  std::vector<uint8_t> scalar;  // inline bytes, or
  Writer child;                 // a referenced table / vector / string
};

template <class T>
Field scalar(int id, T v) {
  Field f;
  f.id = id;
  f.scalar.resize(sizeof v);
  std::memcpy(f.scalar.data(), &v, sizeof v);
  return f;
}
inline Field ref(int id, Writer w) {
  Field f;
  f.id = id;
  f.child = std::move(w);
  return f;
}

inline size_t write_table(Fb& f, const std::vector<Field>& fields) {
  int max_id = -1;
  for (const Field& x : fields) max_id = std::max(max_id, x.id);
  // Layout relative to the table start: soffset, then each field at its natural alignment.
  std::vector<uint16_t> off(max_id + 1, 0);
  size_t size = 4;
  for (const Field& x : fields) {
    size_t n = x.child ? 4 : x.scalar.size();
    size = (size + n - 1) / n * n;
    off[x.id] = static_cast<uint16_t>(size);
    size += n;
  }
  f.pad(2);
  const size_t vt = f.here();
  f.raw<uint16_t>(static_cast<uint16_t>(4 + 2 * (max_id + 1)));
  f.raw<uint16_t>(static_cast<uint16_t>(size));
  for (uint16_t o : off) f.raw<uint16_t>(o);
  f.pad(8);
  const size_t table = f.here();
  f.b.resize(table + size, 0);
  const int32_t soff = static_cast<int32_t>(table - vt);
  std::memcpy(&f.b[table], &soff, 4);
  for (const Field& x : fields)
    if (!x.child) std::memcpy(&f.b[table + off[x.id]], x.scalar.data(), x.scalar.size());
  for (const Field& x : fields)
    if (x.child) {
      size_t child = x.child(f);
      f.patch_ref(table + off[x.id], child);
    }
  return table;
}

template <class T>
Writer vec(std::vector<T> v) {
  return [v](Fb& f) {
    while ((f.here() + 4) % sizeof(T)) f.b.push_back(0);  // elements naturally aligned
    size_t pos = f.here();
    f.raw<uint32_t>(static_cast<uint32_t>(v.size()));
    for (const T& x : v) f.raw<T>(x);
    return pos;
  };
}
inline Writer str(std::string s) {
  return [s](Fb& f) {
    f.pad(4);
    size_t pos = f.here();
    f.raw<uint32_t>(static_cast<uint32_t>(s.size()));
    f.b.insert(f.b.end(), s.begin(), s.end());
    f.b.push_back(0);
    return pos;
  };
}
inline Writer tables(std::vector<std::vector<Field>> items) {
  return [items](Fb& f) {
    f.pad(4);
    size_t pos = f.here();
    f.raw<uint32_t>(static_cast<uint32_t>(items.size()));
    f.b.resize(f.here() + 4 * items.size(), 0);
    for (size_t i = 0; i < items.size(); ++i) {
      size_t t = write_table(f, items[i]);
      f.patch_ref(pos + 4 + 4 * i, t);
    }
    return pos;
  };
}

struct TensorSpec {
  std::vector<int32_t> shape = {};
  int8_t type = 0;  // FLOAT32
  uint32_t buffer = 0;
  std::string name = {};
  std::vector<float> scale = {};
  std::vector<int64_t> zero_point = {};
  int32_t quantized_dimension = 0;
};

struct OpSpec {
  uint32_t opcode_index = 0;
  std::vector<int32_t> inputs = {}, outputs = {};
  uint8_t options_type = 0;  // BuiltinOptions union tag
  std::vector<Field> options = {};
};

struct ModelSpec {
  std::vector<std::pair<int8_t, int32_t>> opcodes;  // (deprecated_builtin_code, builtin_code)
  std::vector<TensorSpec> tensors;
  std::vector<int32_t> inputs, outputs;
  std::vector<OpSpec> ops;
  std::vector<std::vector<uint8_t>> buffers;  // buffers[0] should be empty
};

inline std::vector<uint8_t> build_model(const ModelSpec& m) {
  std::vector<std::vector<Field>> codes, tensors, ops, buffers;
  for (auto [dep, code] : m.opcodes) codes.push_back({scalar<int8_t>(0, dep), scalar<int32_t>(2, 1), scalar<int32_t>(3, code)});
  for (const TensorSpec& t : m.tensors) {
    std::vector<Field> q = {ref(2, vec(t.scale)), ref(3, vec(t.zero_point)), scalar<int32_t>(6, t.quantized_dimension)};
    tensors.push_back({ref(0, vec(t.shape)), scalar<int8_t>(1, t.type), scalar<uint32_t>(2, t.buffer), ref(3, str(t.name)),
                       ref(4, [q](Fb& f) { return write_table(f, q); })});
  }
  for (const OpSpec& o : m.ops) {
    std::vector<Field> fs = {scalar<uint32_t>(0, o.opcode_index), ref(1, vec(o.inputs)), ref(2, vec(o.outputs))};
    if (o.options_type) {
      fs.push_back(scalar<uint8_t>(3, o.options_type));
      std::vector<Field> opt = o.options;
      fs.push_back(ref(4, [opt](Fb& f) { return write_table(f, opt); }));
    }
    ops.push_back(fs);
  }
  for (const auto& data : m.buffers) {
    if (data.empty())
      buffers.push_back({});
    else
      buffers.push_back({ref(0, [data](Fb& f) {
        while ((f.here() + 4) % 16) f.b.push_back(0);  // force_align: 16
        size_t pos = f.here();
        f.raw<uint32_t>(static_cast<uint32_t>(data.size()));
        f.b.insert(f.b.end(), data.begin(), data.end());
        return pos;
      })});
  }
  std::vector<Field> subgraph = {ref(0, tables(tensors)), ref(1, vec(m.inputs)), ref(2, vec(m.outputs)),
                                 ref(3, tables(ops)), ref(4, str("main"))};
  std::vector<Field> model = {scalar<uint32_t>(0, 3), ref(1, tables(codes)),
                              ref(2, tables({subgraph})), ref(3, str("vismem test model")), ref(4, tables(buffers))};
  Fb f;
  f.raw<uint32_t>(0);
  f.b.insert(f.b.end(), {'T', 'F', 'L', '3'});
  size_t root = write_table(f, model);
  f.patch_ref(0, root);
  return f.b;
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Deterministic values in [-1, 1).
inline std::vector<float> pseudo_random(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    v[i] = static_cast<float>(seed >> 8) / static_cast<float>(1u << 23) - 1.0f;
  }
  return v;
}

// A 6x6 float network with every operator the MobileNet runner supports:
//   0 input [1,6,6,3] -> CONV_2D 3x3/2 SAME, RELU6, uint8 weights, int32 bias (own scale) -> 3 [1,3,3,4]
//   -> DEPTHWISE_CONV_2D 3x3/1 SAME, int8 per-channel weights, float bias -> 6 [1,3,3,4]
//   ADD(3, 6), RELU -> 7 -> AVERAGE_POOL_2D 3x3 VALID -> 8 "pool" [1,1,1,4]
//   -> CONV_2D 1x1 float -> 11 [1,1,1,5] -> RESHAPE -> 13 [1,5] -> SOFTMAX -> 14 "probs"
// A 6-px input with stride 2 makes TF SAME padding asymmetric (0 before, 1 after).
inline ModelSpec small_net() {
  ModelSpec s;
  s.opcodes = {{3, 3}, {4, 4}, {0, 0}, {1, 1}, {22, 22}, {25, 25}};
  std::vector<uint8_t> conv_w(4 * 3 * 3 * 3);
  std::vector<float> r = pseudo_random(conv_w.size(), 1);
  for (size_t i = 0; i < conv_w.size(); ++i) conv_w[i] = static_cast<uint8_t>(128 + r[i] * 127);
  std::vector<int32_t> conv_b = {-300, 0, 250, 1000};
  std::vector<int8_t> dw_w(3 * 3 * 4);
  r = pseudo_random(dw_w.size(), 2);
  for (size_t i = 0; i < dw_w.size(); ++i) dw_w[i] = static_cast<int8_t>(r[i] * 120);
  std::vector<int32_t> new_shape = {1, 5};
  s.buffers = {{},
               conv_w,
               bytes_of(conv_b),
               bytes_of(dw_w),
               bytes_of(pseudo_random(4, 3)),
               bytes_of(pseudo_random(5 * 4, 4)),
               bytes_of(pseudo_random(5, 5)),
               bytes_of(new_shape)};
  s.tensors = {
      {.shape = {1, 6, 6, 3}, .name = "input"},                                                        // 0
      {.shape = {4, 3, 3, 3}, .type = 3, .buffer = 1, .name = "conv/w", .scale = {0.02f}, .zero_point = {128}},  // 1
      {.shape = {4}, .type = 2, .buffer = 2, .name = "conv/b", .scale = {0.001f}, .zero_point = {0}},   // 2
      {.shape = {1, 3, 3, 4}, .name = "conv"},                                                          // 3
      {.shape = {1, 3, 3, 4}, .type = 9, .buffer = 3, .name = "dw/w", .scale = {0.05f, 0.1f, 0.02f, 0.07f},
       .zero_point = {0, 1, -2, 3}, .quantized_dimension = 3},                                          // 4
      {.shape = {4}, .buffer = 4, .name = "dw/b"},                                                      // 5
      {.shape = {1, 3, 3, 4}, .name = "dw"},                                                            // 6
      {.shape = {1, 3, 3, 4}, .name = "add"},                                                           // 7
      {.shape = {1, 1, 1, 4}, .name = "pool"},                                                          // 8
      {.shape = {5, 1, 1, 4}, .buffer = 5, .name = "fc/w"},                                             // 9
      {.shape = {5}, .buffer = 6, .name = "fc/b"},                                                      // 10
      {.shape = {1, 1, 1, 5}, .name = "logits"},                                                        // 11
      {.shape = {2}, .type = 2, .buffer = 7, .name = "shape"},                                          // 12
      {.shape = {1, 5}, .name = "flat"},                                                                // 13
      {.shape = {1, 5}, .name = "probs"},                                                               // 14
  };
  s.inputs = {0};
  s.outputs = {14};
  s.ops = {
      {.opcode_index = 0, .inputs = {0, 1, 2}, .outputs = {3}, .options_type = 1,
       .options = {scalar<int8_t>(0, 0), scalar<int32_t>(1, 2), scalar<int32_t>(2, 2), scalar<int8_t>(3, 3)}},
      {.opcode_index = 1, .inputs = {3, 4, 5}, .outputs = {6}, .options_type = 2,
       .options = {scalar<int8_t>(0, 0), scalar<int32_t>(1, 1), scalar<int32_t>(2, 1), scalar<int32_t>(3, 1)}},
      {.opcode_index = 2, .inputs = {3, 6}, .outputs = {7}, .options_type = 11, .options = {scalar<int8_t>(0, 1)}},
      {.opcode_index = 3, .inputs = {7}, .outputs = {8}, .options_type = 5,
       .options = {scalar<int8_t>(0, 1), scalar<int32_t>(1, 1), scalar<int32_t>(2, 1), scalar<int32_t>(3, 3),
                   scalar<int32_t>(4, 3)}},
      {.opcode_index = 0, .inputs = {8, 9, 10}, .outputs = {11}, .options_type = 1,
       .options = {scalar<int8_t>(0, 1), scalar<int32_t>(1, 1), scalar<int32_t>(2, 1)}},
      {.opcode_index = 4, .inputs = {11, 12}, .outputs = {13}, .options_type = 17, .options = {ref(0, vec(new_shape))}},
      {.opcode_index = 5, .inputs = {13}, .outputs = {14}, .options_type = 9, .options = {scalar<float>(0, 1.0f)}},
  };
  return s;
}

}  // namespace vismem::test
