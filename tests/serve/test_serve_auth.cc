// Bearer tokens: the constant-time comparison, token file parsing, the header check.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mamba/serve/auth.h"
#include "mamba/tensor/tensor.h"

using namespace mamba::serve;
namespace fs = std::filesystem;

TEST(Auth, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_TRUE(constant_time_equal("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(constant_time_equal("s3cret-token", "s3cret-tokeN"));
  EXPECT_FALSE(constant_time_equal("s3cret-token", "s3cret-toke"));
  EXPECT_FALSE(constant_time_equal("s3cret", "s3cret-token"));
  EXPECT_FALSE(constant_time_equal("", "x"));
  // Equal up to a NUL padding: the length is part of the comparison.
  EXPECT_FALSE(constant_time_equal(std::string_view("ab\0", 3), "ab"));
  EXPECT_TRUE(constant_time_equal(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
}

TEST(Auth, TokenFileLines) {
  const auto tokens = parse_token_lines("# service tokens\n\n  alpha-1  \r\nbeta_2\n#gamma\n\t\ndelta.3");
  EXPECT_EQ(tokens, (std::vector<std::string>{"alpha-1", "beta_2", "delta.3"}));
  EXPECT_TRUE(parse_token_lines("").empty());
  EXPECT_THROW(parse_token_lines("two words\n"), mamba::Error);
  EXPECT_THROW(parse_token_lines(std::string("ctl\x01x\n")), mamba::Error);
}

TEST(Auth, TokenFileErrors) {
  const fs::path dir = fs::path(MAMBA_TEST_TMP) / "auth";
  fs::create_directories(dir);
  EXPECT_THROW(load_token_file(dir / "missing"), mamba::Error);
  std::ofstream(dir / "empty") << "# no tokens here\n\n";
  EXPECT_THROW(load_token_file(dir / "empty"), mamba::Error);  // would silently disable auth
  std::ofstream(dir / "ok") << "tok1\ntok2\n";
  EXPECT_EQ(load_token_file(dir / "ok"), (std::vector<std::string>{"tok1", "tok2"}));
}

TEST(Auth, BearerHeaderCheck) {
  TokenAuthenticator off;
  EXPECT_FALSE(off.enabled());
  EXPECT_TRUE(off.check(""));
  TokenAuthenticator auth({"tok1", "tok2"});
  EXPECT_TRUE(auth.enabled());
  EXPECT_TRUE(auth.check("Bearer tok1"));
  EXPECT_TRUE(auth.check("bearer tok2"));
  EXPECT_TRUE(auth.check("BEARER tok2"));
  EXPECT_FALSE(auth.check(""));
  EXPECT_FALSE(auth.check("Bearer "));
  EXPECT_FALSE(auth.check("Bearer tok3"));
  EXPECT_FALSE(auth.check("Bearer  tok1"));
  EXPECT_FALSE(auth.check("Bearer tok1 "));
  EXPECT_FALSE(auth.check("Basic tok1"));
  EXPECT_FALSE(auth.check("tok1"));
}
