#include "server.h"

#include <httplib.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <shared_mutex>

#include "decision.h"
#include "encoder.h"
#include "error.h"
#include "image.h"
#include "preprocess.h"

namespace vismem {

nlohmann::json memory_info_json(const MemoryInfo& i) {
  nlohmann::json j = {{"path", i.path},
                      {"dim", i.dim},
                      {"items", i.items},
                      {"labels", i.labels},
                      {"model_id", i.model_id},
                      {"fingerprint", i.fingerprint},
                      {"model_path", i.model_path},
                      {"format_version", i.format_version},
                      {"created_at", i.created_at},
                      {"updated_at", i.updated_at},
                      {"generation", i.generation},
                      {"pruning_mode", i.pruning_mode},
                      {"pruning_threshold", i.pruning_threshold},
                      {"counts_k", i.counts_k},
                      {"counts_stale", i.counts_stale()},
                      {"counts_computed", i.counts_generation >= 0}};
  if (i.ood_k > 0) j["ood"] = {{"threshold", i.ood_threshold}, {"k", i.ood_k}, {"fpr", i.ood_fpr}, {"stale", i.ood_stale()}};
  return j;
}

namespace {

// A client error: answered 400 (or the given status) with its message.
struct HttpError : Error {
  int status;
  HttpError(int s, const std::string& m) : Error(m), status(s) {}
};

nlohmann::json parse_body(const httplib::Request& req) {
  try {
    return nlohmann::json::parse(req.body);
  } catch (const nlohmann::json::exception& e) {
    throw HttpError(400, std::string("request body is not valid JSON: ") + e.what());
  }
}

// "embeddings": [[...], ...] or "embedding": [...] -> n * dim floats.
std::vector<float> embeddings_of(const nlohmann::json& j, int dim, int64_t& n) {
  nlohmann::json rows;
  if (j.contains("embeddings")) rows = j["embeddings"];
  else if (j.contains("embedding")) rows = nlohmann::json::array({j["embedding"]});
  else throw HttpError(400, "give \"embeddings\": [[...], ...] or \"embedding\": [...]");
  if (!rows.is_array() || rows.empty()) throw HttpError(400, "\"embeddings\" must be a non-empty array of arrays");
  std::vector<float> x;
  x.reserve(rows.size() * static_cast<size_t>(dim));
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    if (!row.is_array() || static_cast<int>(row.size()) != dim)
      throw HttpError(400, "embedding " + std::to_string(r) + " must be an array of " + std::to_string(dim) + " numbers");
    for (const auto& v : row) {
      if (!v.is_number()) throw HttpError(400, "embedding " + std::to_string(r) + " holds a non-number");
      x.push_back(v.get<float>());
    }
  }
  n = static_cast<int64_t>(rows.size());
  return x;
}

std::vector<std::string> strings_of(const nlohmann::json& j, const char* key, size_t expected) {
  if (!j.contains(key)) return {};
  const auto& a = j[key];
  if (!a.is_array() || (expected && a.size() != expected))
    throw HttpError(400, std::string("\"") + key + "\" must be an array of " + std::to_string(expected) + " strings");
  std::vector<std::string> out;
  for (const auto& v : a) {
    if (!v.is_string()) throw HttpError(400, std::string("\"") + key + "\" must hold strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

void reply(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

}  // namespace

struct Server::Impl {
  Memory mem;
  ServerOptions opt;
  httplib::Server http;
  std::shared_mutex lock;      // readers: search/classify/info; writers: add/remove
  std::mutex encoder_lock;     // one image request through the encoder at a time
  std::unique_ptr<Encoder> encoder;
  // The OOD threshold, read once: info() reads the file and walks every
  // label, too much per request; it changes only through `vismem ood-fit`.
  int ood_k = 100;
  double ood_threshold = -1;

  Impl(Memory m, ServerOptions o) : mem(std::move(m)), opt(std::move(o)) {
    MemoryInfo info = mem.info();
    if (info.ood_k > 0) {
      ood_k = info.ood_k;
      ood_threshold = info.ood_threshold;
    }
  }

  const Encoder& get_encoder() {  // under encoder_lock
    if (!encoder) {
      MemoryInfo info = mem.info();
      std::string path = opt.model.empty() ? info.model_path : opt.model;
      if (path.empty()) throw HttpError(400, "this memory is not bound to a model: send embeddings, not images");
      auto enc = load_encoder(path);
      mem.check_fingerprint(enc->fingerprint(), "model " + path);
      if (enc->dim() != mem.dim()) throw Error("model " + path + " does not match the memory's dimension");
      encoder = std::move(enc);
    }
    return *encoder;
  }

  std::vector<float> embed_image(const std::string& body) {
    Image img = decode_image(reinterpret_cast<const uint8_t*>(body.data()), body.size(), "request body");
    std::lock_guard<std::mutex> g(encoder_lock);
    const Encoder& enc = get_encoder();
    const int s = enc.input_size();
    std::vector<float> px(3 * s * s), out(enc.dim());
    preprocess(img, enc.preprocess(), px.data());
    enc.forward(px.data(), 1, out.data(), opt.threads);
    return out;
  }

  static int param_int(const httplib::Request& req, const nlohmann::json& body, const char* key, int fallback) {
    if (body.is_object() && body.contains(key)) {
      if (!body[key].is_number_integer() || body[key].get<int>() < 1)
        throw HttpError(400, std::string("\"") + key + "\" must be a positive integer");
      return body[key].get<int>();
    }
    if (req.has_param(key)) {
      try {
        int v = std::stoi(req.get_param_value(key));
        if (v >= 1) return v;
      } catch (...) {
      }
      throw HttpError(400, std::string(key) + " must be a positive integer");
    }
    return fallback;
  }

  static std::string param_str(const httplib::Request& req, const nlohmann::json& body, const char* key,
                               const std::string& fallback) {
    if (body.is_object() && body.contains(key)) {
      if (!body[key].is_string()) throw HttpError(400, std::string("\"") + key + "\" must be a string");
      return body[key].get<std::string>();
    }
    return req.has_param(key) ? req.get_param_value(key) : fallback;
  }

  nlohmann::json classify(const httplib::Request& req) {
    const std::string ctype = req.get_header_value("Content-Type");
    const bool image = ctype.rfind("image/", 0) == 0 || ctype == "application/octet-stream";
    nlohmann::json body = image ? nlohmann::json::object() : parse_body(req);
    const int k = param_int(req, body, "k", opt.default_k);
    const std::string vote_name = param_str(req, body, "vote", opt.default_vote);
    Vote vote;
    try {
      vote = parse_vote(vote_name);
    } catch (const Error& e) {
      throw HttpError(400, e.what());
    }
    int64_t n = 1;
    std::vector<float> x;
    std::vector<std::string> ids;
    if (image) {
      x = embed_image(req.body);
      ids = {param_str(req, body, "id", "image")};
    } else {
      x = embeddings_of(body, mem.dim(), n);
      ids = strings_of(body, "ids", static_cast<size_t>(n));
    }
    std::shared_lock<std::shared_mutex> g(lock);
    if (mem.size() == 0) throw HttpError(409, "the memory is empty: add items first");
    auto res = mem.search(x.data(), n, std::max(k, ood_k), {}, opt.threads);
    nlohmann::json out = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i) {
      QueryDecision qd = decide_query(mem, res[i], vote, k, ood_k);
      nlohmann::json j = decision_json(ids.empty() ? "q" + std::to_string(i) : ids[i], vote_name, qd);
      if (ood_threshold >= 0) j["out_of_distribution"] = qd.ood > ood_threshold;
      out.push_back(std::move(j));
    }
    return {{"results", out}};
  }

  nlohmann::json search(const httplib::Request& req) {
    nlohmann::json body = parse_body(req);
    const int k = param_int(req, body, "k", 10);
    int64_t n = 0;
    std::vector<float> x = embeddings_of(body, mem.dim(), n);
    std::shared_lock<std::shared_mutex> g(lock);
    nlohmann::json out = nlohmann::json::array();
    for (auto& nn : mem.search(x.data(), n, k, {}, opt.threads)) {
      nlohmann::json l = nlohmann::json::array();
      for (auto& nb : nn) l.push_back({{"id", nb.id}, {"label", nb.label}, {"distance", nb.distance}});
      out.push_back(std::move(l));
    }
    return {{"results", out}};
  }

  nlohmann::json add(const httplib::Request& req) {
    if (opt.read_only) throw HttpError(403, "this service is read-only");
    nlohmann::json body = parse_body(req);
    int64_t n = 0;
    std::vector<float> x = embeddings_of(body, mem.dim(), n);
    auto ids = strings_of(body, "ids", static_cast<size_t>(n));
    auto labels = strings_of(body, "labels", static_cast<size_t>(n));
    if (ids.empty() || labels.empty()) throw HttpError(400, "add needs \"ids\" and \"labels\", one per embedding");
    const std::string mode = param_str(req, body, "mode", "strict");
    AddMode m = AddMode::strict;
    if (mode == "upsert") m = AddMode::upsert;
    else if (mode == "skip") m = AddMode::skip_existing;
    else if (mode != "strict") throw HttpError(400, "mode must be strict, upsert or skip");
    std::unique_lock<std::shared_mutex> g(lock);
    AddResult r = mem.add(ids, labels, x.data(), m);
    return {{"added", r.added}, {"replaced", r.replaced}, {"skipped", r.skipped}, {"items", mem.size()}};
  }

  nlohmann::json remove(const httplib::Request& req) {
    if (opt.read_only) throw HttpError(403, "this service is read-only");
    nlohmann::json body = parse_body(req);
    auto ids = strings_of(body, "ids", 0);
    if (ids.empty()) throw HttpError(400, "remove needs \"ids\": [...]");
    std::unique_lock<std::shared_mutex> g(lock);
    int64_t removed = mem.remove(ids);
    return {{"removed", removed}, {"items", mem.size()}};
  }

  // Every handler's errors become JSON: the service never dies of a request.
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        reply(res, 200, (this->*f)(req));
      } catch (const HttpError& e) {
        reply(res, e.status, {{"error", e.what()}});
      } catch (const Error& e) {
        reply(res, 400, {{"error", e.what()}});
      } catch (const std::exception& e) {
        reply(res, 500, {{"error", std::string("internal error: ") + e.what()}});
      }
    };
  }
};

Server::Server(Memory mem, ServerOptions opt) : impl_(std::make_unique<Impl>(std::move(mem), std::move(opt))) {
  auto& h = impl_->http;
  Impl* p = impl_.get();
  h.set_payload_max_length(p->opt.max_body);
  h.Get("/v1/info", [p](const httplib::Request&, httplib::Response& res) {
    std::shared_lock<std::shared_mutex> g(p->lock);
    reply(res, 200, memory_info_json(p->mem.info()));
  });
  h.Post("/v1/classify", p->guarded(&Impl::classify));
  h.Post("/v1/search", p->guarded(&Impl::search));
  h.Post("/v1/add", p->guarded(&Impl::add));
  h.Post("/v1/remove", p->guarded(&Impl::remove));
  h.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) reply(res, 404, {{"error", "no such endpoint: " + req.method + " " + req.path}});
    else if (res.status == 413) reply(res, 413, {{"error", "request body too large"}});
  });
}

Server::~Server() = default;

int Server::bind(const std::string& host, int port) {
  auto& h = impl_->http;
  if (port == 0) {
    int p = h.bind_to_any_port(host);
    if (p < 0) throw Error("cannot bind " + host);
    return p;
  }
  if (!h.bind_to_port(host, port)) throw Error("cannot bind " + host + ":" + std::to_string(port) + " (in use?)");
  return port;
}

void Server::run() {
  if (!impl_->http.listen_after_bind()) throw Error("the HTTP server stopped with an error");
}

void Server::stop() { impl_->http.stop(); }

}  // namespace vismem
