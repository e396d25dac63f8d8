// Interaction files: RecBole atomic `.inter` files and plain CSV, read one row at a time.
//
// RecBole atomic file: tab-separated, the first line a typed header `name:type` per column,
//   user_id:token	item_id:token	rating:float	timestamp:float
// Plain CSV: comma-separated, header `user_id,item_id,timestamp[,rating][,event_type]`;
// a field may be double-quoted ("" inside is one quote; no line breaks inside a field).
// In both formats the columns may come in any order and unknown columns are ignored;
// `user_id`, `item_id` and `timestamp` are required, `rating` (the interaction's weight,
// 1 when absent) and `event_type` ("interaction" when absent) are optional. Timestamps are
// numbers (seconds; RecBole's float timestamps). LF or CRLF line ends, a UTF-8 BOM and
// blank lines (skipped) are accepted.
//
// Line numbers are 1-based physical lines of the file; the header is line 1. A bad data
// row does not stop the reading: it is rejected with its line and a reason (wrong column
// count, missing field, bad number, unterminated quote) and the reader moves on. A bad
// header (no header, a required column missing, a duplicate column) throws
// InteractionFileError: nothing in the file can be read without it.
//
// Thread-safety: a reader is used by one thread; distinct readers share nothing.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::recommendation {

enum class InterFormat { auto_detect, recbole, csv };

// "auto", "recbole", "csv"; throws mamba::Error on anything else.
InterFormat parse_inter_format(const std::string& name);
const char* inter_format_name(InterFormat f);

class InteractionFileError : public Error {
 public:
  using Error::Error;
};

// One good data row.
struct InteractionRow {
  std::string user_key;
  std::string item_key;
  double ts = 0;                         // seconds, finite
  float weight = 1.f;                    // the rating column, 1 when the file has none
  std::string event_type = "interaction";
  int64_t line = 0;                      // physical line in the file
};

// One rejected data row.
struct RejectedRow {
  int64_t line = 0;
  std::string reason;  // e.g. "bad number in column 'timestamp': 'abc'"
};

class InteractionReader {
 public:
  // Keeps at most this many rejected rows in rejected(); rejected_count() counts them all.
  static constexpr size_t kMaxKeptRejections = 1000;

  // Reads the header at once (throws InteractionFileError when it is bad). `source` names
  // the input in errors; with InterFormat::auto_detect the format follows the name's
  // extension (.inter: recbole, .csv: csv), else the header (tabs: recbole, else csv).
  // `in` must outlive the reader.
  InteractionReader(std::istream& in, const std::string& source, InterFormat format = InterFormat::auto_detect);

  // The next good row; false at the end of the input. Rejected rows are recorded and skipped.
  bool next(InteractionRow& row);

  InterFormat format() const { return format_; }
  int64_t rows_read() const { return rows_read_; }          // data rows seen (good + rejected)
  int64_t rejected_count() const { return rejected_count_; }
  const std::vector<RejectedRow>& rejected() const { return rejected_; }  // first kMaxKeptRejections

 private:
  void parse_header(std::string_view line);
  bool split(std::string_view line, std::vector<std::string>& fields, std::string& why) const;
  void reject(int64_t line, std::string reason);

  std::istream& in_;
  std::string source_;
  InterFormat format_;
  int64_t line_no_ = 0;
  int64_t rows_read_ = 0, rejected_count_ = 0;
  std::vector<RejectedRow> rejected_;
  size_t num_columns_ = 0;
  int col_user_ = -1, col_item_ = -1, col_ts_ = -1, col_rating_ = -1, col_event_ = -1;
  std::string line_;
  std::vector<std::string> fields_;
};

}  // namespace mamba::recommendation
