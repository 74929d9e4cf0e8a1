// error.h: the one exception type vismem's internals throw.
//
// Basic usage:
//   if (d != dim) throw vismem::Error("embedding has " + std::to_string(d) + " columns, memory expects " ...);
//   // at the edge (CLI, server): catch (const vismem::Error& e) { print e.what(); return 1; }
//
// Messages name the input and the problem so a user can act on them.
// Thread safety: a value type; nothing shared.
#pragma once
#include <stdexcept>
#include <string>

namespace vismem {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace vismem
