// A throwaway PostgreSQL server for the recommendation tests: a real server, started with
// deploy/local/pg.sh in this test process's own folder under MAMBA_TEST_TMP on a free port,
// stopped (and its folder removed) when the process's tests end, passed or failed.
//
//   TEST_F(PgTest, Something) { auto conn = connect(url()); ... }   // a fresh database
//
// The server starts on the first use (a test binary that never asks for it starts none)
// and serves every test of the process; each PgTest gets a new empty database. A process
// that crashed leaves its folder behind; the next test process stops that server and
// removes the folder (the folder is named after the pid, and a dead pid marks it stale).
#pragma once

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <fstream>
#include <stdexcept>
#include <string>

#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/store.h"

#ifndef MAMBA_PG_SH
#error "MAMBA_PG_SH (the path of deploy/local/pg.sh) must be defined"
#endif
#ifndef MAMBA_TEST_TMP
#error "MAMBA_TEST_TMP must be defined"
#endif

namespace mamba::recommendation::testing {

// Runs a shell command, returns its stdout (without the final newline); throws on failure.
inline std::string run_command(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = ::pclose(p);
  if (rc != 0) throw std::runtime_error("command failed (" + std::to_string(rc) + "): " + cmd + "\n" + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// A port nothing listens on right now (the kernel's pick for port 0).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("free_port: no port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

class PgServer {
 public:
  static PgServer& instance() {
    static PgServer server;
    return server;
  }

  // Starts the server on first use; returns the URL of its `mamba` database.
  const std::string& url() {
    if (url_.empty()) start();
    return url_;
  }

  // A new empty database on the server; returns its URL.
  std::string fresh_database() {
    const std::string base = url();
    std::string name = "t";  // appended piecewise: "lit" + to_string() trips g++ 12's -Wrestrict
    name += std::to_string(::getpid());
    name += '_';
    name += std::to_string(++databases_);
    {
      auto conn = connect(base);
      pqxx::nontransaction tx(conn);
      tx.exec("CREATE DATABASE " + name);
    }
    return base.substr(0, base.rfind('/') + 1) + name;
  }

  void stop() {
    if (dir_.empty()) return;
    try {
      run_command(script() + " stop '" + dir_ + "' 2>&1");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pg_fixture: %s\n", e.what());
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
    url_.clear();
  }

 private:
  PgServer() = default;
  ~PgServer() { stop(); }

  static std::string script() { return std::string("MAMBA_PG_NOSYNC=1 bash '") + MAMBA_PG_SH + "'"; }

  // Stops the servers of test processes that died without cleaning up.
  static void remove_stale(const std::filesystem::path& root) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("pg-", 0) != 0) continue;
      const int pid = std::atoi(name.c_str() + 3);
      if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0) continue;
      try {
        run_command(script() + " stop '" + e.path().string() + "' 2>&1");
      } catch (const std::exception&) {
      }
      std::filesystem::remove_all(e.path(), ec);
    }
  }

  void start() {
    const std::filesystem::path root = MAMBA_TEST_TMP;
    std::filesystem::create_directories(root);
    remove_stale(root);
    dir_ = (root / ("pg-" + std::to_string(::getpid()))).string();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    std::string last_error;
    for (int attempt = 0; attempt < 3 && url_.empty(); ++attempt) {
      try {  // another process may take the port between free_port() and the server's bind
        url_ = run_command(script() + " start '" + dir_ + "' " + std::to_string(free_port()));
      } catch (const std::exception& e) {
        last_error = e.what();
        run_command(script() + " stop '" + dir_ + "' 2>&1 || true");
      }
    }
    if (url_.empty()) throw std::runtime_error("pg_fixture: cannot start PostgreSQL: " + last_error);
  }

  std::string dir_, url_;
  int databases_ = 0;
};

// Stops the server when the process's tests are over, whether they passed or not.
class PgEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PgServer::instance().stop(); }
};

inline ::testing::Environment* const kPgEnvironment = ::testing::AddGlobalTestEnvironment(new PgEnvironment);

// A test with its own empty database (no migrations applied).
class PgTest : public ::testing::Test {
 protected:
  void SetUp() override { url_ = PgServer::instance().fresh_database(); }
  const std::string& url() const { return url_; }

 private:
  std::string url_;
};

// A test with its own migrated database, an open connection and a scratch directory for the
// files it writes (MAMBA_TEST_TMP/<prefix>-<pid>, removed after the test).
class MigratedPgTest : public PgTest {
 protected:
  explicit MigratedPgTest(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override {
    PgTest::SetUp();
    conn_ = std::make_unique<pqxx::connection>(url());
    apply_migrations(*conn_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir(), ec);
  }
  pqxx::connection& conn() { return *conn_; }
  std::filesystem::path scratch_dir() const {
    return std::filesystem::path(MAMBA_TEST_TMP) / (prefix_ + "-" + std::to_string(::getpid()));
  }
  // Writes `text` to scratch_dir()/name and returns the path.
  std::string write_file(const std::string& name, const std::string& text) const {
    std::filesystem::create_directories(scratch_dir());
    const auto path = (scratch_dir() / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

 private:
  std::string prefix_;
  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace mamba::recommendation::testing
