// Bulk ingestion of an interaction file (interactions_file.h) into the event store.
//
// The file is read row by row and streamed through COPY into a temporary staging table;
// then users, items and interactions are inserted from it by SQL, all in ONE transaction,
// so a failure (or --strict with rejected rows) writes nothing. Interactions are inserted
// in file order with ON CONFLICT DO NOTHING on the natural key (user, item, ts,
// event_type): re-ingesting a file, or a longer version of it, adds only what is new;
// repeated rows inside a file keep the first. The file's name and each row's line number
// are stored with the row.
//
// Rejected rows (wrong column count, missing field, bad number) are reported with their
// line numbers; by default the good rows are loaded, with strict nothing is written.
// A bad header throws InteractionFileError; a file that cannot be opened, StoreError.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "mamba/recommendation/interactions_file.h"

namespace mamba::recommendation {

struct IngestOptions {
  InterFormat format = InterFormat::auto_detect;
  bool strict = false;  // any rejected row: write nothing
};

struct IngestReport {
  std::string source;
  InterFormat format = InterFormat::auto_detect;  // the format read (never auto_detect)
  int64_t rows_read = 0;   // data rows (good + rejected), blank lines not counted
  int64_t rows_good = 0;   // rows that parsed
  int64_t inserted = 0;    // new interactions
  int64_t duplicates = 0;  // good rows already stored (or repeated in the file)
  int64_t rejected = 0;
  int64_t new_users = 0, new_items = 0;
  std::vector<RejectedRow> rejected_rows;  // the first InteractionReader::kMaxKeptRejections
  bool written = false;    // false when strict and rows were rejected
};

IngestReport ingest_file(pqxx::connection& conn, const std::string& path, const IngestOptions& opts = {});
// `source` is the name stored with the rows and used for format detection.
IngestReport ingest_stream(pqxx::connection& conn, std::istream& in, const std::string& source,
                           const IngestOptions& opts = {});

// Prints the counts and the first `max_listed` rejected rows ("line 7: bad number ...").
std::string format_report(const IngestReport& r, size_t max_listed = 20);

}  // namespace mamba::recommendation
