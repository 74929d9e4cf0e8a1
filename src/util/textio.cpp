#include "textio.h"

#include <fstream>
#include <sstream>

#include "error.h"

namespace vismem {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("cannot open " + path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  while (!out.empty() && out.back().empty()) out.pop_back();
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].empty()) throw Error(path + ":" + std::to_string(i + 1) + ": empty line");
  return out;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::unordered_map<std::string, std::string> read_label_names(const std::string& path) {
  std::unordered_map<std::string, std::string> out;
  std::string text = read_text_file(path), line;
  size_t pos = 0;
  int no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    line = text.substr(pos, end - pos);
    pos = end + 1;
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0 || tab + 1 == line.size())
      throw Error(path + ":" + std::to_string(no) + ": expected LABEL<TAB>NAME");
    if (!out.emplace(line.substr(0, tab), line.substr(tab + 1)).second)
      throw Error(path + ":" + std::to_string(no) + ": label " + line.substr(0, tab) + " listed twice");
  }
  if (out.empty()) throw Error(path + ": no LABEL<TAB>NAME lines");
  return out;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error("cannot write " + path);
  f << text;
  f.close();
  if (!f) throw Error("write failed: " + path);
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  write_text_file(path, text);
}

}  // namespace vismem
