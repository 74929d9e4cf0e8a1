// json_text.h: JSON text that never fails on the bytes it carries.
//
// Basic usage:
//   std::cout << vismem::json_text(j, 2) << "\n";
//
// nlohmann's dump() throws type_error.316 on a string that is not valid UTF-8
// (a query image's file name, an id stored before ids were checked). One such
// string must not fail a whole output: its bad bytes become U+FFFD. Ids and
// labels entering a memory are checked (textio.h check_item_text), so this
// only touches text that came from elsewhere.
// Thread safety: a pure function.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace vismem {

template <class Json>
std::string json_text(const Json& j, int indent = -1) {
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace vismem
