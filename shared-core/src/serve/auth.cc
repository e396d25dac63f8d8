#include "mamba/serve/auth.h"

#include <fstream>
#include <sstream>

#include "mamba/tensor/tensor.h"

namespace mamba::serve {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Fold every byte of the longer input in, so the loop length never depends on where
  // the first difference is; a length difference is folded in too.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  volatile unsigned char diff = static_cast<unsigned char>(a.size() != b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
}  // namespace

std::vector<std::string> parse_token_lines(std::string_view text) {
  std::vector<std::string> tokens;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    for (char c : line) {
      if (is_space(c) || static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        throw Error("auth token file line " + std::to_string(line_no) +
                    ": a token may not contain whitespace or control characters");
    }
    tokens.emplace_back(line);
  }
  return tokens;
}

std::vector<std::string> load_token_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("auth token file " + path.string() + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  auto tokens = parse_token_lines(ss.str());
  if (tokens.empty()) throw Error("auth token file " + path.string() + ": holds no token");
  return tokens;
}

TokenAuthenticator::TokenAuthenticator(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {}

bool TokenAuthenticator::check(std::string_view authorization) const {
  if (!enabled()) return true;
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return false;
  }
  const std::string_view presented = authorization.substr(kScheme.size());
  bool ok = false;
  for (const auto& t : tokens_) ok |= constant_time_equal(presented, t);  // no early exit
  return ok;
}

}  // namespace mamba::serve
