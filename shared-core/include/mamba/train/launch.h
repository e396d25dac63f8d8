// Starting a data-parallel job on one host: N copies of a command, one per rank, with the
// environment distributed.h reads (MAMBA_RANK, MAMBA_WORLD_SIZE, MAMBA_LOCAL_RANK,
// MAMBA_RENDEZVOUS=file:<fresh temp dir>/rendezvous unless given), and with --device cuda
// one GPU each (CUDA_VISIBLE_DEVICES). torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT are removed from the children's environment so that an
// outer launcher's values cannot contradict ours.
//
// launch_processes waits for every rank. When one fails (non-zero exit or a signal), the
// others get SIGTERM, then SIGKILL after `grace_s`; the launcher's SIGINT/SIGTERM is passed
// on to the ranks the same way. Messages go to stderr ("mamba-launch: rank 1 (pid 4242) was
// killed by signal 9 (Killed); stopping the other ranks").
#pragma once

#include <string>
#include <vector>

namespace mamba::train {

struct LaunchOptions {
  int nproc = 1;                   // ranks, >= 1
  std::vector<std::string> argv;   // the command (argv[0] looked up in PATH) and its arguments
  std::string rendezvous;          // empty: file:<temp dir>/rendezvous (removed afterwards)
  bool cuda = false;               // set CUDA_VISIBLE_DEVICES per rank
  std::vector<std::string> gpus;   // with cuda: rank r gets gpus[r]; empty: "r"
  double grace_s = 10;             // SIGTERM to SIGKILL
  double rendezvous_timeout_s = 0; // > 0: MAMBA_RENDEZVOUS_TIMEOUT_S for the ranks
};

// Runs the job. Returns 0 when every rank exited 0; otherwise the first failure's exit
// status (its code, or 128 + signal). Throws mamba::Error on bad options (naming the
// field) or when a process cannot be started.
int launch_processes(const LaunchOptions& options);

}  // namespace mamba::train
