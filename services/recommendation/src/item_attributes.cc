#include "mamba/recommendation/item_attributes.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "mamba/recommendation/store.h"

namespace mamba::recommendation {

const char* attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::token: return "token";
    case AttrType::token_seq: return "token_seq";
    case AttrType::float_: return "float";
  }
  return "?";
}

namespace {

std::optional<AttrType> parse_type(const std::string& s) {
  if (s == "token") return AttrType::token;
  if (s == "token_seq") return AttrType::token_seq;
  if (s == "float") return AttrType::float_;
  return std::nullopt;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t t = line.find('\t', start);
    out.push_back(line.substr(start, t == std::string::npos ? std::string::npos : t - start));
    if (t == std::string::npos) break;
    start = t + 1;
  }
  return out;
}

bool getline_stripped(std::istream& in, std::string& line) {
  if (!std::getline(in, line)) return false;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

struct Column {
  std::string name;
  AttrType type = AttrType::token;
  bool used = false;  // false: an ignored type
};

}  // namespace

ItemIngestReport ingest_item_stream(pqxx::connection& conn, std::istream& in, const std::string& source, bool strict) {
  ItemIngestReport rep;
  rep.source = source;
  std::string line;
  if (!getline_stripped(in, line)) throw InteractionFileError(source + ": empty file (no header)");
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  // The header: name:type per column.
  std::vector<Column> cols;
  int col_item = -1;
  std::set<std::string> seen;
  for (const std::string& h : split_tabs(line)) {
    const size_t colon = h.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw InteractionFileError(source + ": line 1: header column '" + h + "' is not name:type");
    Column c;
    c.name = h.substr(0, colon);
    const std::string type = h.substr(colon + 1);
    if (!seen.insert(c.name).second) throw InteractionFileError(source + ": line 1: column '" + c.name + "' appears twice");
    if (c.name == "item_id") {
      if (type != "token") throw InteractionFileError(source + ": line 1: item_id must be item_id:token, not '" + h + "'");
      col_item = static_cast<int>(cols.size());
    } else if (const auto t = parse_type(type)) {
      c.type = *t;
      c.used = true;
      rep.columns.emplace_back(c.name, c.type);
    } else if (type == "float_seq") {
      rep.ignored_columns.push_back(h);
    } else {
      throw InteractionFileError(source + ": line 1: column '" + c.name + "' has type '" + type +
                                 "' (token, token_seq, float or float_seq expected)");
    }
    cols.push_back(c);
  }
  if (col_item < 0) throw InteractionFileError(source + ": line 1: the header has no item_id:token column");

  pqxx::work tx(conn);
  // Attribute types: a known attribute keeps its type.
  for (const auto& [name, type] : rep.columns) {
    tx.exec_params("INSERT INTO item_attribute_types (name, type) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name,
                   std::string(attr_type_name(type)));
    const auto stored = tx.exec_params1("SELECT type FROM item_attribute_types WHERE name = $1", name)[0].as<std::string>();
    if (stored != attr_type_name(type))
      throw StoreError(source + ": attribute '" + name + "' is stored as " + stored + "; the file gives it type " +
                       attr_type_name(type) + " (nothing written)");
  }
  tx.exec(
      "CREATE TEMP TABLE rec_item_staging (line bigint NOT NULL, item_key text NOT NULL, attrs text NOT NULL)"
      " ON COMMIT DROP");
  std::unordered_map<std::string, int64_t> first_line;
  auto reject = [&](int64_t ln, std::string why) {
    ++rep.rejected;
    if (rep.rejected_rows.size() < InteractionReader::kMaxKeptRejections) rep.rejected_rows.push_back({ln, std::move(why)});
  };
  {
    pqxx::stream_to copy(tx, "rec_item_staging", std::vector<std::string>{"line", "item_key", "attrs"});
    int64_t ln = 1;
    while (getline_stripped(in, line)) {
      ++ln;
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank
      ++rep.rows_read;
      const auto f = split_tabs(line);
      if (f.size() != cols.size()) {
        reject(ln, std::to_string(f.size()) + " columns, the header has " + std::to_string(cols.size()));
        continue;
      }
      const std::string& key = f[static_cast<size_t>(col_item)];
      if (key.empty()) {
        reject(ln, "empty item_id");
        continue;
      }
      nlohmann::json attrs = nlohmann::json::object();
      std::string why;
      for (size_t c = 0; c < cols.size() && why.empty(); ++c) {
        if (!cols[c].used || f[c].empty()) continue;
        switch (cols[c].type) {
          case AttrType::token: attrs[cols[c].name] = f[c]; break;
          case AttrType::token_seq: {
            std::set<std::string> toks;
            std::istringstream ts(f[c]);
            for (std::string t; ts >> t;) toks.insert(t);
            if (!toks.empty()) attrs[cols[c].name] = std::vector<std::string>(toks.begin(), toks.end());
            break;
          }
          case AttrType::float_: {
            char* end = nullptr;
            errno = 0;
            const double v = std::strtod(f[c].c_str(), &end);
            if (end == f[c].c_str() || *end != '\0' || !std::isfinite(v) || errno == ERANGE)
              why = "bad number in column '" + cols[c].name + "': '" + f[c] + "'";
            else
              attrs[cols[c].name] = v;
            break;
          }
        }
      }
      if (!why.empty()) {
        reject(ln, why);
        continue;
      }
      const auto [it, fresh] = first_line.emplace(key, ln);
      if (!fresh) {
        reject(ln, "item '" + key + "' repeated (first at line " + std::to_string(it->second) + ")");
        continue;
      }
      copy << std::make_tuple(ln, key, attrs.dump());
      ++rep.rows_good;
    }
    copy.complete();
  }
  if (strict && rep.rejected > 0) {
    tx.abort();
    return rep;
  }
  // New items in file order; a known item only when the merge changes its attributes.
  const auto r = tx.exec(
      "INSERT INTO items AS i (external_key, attributes) SELECT item_key, attrs::jsonb FROM rec_item_staging ORDER BY line"
      " ON CONFLICT (external_key) DO UPDATE SET attributes = i.attributes || EXCLUDED.attributes"
      " WHERE i.attributes || EXCLUDED.attributes IS DISTINCT FROM i.attributes"
      " RETURNING (xmax = 0) AS inserted");
  for (const auto& row : r) (row[0].as<bool>() ? rep.new_items : rep.updated) += 1;
  rep.unchanged = rep.rows_good - rep.new_items - rep.updated;
  tx.commit();
  rep.written = true;
  return rep;
}

ItemIngestReport ingest_item_file(pqxx::connection& conn, const std::string& path, bool strict) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw StoreError("ingest: cannot open '" + path + "'");
  return ingest_item_stream(conn, in, path, strict);
}

std::string format_item_report(const ItemIngestReport& r, size_t max_listed) {
  std::ostringstream os;
  os << "ingest items '" << r.source << "': read " << r.rows_read << ", new items " << r.new_items << ", updated "
     << r.updated << ", unchanged " << r.unchanged << ", rejected " << r.rejected << "\n";
  os << "attributes:";
  for (const auto& [n, t] : r.columns) os << " " << n << ":" << attr_type_name(t);
  os << "\n";
  for (const auto& c : r.ignored_columns) os << "ignored column " << c << " (type not supported for filters)\n";
  if (!r.written) os << "strict: " << r.rejected << " rejected row(s), nothing written\n";
  const size_t n = std::min(max_listed, r.rejected_rows.size());
  for (size_t i = 0; i < n; ++i) os << "  line " << r.rejected_rows[i].line << ": " << r.rejected_rows[i].reason << "\n";
  if (static_cast<int64_t>(n) < r.rejected) os << "  ... and " << (r.rejected - static_cast<int64_t>(n)) << " more\n";
  return os.str();
}

// ---- the attribute index --------------------------------------------------------------

AttributeIndex AttributeIndex::load(pqxx::connection& conn, const ItemVocab& vocab) {
  AttributeIndex idx;
  idx.num_items_ = vocab.num_items();
  pqxx::read_transaction tx(conn);
  for (const auto& row : tx.exec("SELECT name, type FROM item_attribute_types")) {
    Attr a;
    a.type = *parse_type(row[1].as<std::string>());
    if (a.type == AttrType::float_)
      a.values.assign(static_cast<size_t>(idx.num_items_ + 1), std::numeric_limits<double>::quiet_NaN());
    idx.attrs_.emplace(row[0].as<std::string>(), std::move(a));
  }
  for (const auto& row : tx.exec("SELECT external_key, attributes::text FROM items WHERE attributes <> '{}'::jsonb")) {
    const int32_t id = vocab.find(row[0].as<std::string>());
    if (id <= 0) continue;
    const auto j = nlohmann::json::parse(row[1].as<std::string>());
    for (auto it = j.begin(); it != j.end(); ++it) {
      auto a = idx.attrs_.find(it.key());
      if (a == idx.attrs_.end()) continue;
      const auto& v = it.value();
      if (a->second.type == AttrType::float_) {
        if (v.is_number()) a->second.values[static_cast<size_t>(id)] = v.get<double>();
      } else if (v.is_string()) {
        a->second.postings[v.get<std::string>()].push_back(id);
      } else if (v.is_array()) {
        for (const auto& t : v)
          if (t.is_string()) a->second.postings[t.get<std::string>()].push_back(id);
      }
    }
  }
  for (auto& [name, a] : idx.attrs_)
    for (auto& [value, ids] : a.postings) {
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    }
  return idx;
}

std::optional<AttrType> AttributeIndex::type(const std::string& attribute) const {
  const auto it = attrs_.find(attribute);
  if (it == attrs_.end()) return std::nullopt;
  return it->second.type;
}

AllowSet AttributeIndex::allow(const std::vector<AttributeFilter>& filters) const {
  const size_t words = static_cast<size_t>((num_items_ + 1 + 63) / 64);
  AllowSet out;
  out.bits.assign(words, ~uint64_t{0});
  out.bits[0] &= ~uint64_t{1};  // padding
  if ((num_items_ + 1) % 64 != 0) out.bits.back() &= (uint64_t{1} << ((num_items_ + 1) % 64)) - 1;
  std::vector<uint64_t> f_bits(words);
  for (size_t i = 0; i < filters.size(); ++i) {
    const AttributeFilter& f = filters[i];
    const std::string field = "filters[" + std::to_string(i) + "]";
    const auto it = attrs_.find(f.attribute);
    if (it == attrs_.end()) {
      std::string known;
      for (const auto& [n, a] : attrs_) known += (known.empty() ? "" : ", ") + n;
      throw FilterError(field + ".attribute", "unknown attribute '" + f.attribute + "' (known: " +
                                                  (known.empty() ? "none; ingest a .item file" : known) + ")");
    }
    const Attr& a = it->second;
    std::fill(f_bits.begin(), f_bits.end(), 0);
    if (a.type == AttrType::float_) {
      if (!f.any_of.empty())
        throw FilterError(field + ".any_of", "attribute '" + f.attribute + "' is a float: use min / max, not values");
      if (!f.min && !f.max) throw FilterError(field + ".min", "attribute '" + f.attribute + "' (float) needs min or max");
      if ((f.min && !std::isfinite(*f.min)) || (f.max && !std::isfinite(*f.max)))
        throw FilterError(field + (f.min && !std::isfinite(*f.min) ? ".min" : ".max"), "must be finite");
      if (f.min && f.max && *f.min > *f.max)
        throw FilterError(field + ".min", "min " + std::to_string(*f.min) + " is above max " + std::to_string(*f.max));
      const double lo = f.min ? *f.min : -std::numeric_limits<double>::infinity();
      const double hi = f.max ? *f.max : std::numeric_limits<double>::infinity();
      for (int64_t id = 1; id <= num_items_; ++id) {
        const double v = a.values[static_cast<size_t>(id)];
        if (v >= lo && v <= hi) f_bits[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (id & 63);
      }
    } else {
      if (f.min || f.max)
        throw FilterError(field + (f.min ? ".min" : ".max"),
                          "attribute '" + f.attribute + "' is a " + attr_type_name(a.type) + ": use values, not a range");
      if (f.any_of.empty()) throw FilterError(field + ".any_of", "attribute '" + f.attribute + "' needs at least one value");
      for (const std::string& v : f.any_of) {
        const auto p = a.postings.find(v);
        if (p == a.postings.end()) continue;
        for (int32_t id : p->second) f_bits[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (id & 63);
      }
    }
    for (size_t w = 0; w < words; ++w) out.bits[w] &= f_bits[w];
  }
  out.count = 0;
  for (uint64_t w : out.bits) out.count += __builtin_popcountll(w);
  return out;
}

std::string AttributeIndex::canonical(const std::vector<AttributeFilter>& filters) {
  std::vector<std::string> parts;
  for (const auto& f : filters) {
    std::vector<std::string> v = f.any_of;
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    nlohmann::json j = {{"a", f.attribute}, {"v", v}};
    if (f.min) j["min"] = *f.min;
    if (f.max) j["max"] = *f.max;
    parts.push_back(j.dump());
  }
  std::sort(parts.begin(), parts.end());  // a conjunction: the order does not matter
  std::string out;
  for (const auto& p : parts) out += p + "\n";
  return out;
}

}  // namespace mamba::recommendation
