// textio.h: text inputs, one entry per line (labels, ids).
//
// Basic usage:
//   std::vector<std::string> labels = vismem::read_lines("train_labels.txt");
//
// Lines keep inner spaces; a trailing '\r' and a final empty line are dropped;
// any other empty line is an error (an id or label cannot be empty).
// Thread safety: free functions.
#pragma once
#include <string>
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

}  // namespace vismem
