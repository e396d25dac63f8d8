// mamba-rec: the recommendation service's command line (the event store, for now).
//
//   mamba-rec migrate --db URL                     apply the schema migrations
//   mamba-rec ingest  --db URL --inter FILE [--format auto|recbole|csv] [--strict]
//   mamba-rec stats   --db URL                     users, items, interactions
//
// URL is a libpq connection URL (postgresql://user@host:port/db); deploy/local/pg.sh
// start DIR prints one for a private server. `ingest` applies the migrations first, loads
// the file in one transaction and prints the counts (read, inserted, duplicates skipped,
// rejected) and the first 20 rejected lines with their reasons; with --strict a file with
// rejected rows writes nothing and the exit status is 1. Training and serving come later.
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/store.h"

using namespace mamba::recommendation;

int main(int argc, char** argv) {
  CLI::App app{"mamba-rec: the Mamba4Rec recommendation service (event store)"};
  app.require_subcommand(1);
  std::string db, inter, format = "auto";
  bool strict = false;

  auto* migrate = app.add_subcommand("migrate", "apply the schema migrations");
  migrate->add_option("--db", db, "PostgreSQL URL")->required();

  auto* ingest = app.add_subcommand("ingest", "load a RecBole .inter or CSV interaction file");
  ingest->add_option("--db", db, "PostgreSQL URL")->required();
  ingest->add_option("--inter", inter, "the interaction file")->required();
  ingest->add_option("--format", format, "auto, recbole or csv")->check(CLI::IsMember({"auto", "recbole", "csv"}));
  ingest->add_flag("--strict", strict, "write nothing when any row is rejected");

  auto* st = app.add_subcommand("stats", "count users, items and interactions");
  st->add_option("--db", db, "PostgreSQL URL")->required();

  CLI11_PARSE(app, argc, argv);
  try {
    auto conn = connect(db);
    if (migrate->parsed()) {
      const auto applied = apply_migrations(conn);
      if (applied.empty()) std::printf("schema is current (version %d)\n", schema_version(conn));
      for (int v : applied) std::printf("applied migration %d\n", v);
      return 0;
    }
    if (ingest->parsed()) {
      apply_migrations(conn);
      const auto rep = ingest_file(conn, inter, {parse_inter_format(format), strict});
      std::fputs(format_report(rep).c_str(), stdout);
      return rep.written ? 0 : 1;
    }
    const auto s = stats(conn);
    std::printf("schema version %d\nusers %lld\nitems %lld\ninteractions %lld\n", s.schema_version,
                static_cast<long long>(s.users), static_cast<long long>(s.items),
                static_cast<long long>(s.interactions));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "mamba-rec: " << e.what() << "\n";
    return 1;
  }
}
