// The "nccl" backend of distributed.h: built when CMake finds CUDA and NCCL
// (MAMBA_HAVE_NCCL); otherwise nccl_available() is false and make_communicator refuses
// the backend by name.
#include "mamba/train/distributed.h"

#include <cstdlib>
#include <string>

#include "mamba/tensor/tensor.h"

#ifdef MAMBA_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace mamba::train {

#ifndef MAMBA_HAVE_NCCL

bool nccl_available() { return false; }

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator(const DistConfig&, std::unique_ptr<Communicator>) {
  throw Error("distributed: the nccl backend is not in this build (configure with CUDA and NCCL)");
}
}  // namespace detail

#else

bool nccl_available() { return true; }

namespace {

[[noreturn]] void fail_nccl(const std::string& m) { throw Error("distributed (nccl): " + m); }

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail_nccl(std::string(what) + ": " + cudaGetErrorString(e));
}

void check_nccl(ncclResult_t r, const char* what, int rank) {
  if (r != ncclSuccess)
    fail_nccl(std::string(what) + " on rank " + std::to_string(rank) + ": " + ncclGetErrorString(r) +
              " (NCCL_DEBUG=INFO tells more)");
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const DistConfig& c, std::unique_ptr<Communicator> bootstrap)
      : cfg_(c), boot_(std::move(bootstrap)) {
    // NVLink SHARP (multicast) is off unless the environment says otherwise: it needs
    // fabric-manager support that shared machines often lack, and gains nothing at 2 GPUs.
    ::setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
    int devices = 0;
    const cudaError_t e = cudaGetDeviceCount(&devices);
    // Every rank must agree before NCCL is initialised: a rank without a GPU fails here,
    // and the others learn it through the bootstrap instead of waiting in ncclCommInitRank.
    double no_gpu = (e != cudaSuccess || devices == 0) ? 1.0 : 0.0;
    boot_->all_reduce_sum(&no_gpu, 1);
    if (e != cudaSuccess || devices == 0)
      fail_nccl("rank " + std::to_string(c.rank) + " sees no CUDA device (" +
                (e != cudaSuccess ? std::string(cudaGetErrorString(e)) : std::string("device count 0")) +
                "); the nccl backend needs one GPU per process (use --backend cpu without GPUs)");
    if (no_gpu > 0) fail_nccl("another rank sees no CUDA device (see its error)");
    device_ = c.local_rank % devices;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (c.rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", c.rank);
    boot_->broadcast(&id, sizeof id, 0);
    check_nccl(ncclCommInitRank(&comm_, c.world_size, id, c.rank), "ncclCommInitRank", c.rank);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclCommunicator() override {
    if (staging_) cudaFree(staging_);
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return cfg_.rank; }
  int world_size() const override { return cfg_.world_size; }
  const char* backend() const override { return "nccl"; }

  void all_reduce_sum(float* data, size_t n) override { reduce(data, n, sizeof(float), ncclFloat32); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n, sizeof(double), ncclFloat64); }

  void all_reduce_mean(float* data, size_t n) override {
    if (is_device_pointer(data)) reduce(data, n, sizeof(float), ncclFloat32, ncclAvg);
    else Communicator::all_reduce_mean(data, n);  // the sum, then / W on the host
  }
  void all_reduce_mean(double* data, size_t n) override {
    if (is_device_pointer(data)) reduce(data, n, sizeof(double), ncclFloat64, ncclAvg);
    else Communicator::all_reduce_mean(data, n);
  }

  void broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= cfg_.world_size) fail_nccl("broadcast: root " + std::to_string(root) + " is not a rank");
    if (bytes == 0) return;
    void* dev = on_device(data, bytes, /*copy_in=*/cfg_.rank == root);
    check_nccl(ncclBroadcast(dev, dev, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast", cfg_.rank);
    finish(data, dev, bytes);
  }

  void barrier() override { boot_->barrier(); }

 private:
  static bool is_device_pointer(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();  // plain host memory on older runtimes: clear the error
      return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
  }

  // Device memory is used in place; host memory is copied into a staging buffer.
  void* on_device(void* data, size_t bytes, bool copy_in) {
    if (is_device_pointer(data)) return data;
    if (bytes > staging_bytes_) {
      if (staging_) cudaFree(staging_);
      staging_ = nullptr;
      check_cuda(cudaMalloc(&staging_, bytes), "cudaMalloc (nccl staging buffer)");
      staging_bytes_ = bytes;
    }
    if (copy_in) check_cuda(cudaMemcpyAsync(staging_, data, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    return staging_;
  }

  void finish(void* data, void* dev, size_t bytes) {
    if (dev != data)
      check_cuda(cudaMemcpyAsync(data, dev, bytes, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (after an NCCL call)");
  }

  void reduce(void* data, size_t n, size_t elem, ncclDataType_t type, ncclRedOp_t op = ncclSum) {
    if (n == 0) return;
    void* dev = on_device(data, n * elem, true);
    check_nccl(ncclAllReduce(dev, dev, n, type, op, comm_, stream_), "ncclAllReduce", cfg_.rank);
    finish(data, dev, n * elem);
  }

  DistConfig cfg_;
  std::unique_ptr<Communicator> boot_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator(const DistConfig& config, std::unique_ptr<Communicator> bootstrap) {
  return std::make_unique<NcclCommunicator>(config, std::move(bootstrap));
}
}  // namespace detail

#endif  // MAMBA_HAVE_NCCL

}  // namespace mamba::train
