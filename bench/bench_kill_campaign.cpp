// bench_kill_campaign: kill -9 a vismem command at a random moment, over and
// over, and check that the memory is then exactly as before or exactly as
// after the command, with its promises kept.
//
// Usage:
//   bench_kill_campaign [--kills 120] [--dir /tmp/vismem_kills] [--vismem build/vismem] [--seed 1]
//
// A memory of 3,000 items (d = 64, 8 labels) with current pruning counts
// (k = 10), so every add and remove also runs the count upkeep. Each round
// picks one command: add (150 new items), upsert (80 existing ids, new
// vectors and labels), remove (40 ids) or prune --recompute --mode hard|soft;
// starts it with the vismem binary, sends SIGKILL after a random delay within
// the command's measured duration (some rounds finish first: those count as
// "completed"), reopens the memory and checks:
//   - the items (ids, labels, stored vector bytes) equal the state before or
//     the state after the command, nothing in between;
//   - the vector files hold exactly the committed rows (nothing left past
//     them) and no removed or replaced vector's bytes remain in any file;
//   - counts marked current equal a full recount; after prune, the mode and
//     the counts are both the old ones or both the new ones.
// Prints a table per command: rounds, killed before commit (state = before),
// killed after commit or completed (state = after), violations. Exit 1 on any
// violation.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "memory.h"
#include "npy.h"
#include "prune.h"
#include "textio.h"

namespace fs = std::filesystem;
using namespace vismem;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Item {
  std::string label;
  std::string bytes;  // the stored, normalized vector
  bool operator==(const Item& o) const { return label == o.label && bytes == o.bytes; }
};
using State = std::map<std::string, Item>;

State read_state(const Memory& m) {
  State s;
  for (const ItemInfo& it : m.items()) {
    auto e = m.embedding(it.id);
    s[it.id] = {it.label, std::string(reinterpret_cast<const char*>(e.data()), e.size() * 4)};
  }
  return s;
}

std::string normalized_bytes(const float* x, int d) {
  std::vector<float> v(x, x + d);
  l2_normalize_rows(v.data(), 1, d, "x");
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::string all_bytes(const std::string& p) {
  std::string b;
  for (const auto& f : Memory::files(p))
    if (fs::exists(f) && f.find(".lock") == std::string::npos) b += read_text_file(f);
  return b;
}

// Starts argv; kills it after delay seconds unless it ends first. True if killed.
bool run_and_kill(const std::vector<std::string>& args, double delay, int& status) {
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen("/dev/null", "w", stdout);
    f = std::freopen("/dev/null", "w", stderr);
    (void)f;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  const double end = now_s() + delay;
  while (now_s() < end) {
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_kill_campaign: kill -9 at random moments; the memory must be before or after"};
  int kills = 120;
  std::string dir = "/tmp/vismem_kills", vismem_bin;
  unsigned seed = 1;
  app.add_option("--kills", kills, "Rounds");
  app.add_option("--dir", dir, "Scratch folder");
  app.add_option("--vismem", vismem_bin, "The vismem binary (default: beside this program)");
  app.add_option("--seed", seed, "Random seed");
  CLI11_PARSE(app, argc, argv);
  if (vismem_bin.empty()) vismem_bin = (fs::canonical("/proc/self/exe").parent_path() / "vismem").string();
  const int d = 64, base = 3000, k = 10;
  std::mt19937 g(seed);
  std::normal_distribution<float> nd;
  auto random_rows = [&](int n) {
    std::vector<float> x(static_cast<size_t>(n) * d);
    for (auto& v : x) v = nd(g);
    return x;
  };
  try {
    fs::create_directories(dir);
    const std::string p = dir + "/m.db";
    Memory::remove_files(p);
    {
      Memory m = Memory::create(p, {.dim = d});
      std::vector<std::string> ids, labels;
      for (int i = 0; i < base; ++i) {
        ids.push_back("b" + std::to_string(i));
        labels.push_back("c" + std::to_string(i % 8));
      }
      auto x = random_rows(base);
      m.add(ids, labels, x.data());
      m.set_counts(compute_prune_counts(m, k), k, "soft", 0);
    }
    const char* ops[] = {"add", "upsert", "remove", "prune"};
    std::map<std::string, double> duration;  // measured once per command, unkilled
    struct Tally {
      int rounds = 0, before = 0, after = 0, completed = 0, violations = 0;
    };
    std::map<std::string, Tally> tally;
    int serial = 0;
    for (int round = -4; round < kills; ++round) {
      const std::string op = round < 0 ? ops[round + 4] : ops[g() % 4];
      Memory m0 = Memory::open(p);
      State before = read_state(m0), after = before;
      const MemoryInfo info0 = m0.info();
      std::vector<std::string> ids_in;
      for (auto& [id, it] : before) ids_in.push_back(id);
      std::vector<std::string> args;
      std::vector<std::string> gone_bytes;  // vectors that must be gone after
      std::string new_mode;
      if (op == "add" || op == "upsert") {
        const int n = op == "add" ? 150 : 80;
        std::vector<std::string> ids, labels;
        for (int i = 0; i < n; ++i) {
          if (op == "add") ids.push_back("n" + std::to_string(serial++));
          else ids.push_back(ids_in[g() % ids_in.size()]);
          labels.push_back("c" + std::to_string(g() % 8));
        }
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        labels.resize(ids.size());
        auto x = random_rows(static_cast<int>(ids.size()));
        write_npy_f32(dir + "/x.npy", x.data(), {static_cast<int64_t>(ids.size()), d});
        write_lines(dir + "/ids.txt", ids);
        write_lines(dir + "/labels.txt", labels);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (after.count(ids[i])) gone_bytes.push_back(after[ids[i]].bytes);
          after[ids[i]] = {labels[i], normalized_bytes(x.data() + i * d, d)};
        }
        args = {vismem_bin, "add", p, "--embeddings", dir + "/x.npy", "--labels", dir + "/labels.txt", "--ids", dir + "/ids.txt"};
        if (op == "upsert") args.push_back("--upsert");
      } else if (op == "remove") {
        std::vector<std::string> ids;
        for (int i = 0; i < 40; ++i) ids.push_back(ids_in[g() % ids_in.size()]);
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        for (auto& id : ids) {
          gone_bytes.push_back(after[id].bytes);
          after.erase(id);
        }
        write_lines(dir + "/ids.txt", ids);
        args = {vismem_bin, "remove", p, "--ids-file", dir + "/ids.txt"};
      } else {
        new_mode = info0.pruning_mode == "soft" ? "hard" : "soft";
        args = {vismem_bin, "prune", p, "--k", std::to_string(k), "--recompute", "--mode", new_mode};
        if (new_mode == "hard") args.insert(args.end(), {"--threshold", "3"});
      }
      const bool calibrate = !duration.count(op);
      int status = 0;
      double t0 = now_s();
      std::uniform_real_distribution<double> when(0.0, calibrate ? 1e9 : duration[op] * 1.1);
      bool killed = run_and_kill(args, when(g), status);
      if (calibrate) duration[op] = now_s() - t0;
      if (!killed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        std::fprintf(stderr, "%s exited with status %d (not killed)\n", op.c_str(), status);
        return 1;
      }
      // Check.
      Memory m = Memory::open(p);
      State now = read_state(m);
      const MemoryInfo info = m.info();
      Tally& t = round < 0 ? tally["(calibration)"] : tally[op];
      ++t.rounds;
      std::vector<std::string> problems;
      bool is_after = false;
      if (op == "prune") {
        if (now != before) problems.push_back("prune changed the items");
        is_after = info.pruning_mode == new_mode;
        const bool counts_new = info.counts_generation == info.generation && info.counts_generation >= 0;
        if (is_after && !counts_new) problems.push_back("new mode without current counts");
      } else if (now == after) {
        is_after = true;
      } else if (now != before) {
        problems.push_back("items are neither the state before nor after");
      }
      if (is_after) ++(killed ? t.after : t.completed);
      else ++t.before;
      const int64_t vec_size = static_cast<int64_t>(fs::file_size(p + ".vec"));
      if (vec_size != 4096 + info.rows * 64 * 4) problems.push_back("vector file holds rows past the committed ones");
      if (is_after && !gone_bytes.empty()) {
        std::string bytes = all_bytes(p);
        for (auto& b : gone_bytes)
          if (bytes.find(b.substr(0, 64)) != std::string::npos) {
            problems.push_back("a removed or replaced vector's bytes remain");
            break;
          }
      }
      if (m.counts_current()) {
        Memory::Counts c = compute_prune_counts(m, info.counts_k);
        for (size_t i = 0; i < c.ids.size(); ++i) {
          ItemInfo it = *m.item(c.ids[i]);
          if (it.wrong != c.wrong[i] || it.correct != c.correct[i]) {
            problems.push_back("counts marked current differ from a recount");
            break;
          }
        }
      } else {
        // Stale counts (an add killed between its commit and its upkeep) are
        // reported as such; recount so the next rounds exercise the upkeep.
        m.set_counts(compute_prune_counts(m, k), k);
      }
      t.violations += !problems.empty();
      for (auto& pr : problems) std::printf("round %d (%s, %s): VIOLATION: %s\n", round, op.c_str(), killed ? "killed" : "completed", pr.c_str());
    }
    std::printf("kill -9 campaign: %d rounds, memory of %d items, d = %d, counts k = %d\n", kills, base, d, k);
    std::printf("| command | rounds | killed, state before | killed, state after | completed | violations |\n");
    std::printf("| --- | --- | --- | --- | --- | --- |\n");
    int total_v = 0, total_killed = 0;
    for (auto& [op, t] : tally) {
      if (op == "(calibration)") continue;
      std::printf("| %s (%.2f s unkilled) | %d | %d | %d | %d | %d |\n", op.c_str(), duration[op], t.rounds, t.before, t.after,
                  t.completed, t.violations);
      total_v += t.violations;
      total_killed += t.before + t.after;
    }
    std::printf("killed mid-command: %d of %d rounds; violations: %d\n", total_killed, kills, total_v);
    Memory::remove_files(p);
    return total_v == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
