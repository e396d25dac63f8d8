// Bearer-token authentication for every RPC except grpc.health.v1 (and reflection).
//
// Clients send the metadata `authorization: Bearer <token>`. The server's tokens come from
// --auth-token-file: one token per line; blank lines, lines starting with '#', and
// surrounding whitespace are ignored. No token file = authentication off.
// Runtime::handle() (runtime.h) calls TokenAuthenticator::check() before a handler body
// runs; a missing or wrong token is UNAUTHENTICATED, and the body never runs.
// Comparison is constant-time in the token's contents: every configured token is compared
// with every byte of the presented one, so timing reveals neither which bytes matched nor
// which token did (only, at most, the lengths).
// Thread-safety: a TokenAuthenticator is immutable after construction; check() may be
// called from any number of threads.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace mamba::serve {

// True when a and b are equal; the running time depends only on their lengths.
bool constant_time_equal(std::string_view a, std::string_view b);

// Tokens in a token file's text (see above). Throws mamba::Error on a token containing
// whitespace or control characters inside it.
std::vector<std::string> parse_token_lines(std::string_view text);
// Reads and parses the file; throws mamba::Error naming the path if it cannot be read or
// holds no token (an empty token file would otherwise silently switch auth off).
std::vector<std::string> load_token_file(const std::filesystem::path& path);

class TokenAuthenticator {
 public:
  TokenAuthenticator() = default;  // disabled: every call passes
  explicit TokenAuthenticator(std::vector<std::string> tokens);

  bool enabled() const { return !tokens_.empty(); }
  // `authorization` is the metadata value ("" when absent). The scheme is matched
  // case-insensitively ("Bearer", "bearer"); exactly one space follows it.
  bool check(std::string_view authorization) const;

 private:
  std::vector<std::string> tokens_;
};

}  // namespace mamba::serve
