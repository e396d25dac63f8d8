#include "mamba/recommendation/interactions_file.h"

#include <charconv>
#include <cmath>

namespace mamba::recommendation {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A finite number: decimal or exponent notation, an optional sign.
bool parse_number(std::string_view s, double& out) {
  s = trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(out);
}

// Shortens a cell for a message.
std::string shown(std::string_view s) {
  if (s.size() > 40) return std::string(s.substr(0, 40)) + "...";
  return std::string(s);
}

}  // namespace

InterFormat parse_inter_format(const std::string& name) {
  if (name == "auto") return InterFormat::auto_detect;
  if (name == "recbole") return InterFormat::recbole;
  if (name == "csv") return InterFormat::csv;
  fail("interactions", "unknown format '" + name + "' (auto, recbole, csv)");
}

const char* inter_format_name(InterFormat f) {
  switch (f) {
    case InterFormat::auto_detect: return "auto";
    case InterFormat::recbole: return "recbole";
    case InterFormat::csv: return "csv";
  }
  return "?";
}

InteractionReader::InteractionReader(std::istream& in, const std::string& source, InterFormat format)
    : in_(in), source_(source), format_(format) {
  std::string header;
  bool found = false;
  while (std::getline(in_, header)) {
    ++line_no_;
    if (line_no_ == 1 && header.rfind("\xEF\xBB\xBF", 0) == 0) header.erase(0, 3);
    if (!trim(header).empty()) {
      found = true;
      break;
    }
  }
  if (!found) throw InteractionFileError("interactions: '" + source_ + "': no header line");
  if (format_ == InterFormat::auto_detect) {
    if (ends_with(source_, ".inter"))
      format_ = InterFormat::recbole;
    else if (ends_with(source_, ".csv"))
      format_ = InterFormat::csv;
    else
      format_ = header.find('\t') != std::string::npos ? InterFormat::recbole : InterFormat::csv;
  }
  parse_header(header);
}

void InteractionReader::parse_header(std::string_view line) {
  std::vector<std::string> names;
  std::string why;
  if (!split(line, names, why))
    throw InteractionFileError("interactions: '" + source_ + "': line " + std::to_string(line_no_) + ": " + why);
  num_columns_ = names.size();
  for (size_t c = 0; c < names.size(); ++c) {
    std::string name(trim(names[c]));
    // RecBole types each column: "user_id:token". The type is not needed here.
    if (format_ == InterFormat::recbole) {
      const auto colon = name.find(':');
      if (colon != std::string::npos) name.resize(colon);
    }
    int* slot = nullptr;
    if (name == "user_id") slot = &col_user_;
    else if (name == "item_id") slot = &col_item_;
    else if (name == "timestamp") slot = &col_ts_;
    else if (name == "rating") slot = &col_rating_;
    else if (name == "event_type") slot = &col_event_;
    if (!slot) continue;  // extra columns are ignored
    if (*slot >= 0)
      throw InteractionFileError("interactions: '" + source_ + "': header names column '" + name + "' twice");
    *slot = static_cast<int>(c);
  }
  for (const auto& [col, name] : {std::pair{col_user_, "user_id"}, {col_item_, "item_id"}, {col_ts_, "timestamp"}})
    if (col < 0)
      throw InteractionFileError("interactions: '" + source_ + "': the header has no '" + name + "' column (" +
                                 inter_format_name(format_) + " format; header: '" + shown(trim(line)) + "')");
}

bool InteractionReader::split(std::string_view line, std::vector<std::string>& fields, std::string& why) const {
  fields.clear();
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (format_ == InterFormat::recbole) {
    size_t start = 0;
    while (true) {
      const size_t tab = line.find('\t', start);
      fields.emplace_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
      if (tab == std::string_view::npos) break;
      start = tab + 1;
    }
    return true;
  }
  // CSV with optional double quotes.
  std::string cur;
  size_t i = 0;
  while (true) {
    cur.clear();
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i < line.size() && line[i] == '"') {
      ++i;
      bool closed = false;
      while (i < line.size()) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            cur += '"';
            i += 2;
            continue;
          }
          ++i;
          closed = true;
          break;
        }
        cur += line[i++];
      }
      if (!closed) {
        why = "unterminated quote";
        return false;
      }
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      if (i < line.size() && line[i] != ',') {
        why = "text after a closing quote";
        return false;
      }
    } else {
      const size_t comma = line.find(',', i);
      const size_t end = comma == std::string_view::npos ? line.size() : comma;
      cur = std::string(trim(line.substr(i, end - i)));
      i = end;
    }
    fields.push_back(cur);
    if (i >= line.size()) break;
    ++i;  // the comma
  }
  return true;
}

void InteractionReader::reject(int64_t line, std::string reason) {
  ++rejected_count_;
  if (rejected_.size() < kMaxKeptRejections) rejected_.push_back({line, std::move(reason)});
}

bool InteractionReader::next(InteractionRow& row) {
  while (std::getline(in_, line_)) {
    ++line_no_;
    if (trim(line_).empty()) continue;
    ++rows_read_;
    std::string why;
    if (!split(line_, fields_, why)) {
      reject(line_no_, why);
      continue;
    }
    if (fields_.size() != num_columns_) {
      reject(line_no_, "wrong column count: " + std::to_string(fields_.size()) + " fields, the header has " +
                           std::to_string(num_columns_));
      continue;
    }
    auto field = [&](int col) { return trim(fields_[static_cast<size_t>(col)]); };
    const char* missing = nullptr;
    if (field(col_user_).empty()) missing = "user_id";
    else if (field(col_item_).empty()) missing = "item_id";
    else if (field(col_ts_).empty()) missing = "timestamp";
    if (missing) {
      reject(line_no_, std::string("missing field '") + missing + "'");
      continue;
    }
    if (!parse_number(field(col_ts_), row.ts)) {
      reject(line_no_, "bad number in column 'timestamp': '" + shown(field(col_ts_)) + "'");
      continue;
    }
    row.weight = 1.f;
    if (col_rating_ >= 0 && !field(col_rating_).empty()) {
      double w = 0;
      if (!parse_number(field(col_rating_), w) || std::fabs(w) > 3.0e38) {
        reject(line_no_, "bad number in column 'rating': '" + shown(field(col_rating_)) + "'");
        continue;
      }
      row.weight = static_cast<float>(w);
    }
    row.event_type = "interaction";
    if (col_event_ >= 0 && !field(col_event_).empty()) row.event_type = std::string(field(col_event_));
    row.user_key = std::string(field(col_user_));
    row.item_key = std::string(field(col_item_));
    row.line = line_no_;
    return true;
  }
  return false;
}

}  // namespace mamba::recommendation
