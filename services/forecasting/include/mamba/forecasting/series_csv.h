// Multivariate time series in CSV files: reading, writing, and the timestamp column.
//
// A series file is a header line plus one row per time step: one date/time column (the
// column named `date`, matched case-insensitively after trimming, else the first column)
// and one or more numeric columns (every other column), e.g. the ETT files:
//   date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT
//   2016-07-01 00:00:00,41.13,12.48,36.53,9.35,4.42,1.31,38.66
//
// Accepted syntax: fields separated by ','; a field may be quoted with '"' ("" inside a
// quoted field is one quote; a quoted field may hold commas and line breaks); LF or CRLF
// line ends; a missing final newline; spaces and tabs around a field; a UTF-8 BOM; blank
// lines (skipped, as pandas does). Line numbers in errors are 1-based physical lines of
// the file (the header is line 1); a record that spans lines is named by its first line.
//
// Errors (all mamba::Error, message starting "series_csv: '<source>': line N, column
// '<name>': ..."): a row with a different number of fields than the header (ragged), a
// cell that is not a number ("abc", "1.2.3", "inf"), an unterminated quote, no numeric
// column, no data row, duplicate or empty column names.
// Missing values (an empty cell, NA, N/A, NaN, nan, null, NULL, None; case-insensitive) are never
// filled in: after the whole file is read, if any were found, read_series_csv throws
// MissingValuesError, which carries the total count and the first few cells (line and
// column) so the caller can tell the user exactly where the holes are.
//
// Timestamps: "YYYY-MM-DD HH:MM:SS", "YYYY-MM-DD HH:MM", "YYYY-MM-DD",
// "YYYY-MM-DDTHH:MM" and "YYYY-MM-DDTHH:MM:SS", read as UTC wall-clock time (no zones).
// They are kept as the strings of the file in MultiSeries::timestamps; parse_time_index
// turns them into epoch seconds, the sampling interval and the style to print future
// labels in. Reading a series does NOT parse its timestamps (a file may label its rows
// with something else); call parse_time_index when you need times.
//
// Thread-safety: every function here is reentrant; they share no state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::forecasting {

struct MultiSeries {
  std::vector<std::string> timestamps;  // T labels, as written in the file (trimmed, unquoted)
  std::string time_column = "date";     // the name of the date/time column
  std::vector<std::string> names;       // V variable names, in file order
  Tensor values;                        // (T, V) f32, contiguous, row t = time step t

  int64_t num_steps() const { return values.defined() ? values.size(0) : 0; }
  int64_t num_variables() const { return static_cast<int64_t>(names.size()); }
};

// One missing cell: 1-based physical line of the file and the column's name.
struct MissingCell {
  int64_t line = 0;
  std::string column;
};

// Thrown by read_series_csv when cells are missing. what() lists the count and the
// first kMaxListed cells ("line 17, column 'OT'").
class MissingValuesError : public Error {
 public:
  static constexpr size_t kMaxListed = 5;
  MissingValuesError(const std::string& source, int64_t count, std::vector<MissingCell> first);
  int64_t count() const { return count_; }
  const std::vector<MissingCell>& first() const { return first_; }  // at most kMaxListed

 private:
  int64_t count_;
  std::vector<MissingCell> first_;
};

// Parses CSV text. `source` names the text in errors (a path, or "<request>").
MultiSeries parse_series_csv(std::string_view text, const std::string& source = "<csv>");
// Reads and parses a file; throws mamba::Error naming the path if it cannot be read.
MultiSeries read_series_csv(const std::string& path);

// Serialises a series (header, then one row per step; values printed with the shortest
// representation that reads back to the same float; fields quoted when they hold ',',
// '"' or a line break). write_series_csv replaces `path` atomically
// (mamba::io::write_file_atomic). Throws if timestamps/names do not match values' shape.
std::string format_series_csv(const MultiSeries& series);
void write_series_csv(const std::string& path, const MultiSeries& series);

// ---- timestamps ------------------------------------------------------------------------

enum class TimestampStyle : uint8_t {
  date,                 // 2016-07-01
  date_hour_minute,     // 2016-07-01 00:00
  date_time,            // 2016-07-01 00:00:00
  iso_hour_minute,      // 2016-07-01T00:00
  iso_time,             // 2016-07-01T00:00:00
};

// Seconds since 1970-01-01 00:00:00 UTC. Throws mamba::Error for text in none of the
// styles above or an impossible date/time (2017-02-29, 24:00). Writes the style found
// to `style` when given.
int64_t parse_timestamp(std::string_view text, TimestampStyle* style = nullptr);
// The inverse: formats epoch seconds in `style` (a style without seconds drops them).
std::string format_timestamp(int64_t epoch_seconds, TimestampStyle style);

// Epoch seconds of every row plus what is needed to continue the series.
struct TimeIndex {
  std::vector<int64_t> epoch_seconds;  // one per row
  int64_t interval_seconds = 0;        // median of successive differences, > 0
  TimestampStyle style = TimestampStyle::date_time;  // style of the last row
};

// Parses every label (errors name the 1-based row index and the text) and infers the
// interval as the median difference between successive rows. Needs at least 2 rows and a
// positive median (throws otherwise); gaps and the odd repeated row are tolerated.
TimeIndex parse_time_index(const std::vector<std::string>& timestamps);
// The median of successive differences of `epoch_seconds` (>= 2 values). Throws when it
// is not positive.
int64_t infer_interval_seconds(const std::vector<int64_t>& epoch_seconds);
// `count` labels after the last row: last + k * interval for k = 1..count, in the input's
// style. A style without seconds (or without a time) cannot show every step of a
// sub-minute (sub-day) interval: throws instead of printing repeated labels.
std::vector<std::string> future_timestamps(const TimeIndex& index, int64_t count);

}  // namespace mamba::forecasting
