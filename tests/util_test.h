// util_test.h: shared helpers for the test programs.
#pragma once
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace vismem::test {

// A fresh empty directory under the system temp dir, removed by the destructor.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// n standard-normal floats (deterministic in seed).
std::vector<float> random_normal(size_t n, uint32_t seed);

// n * d standard-normal floats, rows normalized to unit length.
std::vector<float> random_unit(int64_t n, int d, uint32_t seed);

// Runs the vismem CLI with args (shell-quoted by the caller); captures stdout.
struct CliResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};
CliResult run_cli(const std::string& args);

std::string read_file(const std::string& path);
std::string shared_dir();

}  // namespace vismem::test
