// textio.h: text inputs, one entry per line (labels, ids).
//
// Basic usage:
//   std::vector<std::string> labels = vismem::read_lines("train_labels.txt");
//
// Lines keep inner spaces; a trailing '\r' and a final empty line are dropped;
// any other empty line is an error (an id or label cannot be empty).
// Thread safety: free functions.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace vismem {

std::vector<std::string> read_lines(const std::string& path);
// The whole file as bytes; throws vismem::Error if it cannot be read.
std::string read_text_file(const std::string& path);
// label<TAB>name per line (e.g. a dataset's classes.tsv); '#' lines and blank
// lines are skipped; a line without a tab or a label listed twice is an error.
std::unordered_map<std::string, std::string> read_label_names(const std::string& path);
// Writes the bytes to path; throws vismem::Error on failure.
void write_text_file(const std::string& path, const std::string& text);
void write_lines(const std::string& path, const std::vector<std::string>& lines);

// Ids and labels are text that every output carries unchanged (JSON, TSV, one
// per line): they must be valid UTF-8 without control characters (tab,
// newline, carriage return, ...). Checked where they enter (add, id and label
// lists, folder names), so no output can fail or split a line later.
bool is_valid_utf8(std::string_view s);
// Empty if s is a fine id/label, else why not ("is not valid UTF-8", "contains a tab", ...).
std::string item_text_problem(std::string_view s);
// Throws vismem::Error("WHAT 'S' PROBLEM (...)") when item_text_problem(s) is not empty.
void check_item_text(const std::string& what, std::string_view s);
// s as one field of a TSV line; throws vismem::Error naming WHAT if it holds
// a tab or a line break (only possible for ids stored before they were checked).
std::string tsv_field(std::string_view s, const std::string& what);
// s for a message: bytes that are not printable UTF-8 shown as \xHH, \t, \n.
std::string printable(std::string_view s);

// A whole decimal integer in [lo, hi], for numbers read from files and
// headers: never wrapped or narrowed; throws vismem::Error naming WHAT.
int64_t parse_int(std::string_view text, int64_t lo, int64_t hi, const std::string& what);

}  // namespace vismem
