// Item attributes: RecBole `.item` atomic files into items.attributes, and the attribute
// index the server filters Recommend by.
//
// `.item` file: tab-separated, a typed header `name:type` per column, `item_id:token`
// required, e.g.
//   item_id:token	categories:token_seq	price:float	brand:token
// Types: token (one string), token_seq (space-separated tokens, a set), float (a finite
// number). Columns of other RecBole types (float_seq) are ignored and listed in the report.
// An empty field means the item has no such attribute. Line numbers are 1-based physical
// lines (the header is line 1); a bad row (column count, empty item_id, bad number, an
// item repeated in the file) is rejected with its line and the reader moves on.
//
// Ingestion (`mamba-rec ingest --item FILE`): rows are COPYed into a staging table, then
// merged into items in ONE transaction: a new item is inserted with its attributes, a
// known one gets the file's attributes merged over its own (jsonb ||); a row that changes
// nothing writes nothing, so re-running the same file reports 0 new and 0 updated. Each
// attribute's type is recorded in item_attribute_types (migration 3); a file that gives a
// known attribute another type is refused as a whole. strict: any rejected row, nothing
// written.
//
// AttributeIndex: the attributes of one model's items (dense ids through its ItemVocab),
// read once: per token / token_seq attribute a posting list (sorted dense ids) per value,
// per float attribute one value per item (NaN: none). allow() turns a conjunction of
// filters into an AllowSet (serving.h: a bitmap over the dense ids) that the scorer tests
// before an item enters a request's top-k heap.
// Filters: token / token_seq: `any_of` values (equality is one value): the item's value,
// or one of its token_seq values, is among them. float: `min` and/or `max`, inclusive; an
// item without the attribute never passes. An unknown attribute, a range on a token
// attribute, values on a float attribute, no condition, or min > max throw FilterError
// naming the field (filters[i].attribute, ...).
// Thread-safety: an AttributeIndex is immutable after load(); allow() may run on any thread.
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <pqxx/pqxx>

#include "mamba/recommendation/interactions_file.h"
#include "mamba/recommendation/protocol.h"
#include "mamba/recommendation/serving.h"

namespace mamba::recommendation {

enum class AttrType { token, token_seq, float_ };
const char* attr_type_name(AttrType t);

struct ItemIngestReport {
  std::string source;
  int64_t rows_read = 0;  // data rows (good + rejected)
  int64_t rows_good = 0;
  int64_t new_items = 0;  // items not in the store before
  int64_t updated = 0;    // known items whose attributes changed
  int64_t unchanged = 0;  // good rows that changed nothing
  int64_t rejected = 0;
  std::vector<RejectedRow> rejected_rows;  // the first 1000
  std::vector<std::pair<std::string, AttrType>> columns;  // the attribute columns read
  std::vector<std::string> ignored_columns;               // "name:type" of unsupported types
  bool written = false;  // false when strict and rows were rejected
};

ItemIngestReport ingest_item_file(pqxx::connection& conn, const std::string& path, bool strict = false);
ItemIngestReport ingest_item_stream(pqxx::connection& conn, std::istream& in, const std::string& source,
                                    bool strict = false);
std::string format_item_report(const ItemIngestReport& r, size_t max_listed = 20);

struct AttributeFilter {
  std::string attribute;
  std::vector<std::string> any_of;  // token / token_seq
  std::optional<double> min, max;   // float, inclusive
};

// A bad filter; field() is e.g. "filters[1].attribute".
class FilterError : public Error {
 public:
  FilterError(std::string field, const std::string& what) : Error(what), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

class AttributeIndex {
 public:
  // The attributes stored for the items of `vocab` (items the store has but the model does
  // not know are skipped).
  static AttributeIndex load(pqxx::connection& conn, const ItemVocab& vocab);
  // The items (1..num_items) that pass every filter; an empty list passes everything.
  AllowSet allow(const std::vector<AttributeFilter>& filters) const;
  std::optional<AttrType> type(const std::string& attribute) const;
  int64_t num_items() const { return num_items_; }
  // A canonical text of `filters` (sorted values), for caching allow sets.
  static std::string canonical(const std::vector<AttributeFilter>& filters);

 private:
  struct Attr {
    AttrType type = AttrType::token;
    std::unordered_map<std::string, std::vector<int32_t>> postings;  // token, token_seq
    std::vector<double> values;  // float: [id], NaN none
  };
  int64_t num_items_ = 0;
  std::map<std::string, Attr> attrs_;
};

}  // namespace mamba::recommendation
