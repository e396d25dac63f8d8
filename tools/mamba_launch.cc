// mamba-launch: runs a data-parallel job on this host, one process per rank (see
// shared-core/include/mamba/train/launch.h and distributed.h).
//
//   mamba-launch --nproc N [--device cpu|cuda] [--gpus 0,1,...] [--rendezvous file:PATH|tcp://HOST:PORT]
//                [--rendezvous-timeout-s S] [--grace-s S] -- COMMAND [ARGS...]
//
// Exit status: 0 when every rank exited 0, otherwise the first failing rank's status
// (128 + signal when it was killed); 2 for a bad command line.
#include <cstdio>
#include <sstream>
#include <string>

#include "mamba/train/launch.h"

namespace {
int usage(const char* why) {
  if (why) std::fprintf(stderr, "mamba-launch: %s\n", why);
  std::fprintf(stderr,
               "usage: mamba-launch --nproc N [--device cpu|cuda] [--gpus 0,1] [--rendezvous file:PATH|tcp://HOST:PORT]\n"
               "       [--rendezvous-timeout-s S] [--grace-s S] -- COMMAND [ARGS...]\n");
  return 2;
}
}  // namespace

int main(int argc, char** argv) {
  mamba::train::LaunchOptions o;
  int i = 1;
  try {
    for (; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error("missing value for " + a);
        return argv[++i];
      };
      if (a == "--") {
        ++i;
        break;
      }
      if (a == "--nproc") o.nproc = std::stoi(value());
      else if (a == "--device") {
        const std::string d = value();
        if (d != "cpu" && d.rfind("cuda", 0) != 0) return usage("--device must be cpu or cuda");
        o.cuda = d.rfind("cuda", 0) == 0;
      } else if (a == "--gpus") {
        std::stringstream ss(value());
        for (std::string g; std::getline(ss, g, ',');) o.gpus.push_back(g);
      } else if (a == "--rendezvous") o.rendezvous = value();
      else if (a == "--rendezvous-timeout-s") o.rendezvous_timeout_s = std::stod(value());
      else if (a == "--grace-s") o.grace_s = std::stod(value());
      else if (!a.empty() && a[0] == '-') return usage(("unknown option " + a).c_str());
      else break;  // the command starts here
    }
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  for (; i < argc; ++i) o.argv.emplace_back(argv[i]);
  if (o.argv.empty()) return usage("no command given");
  try {
    return mamba::train::launch_processes(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
