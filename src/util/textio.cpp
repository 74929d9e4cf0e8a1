#include "textio.h"

#include <charconv>
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

namespace vismem {

namespace {

// Length of the UTF-8 sequence at s[i], or 0 if it is malformed (overlong,
// surrogate, past U+10FFFF, truncated). Fills cp with the code point.
size_t utf8_seq(std::string_view s, size_t i, uint32_t& cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  size_t n;
  uint32_t min;
  if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

bool is_control(uint32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

}  // namespace

bool is_valid_utf8(std::string_view s) {
  uint32_t cp;
  for (size_t i = 0, n; i < s.size(); i += n)
    if ((n = utf8_seq(s, i, cp)) == 0) return false;
  return true;
}

std::string item_text_problem(std::string_view s) {
  if (s.empty()) return "is empty";
  uint32_t cp;
  for (size_t i = 0, n; i < s.size(); i += n) {
    if ((n = utf8_seq(s, i, cp)) == 0) return "is not valid UTF-8";
    if (cp == '\t') return "contains a tab";
    if (cp == '\n' || cp == '\r') return "contains a line break";
    if (is_control(cp)) return "contains a control character";
  }
  return "";
}

void check_item_text(const std::string& what, std::string_view s) {
  std::string problem = item_text_problem(s);
  if (!problem.empty())
    throw Error(what + " '" + printable(s) + "' " + problem +
                " (ids and labels must be UTF-8 text without tabs, line breaks or other control characters)");
}

std::string tsv_field(std::string_view s, const std::string& what) {
  if (s.find_first_of("\t\n\r") != std::string_view::npos)
    throw Error(what + " '" + printable(s) + "' contains a tab or a line break: it cannot be a TSV field");
  return std::string(s);
}

std::string printable(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out;
  uint32_t cp;
  for (size_t i = 0, n; i < s.size(); i += n) {
    n = utf8_seq(s, i, cp);
    if (n > 0 && !is_control(cp)) {
      out.append(s.substr(i, n));
      continue;
    }
    if (n == 0) n = 1, cp = 0xFFFFFFFF;  // a stray byte: always shown as hex
    if (cp == '\t' && n == 1) out += "\\t";
    else if (cp == '\n' && n == 1) out += "\\n";
    else
      for (size_t k = 0; k < n; ++k) {
        const auto c = static_cast<unsigned char>(s[i + k]);
        out += "\\x";
        out += hex[c >> 4];
        out += hex[c & 15];
      }
  }
  return out;
}

int64_t parse_int(std::string_view text, int64_t lo, int64_t hi, const std::string& what) {
  std::string t(text);
  const auto b = t.find_first_not_of(" \t"), e = t.find_last_not_of(" \t");
  t = b == std::string::npos ? "" : t.substr(b, e - b + 1);
  int64_t v = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec == std::errc::invalid_argument || end != t.data() + t.size())
    throw Error(what + ": '" + printable(t) + "' is not an integer");
  if (ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw Error(what + ": " + printable(t) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

}  // namespace vismem
