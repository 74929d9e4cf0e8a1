// fuzz.h: what every fuzz target shares.
//
// A target is a file fuzz/fuzz_NAME.cpp defining LLVMFuzzerTestOneInput that
// feeds the bytes to one reader inside fuzz_guard. A reader may refuse any
// input with vismem::Error (a clear message); anything else it throws
// (std::length_error "cannot create std::vector larger than max_size()", a
// nlohmann exception, a bare std::stoi) is an input that reaches the user
// without a proper message: abort, so the fuzzer keeps it as a finding.
// Crashes, hangs and (with -fsanitize=address) bad reads are findings anyway.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <typeinfo>

#include "error.h"

namespace vismem::fuzz {

template <class F>
void fuzz_guard(F&& f) {
  try {
    f();
  } catch (const vismem::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: an input made the reader throw %s, not vismem::Error: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
}

}  // namespace vismem::fuzz
