// ops::selective_scan on cuda tensors: the layout the kernel wants is the op's own (b, d, l),
// so the inputs are only made contiguous (f32 or bf16, as u) and the kernel runs.
#include "ssm_cuda.h"

#include "mamba/tensor/cuda.h"

#ifdef MAMBA_HAVE_CUDA
#include "../cuda/cuda_glue.h"
#include "mamba/kernels/cuda/scan_cuda.h"
#endif

namespace mamba::ops {

#ifndef MAMBA_HAVE_CUDA
ScanResult selective_scan_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const Tensor&, bool, const Tensor&) {
  fail("ops::selective_scan", "built without CUDA");
}
#else
namespace {

template <class T>
ScanResult run(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B, const Tensor& C, const Tensor& D,
               const Tensor& z, const Tensor& bias, bool softplus, const Tensor& init, int64_t g) {
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const Device dev = u.device();
  ScanResult r{Tensor::empty(u.shape(), u.dtype(), dev), Tensor::empty({b, d, n}, DType::f32, dev)};
  kernels::cuda::SelectiveScanCudaParams<T> p;
  p.batch = b; p.dim = d; p.seqlen = l; p.dstate = n; p.n_groups = g;
  auto ptr = [](const Tensor& t) { return t.defined() ? static_cast<const T*>(t.raw_data()) : nullptr; };
  auto fptr = [](const Tensor& t) { return t.defined() ? static_cast<const float*>(t.raw_data()) : nullptr; };
  p.u = ptr(u); p.delta = ptr(delta); p.z = ptr(z); p.B = ptr(B); p.C = ptr(C);
  p.A = fptr(A); p.D = fptr(D); p.delta_bias = fptr(bias); p.delta_softplus = softplus;
  p.initial_state = fptr(init);
  p.y = static_cast<T*>(r.y.raw_data());
  p.final_state = static_cast<float*>(r.last_state.raw_data());
  const Tensor seg = cuda_glue::scan_seg_workspace(p, dev);  // small grids: the sequence split
  kernels::cuda::selective_scan_fwd_cuda<T>(p, cuda_glue::stream(dev));
  return r;
}

}  // namespace

ScanResult selective_scan_cuda(const Tensor& u_in, const Tensor& delta_in, const Tensor& A_in, const Tensor& B_in,
                               const Tensor& C_in, const Tensor& D_in, const Tensor& z_in, const Tensor& bias_in,
                               bool softplus, const Tensor& init_in) {
  const char* op = "ops::selective_scan (cuda)";
  const Device dev = u_in.device();
  cuda::require_device(dev, op);
  const DType act = u_in.dtype();
  if (act != DType::f32 && act != DType::bf16) fail(op, "u must be f32 or bf16 on CUDA, got " + u_in.str());
  auto prep = [&](const Tensor& t, DType dt, const char* name, bool required) -> Tensor {
    if (!t.defined()) {
      if (required) fail(op, std::string(name) + " is required");
      return t;
    }
    if (t.device() != dev) fail(op, std::string(name) + " is on " + t.device().str() + ", u on " + dev.str());
    if (!dtype_is_float(t.dtype())) fail(op, std::string(name) + " must be a float tensor, got " + t.str());
    if (t.dtype() == dt && t.is_contiguous()) return t;
    Tensor c = Tensor::empty(t.shape(), dt, dev);
    cuda_glue::copy_on_stream(c, t);
    return c;
  };
  const Tensor u = prep(u_in, act, "u", true);
  if (u.dim() != 3) fail(op, "u must be (batch, dim, seqlen), got " + u.str());
  const int64_t b = u.size(0), d = u.size(1), l = u.size(2);
  const Tensor delta = prep(delta_in, act, "delta", true);
  check_shape(delta, u.shape(), op, "delta");
  const Tensor A = prep(A_in, DType::f32, "A", true);
  if (A.dim() != 2 || A.size(0) != d) fail(op, "A must be (dim=" + std::to_string(d) + ", dstate), got " + A.str());
  const int64_t n = A.size(1);
  Tensor B = prep(B_in, act, "B", true), C = prep(C_in, act, "C", true);
  if (B.dim() == 3) B = B.unsqueeze(1);
  if (C.dim() == 3) C = C.unsqueeze(1);
  if (B.dim() != 4 || B.size(0) != b || B.size(2) != n || B.size(3) != l)
    fail(op, "B must be (batch, dstate, seqlen) or (batch, groups, dstate, seqlen), got " + B_in.str());
  check_shape(C, B.shape(), op, "C");
  const int64_t g = B.size(1);
  if (g <= 0 || d % g != 0) fail(op, "dim " + std::to_string(d) + " is not a multiple of groups " + std::to_string(g));
  const Tensor D = prep(D_in, DType::f32, "D", false), z = prep(z_in, act, "z", false);
  const Tensor bias = prep(bias_in, DType::f32, "delta_bias", false), init = prep(init_in, DType::f32, "initial_state", false);
  if (D.defined()) check_shape(D, {d}, op, "D");
  if (z.defined()) check_shape(z, u.shape(), op, "z");
  if (bias.defined()) check_shape(bias, {d}, op, "delta_bias");
  if (init.defined()) check_shape(init, {b, d, n}, op, "initial_state");
  try {
    if (act == DType::bf16) return run<__nv_bfloat16>(u, delta, A, B, C, D, z, bias, softplus, init, g);
    return run<float>(u, delta, A, B, C, D, z, bias, softplus, init, g);
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const Error*>(&e)) throw;
    fail(op, e.what());
  }
}
#endif

}  // namespace mamba::ops
