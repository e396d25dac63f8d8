#include "mamba/forecasting/series_csv.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "mamba/io/atomic_file.h"
#include "civil_time.h"

namespace mamba::forecasting {
namespace {

using detail::civil_from_days;
using detail::days_from_civil;
using detail::days_in_month;
using detail::floor_div;

[[noreturn]] void csv_fail(const std::string& source, const std::string& message) {
  throw Error("series_csv: '" + source + "': " + message);
}

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

// One record of the file: its fields and the physical line it starts on.
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;
};

// Splits CSV text into records. Quoted fields keep their inner whitespace; unquoted ones
// are trimmed. CR before LF is dropped; a lone CR inside a quoted field is kept.
class RecordReader {
 public:
  RecordReader(std::string_view text, const std::string& source) : text_(text), source_(source) {
    if (text_.size() >= 3 && std::memcmp(text_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;
  }

  // False at the end of the text. Blank lines are skipped.
  bool next(Record& rec) {
    for (;;) {
      if (pos_ >= text_.size()) return false;
      rec.fields.clear();
      rec.line = line_;
      const bool blank = read_record(rec);
      if (!blank) return true;
    }
  }

 private:
  // Reads one record up to and including its line end. Returns true for a blank line.
  bool read_record(Record& rec) {
    std::string field;
    bool quoted = false;      // the current field was quoted
    bool any_content = false;
    for (;;) {
      // Start of a field: skip leading whitespace to look for a quote.
      size_t p = pos_;
      while (p < text_.size() && (text_[p] == ' ' || text_[p] == '\t')) ++p;
      field.clear();
      quoted = false;
      if (p < text_.size() && text_[p] == '"') {
        quoted = true;
        any_content = true;
        const int64_t open_line = line_;
        pos_ = p + 1;
        for (;;) {
          if (pos_ >= text_.size())
            csv_fail(source_, "line " + std::to_string(open_line) + ": unterminated quoted field");
          const char c = text_[pos_];
          if (c == '"') {
            if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '"') {
              field.push_back('"');
              pos_ += 2;
              continue;
            }
            ++pos_;
            break;
          }
          if (c == '\n') ++line_;
          if (c == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') {
            ++pos_;
            continue;
          }
          field.push_back(c);
          ++pos_;
        }
        // After the closing quote only whitespace may follow before the separator.
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
        if (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '\n' && text_[pos_] != '\r')
          csv_fail(source_, "line " + std::to_string(line_) + ": text after a closing quote");
      } else {
        size_t e = pos_;
        while (e < text_.size() && text_[e] != ',' && text_[e] != '\n' && text_[e] != '\r') ++e;
        const std::string_view raw = text_.substr(pos_, e - pos_);
        if (raw.find('"') != std::string_view::npos)
          csv_fail(source_, "line " + std::to_string(line_) + ": a quote inside an unquoted field");
        const std::string_view t = trim(raw);
        if (!t.empty()) any_content = true;
        field.assign(t);
        pos_ = e;
      }
      rec.fields.push_back(field);
      if (pos_ >= text_.size()) break;
      const char sep = text_[pos_];
      if (sep == ',') {
        any_content = true;
        ++pos_;
        continue;
      }
      // Line end: "\n", "\r\n" or a lone "\r".
      if (sep == '\r') ++pos_;
      if (pos_ < text_.size() && text_[pos_] == '\n') ++pos_;
      ++line_;
      break;
    }
    return !any_content && !quoted && rec.fields.size() == 1;
  }

  std::string_view text_;
  const std::string& source_;
  size_t pos_ = 0;
  int64_t line_ = 1;
};

bool is_missing_token(std::string_view s) {
  if (s.empty()) return true;
  const std::string l = lower(s);
  return l == "na" || l == "n/a" || l == "nan" || l == "null" || l == "none";
}

// Parses a finite decimal number (optional sign, digits, '.', exponent). False otherwise.
bool parse_number(std::string_view s, double& out) {
  if (s.empty()) return false;
  if (s.front() == '+') s.remove_prefix(1);
  if (s.empty() || s.front() == '+') return false;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  // from_chars also accepts "inf"/"nan"/hex forms in some modes: only allow plain decimals.
  for (const char* p = b; p != e; ++p) {
    const char c = *p;
    if (!((c >= '0' && c <= '9') || c == '.' || c == '-' || c == 'e' || c == 'E' || c == '+')) return false;
  }
  auto [ptr, ec] = std::from_chars(b, e, out, std::chars_format::general);
  if (ec == std::errc::result_out_of_range) return false;
  if (ec != std::errc() || ptr != e) return false;
  return std::isfinite(out);
}

std::string quote_if_needed(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos && trim(s).size() == s.size()) return s;
  std::string r = "\"";
  for (char c : s) {
    if (c == '"') r += "\"\"";
    else r.push_back(c);
  }
  r += '"';
  return r;
}

bool digits(std::string_view s, size_t at, size_t n, int64_t& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

MissingValuesError::MissingValuesError(const std::string& source, int64_t count, std::vector<MissingCell> first)
    : Error([&] {
        std::string m = "series_csv: '" + source + "': " + std::to_string(count) + " missing value" +
                        (count == 1 ? "" : "s") + " (empty, NA, NaN or null); first at";
        for (size_t i = 0; i < first.size(); ++i)
          m += std::string(i ? "," : "") + " line " + std::to_string(first[i].line) + ", column '" +
               first[i].column + "'";
        return m + "; fill or drop them before forecasting";
      }()),
      count_(count),
      first_(std::move(first)) {}

MultiSeries parse_series_csv(std::string_view text, const std::string& source) {
  RecordReader reader(text, source);
  Record header;
  if (!reader.next(header)) csv_fail(source, "empty file (no header line)");

  const int64_t ncol = static_cast<int64_t>(header.fields.size());
  std::unordered_set<std::string> seen;
  int64_t time_col = 0;
  for (int64_t c = 0; c < ncol; ++c) {
    const std::string& name = header.fields[c];
    if (name.empty()) csv_fail(source, "line " + std::to_string(header.line) + ": column " + std::to_string(c + 1) + " has no name");
    if (!seen.insert(name).second) csv_fail(source, "line " + std::to_string(header.line) + ": duplicate column '" + name + "'");
  }
  for (int64_t c = 0; c < ncol; ++c)
    if (lower(header.fields[c]) == "date") {
      time_col = c;
      break;
    }
  if (ncol < 2) csv_fail(source, "no numeric column (need a date/time column plus at least one value column)");

  MultiSeries out;
  out.time_column = header.fields[time_col];
  std::vector<int64_t> value_cols;
  for (int64_t c = 0; c < ncol; ++c)
    if (c != time_col) {
      value_cols.push_back(c);
      out.names.push_back(header.fields[c]);
    }
  const size_t nv = value_cols.size();

  std::vector<float> values;
  int64_t missing_count = 0;
  std::vector<MissingCell> missing_first;
  Record rec;
  while (reader.next(rec)) {
    if (static_cast<int64_t>(rec.fields.size()) != ncol)
      csv_fail(source, "line " + std::to_string(rec.line) + ": " + std::to_string(rec.fields.size()) +
                           " fields, the header has " + std::to_string(ncol) + " (ragged row)");
    out.timestamps.push_back(rec.fields[time_col]);
    for (size_t j = 0; j < nv; ++j) {
      const std::string& cell = rec.fields[value_cols[j]];
      double v = 0;
      if (is_missing_token(cell)) {
        ++missing_count;
        if (missing_first.size() < MissingValuesError::kMaxListed) missing_first.push_back({rec.line, out.names[j]});
        values.push_back(std::nanf(""));
        continue;
      }
      if (!parse_number(cell, v))
        csv_fail(source, "line " + std::to_string(rec.line) + ", column '" + out.names[j] + "': '" + cell +
                             "' is not a finite number");
      const float f = static_cast<float>(v);
      if (!std::isfinite(f))
        csv_fail(source, "line " + std::to_string(rec.line) + ", column '" + out.names[j] + "': '" + cell +
                             "' does not fit in a 32-bit float");
      values.push_back(f);
    }
  }
  if (out.timestamps.empty()) csv_fail(source, "no data rows after the header");
  if (missing_count > 0) throw MissingValuesError(source, missing_count, std::move(missing_first));
  const int64_t T = static_cast<int64_t>(out.timestamps.size());
  out.values = Tensor::from_vector(values, {T, static_cast<int64_t>(nv)});
  return out;
}

MultiSeries read_series_csv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("series_csv: '" + path + "': cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("series_csv: '" + path + "': read error");
  return parse_series_csv(ss.str(), path);
}

std::string format_series_csv(const MultiSeries& s) {
  const int64_t V = s.num_variables();
  const int64_t T = static_cast<int64_t>(s.timestamps.size());
  if (!s.values.defined() || s.values.dim() != 2 || s.values.size(0) != T || s.values.size(1) != V)
    fail("format_series_csv", "values " + (s.values.defined() ? s.values.str() : std::string("undefined")) +
                                  " do not match " + std::to_string(T) + " timestamps x " + std::to_string(V) +
                                  " names");
  const Tensor v = s.values.to(DType::f32).contiguous();
  const float* p = v.data<float>();
  std::string out = quote_if_needed(s.time_column);
  for (const auto& n : s.names) out += "," + quote_if_needed(n);
  out += '\n';
  char buf[64];
  for (int64_t t = 0; t < T; ++t) {
    out += quote_if_needed(s.timestamps[t]);
    for (int64_t j = 0; j < V; ++j) {
      out += ',';
      const float x = p[t * V + j];
      if (!std::isfinite(x)) {
        out += "NaN";  // read back as missing, never as a number
        continue;
      }
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
      out.append(buf, end);
    }
    out += '\n';
  }
  return out;
}

void write_series_csv(const std::string& path, const MultiSeries& series) {
  io::write_file_atomic(path, format_series_csv(series));
}

// ---- timestamps ----

int64_t parse_timestamp(std::string_view text, TimestampStyle* style) {
  const std::string_view s = trim(text);
  auto bad = [&](const char* why) -> int64_t {
    throw Error("parse_timestamp: '" + std::string(s) + "': " + why +
                " (expected YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DDTHH:MM[:SS])");
  };
  int64_t y, mo, d, h = 0, mi = 0, se = 0;
  if (!digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, mo) || s[7] != '-' ||
      !digits(s, 8, 2, d))
    return bad("not a date");
  TimestampStyle st = TimestampStyle::date;
  if (s.size() > 10) {
    const char sep = s[10];
    if (sep != ' ' && sep != 'T') return bad("unknown separator after the date");
    if (s.size() != 16 && s.size() != 19) return bad("unknown time format");
    if (!digits(s, 11, 2, h) || s[13] != ':' || !digits(s, 14, 2, mi)) return bad("not a time");
    if (s.size() == 19) {
      if (s[16] != ':' || !digits(s, 17, 2, se)) return bad("not a time");
      st = sep == 'T' ? TimestampStyle::iso_time : TimestampStyle::date_time;
    } else {
      st = sep == 'T' ? TimestampStyle::iso_hour_minute : TimestampStyle::date_hour_minute;
    }
  }
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return bad("no such date");
  if (h > 23 || mi > 59 || se > 59) return bad("no such time of day");
  if (style) *style = st;
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
}

std::string format_timestamp(int64_t epoch, TimestampStyle style) {
  const int64_t days = floor_div(epoch, 86400);
  const int64_t sec = epoch - days * 86400;
  int64_t y, m, d;
  civil_from_days(days, y, m, d);
  char buf[48];
  const int h = static_cast<int>(sec / 3600), mi = static_cast<int>(sec / 60 % 60), s = static_cast<int>(sec % 60);
  const int yy = static_cast<int>(y), mm = static_cast<int>(m), dd = static_cast<int>(d);
  switch (style) {
    case TimestampStyle::date: std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", yy, mm, dd); break;
    case TimestampStyle::date_hour_minute: std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d", yy, mm, dd, h, mi); break;
    case TimestampStyle::date_time: std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d", yy, mm, dd, h, mi, s); break;
    case TimestampStyle::iso_hour_minute: std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d", yy, mm, dd, h, mi); break;
    case TimestampStyle::iso_time: std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", yy, mm, dd, h, mi, s); break;
  }
  return buf;
}

int64_t infer_interval_seconds(const std::vector<int64_t>& t) {
  if (t.size() < 2) fail("infer_interval_seconds", "need at least 2 timestamps, got " + std::to_string(t.size()));
  std::vector<int64_t> diffs(t.size() - 1);
  for (size_t i = 1; i < t.size(); ++i) diffs[i - 1] = t[i] - t[i - 1];
  const size_t mid = diffs.size() / 2;
  std::nth_element(diffs.begin(), diffs.begin() + mid, diffs.end());
  int64_t med = diffs[mid];
  if (diffs.size() % 2 == 0) {  // even count: the mean of the two middle values
    const int64_t lo = *std::max_element(diffs.begin(), diffs.begin() + mid);
    med = (lo + med) / 2;
  }
  if (med <= 0)
    fail("infer_interval_seconds", "median step " + std::to_string(med) + " s is not positive (timestamps not increasing)");
  return med;
}

TimeIndex parse_time_index(const std::vector<std::string>& timestamps) {
  TimeIndex idx;
  idx.epoch_seconds.reserve(timestamps.size());
  for (size_t i = 0; i < timestamps.size(); ++i) {
    try {
      idx.epoch_seconds.push_back(parse_timestamp(timestamps[i], &idx.style));
    } catch (const Error& e) {
      throw Error("parse_time_index: row " + std::to_string(i + 1) + ": " + e.what());
    }
  }
  idx.interval_seconds = infer_interval_seconds(idx.epoch_seconds);
  return idx;
}

std::vector<std::string> future_timestamps(const TimeIndex& index, int64_t count) {
  if (index.epoch_seconds.empty()) fail("future_timestamps", "empty time index");
  if (index.interval_seconds <= 0) fail("future_timestamps", "interval must be positive");
  if (count < 0) fail("future_timestamps", "count must be >= 0, got " + std::to_string(count));
  const int64_t resolution = index.style == TimestampStyle::date ? 86400
                             : (index.style == TimestampStyle::date_time || index.style == TimestampStyle::iso_time)
                                 ? 1
                                 : 60;
  if (count > 0 && index.interval_seconds % resolution != 0)
    fail("future_timestamps", "interval " + std::to_string(index.interval_seconds) +
                                  " s cannot be shown in the input's timestamp style (resolution " +
                                  std::to_string(resolution) + " s)");
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(count));
  const int64_t last = index.epoch_seconds.back();
  for (int64_t k = 1; k <= count; ++k) out.push_back(format_timestamp(last + k * index.interval_seconds, index.style));
  return out;
}

}  // namespace mamba::forecasting
