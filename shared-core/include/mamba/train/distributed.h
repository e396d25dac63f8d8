// Data-parallel communication: one process per device, each holding a full copy of the
// model; after every backward pass the gradients are summed across the processes so that
// every process applies the same update.
//
// A Communicator joins `world_size` processes (ranks 0..world_size-1). It is created from
// a DistConfig, usually read from the environment (dist_config_from_env):
//   MAMBA_RANK, MAMBA_WORLD_SIZE          this process's rank and the number of processes
//   MAMBA_RENDEZVOUS                      file:/path (a path every rank can read; rank 0
//                                         writes "host port" into it) or tcp://host:port
//                                         (rank 0 listens there)
//   MAMBA_RENDEZVOUS_TIMEOUT_S            rendezvous deadline (300): a rank that does not
//                                         join in time makes the others fail, never hang
//   MAMBA_COMM_TIMEOUT_S                  deadline of one collective waiting for a peer (1800)
//   MAMBA_LOCAL_RANK                      rank on this host (the GPU index; default: rank)
//   MAMBA_RENDEZVOUS_HOST                 (file: only) the address rank 0 writes for the
//                                         others; default 127.0.0.1 (one host)
// torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are accepted in
// their place (MASTER_ADDR:MASTER_PORT = tcp://); when both spellings are set they must
// agree. No variable set: world size 1 (a no-op communicator).
//
// Backends:
//   "cpu"   TCP sockets (loopback or network); buffers in host memory. all_reduce is a ring
//           (reduce-scatter then all-gather): each rank sends and receives 2 (W-1)/W of the
//           buffer. The reduction order is fixed (below), so every rank receives
//           bit-identical results and repeated runs give the same bits.
//   "nccl"  NCCL (only when built with CUDA and NCCL: nccl_available()); rank 0 makes the
//           ncclUniqueId and shares it through the same rendezvous (a "cpu" communicator),
//           then ncclCommInitRank on device MAMBA_LOCAL_RANK % device count (one visible
//           device per process when the launcher sets CUDA_VISIBLE_DEVICES). Buffers may be
//           device memory (reduced in place) or host memory (staged through a device
//           buffer). NCCL_NVLS_ENABLE=0 is set unless the environment sets it.
//
// Ring order (the "cpu" backend's contract): a buffer of n elements is cut into W chunks,
// chunk c = [c*(n/W) + min(c, n%W), (c+1)*(n/W) + min(c+1, n%W)). Element i of chunk c is
//   ((x_c[i] + x_{c+1}[i]) + x_{c+2}[i]) + ... + x_{c+W-1}[i]      (ranks mod W, left to right)
// in the element type; all_reduce_mean then divides by W. With W = 2 this equals
// x_0 + x_1 for every element (addition is commutative).
//
// Collectives must be called by every rank in the same order with the same sizes; the
// "cpu" backend checks this (each message carries the call's kind, element count and
// sequence number) and throws naming the call when ranks disagree.
//
// Errors: mamba::Error naming the variable (bad environment), the peer and the deadline
// (timeouts), or the peer whose connection closed ("did rank 1 exit or crash?"). After an
// error the communicator is unusable; the process should exit (the launcher then stops
// the other ranks).
// Thread-safety: one thread at a time per communicator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace mamba::train {

struct DistConfig {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string rendezvous;          // "file:/path" or "tcp://host:port"; may be empty when world_size == 1
  double rendezvous_timeout_s = 300;
  double op_timeout_s = 1800;
  std::string advertise_host;      // file: rendezvous only: the address rank 0 writes (empty: 127.0.0.1)
};

// Looks up an environment variable; nullptr (or "") when unset.
using EnvLookup = std::function<const char*(const char* name)>;

// Reads the variables above. Throws mamba::Error naming the variable when one is
// malformed ("MAMBA_RANK='x' is not an integer"), out of range (rank >= world size),
// missing (MAMBA_WORLD_SIZE without MAMBA_RANK, world size > 1 without a rendezvous,
// MASTER_ADDR without MASTER_PORT) or inconsistent (MAMBA_RANK=1 but RANK=0).
DistConfig dist_config_from_env(const EnvLookup& env = nullptr);  // nullptr: ::getenv

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual const char* backend() const = 0;  // "local", "cpu" or "nccl"

  // data[i] = the sum of every rank's data[i], in place, on every rank (see the ring order).
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  // The sum, divided by world_size() (the "nccl" backend on device buffers: ncclAvg).
  virtual void all_reduce_mean(float* data, size_t n);
  virtual void all_reduce_mean(double* data, size_t n);
  // Root's `bytes` bytes at `data` are copied into every rank's `data`.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Returns when every rank has called it.
  virtual void barrier() = 0;

 protected:
  Communicator() = default;
};

// World size 1: every collective returns at once (the data are already the result).
std::unique_ptr<Communicator> make_local_communicator();

// Joins the ranks of `config` ("cpu" or "nccl"). World size 1 gives the local
// communicator (for "nccl" too). Throws mamba::Error: bad config, rendezvous timeout, a
// peer with a different world size, "nccl" not built in, no CUDA device.
std::unique_ptr<Communicator> make_communicator(const DistConfig& config, const std::string& backend = "cpu");

// make_communicator(dist_config_from_env(), backend).
std::unique_ptr<Communicator> communicator_from_env(const std::string& backend = "cpu");

// Whether this build has the NCCL backend (built with CUDA and NCCL found).
bool nccl_available();

namespace detail {
// The NCCL backend (distributed_nccl.cc); `bootstrap` is a connected "cpu" communicator
// of the same ranks, used to share the ncclUniqueId and for barrier().
std::unique_ptr<Communicator> make_nccl_communicator(const DistConfig& config, std::unique_ptr<Communicator> bootstrap);
}  // namespace detail

}  // namespace mamba::train
