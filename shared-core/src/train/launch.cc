#include "mamba/train/launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "mamba/tensor/tensor.h"

namespace mamba::train {
namespace {

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int launch_processes(const LaunchOptions& o) {
  if (o.nproc < 1 || o.nproc > 4096) throw Error("mamba-launch: --nproc " + std::to_string(o.nproc) + " must be in 1..4096");
  if (o.argv.empty()) throw Error("mamba-launch: no command to run (mamba-launch --nproc N -- COMMAND ARGS...)");
  if (o.cuda && !o.gpus.empty() && static_cast<int>(o.gpus.size()) < o.nproc)
    throw Error("mamba-launch: --gpus lists " + std::to_string(o.gpus.size()) + " device(s) for --nproc " +
                std::to_string(o.nproc));
  if (!(o.grace_s >= 0)) throw Error("mamba-launch: --grace-s must be >= 0");

  std::string tmpdir, rendezvous = o.rendezvous;
  if (rendezvous.empty()) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/mamba-launch-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw Error("mamba-launch: cannot create a rendezvous directory: " + std::string(std::strerror(errno)));
    tmpdir = tmpl;
    rendezvous = "file:" + tmpdir + "/rendezvous";
  }

  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR
  g_signal.store(0);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  std::vector<pid_t> pids(static_cast<size_t>(o.nproc), -1);
  std::vector<bool> done(static_cast<size_t>(o.nproc), false);
  auto stop_all = [&](int sig) {
    for (int r = 0; r < o.nproc; ++r)
      if (pids[r] > 0 && !done[r]) ::kill(pids[r], sig);
  };

  for (int r = 0; r < o.nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      stop_all(SIGKILL);
      throw Error("mamba-launch: fork: " + std::string(std::strerror(errno)));
    }
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
        ::unsetenv(v);
      ::setenv("MAMBA_RANK", std::to_string(r).c_str(), 1);
      ::setenv("MAMBA_LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("MAMBA_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("MAMBA_RENDEZVOUS", rendezvous.c_str(), 1);
      if (o.rendezvous_timeout_s > 0)
        ::setenv("MAMBA_RENDEZVOUS_TIMEOUT_S", std::to_string(o.rendezvous_timeout_s).c_str(), 1);
      if (o.cuda) {
        ::setenv("CUDA_VISIBLE_DEVICES", o.gpus.empty() ? std::to_string(r).c_str() : o.gpus[r].c_str(), 1);
        ::setenv("MAMBA_LOCAL_RANK", "0", 1);  // the one visible device
      }
      std::vector<char*> args;
      for (const auto& a : o.argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::fprintf(stderr, "mamba-launch: rank %d: cannot run '%s': %s\n", r, args[0], std::strerror(errno));
      std::_Exit(127);
    }
    pids[r] = pid;
  }

  int result = 0, remaining = o.nproc;
  bool stopping = false;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  while (remaining > 0) {
    if (const int sig = g_signal.exchange(0); sig != 0 && !stopping) {
      std::fprintf(stderr, "mamba-launch: got signal %d (%s); stopping the ranks\n", sig, strsignal(sig));
      stop_all(SIGTERM);
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
      if (result == 0) result = 128 + sig;
    }
    if (stopping && std::chrono::steady_clock::now() >= stop_deadline) {
      stop_all(SIGKILL);
      stop_deadline = std::chrono::steady_clock::time_point::max();
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // ECHILD: nothing left
    }
    int r = -1;
    for (int k = 0; k < o.nproc; ++k)
      if (pids[k] == pid) r = k;
    if (r < 0) continue;  // not one of ours
    done[r] = true;
    --remaining;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && !stopping) {
      std::fprintf(stderr, "mamba-launch: rank %d (pid %d) %s; stopping the other ranks\n", r, static_cast<int>(pid),
                   describe_status(status).c_str());
      result = exit_code(status);
      stop_all(SIGTERM);
      stopping = true;
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
    } else if (!ok) {
      std::fprintf(stderr, "mamba-launch: rank %d (pid %d) %s\n", r, static_cast<int>(pid), describe_status(status).c_str());
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (!tmpdir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(tmpdir, ec);
  }
  if (result != 0) std::fprintf(stderr, "mamba-launch: failed (exit status %d)\n", result);
  return result;
}

}  // namespace mamba::train
