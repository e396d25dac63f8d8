// Exact top-k over the catalogue from a bf16 pass on AMX (or an int8 pass on AMX or
// AVX-512 VNNI) plus an f32 rescoring.
//
// The dense scoring pass of top_k_items_batch (serving.h) reads the whole f32 item table
// (100k x 64 floats = 25.6 MB) once per batch with 16-lane FMAs. Here the pass runs on a
// bf16 copy of the table with AMX tile multiplies (TDPBF16PS: 16 items x 16 requests x 32
// dimensions per instruction; half the bytes), and its scores are only used to find
// candidates; every returned score is the exact f32 one, and the returned items are exactly
// the f32 top k:
//   - the error bound: with u = 2^-8 (bf16 round-to-nearest) and g = D 2^-24 / (1 - D 2^-24)
//     (f32 summation of D products in any order), the bf16 score s~ and the f32 score s of
//     item j for request q differ by at most
//         err_j = c |q| |e_j| + a,   c = 1.01 ((2u + u^2) + g ((1 + u)^2 + 1)),
//     (|q|, |e_j| the Euclidean norms, Cauchy-Schwarz; `a` covers the flush of subnormal
//     bf16 inputs and outputs to zero, 2^-120 (sqrt(D) (|q| + max_j |e_j|) + 2 D), and the
//     1.01 the float rounding of the bound itself);
//   - per request, t = the k-th largest lower bound s~ - err over the eligible items (not
//     excluded, allowed) is at most the k-th best f32 score, so every item of the f32 top
//     k has s~ + err >= t. The pass keeps each item whose upper bound reaches the running t
//     (which only rises), rescoring them in f32 (the same FMA order as the f32 pass:
//     d = 0 .. D-1) and ranking them (score descending, ties to the lower id).
// So the answer equals top_k_items_batch's dense f32 path (tested item for item). A table
// or request with a non-finite value, or a CPU/kernel without AMX, uses the f32 path.
// Thread-safety: a Bf16ItemTable is immutable; the functions may be called from any
// thread (each OpenMP thread configures its own tiles).
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

#include "mamba/recommendation/serving.h"

namespace mamba::recommendation {

struct Bf16ItemTable {
  int64_t num_items = 0;  // rows 1..N of the model's table (row i here = dense id i + 1)
  int64_t d = 0;          // d_model
  int64_t dp = 0;         // d rounded up to 32 (zero padded)
  int64_t np = 0;         // num_items rounded up to 16 (zero rows)
  std::vector<uint16_t> rows;  // (np, dp) bf16, round-to-nearest-even
  std::vector<float> norms;    // (num_items) |e_j| of the f32 rows, rounded up
  float max_norm = 0;
};

// Whether this CPU and kernel run AMX bf16 tiles (asks the kernel once for the tile state).
bool amx_bf16_available();

// The bf16 copy of `net`'s item table, or null when AMX is not available or the table
// holds a value that is not finite (or too large for bf16).
std::shared_ptr<const Bf16ItemTable> make_bf16_item_table(const Mamba4Rec& net);

// top_k_items_batch (serving.h) through `table` (made from `net`). Requests with a sparse
// filter, a non-finite representation, or a batch on a machine without AMX, go through
// top_k_items_batch itself. `rescored` (optional) gets the number of candidates rescored
// in f32 over the batch.
std::vector<std::vector<ScoredId>> top_k_items_batch_bf16(const Mamba4Rec& net, const Bf16ItemTable& table,
                                                          const std::vector<Tensor>& hidden,
                                                          const std::vector<int64_t>& k,
                                                          const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                          const std::vector<const AllowSet*>& allow = {},
                                                          int64_t* rescored = nullptr);

// The same over an int8 copy of the table (AMX TDPBSSD: exact int32 dot products of the
// quantised vectors; 64 bytes per item at d_model 64, half of bf16's). Item j is stored as
// s_j * e^_j (s_j = max_d |e_jd| / 127, e^ rounded to int8), a request as t * q^ likewise;
// then, with L1 norms,
//     |q.e_j - t s_j (q^.e^_j)| <= t s_j (0.5 (|q^|_1 + |e^_j|_1) + 0.25 D)
// (each rounding error at most half a step), which (times 1.0001, plus the f32 rescoring's
// own error g |q| max_j|e_j| and 2^-100 for the float arithmetic of the bound) plays the role
// of err_j above. Candidates, thresholds and the exact f32 rescoring are as for bf16.
// The int8 pass runs on AMX tiles (TDPBSSD) or, on CPUs without AMX (AMD Zen 4, older
// Xeons), on AVX-512 VNNI (VPDPBUSD with the requests offset to unsigned bytes and the
// offset taken off again through each item's byte sum): both give the same exact int32
// dot products, so the bound, the candidates and the answer do not depend on the kernel.
enum class Int8Kernel : uint8_t { amx, vnni };
// The batch size up to which VNNI puts 16 items rather than 16 requests in the lanes
// (mamba-rec-bench BM_ScoreTop10BatchInt8Vnni{Item,Request}Lanes: equal near 12).
constexpr int64_t kItemLanesMaxBatch = 11;
struct Int8ItemTable {
  Int8Kernel kernel = Int8Kernel::amx;  // which kernel the batches run
  std::vector<int32_t> sums;  // (np) sum_d e^_jd (the VNNI offset correction; 0 for padding)
  int64_t num_items = 0, d = 0;
  int64_t dp = 0;  // d rounded up to 64 (zero padded)
  int64_t np = 0;  // num_items rounded up to 16 (zero rows)
  std::vector<int8_t> rows;  // (np, dp)
  std::vector<float> meta;   // (num_items, 2): s_j, 0.5 s_j |e^_j|_1 (rounded up)
  float max_norm = 0;        // max_j |e_j| (rounded up)
  // VNNI only: the same bytes with 16 items in the lanes, for batches too small to fill 16
  // request lanes (a VPDPBUSD then does 64 useful products whatever the batch size):
  // cols[(block * 16 + r) * 64 + i * 4 + c] = e^_{16 block + i}[4 r + c], and s_j and
  // 0.5 s_j |e^_j|_1 again as (np) arrays (0 for padding).
  std::vector<int8_t> cols;
  std::vector<float> col_scale, col_w;
  // Batches of at most this many requests take the items-in-lanes pass (VNNI tables; 0:
  // never). Both passes give the same candidates per request, hence the same answers.
  int64_t item_lanes_max_batch = kItemLanesMaxBatch;
};
bool amx_int8_available();
bool vnni_int8_available();  // AVX-512 F, BW and VNNI
bool int8_kernel_available(Int8Kernel kernel);
// The table for the best kernel here (AMX, else VNNI), or for `kernel`; null when that
// kernel is not available, d_model > 64 or the table is not finite.
// `item_lanes_max_batch` becomes the table's (VNNI) switch between the two layouts.
std::shared_ptr<const Int8ItemTable> make_int8_item_table(const Mamba4Rec& net,
                                                          int64_t item_lanes_max_batch = kItemLanesMaxBatch);
std::shared_ptr<const Int8ItemTable> make_int8_item_table(const Mamba4Rec& net, Int8Kernel kernel,
                                                          int64_t item_lanes_max_batch = kItemLanesMaxBatch);
std::vector<std::vector<ScoredId>> top_k_items_batch_int8(const Mamba4Rec& net, const Int8ItemTable& table,
                                                          const std::vector<Tensor>& hidden,
                                                          const std::vector<int64_t>& k,
                                                          const std::vector<const std::unordered_set<int32_t>*>& exclude,
                                                          const std::vector<const AllowSet*>& allow = {},
                                                          int64_t* rescored = nullptr);

}  // namespace mamba::recommendation
