#pragma once
// A message printed as one line whatever it quotes: a file name holding a newline or
// another control character would otherwise split a warning or an error in two, and a
// script reading the tool's stderr line by line would misread it.
#include <cstdio>
#include <string>

namespace dalr {

// `s` with each control character written as an escape: \n, \r, \t, or \xNN.
inline std::string one_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace dalr
