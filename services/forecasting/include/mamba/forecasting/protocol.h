// The evaluation protocol of the published long-term forecasters: splits, the z-score
// scaler, stride-1 windows and timeF time features.
//
// Splits (row ranges of the series, [begin, end)); `seq_len` is the look-back L:
//   ett-hour   train [0, 8640), val [8640 - L, 11520), test [11520 - L, 14400)
//              (12/4/4 months of hourly rows; rows after 14400 are unused, as in the papers)
//   ett-minute the same months at 15 minutes: [0, 34560), [34560 - L, 46080), [46080 - L, 57600)
//   ratio      num_train = int(T * 0.7), num_test = int(T * 0.2), num_val = T - train - test;
//              train [0, num_train), val [num_train - L, num_train + num_val),
//              test [T - num_test - L, T)
// A validation/test window may thus take its look-back from the previous split; its
// targets always lie inside the split. The scaler sees the TRAIN rows only.
//
// Windows: for a split [begin, end), every start s in [begin, end - L - H] gives
//   x = rows [s, s + L)   and   y = rows [s + L, s + L + H)
// (stride 1, so num_windows = end - begin - L - H + 1, possibly 0).
//
// Errors: mamba::Error naming the function and the numbers (a series too short for the
// protocol, L or H < 1, window index out of range, a scaler for another variable count).
// Thread-safety: every type is immutable after construction (const methods may run
// concurrently); functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/tensor/tensor.h"

namespace mamba::forecasting {

enum class SplitProtocol : uint8_t { ett_hour, ett_minute, ratio };
// "ett-hour" | "ett-minute" | "ratio"; throws for anything else (listing the choices).
SplitProtocol parse_split_protocol(const std::string& name);
const char* split_protocol_name(SplitProtocol p);

struct RowRange {
  int64_t begin = 0, end = 0;  // [begin, end)
  int64_t size() const { return end - begin; }
};

struct Splits {
  RowRange train, val, test;
};

// The row ranges for a series of `num_rows` rows. Throws if the series is shorter than
// the protocol needs (ett-*: the fixed borders; ratio: every split must hold at least one
// window of L + H rows) or if L, H < 1.
Splits make_splits(SplitProtocol protocol, int64_t num_rows, int64_t seq_len, int64_t horizon);

// Per-variable z-score: (x - mean) / std, population std (ddof 0, like sklearn's
// StandardScaler); a variable whose std is 0 (or not finite) gets std 1.
// Statistics are computed in double. Stored in the model directory as preprocess.json:
//   {"type": "standard_scaler", "names": [...], "mean": [...], "std": [...],
//    "fit_rows": [begin, end]}
class StandardScaler {
 public:
  StandardScaler() = default;
  StandardScaler(std::vector<double> mean, std::vector<double> std, std::vector<std::string> names = {});

  // Fits on rows [rows.begin, rows.end) of `values` (T, V) f32. Throws for an empty or
  // out-of-range row range and for non-finite values.
  static StandardScaler fit(const Tensor& values, RowRange rows, std::vector<std::string> names = {});

  // (T, V) or (..., V) f32 -> a new f32 tensor of the same shape.
  Tensor transform(const Tensor& values) const;
  Tensor inverse_transform(const Tensor& values) const;

  int64_t num_variables() const { return static_cast<int64_t>(mean_.size()); }
  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& std() const { return std_; }
  const std::vector<std::string>& names() const { return names_; }
  RowRange fit_rows() const { return fit_rows_; }

  nlohmann::json to_json() const;
  // Throws mamba::Error naming `source` and the field for a malformed object.
  static StandardScaler from_json(const nlohmann::json& j, const std::string& source = "preprocess.json");
  void save(const std::string& path) const;  // atomic (write_json_file_atomic)
  static StandardScaler load(const std::string& path);

 private:
  Tensor apply(const Tensor& values, bool inverse, const char* op) const;
  std::vector<double> mean_, std_;
  std::vector<std::string> names_;
  RowRange fit_rows_;
};

// The stride-1 windows of one split. Holds a handle to the (scaled) series; no copy.
class WindowDataset {
 public:
  // `series` (T, V) f32 (already scaled); `rows` the split. Throws when rows lie outside
  // the series or seq_len, horizon < 1.
  WindowDataset(Tensor series, RowRange rows, int64_t seq_len, int64_t horizon);

  int64_t size() const { return num_windows_; }  // number of windows (>= 0)
  int64_t seq_len() const { return seq_len_; }
  int64_t horizon() const { return horizon_; }
  int64_t num_variables() const { return series_.size(1); }
  RowRange rows() const { return rows_; }
  const Tensor& series() const { return series_; }
  // Row of the series where window i's look-back starts: rows().begin + i.
  int64_t window_start(int64_t i) const;

  // Gathers windows `indices` (each in [0, size())) into x (B, L, V) and y (B, H, V),
  // new contiguous f32 tensors, B = indices.size() (>= 1).
  void gather(const std::vector<int64_t>& indices, Tensor& x, Tensor& y) const;
  // Windows [first, first + count) (clamped to size()).
  void gather_range(int64_t first, int64_t count, Tensor& x, Tensor& y) const;

 private:
  Tensor series_;
  RowRange rows_;
  int64_t seq_len_, horizon_, num_windows_;
};

// timeF time features of each timestamp (epoch seconds, UTC), each in [-0.5, 0.5]:
//   [minute of hour / 59 - 0.5]   (only when interval_seconds < 3600)
//   hour of day / 23 - 0.5, day of week (Monday 0) / 6 - 0.5,
//   (day of month - 1) / 30 - 0.5, (day of year - 1) / 365 - 0.5
// -> (N, F) f32 with F = num_time_features(interval_seconds) (4 or 5).
int64_t num_time_features(int64_t interval_seconds);
Tensor time_features(const std::vector<int64_t>& epoch_seconds, int64_t interval_seconds);
// The features of rows [start, start + count) -> (count, F), e.g. a window's look-back
// (start = s, count = L) or its horizon (start = s + L, count = H). Rows past the end of
// `epoch_seconds` are extrapolated at interval_seconds from the last row, so a forecast's
// future steps get features too. Throws for start < 0 or count < 1.
Tensor window_time_features(const std::vector<int64_t>& epoch_seconds, int64_t interval_seconds, int64_t start,
                            int64_t count);

}  // namespace mamba::forecasting
