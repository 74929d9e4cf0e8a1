#include "server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <webp/decode.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <semaphore>
#include <shared_mutex>
#include <sstream>

#include "decision.h"
#include "encoder.h"
#include "error.h"
#include "explain.h"
#include "hash.h"
#include "image.h"
#include "preprocess.h"
#include "server_net.h"

namespace vismem {

// The web page's files, built into the binary from web/ (CMake writes web_assets.cpp).
std::string_view web_asset(std::string_view name);

nlohmann::json memory_info_json(const MemoryInfo& i) {
  nlohmann::json j = {{"path", i.path},
                      {"dim", i.dim},
                      {"items", i.items},
                      {"labels", i.labels},
                      {"model_id", i.model_id},
                      {"fingerprint", i.fingerprint},
                      {"model_path", i.model_path},
                      {"model_precision", i.model_precision},
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
  j["index"] = i.index.empty() ? "Flat" : i.index;
  return j;
}

// ---------------------------------------------------------------- tokens

std::vector<ApiToken> read_token_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open the token file");
  std::vector<ApiToken> out;
  std::string line;
  for (int no = 1; std::getline(f, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream in(line);
    std::string scope, hex, name;
    in >> scope >> hex;
    std::getline(in >> std::ws, name);
    const auto bad = [&](const std::string& why) {
      return Error(path + ":" + std::to_string(no) + ": " + why + " (lines are \"read|write SHA256 [NAME]\"; "
                   "make one with `vismem token`)");
    };
    if (scope != "read" && scope != "write") throw bad("scope must be read or write, not \"" + scope + "\"");
    if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw bad("the second field must be the token's sha256, 64 lowercase hex chars");
    out.push_back({hex, scope == "write", name});
  }
  if (out.empty()) throw Error(path + ": no tokens in the token file");
  return out;
}

std::string new_token() {
  unsigned char b[32];
  if (RAND_bytes(b, sizeof b) != 1) throw Error("cannot draw random bytes for a token (OpenSSL RAND_bytes)");
  static const char* hex = "0123456789abcdef";
  std::string t = "vm_";
  for (unsigned char c : b) {
    t += hex[c >> 4];
    t += hex[c & 15];
  }
  return t;
}

std::string token_file_line(const std::string& token, bool write, const std::string& name) {
  std::string line = std::string(write ? "write" : "read") + " " + sha256_hex(token.data(), token.size());
  if (!name.empty()) line += " " + name;
  return line;
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

namespace {

using json = nlohmann::json;
using net::current_request;
using net::Listener;
using net::Metrics;
using net::request_read;

// A client error: answered with its status and message.
struct HttpError : Error {
  int status;
  HttpError(int s, const std::string& m) : Error(m), status(s) {}
};

// Ids and labels are whatever bytes the memory holds: a body is always JSON,
// invalid UTF-8 comes out as U+FFFD instead of an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void reply(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}


// ---------------------------------------------------------------- bounded JSON

// Builds the DOM like nlohmann's own parser but stops at the first value past
// the limits: a 16 MB body of '[' costs 16 levels, not gigabytes.
class BoundedSax : public nlohmann::detail::json_sax_dom_parser<json> {
  using Base = nlohmann::detail::json_sax_dom_parser<json>;

 public:
  BoundedSax(json& root, const ServerLimits& l) : Base(root, false), lim_(l) {}
  int status = 0;
  std::string why;

  bool null() { return count() && Base::null(); }
  bool boolean(bool v) { return count() && Base::boolean(v); }
  bool number_integer(json::number_integer_t v) { return count() && Base::number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return count() && Base::number_unsigned(v); }
  bool number_float(json::number_float_t v, const std::string& s) { return count() && Base::number_float(v, s); }
  bool string(json::string_t& v) { return count() && Base::string(v); }
  bool binary(json::binary_t& v) { return count() && Base::binary(v); }
  bool key(json::string_t& v) { return count() && Base::key(v); }
  bool start_object(std::size_t n) { return deeper() && count() && Base::start_object(n); }
  bool start_array(std::size_t n) { return deeper() && count() && Base::start_array(n); }
  bool end_object() {
    --depth_;
    return Base::end_object();
  }
  bool end_array() {
    --depth_;
    return Base::end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& ex) {
    status = 400;
    why = std::string("request body is not valid JSON: ") + ex.what();
    return false;
  }

 private:
  bool count() {
    if (++values_ <= lim_.max_json_values) return true;
    status = 413;
    why = "the JSON body holds more than " + std::to_string(lim_.max_json_values) + " values (--max-json-values)";
    return false;
  }
  bool deeper() {
    if (++depth_ <= lim_.max_json_depth) return true;
    status = 400;
    why = "the JSON body nests deeper than " + std::to_string(lim_.max_json_depth) + " levels (--max-json-depth)";
    return false;
  }
  const ServerLimits& lim_;
  int64_t values_ = 0;
  int depth_ = 0;
};

json parse_body(const std::string& body, const ServerLimits& lim) {
  json root;
  BoundedSax sax(root, lim);
  bool ok = false;
  try {
    ok = json::sax_parse(body, &sax, json::input_format_t::json, true);
  } catch (const json::exception& e) {  // e.g. a number or string nlohmann refuses
    throw HttpError(400, std::string("request body is not valid JSON: ") + e.what());
  }
  if (!ok) throw HttpError(sax.status ? sax.status : 400, sax.why.empty() ? "request body is not valid JSON" : sax.why);
  if (!root.is_object()) throw HttpError(400, "the request body must be a JSON object");
  return root;
}

// "embeddings": [[...], ...] or "embedding": [...] -> n * dim floats.
std::vector<float> embeddings_of(const json& j, int dim, int64_t max_rows, int64_t& n) {
  const json* rows = nullptr;
  json one;
  if (j.contains("embeddings")) {
    rows = &j["embeddings"];
  } else if (j.contains("embedding")) {
    one = json::array({j["embedding"]});
    rows = &one;
  } else {
    throw HttpError(400, "give \"embeddings\": [[...], ...] or \"embedding\": [...]");
  }
  if (!rows->is_array() || rows->empty()) throw HttpError(400, "\"embeddings\" must be a non-empty array of arrays");
  if (max_rows > 0 && static_cast<int64_t>(rows->size()) > max_rows)
    throw HttpError(413, std::to_string(rows->size()) + " queries in one request; at most " + std::to_string(max_rows) +
                             " (--max-queries)");
  std::vector<float> x;
  x.reserve(rows->size() * static_cast<size_t>(dim));
  for (size_t r = 0; r < rows->size(); ++r) {
    const auto& row = (*rows)[r];
    if (!row.is_array() || row.size() != static_cast<size_t>(dim))
      throw HttpError(400, "embedding " + std::to_string(r) + " must be an array of " + std::to_string(dim) + " numbers");
    for (const auto& v : row) {
      if (!v.is_number()) throw HttpError(400, "embedding " + std::to_string(r) + " holds a non-number");
      const double d = v.get<double>();
      if (!std::isfinite(d) || std::fabs(d) > 3.4e38)
        throw HttpError(400, "embedding " + std::to_string(r) + " holds a number that is not a finite float");
      x.push_back(static_cast<float>(d));
    }
  }
  n = static_cast<int64_t>(rows->size());
  return x;
}

std::vector<std::string> strings_of(const json& j, const char* key, size_t expected) {
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

// An integer parameter from the JSON body or the query string, checked
// against [lo, hi] before any narrowing: 4294967298 is out of range, never 2.
int int_param(const httplib::Request& req, const json& body, const char* key, int fallback, int lo, int hi,
              const char* option) {
  const std::string range = std::string("\"") + key + "\" must be an integer from " + std::to_string(lo) + " to " +
                            std::to_string(hi) + (option[0] ? std::string(" (") + option + ")" : std::string());
  if (body.is_object() && body.contains(key)) {
    const json& v = body[key];
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u < static_cast<uint64_t>(std::max(lo, 0)) || u > static_cast<uint64_t>(hi)) throw HttpError(400, range);
      return static_cast<int>(u);
    }
    if (v.is_number_integer()) {
      const int64_t i = v.get<int64_t>();
      if (i < lo || i > hi) throw HttpError(400, range);
      return static_cast<int>(i);
    }
    throw HttpError(400, range);
  }
  if (req.has_param(key)) {
    const std::string s = req.get_param_value(key);
    int64_t i = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), i);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty() || i < lo || i > hi) throw HttpError(400, range);
    return static_cast<int>(i);
  }
  return fallback;
}

std::string str_param(const httplib::Request& req, const json& body, const char* key, const std::string& fallback) {
  if (body.is_object() && body.contains(key)) {
    if (!body[key].is_string()) throw HttpError(400, std::string("\"") + key + "\" must be a string");
    return body[key].get<std::string>();
  }
  return req.has_param(key) ? req.get_param_value(key) : fallback;
}

// ---------------------------------------------------------------- image headers

uint32_t be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }
uint32_t be32(const uint8_t* p) { return be16(p) << 16 | be16(p + 2); }
int32_t le32(const uint8_t* p) { return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24); }

// Width * height as the image's header claims, before any pixel is decoded
// (-1 when the header cannot be read: the decoder then says what is wrong).
int64_t claimed_pixels(const std::string& body) {
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  const size_t n = body.size();
  if (n >= 24 && !std::memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return int64_t(be32(p + 16)) * be32(p + 20);
  if (n >= 26 && p[0] == 'B' && p[1] == 'M') return int64_t(std::abs(int64_t(le32(p + 18)))) * std::abs(int64_t(le32(p + 22)));
  if (n >= 12 && !std::memcmp(p, "RIFF", 4) && !std::memcmp(p + 8, "WEBP", 4)) {
    int w = 0, h = 0;
    return WebPGetInfo(p, n, &w, &h) ? int64_t(w) * h : -1;
  }
  if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8) {
    // JPEG: walk the markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
    size_t i = 2;
    while (i + 9 < n) {
      if (p[i] != 0xFF) return -1;
      const uint8_t m = p[i + 1];
      if (m == 0xFF) {
        ++i;
        continue;
      }
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return int64_t(be16(p + i + 5)) * be16(p + i + 7);
      if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
        i += 2;
        continue;
      }
      i += 2 + be16(p + i + 2);
    }
  }
  return -1;
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (!e) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The media type of a Content-Type header, without parameters, lowercase.
std::string media_type(const std::string& ctype) {
  std::string t = lower(ctype.substr(0, ctype.find(';')));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
  return t;
}

// A host name or address as given (--host, --allow-host): lowercase, no brackets.
std::string bare_host(const std::string& h) {
  if (h.size() > 2 && h.front() == '[' && h.back() == ']') return lower(h.substr(1, h.size() - 2));
  return lower(h);
}

// The Host header's name without its port ("[::1]:8080" -> "::1").
std::string host_name(const std::string& h) {
  if (!h.empty() && h[0] == '[') {
    const size_t e = h.find(']');
    return e == std::string::npos ? h : lower(h.substr(1, e - 1));
  }
  const size_t colon = h.find(':');
  return lower(colon == std::string::npos ? h : h.substr(0, colon));
}

enum class Scope { none, read, write };

struct Route {
  Scope scope;
  bool json_body;   // POST with application/json
  bool image_body;  // POST may also be image/*
};

bool route_of(const std::string& method, const std::string& path, Route& r) {
  if (method == "GET") {
    if (path == "/" || path == "/app.js" || path == "/healthz") r = {Scope::none, false, false};
    else if (path == "/metrics" || path == "/v1/info") r = {Scope::read, false, false};
    else return false;
    return true;
  }
  if (method == "POST") {
    if (path == "/v1/classify" || path == "/v1/explain") r = {Scope::read, true, true};
    else if (path == "/v1/search") r = {Scope::read, true, false};
    else if (path == "/v1/add" || path == "/v1/remove") r = {Scope::write, true, false};
    else return false;
    return true;
  }
  return false;
}

}  // namespace

struct Server::Impl {
  Memory mem;
  ServerOptions opt;
  Metrics metrics;
  SSL_CTX* tls = nullptr;
  std::unique_ptr<Listener> http;
  std::shared_mutex lock;      // readers: search/classify/info; writers: add/remove
  std::mutex encoder_lock;     // one image request through the encoder at a time
  std::unique_ptr<Encoder> encoder;
  std::counting_semaphore<1024> decodes;
  // The OOD threshold, read once: info() reads the file and walks every
  // label, too much per request; it changes only through `vismem ood-fit`.
  int ood_k = 100;
  double ood_threshold = -1;
  std::vector<std::string> allowed_hosts;  // lowercase; "*" any

  Impl(Memory m, ServerOptions o)
      : mem(std::move(m)), opt(std::move(o)), decodes(std::clamp(opt.limits.max_decodes, 1, 1024)) {
    const ServerLimits& l = opt.limits;
    if (l.max_body < 1 || l.max_json_depth < 3 || l.max_json_values < 1 || l.max_queries < 1 || l.max_k < 1 ||
        l.max_image_pixels < 1 || l.max_decodes < 1 || l.max_decodes > 1024 || l.read_timeout_s < 1 ||
        l.write_timeout_s < 1 || l.idle_timeout_s < 1 || l.max_connections < 1 || l.max_connections > 4096)
      throw Error("server limits out of range (every limit at least 1, JSON depth at least 3, at most 4096 "
                  "connections and 1024 decodes)");
    MemoryInfo info = mem.info();
    if (info.ood_k > 0) {
      ood_k = info.ood_k;
      ood_threshold = info.ood_threshold;
    }
    if (!opt.tls_cert.empty() || !opt.tls_key.empty()) {
      if (opt.tls_cert.empty() || opt.tls_key.empty()) throw Error("TLS needs both --tls-cert and --tls-key");
      tls = SSL_CTX_new(TLS_server_method());
      if (!tls) throw Error("cannot create a TLS context: " + openssl_error());
      SSL_CTX_set_min_proto_version(tls, TLS1_2_VERSION);
      if (SSL_CTX_use_certificate_chain_file(tls, opt.tls_cert.c_str()) != 1) {
        SSL_CTX_free(tls);
        throw Error(opt.tls_cert + ": cannot load the TLS certificate: " + openssl_error());
      }
      if (SSL_CTX_use_PrivateKey_file(tls, opt.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(tls) != 1) {
        SSL_CTX_free(tls);
        throw Error(opt.tls_key + ": cannot load the TLS key (or it does not match the certificate): " + openssl_error());
      }
    }
    signal(SIGPIPE, SIG_IGN);  // a client that goes away must not end the process
    http = std::make_unique<Listener>(opt.limits, metrics, tls);
  }
  ~Impl() {
    http.reset();
    if (tls) SSL_CTX_free(tls);
  }

  // ------------------------------------------------ access

  // The token's scope, comparing its digest with every stored one in
  // constant time (no early exit: the time says nothing about which matched).
  Scope token_scope(const std::string& token) const {
    const std::string digest = sha256_hex(token.data(), token.size());
    Scope s = Scope::none;
    for (const ApiToken& t : opt.tokens) {
      const bool same = t.sha256.size() == digest.size() && CRYPTO_memcmp(t.sha256.data(), digest.data(), digest.size()) == 0;
      if (same) s = t.write ? Scope::write : Scope::read;
    }
    return s;
  }

  bool host_allowed(const httplib::Request& req) const {
    if (!req.has_header("Host")) return false;
    const std::string h = host_name(req.get_header_value("Host"));
    for (const std::string& a : allowed_hosts)
      if (a == "*" || a == h) return true;
    return false;
  }

  // Everything decided from the request line and headers, before the body is
  // read: Host, token, Content-Type, Content-Length. Throws HttpError.
  void precheck(const httplib::Request& req) {
    if (req.path == "/healthz") return;
    if (!host_allowed(req))
      throw HttpError(403, "Host \"" + req.get_header_value("Host") + "\" is not allowed (start the service with --allow-host NAME)");
    Route r{};
    if (!route_of(req.method, req.path, r)) return;  // routing answers 404
    if (r.scope != Scope::none && !opt.tokens.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      if (!starts_with(auth, "Bearer ") && !starts_with(auth, "bearer "))
        throw HttpError(401, req.path + " needs a token: send \"Authorization: Bearer TOKEN\"");
      const Scope s = token_scope(auth.substr(7));
      if (s == Scope::none) throw HttpError(401, "unknown token");
      if (r.scope == Scope::write && s != Scope::write)
        throw HttpError(403, "this token has read scope; " + req.path + " needs a write token");
    }
    if (r.scope == Scope::write && opt.read_only) throw HttpError(403, "this service is read-only");
    if (req.method == "POST") {
      const std::string t = media_type(req.get_header_value("Content-Type"));
      const bool ok = (r.json_body && t == "application/json") || (r.image_body && starts_with(t, "image/"));
      if (!ok)
        throw HttpError(415, "Content-Type \"" + req.get_header_value("Content-Type") + "\" is not accepted on " + req.path +
                                 ": send application/json" + (r.image_body ? " or an image/* body" : "") +
                                 " (curl: -H 'Content-Type: application/json')");
      if (!req.has_header("Content-Length") && lower(req.get_header_value("Transfer-Encoding")) != "chunked")
        throw HttpError(411, "a POST needs Content-Length (or chunked Transfer-Encoding)");
      if (req.has_header("Content-Length")) {
        const std::string s = req.get_header_value("Content-Length");
        uint64_t n = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
        if (ec == std::errc::result_out_of_range || (ec == std::errc() && n > opt.limits.max_body))
          throw HttpError(413, "request body of " + s + " bytes; at most " + std::to_string(opt.limits.max_body) +
                                   " (--max-body)");
      }
    }
  }

  // ------------------------------------------------ images

  const Encoder& get_encoder() {  // under encoder_lock
    if (!encoder) {
      MemoryInfo info = mem.info();
      std::string path = opt.model.empty() ? info.model_path : opt.model;
      if (path.empty()) throw HttpError(400, "this memory is not bound to a model: send embeddings, not images");
      auto enc = load_encoder(path, recorded_precision(info.model_precision));
      mem.check_fingerprint(enc->fingerprint(), "model " + path);
      if (enc->dim() != mem.dim()) throw Error("model " + path + " does not match the memory's dimension");
      encoder = std::move(enc);
    }
    return *encoder;
  }

  std::vector<float> embed_image(const std::string& body) {
    const int64_t px = claimed_pixels(body);
    if (px > opt.limits.max_image_pixels)
      throw HttpError(413, "the image claims " + std::to_string(px) + " pixels; at most " +
                               std::to_string(opt.limits.max_image_pixels) + " (--max-image-pixels)");
    // Decoding is where an image costs memory: a few at a time.
    if (!decodes.try_acquire_for(std::chrono::seconds(10)))
      throw HttpError(503, "too many images being decoded: try again later (--max-decodes)");
    struct Release {
      std::counting_semaphore<1024>& s;
      ~Release() { s.release(); }
    } release{decodes};
    Image img = decode_image(reinterpret_cast<const uint8_t*>(body.data()), body.size(), "request body");
    std::lock_guard<std::mutex> g(encoder_lock);
    const Encoder& enc = get_encoder();
    const int s = enc.input_size();
    std::vector<float> pxs(3 * s * s), out(enc.dim());
    preprocess(img, enc.preprocess(), pxs.data());
    enc.forward(pxs.data(), 1, out.data(), opt.threads);
    l2_normalize_rows(out.data(), 1, enc.dim(), "the request's image");  // as `vismem add/classify` do
    return out;
  }

  static bool is_image(const httplib::Request& req) {
    return starts_with(media_type(req.get_header_value("Content-Type")), "image/");
  }

  Vote vote_param(const httplib::Request& req, const json& body, std::string& name) {
    name = str_param(req, body, "vote", opt.default_vote);
    try {
      return parse_vote(name);
    } catch (const Error& e) {
      throw HttpError(400, e.what());
    }
  }

  // ------------------------------------------------ endpoints

  json classify(const httplib::Request& req) {
    const bool image = is_image(req);
    json body = image ? json::object() : parse_body(req.body, opt.limits);
    const int k = int_param(req, body, "k", opt.default_k, 1, opt.limits.max_k, "--max-k");
    std::string vote_name;
    const Vote vote = vote_param(req, body, vote_name);
    int64_t n = 1;
    std::vector<float> x;
    std::vector<std::string> ids;
    if (image) {
      x = embed_image(req.body);
      ids = {str_param(req, body, "id", "image")};
    } else {
      x = embeddings_of(body, mem.dim(), opt.limits.max_queries, n);
      ids = strings_of(body, "ids", static_cast<size_t>(n));
    }
    std::shared_lock<std::shared_mutex> g(lock);
    if (mem.size() == 0) throw HttpError(409, "the memory is empty: add items first");
    auto res = mem.search(x.data(), n, std::max(k, ood_k), {}, opt.threads);
    json out = json::array();
    for (int64_t i = 0; i < n; ++i) {
      QueryDecision qd = decide_query(mem, res[i], vote, k, ood_k);
      json j = decision_json(ids.empty() ? "q" + std::to_string(i) : ids[i], vote_name, qd);
      if (ood_threshold >= 0) j["out_of_distribution"] = qd.ood > ood_threshold;
      out.push_back(std::move(j));
    }
    return {{"results", out}};
  }

  json explain(const httplib::Request& req) {
    const bool image = is_image(req);
    json body = image ? json::object() : parse_body(req.body, opt.limits);
    ExplainOptions xo;
    xo.k = int_param(req, body, "k", opt.default_k, 1, opt.limits.max_k, "--max-k");
    xo.show = int_param(req, body, "show", 10, 1, 100, "");
    xo.vote = vote_param(req, body, xo.vote_name);
    xo.threads = opt.threads;
    xo.image_roots = opt.image_roots;
    std::vector<float> x;
    std::string id;
    if (image) {
      x = embed_image(req.body);
      id = str_param(req, body, "id", "image");
    } else {
      if (body.contains("embeddings")) throw HttpError(400, "explain takes one query: \"embedding\": [...]");
      int64_t n = 0;
      x = embeddings_of(body, mem.dim(), 1, n);
      l2_normalize_rows(x.data(), 1, mem.dim(), "\"embedding\"");  // the residual needs a unit query
      id = str_param(req, body, "id", "q0");
    }
    std::shared_lock<std::shared_mutex> g(lock);
    if (mem.size() == 0) throw HttpError(409, "the memory is empty: add items first");
    Explanation e = explain_query(mem, x.data(), xo);
    e.query_id = id;
    return explanation_json(e);
  }

  json search(const httplib::Request& req) {
    json body = parse_body(req.body, opt.limits);
    const int k = int_param(req, body, "k", 10, 1, opt.limits.max_k, "--max-k");
    int64_t n = 0;
    std::vector<float> x = embeddings_of(body, mem.dim(), opt.limits.max_queries, n);
    std::shared_lock<std::shared_mutex> g(lock);
    json out = json::array();
    for (auto& nn : mem.search(x.data(), n, k, {}, opt.threads)) {
      json l = json::array();
      for (auto& nb : nn) l.push_back({{"id", nb.id}, {"label", nb.label}, {"distance", nb.distance}});
      out.push_back(std::move(l));
    }
    return {{"results", out}};
  }

  json add(const httplib::Request& req) {
    if (opt.read_only) throw HttpError(403, "this service is read-only");
    json body = parse_body(req.body, opt.limits);
    int64_t n = 0;
    std::vector<float> x = embeddings_of(body, mem.dim(), 0, n);
    auto ids = strings_of(body, "ids", static_cast<size_t>(n));
    auto labels = strings_of(body, "labels", static_cast<size_t>(n));
    if (ids.empty() || labels.empty()) throw HttpError(400, "add needs \"ids\" and \"labels\", one per embedding");
    const std::string mode = str_param(req, body, "mode", "strict");
    AddMode m = AddMode::strict;
    if (mode == "upsert") m = AddMode::upsert;
    else if (mode == "skip") m = AddMode::skip_existing;
    else if (mode != "strict") throw HttpError(400, "mode must be strict, upsert or skip");
    std::unique_lock<std::shared_mutex> g(lock);
    AddResult r = mem.add(ids, labels, x.data(), m);
    return {{"added", r.added}, {"replaced", r.replaced}, {"skipped", r.skipped}, {"items", mem.size()}};
  }

  json remove(const httplib::Request& req) {
    if (opt.read_only) throw HttpError(403, "this service is read-only");
    json body = parse_body(req.body, opt.limits);
    auto ids = strings_of(body, "ids", 0);
    if (ids.empty()) throw HttpError(400, "remove needs \"ids\": [...]");
    std::unique_lock<std::shared_mutex> g(lock);
    int64_t removed = mem.remove(ids);
    return {{"removed", removed}, {"items", mem.size()}};
  }

  json info(const httplib::Request&) {
    std::shared_lock<std::shared_mutex> g(lock);
    return memory_info_json(mem.info());
  }

  // Every handler's errors become JSON: the service never dies of a request,
  // and no body is ever empty (a serialization error is an error too).
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      request_read();
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

  void routes() {
    auto& h = *http;
    h.set_payload_max_length(opt.limits.max_body);
    h.set_read_timeout(opt.limits.read_timeout_s, 0);
    h.set_write_timeout(opt.limits.write_timeout_s, 0);
    h.set_keep_alive_timeout(opt.limits.idle_timeout_s);
    const auto pre = [this](const httplib::Request& req, httplib::Response& res) {
      try {
        precheck(req);
        return false;
      } catch (const HttpError& e) {
        if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
        reply(res, e.status, {{"error", e.what()}});
        return true;
      }
    };
    h.set_pre_routing_handler([pre](const httplib::Request& req, httplib::Response& res) {
      return pre(req, res) ? httplib::Server::HandlerResponse::Handled : httplib::Server::HandlerResponse::Unhandled;
    });
    // "Expect: 100-continue" (curl, large bodies): refuse before the body is sent.
    h.set_expect_100_continue_handler([pre](const httplib::Request& req, httplib::Response& res) {
      return pre(req, res) ? res.status : 100;
    });
    h.Get("/", [](const httplib::Request&, httplib::Response& res) {
      const std::string_view page = web_asset("index.html");
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
      res.set_header("X-Frame-Options", "DENY");
      request_read();
    });
    h.Get("/app.js", [](const httplib::Request&, httplib::Response& res) {
      const std::string_view js = web_asset("app.js");
      res.set_content(js.data(), js.size(), "text/javascript; charset=utf-8");
      request_read();
    });
    h.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      request_read();
      reply(res, 200, {{"status", "ok"}});
    });
    h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      request_read();
      int64_t items = 0, generation = 0;
      {
        std::shared_lock<std::shared_mutex> g(lock);
        MemoryInfo i = mem.info();
        items = i.items;
        generation = i.generation;
      }
      res.set_content(metrics.text(items, generation), "text/plain; version=0.0.4");
    });
    h.Get("/v1/info", guarded(&Impl::info));
    h.Post("/v1/classify", guarded(&Impl::classify));
    h.Post("/v1/explain", guarded(&Impl::explain));
    h.Post("/v1/search", guarded(&Impl::search));
    h.Post("/v1/add", guarded(&Impl::add));
    h.Post("/v1/remove", guarded(&Impl::remove));
    // Called for every answer >= 400, ours included (keep their bodies): the
    // ones httplib makes itself (404, 413 chunked, 400 bad request line) get JSON.
    h.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (current_request().too_large) {
        res.status = 413;
        res.body.clear();
        reply(res, 413, {{"error", "request body over " + std::to_string(opt.limits.max_body) + " bytes (--max-body)"}});
      }
      if (res.body.empty()) {
        std::string msg = "request refused";
        if (res.status == 404) msg = "no such endpoint: " + req.method + " " + req.path;
        else if (res.status == 413) msg = "request too large (--max-body; headers at most 8 KiB a line)";
        else if (res.status == 400) msg = "malformed HTTP request";
        else if (res.status == 414) msg = "request URI too long";
        reply(res, res.status, {{"error", msg}});
      }
      // Refused before its body was read: the rest of the body is not a next
      // request. The connection closes (httplib then says Connection: close).
      if (!current_request().body_done) {
        const_cast<httplib::Request&>(req).set_header("Connection", "close");
        current_request().close = true;
      }
      return httplib::Server::HandlerResponse::Handled;
    }));
    // A handler outside guarded() that throws (a bug): still a JSON answer.
    h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      reply(res, 500, {{"error", "internal error: " + what}});
    });
    h.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      current_request().status = res.status;
      current_request().path = req.path;
    });
  }
};

Server::Server(Memory mem, ServerOptions opt) : impl_(std::make_unique<Impl>(std::move(mem), std::move(opt))) {
  impl_->routes();
}

Server::~Server() = default;

int Server::bind(const std::string& host, int port) {
  Impl& p = *impl_;
  const bool loopback = is_loopback_host(host);
  if (!loopback && !p.opt.read_only && p.opt.tokens.empty())
    throw Error("listening on " + host + " lets anyone who reaches it write: give --tokens FILE (see `vismem token`), "
                "--generate-token, or --read-only");
  p.allowed_hosts.clear();
  for (const std::string& h : p.opt.allowed_hosts) p.allowed_hosts.push_back(bare_host(h));
  const bool wildcard = host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]";
  if (p.allowed_hosts.empty()) {
    if (wildcard)
      throw Error("listening on " + (host.empty() ? std::string("every address") : host) +
                  ": name the Host values clients use with --allow-host NAME (or --allow-host '*' for any)");
    p.allowed_hosts = {"localhost", "127.0.0.1", "::1", bare_host(host)};
  }
  auto& h = *p.http;
  if (port == 0) {
    int got = h.bind_to_any_port(host);
    if (got < 0) throw Error("cannot bind " + host);
    h.widen_backlog();
    return got;
  }
  if (!h.bind_to_port(host, port)) throw Error("cannot bind " + host + ":" + std::to_string(port) + " (in use?)");
  h.widen_backlog();
  return port;
}

void Server::run() {
  if (!impl_->http->listen_after_bind()) throw Error("the HTTP server stopped with an error");
}

void Server::stop() { impl_->http->stop(); }

}  // namespace vismem
