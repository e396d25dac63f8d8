// mamba-rec: the recommendation service's command line.
//
//   mamba-rec migrate --db URL                     apply the schema migrations
//   mamba-rec ingest  --db URL --inter FILE [--format auto|recbole|csv] [--strict]
//   mamba-rec ingest  --db URL --item FILE.item [--strict]    item attributes (item_attributes.h)
//   mamba-rec stats   --db URL                     users, items, interactions
//   mamba-rec train    (--inter FILE | --db URL) --out MODEL_DIR [options]
//   mamba-rec evaluate (--model MODEL_DIR | --baseline popularity|markov)
//                      (--inter FILE | --db URL) [--split test|valid]
//   mamba-rec generate --out FILE.inter [--users --events --items --max-stride --noise --seed --cover-all]
//   mamba-rec serve    --db URL --model-root ROOT [--port 50051 ...]   (ROOT/<name>/<version>/ = MODEL_DIRs)
//
// URL is a libpq connection URL (postgresql://user@host:port/db); deploy/local/pg.sh
// start DIR prints one for a private server. `ingest` applies the migrations first, loads
// the file in one transaction and prints the counts (read, inserted, duplicates skipped,
// rejected) and the first 20 rejected lines with their reasons; with --strict a file with
// rejected rows writes nothing and the exit status is 1.
//
// `serve` runs the gRPC RecommendationService (grpc_service.h) with the runtime's flags
// (mamba/serve/options.h) plus --db (MAMBA_DB_URL) and --cache-users.
//
// `train` and `evaluate` follow the RecBole sequential protocol (protocol.h: time order,
// leave-one-out, every prefix a training sample, full ranking over all items, metrics.h).
// Both print the popularity and first-order Markov baselines next to the model; the last
// line is `HR@10 <x> NDCG@10 <y> MRR@10 <z>` on the test split (evaluate: --split) of the
// model, or of --baseline when given.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "mamba/recommendation/baselines.h"
#include "mamba/recommendation/batch_job.h"
#include "mamba/recommendation/fit.h"
#include "mamba/recommendation/ingest.h"
#include "mamba/recommendation/item_attributes.h"
#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/model_dir.h"
#include "mamba/recommendation/store.h"
#include "mamba/recommendation/synthetic.h"
#include "mamba/serve/options.h"
#include "grpc_service.h"

using namespace mamba::recommendation;

namespace {

SequenceData load_data(const std::string& inter, const std::string& db, const std::string& format) {
  if (!inter.empty()) {
    int64_t rejected = 0;
    SequenceData d = read_interaction_file(inter, parse_inter_format(format), &rejected);
    if (rejected > 0) std::fprintf(stderr, "mamba-rec: %lld rejected rows in '%s' skipped\n", static_cast<long long>(rejected), inter.c_str());
    return d;
  }
  auto conn = connect(db);
  return sequences_from_snapshot(read_sequences(conn));
}

std::string all_metrics(const RankMetrics& m) { return m.line(10) + " " + m.line(20); }

nlohmann::json to_json(const RankMetrics& m) {
  nlohmann::json j = {{"cases", m.cases}};
  for (const auto& [k, v] : m.values) j[k] = v;
  return j;
}

void print_row(const char* split, const std::string& name, const RankMetrics& m) {
  std::printf("%-5s %-10s %s\n", split, name.c_str(), all_metrics(m).c_str());
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-rec: the Mamba4Rec recommendation service"};
  app.require_subcommand(1);
  std::string db, inter, format = "auto";
  bool strict = false;

  auto* migrate = app.add_subcommand("migrate", "apply the schema migrations");
  migrate->add_option("--db", db, "PostgreSQL URL")->required();

  auto* ingest = app.add_subcommand("ingest", "load a RecBole .inter or CSV interaction file");
  ingest->add_option("--db", db, "PostgreSQL URL")->required();
  std::string item_file;
  auto* inter_opt = ingest->add_option("--inter", inter, "the interaction file");
  auto* item_opt = ingest->add_option("--item", item_file, "a RecBole .item file: item attributes for Recommend filters");
  inter_opt->excludes(item_opt);
  item_opt->excludes(inter_opt);
  ingest->add_option("--format", format, "auto, recbole or csv")->check(CLI::IsMember({"auto", "recbole", "csv"}));
  ingest->add_flag("--strict", strict, "write nothing when any row is rejected");

  auto* st = app.add_subcommand("stats", "count users, items and interactions");
  st->add_option("--db", db, "PostgreSQL URL")->required();

  std::string out, model_dir, split_name = "test", baseline, ties = "pessimistic", log_path;
  bool exclude_history = false, quiet = false;
  Mamba4RecConfig mc;
  RecFitOptions fo;
  // The regularisation candidates `train` chooses between on the validation split.
  std::vector<double> dropouts = {0.2}, weight_decays = {0.0, 0.1, 0.5};
  auto add_data = [&](CLI::App* c) {
    auto* i = c->add_option("--inter", inter, "a RecBole .inter or CSV interaction file");
    auto* d = c->add_option("--db", db, "PostgreSQL URL (the event store)");
    i->excludes(d);
    c->add_option("--format", format, "auto, recbole or csv")->check(CLI::IsMember({"auto", "recbole", "csv"}));
    c->add_flag("--exclude-history", exclude_history, "do not rank the items of the user's history (RecBole's default ranks all)");
    c->add_option("--ties", ties, "tied scores: pessimistic (default) or optimistic")
        ->check(CLI::IsMember({"pessimistic", "optimistic"}));
  };
  auto* tr = app.add_subcommand("train", "train Mamba4Rec under the sequential protocol");
  add_data(tr);
  tr->add_option("--out", out, "the model directory to write")->required();
  tr->add_option("--epochs", fo.max_epochs, "maximum epochs")->capture_default_str();
  tr->add_option("--max-steps", fo.max_steps, "stop after this many updates (0: --epochs decides); for quick models")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  tr->add_option("--batch", fo.batch_size, "batch size")->capture_default_str();
  tr->add_option("--lr", fo.lr, "AdamW learning rate")->capture_default_str();
  tr->add_option("--weight-decay", weight_decays,
                 "AdamW weight decay; a list (0,0.1) = candidates, the best on validation NDCG@10 kept")
      ->delimiter(',')
      ->capture_default_str();
  tr->add_option("--patience", fo.patience, "epochs without a better validation NDCG@10 before stopping (0: off)")->capture_default_str();
  tr->add_option("--seed", fo.seed, "seed")->capture_default_str();
  tr->add_option("--dropout", dropouts, "dropout; a list (0.1,0.3) = candidates, the best on validation NDCG@10 kept")
      ->delimiter(',')
      ->capture_default_str();
  tr->add_option("--d-model", mc.d_model, "hidden size")->capture_default_str();
  tr->add_option("--layers", mc.n_layers, "Mamba layers")->capture_default_str();
  tr->add_option("--d-state", mc.d_state, "SSM state size")->capture_default_str();
  tr->add_option("--d-conv", mc.d_conv, "causal conv width")->capture_default_str();
  tr->add_option("--expand", mc.expand, "Mamba expansion")->capture_default_str();
  tr->add_option("--max-seq-len", mc.max_seq_len, "items of history the model sees")->capture_default_str();
  tr->add_option("--log", log_path, "JSON-lines training log");
  tr->add_flag("--quiet", quiet, "no progress lines");

  auto* ev = app.add_subcommand("evaluate", "evaluate a model or a baseline under the sequential protocol");
  add_data(ev);
  auto* evm = ev->add_option("--model", model_dir, "a model directory written by train");
  auto* evb = ev->add_option("--baseline", baseline, "evaluate a baseline instead: popularity or markov")
                  ->check(CLI::IsMember({"popularity", "markov"}));
  evm->excludes(evb);
  ev->add_option("--split", split_name, "test or valid")->check(CLI::IsMember({"test", "valid"}))->capture_default_str();

  StrideWalkOptions so;
  auto* gen = app.add_subcommand("generate", "write a generated .inter file (stride walks on a cycle, synthetic.h)");
  gen->add_option("--out", out, "the .inter file")->required();
  gen->add_option("--users", so.users)->capture_default_str();
  gen->add_option("--events", so.events_per_user)->capture_default_str();
  gen->add_option("--items", so.num_items)->capture_default_str();
  gen->add_option("--max-stride", so.max_stride)->capture_default_str();
  gen->add_option("--noise", so.noise)->capture_default_str();
  gen->add_option("--seed", so.seed)->capture_default_str();
  gen->add_flag("--cover-all", so.cover_all, "every item appears at least once (extra users walk the items no walk reached)");

  mamba::serve::ServerOptions server_opts;
  // The scoring batcher's defaults for this service: up to 16 requests share one pass over the
  // item table, the request-lane width of the int8 passes (VNNI and AMX: 16 requests per vector
  // or tile), so a loaded server runs full groups and no remainder takes the slower item-lanes
  // pass (NOTES.md "max batch 16": Recommend @32 streams p99 7.1 ms against 8.7 with 64, median
  // of 4 interleaved runs each); a request waits at most 500 us for others (requests that arrive
  // during a pass join the next one anyway).
  server_opts.max_batch = 16;
  server_opts.max_queue_delay_us = 500;
  RecServiceOptions rec_opts;
  auto* srv = app.add_subcommand("serve", "run the gRPC recommendation service over a model repository");
  mamba::serve::add_server_flags(*srv, server_opts);
  srv->add_option("--db", rec_opts.db_url, "PostgreSQL URL of the event store")->envname("MAMBA_DB_URL");
  srv->add_option("--cache-users", rec_opts.cache_users, "users whose recurrent state is cached (LRU)")
      ->envname("MAMBA_REC_CACHE_USERS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  srv->add_option("--cache-histories", rec_opts.cache_histories,
                  "RecommendFromHistory: explicit histories whose state is cached (LRU; 0: none)")
      ->envname("MAMBA_REC_CACHE_HISTORIES")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  srv->add_option("--history-steps", rec_opts.history_steps,
                  "RecommendFromHistory: a cached prefix is advanced when at most this many events remain, else the "
                  "window is prefilled")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  srv->add_option("--prefill-batch", rec_opts.prefill_batch,
                  "cold states (Recommend misses, new RecommendFromHistory windows) read from the store in one query "
                  "and prefilled in one batched forward, at most this many (1: one by one)")
      ->envname("MAMBA_REC_PREFILL_BATCH")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  srv->add_option("--prefill-workers", rec_opts.prefill_workers,
                  "batched prefills running at once (0: one per core; with --prefill-batch 1 every work-pool thread)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  srv->add_option("--max-history-items", rec_opts.max_history_items, "items per RecommendFromHistory")
      ->check(CLI::PositiveNumber);
  srv->add_option("--max-add-interactions", rec_opts.max_add_interactions, "events per AddInteractions")
      ->check(CLI::PositiveNumber);
  srv->add_option("--attribute-refresh-s", rec_opts.attribute_refresh_s,
                  "Recommend filters: a model's item attribute index is re-read from the store after this many seconds")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  srv->add_option("--cache-filters", rec_opts.cache_filters, "Recommend filters: allow sets kept (LRU)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  srv->add_option("--max-filters", rec_opts.max_filters, "filters per Recommend")->check(CLI::PositiveNumber);
  srv->add_option("--scoring", rec_opts.scoring,
                  "catalogue scoring: int8 (an AMX or AVX-512 VNNI pass) or bf16 (an AMX pass), each + an exact f32 "
                  "rescoring of the candidates: the f32 answers; f32 where the pass's ISA is missing), or f32")
      ->check(CLI::IsMember({"int8", "bf16", "f32"}))
      ->capture_default_str();
  srv->add_option("--item-lanes-max-batch", rec_opts.item_lanes_max_batch,
                  "int8 on AVX-512 VNNI: scoring batches of up to this many requests put 16 items in the vector "
                  "lanes, larger ones 16 requests (the same answers; 0: always requests)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();

  // A server shares its cores between gRPC threads and OpenMP kernels: passive waiting
  // (as mamba-forecast serve does) unless the user chose.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "serve") ::setenv("OMP_WAIT_POLICY", "passive", /*overwrite*/ 0);
  BatchJobOptions bo;
  std::string shard_text = "0/1", batch_db, batch_model;
  auto* batch = app.add_subcommand("batch", "precompute top-K for every user (or a shard) into the recommendations table");
  batch->add_option("--model", batch_model, "model directory")->required();
  batch->add_option("--db", batch_db, "PostgreSQL URL")->required()->envname("MAMBA_DB_URL");
  batch->add_option("--k", bo.k, "recommendations per user")->check(CLI::Range(1, 1000))->capture_default_str();
  batch->add_option("--shard", shard_text, "i/N: this job's users (stable hash of the user key); Kubernetes Indexed Jobs")
      ->capture_default_str();
  batch->add_option("--users-per-batch", bo.users_per_batch, "users scored and committed together")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  batch->add_flag("!--include-seen", bo.exclude_seen, "also recommend items already in the user's history");

  CLI11_PARSE(app, argc, argv);
  RankOptions ro;
  ro.exclude_history = exclude_history;
  ro.ties = ties == "optimistic" ? TiePolicy::optimistic : TiePolicy::pessimistic;
  try {
    if (srv->parsed()) return run_server(server_opts, rec_opts);
    if (batch->parsed()) {
      parse_shard(shard_text, bo.shard, bo.num_shards);
      const RecModel m = RecModel::load(batch_model);
      pqxx::connection conn = connect(batch_db);
      bo.progress = [](int64_t done, int64_t total) {
        std::fprintf(stderr, "batch: %lld / %lld users\n", static_cast<long long>(done), static_cast<long long>(total));
      };
      const BatchJobReport r = run_batch_job(conn, m, batch_model, bo);
      std::printf("run %lld (%s, shard %s): %lld users in the shard, %lld done before, %lld written now (%lld rows), "
                  "%lld without known events; %s\n",
                  static_cast<long long>(r.run_id), r.resumed ? "resumed" : "new", shard_text.c_str(),
                  static_cast<long long>(r.users_in_shard), static_cast<long long>(r.users_done_before),
                  static_cast<long long>(r.users_written), static_cast<long long>(r.rows_written),
                  static_cast<long long>(r.users_skipped), r.complete ? "complete" : "stopped");
      return r.complete ? 0 : 1;
    }
    if (gen->parsed()) {
      std::ofstream f(out, std::ios::binary);
      f << to_recbole_inter(generate_stride_walks(so));
      if (!f.flush()) throw mamba::Error("mamba-rec: cannot write '" + out + "'");
      return 0;
    }
    if (tr->parsed() || ev->parsed()) {
      if (inter.empty() && db.empty()) throw mamba::Error("one of --inter or --db is required");
      if (ev->parsed() && model_dir.empty() && baseline.empty()) throw mamba::Error("one of --model or --baseline is required");
    }
    if (tr->parsed()) {
      const SequenceData data = load_data(inter, db, format);
      const LeaveOneOutSplit split = leave_one_out(data.sequences);
      const int64_t N = data.items.num_items();
      std::printf("data: %zu users, %lld items, %lld interactions; %zu evaluated users, %zu training samples\n",
                  data.sequences.size(), static_cast<long long>(N), static_cast<long long>(data.interactions),
                  split.test.size(), training_samples(split.train).size());
      const PopularityScorer pop(split.train, N);
      const MarkovScorer markov(split.train, N);
      nlohmann::json metrics = {{"valid", nlohmann::json::object()}, {"test", nlohmann::json::object()}};
      for (const Scorer* b : std::initializer_list<const Scorer*>{&pop, &markov}) {
        const RankMetrics v = evaluate_ranking(*b, split.valid, ro), t = evaluate_ranking(*b, split.test, ro);
        print_row("valid", b->name(), v);
        print_row("test", b->name(), t);
        metrics["valid"][b->name()] = to_json(v);
        metrics["test"][b->name()] = to_json(t);
      }
      mc.num_items = N;
      for (double x : dropouts)
        if (!(x >= 0 && x < 1)) throw mamba::Error("--dropout: " + std::to_string(x) + " is outside [0, 1)");
      for (double x : weight_decays)
        if (!(x >= 0)) throw mamba::Error("--weight-decay: " + std::to_string(x) + " is negative");
      fo.rank = ro;
      fo.quiet = quiet;
      fo.on_epoch = [&](int64_t epoch, const RankMetrics& m) {
        if (!quiet) std::printf("epoch %lld valid %s\n", static_cast<long long>(epoch), m.line(10).c_str());
        std::fflush(stdout);
      };
      // Every (dropout, weight decay) candidate trained from the same seed with early stopping;
      // the one with the best validation NDCG@10 is the model (ties: the first listed).
      std::shared_ptr<Mamba4Rec> net_ptr;
      RecFitResult r;
      double chosen_wd = 0, seconds = 0;
      nlohmann::json selection = nlohmann::json::array();
      const size_t candidates = dropouts.size() * weight_decays.size();
      for (double dropout : dropouts)
        for (double wd : weight_decays) {
          Mamba4RecConfig cc = mc;
          cc.dropout = dropout;
          fo.weight_decay = wd;
          fo.log_path = log_path.empty() || candidates == 1 ? log_path : log_path + "." + std::to_string(selection.size());
          auto cand = std::make_shared<Mamba4Rec>(cc, fo.seed);
          if (selection.empty())
            std::printf("model: mamba4rec, %lld parameters\n", static_cast<long long>(cand->store().count()));
          if (candidates > 1) std::printf("candidate dropout %g weight decay %g\n", dropout, wd);
          const RecFitResult cr = fit(*cand, split, fo);
          seconds += cr.seconds;
          std::printf("trained %lld epochs (%lld steps, %.1f s, %.0f samples/s), best epoch %lld%s, valid NDCG@10 %.4f\n",
                      static_cast<long long>(cr.epochs), static_cast<long long>(cr.steps), cr.seconds, cr.samples_per_s,
                      static_cast<long long>(cr.best_epoch), cr.stopped_early ? " (early stop)" : "", cr.best_val_ndcg10);
          selection.push_back({{"dropout", dropout}, {"weight_decay", wd}, {"valid_ndcg10", cr.best_val_ndcg10},
                               {"best_epoch", cr.best_epoch}, {"epochs", cr.epochs}, {"seconds", cr.seconds}});
          if (!net_ptr || cr.best_val_ndcg10 > r.best_val_ndcg10) {
            net_ptr = cand;
            r = cr;
            mc = cc;
            chosen_wd = wd;
          }
        }
      Mamba4Rec& net = *net_ptr;
      if (candidates > 1)
        std::printf("chose dropout %g weight decay %g (valid NDCG@10 %.4f)\n", mc.dropout, chosen_wd, r.best_val_ndcg10);
      fo.weight_decay = chosen_wd;
      const RankMetrics v = evaluate_ranking(net, split.valid, ro), t = evaluate_ranking(net, split.test, ro);
      print_row("valid", pop.name(), evaluate_ranking(pop, split.valid, ro));
      print_row("valid", markov.name(), evaluate_ranking(markov, split.valid, ro));
      print_row("valid", net.name(), v);
      print_row("test", pop.name(), evaluate_ranking(pop, split.test, ro));
      print_row("test", markov.name(), evaluate_ranking(markov, split.test, ro));
      print_row("test", net.name(), t);
      metrics["valid"][net.name()] = to_json(v);
      metrics["test"][net.name()] = to_json(t);
      metrics["best_epoch"] = r.best_epoch;
      metrics["epochs"] = r.epochs;
      metrics["seconds"] = seconds;
      metrics["selection"] = selection;
      RecModel m;
      m.net = net_ptr;
      m.items = data.items;
      m.metrics = metrics;
      m.config = {{"trained_on", inter.empty() ? std::string("database") : inter},
                  {"created", now_utc()},
                  {"protocol", {{"split", "leave-one-out"}, {"order", "time (stable)"}, {"ties", ties},
                                {"exclude_history", exclude_history}}},
                  {"training", {{"epochs", fo.max_epochs}, {"max_steps", fo.max_steps}, {"batch", fo.batch_size}, {"lr", fo.lr},
                                {"weight_decay", fo.weight_decay}, {"patience", fo.patience}, {"seed", fo.seed},
                                {"dropout_candidates", dropouts}, {"weight_decay_candidates", weight_decays}}}};
      m.save(out);
      std::printf("wrote %s\n%s\n", out.c_str(), t.line(10).c_str());
      return 0;
    }
    if (ev->parsed()) {
      SequenceData data = load_data(inter, db, format);
      RecModel m;
      if (!model_dir.empty()) {
        m = RecModel::load(model_dir);
        data = remap(data, m.items);
        if (data.dropped_unknown > 0)
          std::fprintf(stderr, "mamba-rec: %lld events of items the model does not know dropped\n",
                       static_cast<long long>(data.dropped_unknown));
      }
      const LeaveOneOutSplit split = leave_one_out(data.sequences);
      const auto& cases = split_name == "test" ? split.test : split.valid;
      const int64_t N = data.items.num_items();
      const PopularityScorer pop(split.train, N);
      const MarkovScorer markov(split.train, N);
      const RankMetrics mp = evaluate_ranking(pop, cases, ro), mm = evaluate_ranking(markov, cases, ro);
      print_row(split_name.c_str(), pop.name(), mp);
      print_row(split_name.c_str(), markov.name(), mm);
      RankMetrics last = baseline == "popularity" ? mp : mm;
      if (m.net) {
        last = evaluate_ranking(*m.net, cases, ro);
        print_row(split_name.c_str(), m.net->name(), last);
      }
      std::printf("%s\n", last.line(10).c_str());
      return 0;
    }
    auto conn = connect(db);
    if (migrate->parsed()) {
      const auto applied = apply_migrations(conn);
      if (applied.empty()) std::printf("schema is current (version %d)\n", schema_version(conn));
      for (int v : applied) std::printf("applied migration %d\n", v);
      return 0;
    }
    if (ingest->parsed()) {
      apply_migrations(conn);
      if (!item_file.empty()) {
        const auto rep = ingest_item_file(conn, item_file, strict);
        std::fputs(format_item_report(rep).c_str(), stdout);
        return rep.written ? 0 : 1;
      }
      if (inter.empty()) throw mamba::Error("ingest: one of --inter FILE or --item FILE is required");
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
