#include "rerank.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "error.h"
#include "json_text.h"

extern char** environ;

namespace vismem {

namespace {

constexpr size_t kMaxAnswerBytes = 16 << 20;  // a label, maybe a reason: anything bigger is a runaway program
constexpr size_t kStderrKeep = 64 << 10;

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The last few lines of stderr on one line, so the error stays one line on the terminal.
std::string stderr_summary(const std::string& err) {
  std::string t = trim(err);
  if (t.empty()) return "no output on stderr";
  if (t.size() > 1000) t = "..." + t.substr(t.size() - 1000);
  std::string one;
  for (char c : t) {
    if (c == '\n') one += " | ";
    else if (c != '\r') one += c;
  }
  return "stderr: " + one;
}

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (pipe2(fd, O_CLOEXEC) != 0) throw Error(std::string("re-ranker: cannot create a pipe: ") + std::strerror(errno));
  }
  ~Pipe() {
    close_end(0);
    close_end(1);
  }
  void close_end(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
};

// Kills and reaps the child's process group unless it was reaped normally,
// so no exception path leaves a re-ranker running.
struct Child {
  pid_t pid = -1;
  bool reaped = false;
  ~Child() {
    if (pid > 0 && !reaped) {
      ::kill(-pid, SIGKILL);
      int st;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
  }
};

// A reader that went away must not kill us with SIGPIPE: block it in this
// thread while we write, and swallow one we caused.
struct SigpipeBlock {
  sigset_t set{}, old{};
  bool was_pending = false;
  SigpipeBlock() {
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
  }
  ~SigpipeBlock() {
    if (!was_pending) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE)) {
        timespec zero{0, 0};
        sigtimedwait(&set, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
};

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

RerankAnswer parse_rerank_answer(const std::string& out) {
  const std::string t = trim(out);
  if (t.empty()) throw Error("re-ranker printed no answer on stdout (expected a label, or {\"label\": ...})");
  RerankAnswer a;
  if (t[0] == '{') {
    nlohmann::json j = nlohmann::json::parse(t, nullptr, false);
    const std::string shown = t.size() > 200 ? t.substr(0, 200) + "..." : t;
    if (j.is_discarded()) throw Error("re-ranker answer is not valid JSON: " + shown);
    auto it = j.find("label");
    if (it == j.end() || !it->is_string() || trim(it->get<std::string>()).empty())
      throw Error("re-ranker answer has no non-empty \"label\" string: " + shown);
    a.label = trim(it->get<std::string>());
    if (auto c = j.find("confidence"); c != j.end() && !c->is_null()) {
      if (!c->is_number()) throw Error("re-ranker answer: \"confidence\" must be a number: " + shown);
      a.confidence = c->get<double>();
    }
    if (auto r = j.find("reason"); r != j.end() && !r->is_null()) a.reason = r->is_string() ? r->get<std::string>() : r->dump();
    return a;
  }
  a.label = trim(t.substr(0, t.find('\n')));
  return a;
}

RerankAnswer run_rerank(const std::string& cmd, const nlohmann::json& request, int timeout_s) {
  if (trim(cmd).empty()) throw Error("re-ranker: empty command");
  if (timeout_s <= 0) throw Error("re-ranker: the timeout must be a positive number of seconds");
  const std::string input = json_text(request) + "\n";
  const std::string who = "re-ranker `" + cmd + "`";

  Pipe in, out, err;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in.fd[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out.fd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err.fd[1], 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  // Own process group: a timeout kills the shell and whatever it started.
  // Signal mask and SIGPIPE disposition reset: the caller may have changed them.
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&at, 0);
  sigset_t none, def;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&at, &none);
  sigemptyset(&def);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigdefault(&at, &def);
  std::string a0 = "sh", a1 = "-c", a2 = cmd;
  char* argv[] = {a0.data(), a1.data(), a2.data(), nullptr};
  Child child;
  int rc = posix_spawn(&child.pid, "/bin/sh", &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  if (rc != 0) {
    child.pid = -1;
    throw Error(who + ": cannot start /bin/sh: " + std::strerror(rc));
  }
  in.close_end(0);
  out.close_end(1);
  err.close_end(1);
  set_nonblocking(in.fd[1]);
  set_nonblocking(out.fd[0]);
  set_nonblocking(err.fd[0]);

  SigpipeBlock sigpipe;
  const double deadline = now_s() + timeout_s;
  std::string answer, errtext;
  size_t written = 0;
  if (input.empty()) in.close_end(1);
  auto timed_out = [&] {
    ::kill(-child.pid, SIGKILL);
    throw Error(who + " timed out after " + std::to_string(timeout_s) + " s and was killed (" +
                stderr_summary(errtext) + ")");
  };
  auto drain = [&](Pipe& p, std::string& into, bool is_answer) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(p.fd[0], buf, sizeof buf);
      if (n > 0) {
        into.append(buf, size_t(n));
        if (is_answer && into.size() > kMaxAnswerBytes)
          throw Error(who + " wrote more than " + std::to_string(kMaxAnswerBytes >> 20) + " MiB on stdout");
        if (!is_answer && into.size() > 2 * kStderrKeep) into.erase(0, into.size() - kStderrKeep);
        continue;
      }
      if (n == 0) p.close_end(0);
      else if (errno == EINTR) continue;
      else if (errno != EAGAIN && errno != EWOULDBLOCK) p.close_end(0);
      return;
    }
  };
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    pollfd pf[3];
    int n = 0, i_in = -1, i_out = -1, i_err = -1;
    if (in.fd[1] >= 0) pf[i_in = n++] = {in.fd[1], POLLOUT, 0};
    if (out.fd[0] >= 0) pf[i_out = n++] = {out.fd[0], POLLIN, 0};
    if (err.fd[0] >= 0) pf[i_err = n++] = {err.fd[0], POLLIN, 0};
    const double left = deadline - now_s();
    if (left <= 0) timed_out();
    int r = ::poll(pf, nfds_t(n), int(left * 1000) + 1);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error(who + ": poll failed: " + std::strerror(errno));
    }
    if (i_in >= 0 && pf[i_in].revents) {
      ssize_t w = ::write(in.fd[1], input.data() + written, input.size() - written);
      if (w > 0) written += size_t(w);
      // EPIPE: the program exited or closed stdin without reading it all;
      // its answer (or exit status) still decides.
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) in.close_end(1);
    }
    if (i_out >= 0 && pf[i_out].revents) drain(out, answer, true);
    if (i_err >= 0 && pf[i_err].revents) drain(err, errtext, false);
  }
  in.close_end(1);

  // Output closed: the program has exited or is about to (unless it closed
  // stdout and carried on, which the deadline catches).
  // WNOWAIT leaves the child a zombie, so its process group id cannot be
  // reused before we kill what the shell left running in the background.
  for (;;) {
    siginfo_t info{};
    int w = ::waitid(P_PID, id_t(child.pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (w == 0 && info.si_pid == child.pid) break;
    if (w < 0 && errno != EINTR) throw Error(who + ": waitid failed: " + std::strerror(errno));
    if (now_s() >= deadline) timed_out();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(-child.pid, SIGKILL);
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  child.reaped = true;
  if (WIFSIGNALED(status))
    throw Error(who + " was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) +
                "; " + stderr_summary(errtext) + ")");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(who + " exited with status " + std::to_string(WEXITSTATUS(status)) + " (" + stderr_summary(errtext) + ")");
  RerankAnswer a;
  try {
    a = parse_rerank_answer(answer);
  } catch (const Error& e) {
    throw Error(who + ": " + e.what() + " (" + stderr_summary(errtext) + ")");
  }
  a.stderr_text = errtext.size() > kStderrKeep ? errtext.substr(errtext.size() - kStderrKeep) : errtext;
  return a;
}

nlohmann::json rerank_request(const std::string& query_id, const std::string& query_image, const std::string& vote_rule,
                              int k, const std::string& prediction, const std::vector<Neighbor>& neighbors,
                              const std::vector<std::string>& neighbor_images, const Decision& decision) {
  if (!neighbor_images.empty() && neighbor_images.size() != neighbors.size())
    throw Error("rerank_request: " + std::to_string(neighbor_images.size()) + " image paths for " +
                std::to_string(neighbors.size()) + " neighbors");
  auto path_or_null = [](const std::string& p) -> nlohmann::json {
    if (p.empty()) return nullptr;
    std::error_code ec;
    auto abs = std::filesystem::absolute(p, ec);
    return ec ? p : abs.lexically_normal().string();
  };
  nlohmann::json j;
  j["query"] = {{"id", query_id}, {"image", path_or_null(query_image)}};
  j["vote"] = vote_rule;
  j["k"] = k;
  j["prediction"] = prediction;
  nlohmann::json scores = nlohmann::json::array();
  for (const auto& [label, score] : decision.scores) scores.push_back({{"label", label}, {"score", score}});
  j["scores"] = std::move(scores);
  nlohmann::json nn = nlohmann::json::array();
  for (size_t r = 0; r < neighbors.size(); ++r) {
    const Neighbor& n = neighbors[r];
    nlohmann::json w = r < decision.neighbor_weights.size() ? nlohmann::json(decision.neighbor_weights[r]) : nullptr;
    nn.push_back({{"rank", r + 1},
                  {"id", n.id},
                  {"label", n.label},
                  {"image", path_or_null(neighbor_images.empty() ? std::string() : neighbor_images[r])},
                  {"distance", double(n.distance)},
                  {"weight", std::move(w)}});
  }
  j["neighbors"] = std::move(nn);
  return j;
}

}  // namespace vismem
