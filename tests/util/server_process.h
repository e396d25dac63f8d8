// A service binary run as a real process for end-to-end tests: started with fork/exec on
// a free loopback port (--port 0 --host 127.0.0.1 --port-file), reached through a gRPC
// channel, asked for its grpc.health.v1 status, stopped with SIGTERM (and SIGKILLed by
// the destructor if a test left it running).
#pragma once

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace mamba::testing {

class ServerProcess {
 public:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // argv[0] is the binary; the port options are appended. `env` is set in the child only.
  // Waits (up to 30 s) for the port file; a server that never writes it fails the test.
  ServerProcess(std::vector<std::string> argv, const std::filesystem::path& dir,
                std::vector<std::pair<std::string, std::string>> env = {}) {
    using namespace std::chrono_literals;
    const std::filesystem::path port_file = dir / "port";
    std::filesystem::remove(port_file);
    for (const char* a : {"--port", "0", "--host", "127.0.0.1", "--port-file"}) argv.emplace_back(a);
    argv.push_back(port_file.string());
    pid_ = ::fork();
    if (pid_ == 0) {
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      std::_Exit(127);
    }
    for (int i = 0; i < 600 && !std::filesystem::exists(port_file); ++i) std::this_thread::sleep_for(50ms);
    std::ifstream(port_file) >> port_;
    EXPECT_GT(port_, 0) << "the server did not write its port";
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials());
    health_ = grpc::health::v1::Health::NewStub(channel_);
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  void terminate() { ::kill(pid_, SIGTERM); }
  // The exit status (-1 when killed by a signal).
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  int terminate_and_wait() {
    terminate();
    return wait();
  }

  Status health(const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    return health_->Check(&ctx, req, &resp).ok() ? resp.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
  // Polls for up to 20 s.
  bool wait_health(const std::string& service, Status want) {
    for (int i = 0; i < 400; ++i) {
      if (health(service) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace mamba::testing
