// The SSD checks and timings of mamba-cuda-check (kernels/cuda/check_ssd.cu).
#pragma once

// Checks ssd_chunk_scan_cuda (and its backward) against the CPU reference at awkward sizes, then
// (unless argv has --check-only) times the standard shape (--timings-only: no checks). Adds its
// results to passed / failed.
// Returns true when argv has --ssd-only: the caller should then stop (nothing else to run).
bool run_ssd_cuda_checks(int argc, char** argv, int& passed, int& failed);
