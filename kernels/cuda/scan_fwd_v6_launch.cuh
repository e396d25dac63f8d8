// Scan forward v6 (selective_scan_v6.cu), called by selective_scan_fwd_cuda's dispatch, and its
// measurement variants of branch scanfwd (selective_scan_v6_opt.cu). Private to kernels/cuda.
#pragma once
#include "mamba/kernels/cuda/scan_cuda.h"

namespace mamba::kernels::cuda {

// Launches v6 for p (1 <= dstate <= 64, arguments validated by the caller). forced_split:
// 0 = heuristic, else 1, 2 or 4 (clamped to what the state count and the tile allow).
template <class T>
void selective_scan_fwd_v6(const SelectiveScanCudaParams<T>& p, cudaStream_t stream, int forced_split);
// Bytes of p.seg_workspace the v6 call would use (the sequence split; 0 = no split).
template <class T>
size_t selective_scan_fwd_v6_seg_bytes(const SelectiveScanCudaParams<T>& p, int forced_split);

// The v6 variant p.opt (1 .. selective_scan_fwd_v6_opt_count(); dstate 16, split 2, 64-byte
// tiles; NOTES.md "Scan forward v7"); an unknown p.opt throws std::invalid_argument naming it.
template <class T>
void selective_scan_fwd_v6_opt(const SelectiveScanCudaParams<T>& p, cudaStream_t stream);
int selective_scan_fwd_v6_opt_count();
// The variant v6 runs when no knob is set (dstate 16, split 2): 0 = the scanfwd2 kernel (T64 P1/8
// U8; also reached with poly = 8 explicitly), else the opt number (NOTES.md "Scan forward v7").
constexpr int kV6DefaultOpt = 0;     // bf16
constexpr int kV6DefaultOptF32 = 16;  // f32
// "U8 P1/8 imad pipe" etc. for variant `opt` ("?" when unknown).
const char* selective_scan_fwd_v6_opt_name(int opt);

}  // namespace mamba::kernels::cuda
