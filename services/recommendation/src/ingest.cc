#include "mamba/recommendation/ingest.h"

#include <fstream>
#include <sstream>
#include <tuple>

#include "mamba/recommendation/store.h"

namespace mamba::recommendation {

IngestReport ingest_stream(pqxx::connection& conn, std::istream& in, const std::string& source,
                           const IngestOptions& opts) {
  InteractionReader reader(in, source, opts.format);  // a bad header throws before any write
  IngestReport rep;
  rep.source = source;
  rep.format = reader.format();

  pqxx::work tx(conn);
  tx.exec(
      "CREATE TEMP TABLE rec_ingest_staging ("
      " line bigint NOT NULL, user_key text NOT NULL, item_key text NOT NULL,"
      " ts double precision NOT NULL, weight real NOT NULL, event_type text NOT NULL) ON COMMIT DROP");
  {
    pqxx::stream_to copy(tx, "rec_ingest_staging",
                         std::vector<std::string>{"line", "user_key", "item_key", "ts", "weight", "event_type"});
    InteractionRow row;
    while (reader.next(row)) {
      copy << std::make_tuple(row.line, row.user_key, row.item_key, row.ts, row.weight, row.event_type);
      ++rep.rows_good;
    }
    copy.complete();
  }
  rep.rows_read = reader.rows_read();
  rep.rejected = reader.rejected_count();
  rep.rejected_rows = reader.rejected();
  if (opts.strict && rep.rejected > 0) {
    tx.abort();
    return rep;
  }
  tx.exec("ANALYZE rec_ingest_staging");  // a temp table has no statistics: plan the joins on real counts
  // New users and items get their ids in order of first appearance in the file.
  rep.new_users = static_cast<int64_t>(
      tx.exec("INSERT INTO users (external_key) SELECT user_key FROM rec_ingest_staging"
              " GROUP BY user_key ORDER BY min(line) ON CONFLICT (external_key) DO NOTHING")
          .affected_rows());
  rep.new_items = static_cast<int64_t>(
      tx.exec("INSERT INTO items (external_key) SELECT item_key FROM rec_ingest_staging"
              " GROUP BY item_key ORDER BY min(line) ON CONFLICT (external_key) DO NOTHING")
          .affected_rows());
  // File order becomes id order, the tie-breaker for equal timestamps.
  rep.inserted = static_cast<int64_t>(
      tx.exec_params(
            "INSERT INTO interactions (user_id, item_id, ts, event_type, weight, source_file, source_line)"
            " SELECT u.id, i.id, s.ts, s.event_type, s.weight, $1, s.line FROM rec_ingest_staging s"
            " JOIN users u ON u.external_key = s.user_key JOIN items i ON i.external_key = s.item_key"
            " ORDER BY s.line"
            " ON CONFLICT ON CONSTRAINT interactions_natural_key DO NOTHING",
            source)
          .affected_rows());
  rep.duplicates = rep.rows_good - rep.inserted;
  tx.commit();
  rep.written = true;
  return rep;
}

IngestReport ingest_file(pqxx::connection& conn, const std::string& path, const IngestOptions& opts) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw StoreError("ingest: cannot open '" + path + "'");
  return ingest_stream(conn, in, path, opts);
}

std::string format_report(const IngestReport& r, size_t max_listed) {
  std::ostringstream os;
  os << "ingest '" << r.source << "' (" << inter_format_name(r.format) << "): read " << r.rows_read << ", inserted "
     << r.inserted << ", duplicates skipped " << r.duplicates << ", rejected " << r.rejected << " (new users "
     << r.new_users << ", new items " << r.new_items << ")\n";
  if (!r.written) os << "strict: " << r.rejected << " rejected row(s), nothing written\n";
  const size_t n = std::min(max_listed, r.rejected_rows.size());
  for (size_t i = 0; i < n; ++i) os << "  line " << r.rejected_rows[i].line << ": " << r.rejected_rows[i].reason << "\n";
  if (static_cast<int64_t>(n) < r.rejected) os << "  ... and " << (r.rejected - static_cast<int64_t>(n)) << " more\n";
  return os.str();
}

}  // namespace mamba::recommendation
