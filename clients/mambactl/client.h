// mambactl's shared pieces: the connection (channel, TLS, bearer token, deadline), the
// exit-code mapping of gRPC status codes, and a small table that prints as an aligned
// table, CSV or JSON.
//
// Exit codes (also in `mambactl --help`):
//   0        success (health: SERVING)
//   1        local error: an unreadable file, a bad CSV, a bad option value
//   2        health answered, but the status is not SERVING
//   2 + N    the RPC failed with gRPC status code N: 3 CANCELLED, 4 UNKNOWN,
//            5 INVALID_ARGUMENT, 6 DEADLINE_EXCEEDED, 7 NOT_FOUND, 8 ALREADY_EXISTS,
//            9 PERMISSION_DENIED, 10 RESOURCE_EXHAUSTED, 11 FAILED_PRECONDITION,
//            12 ABORTED, 13 OUT_OF_RANGE, 14 UNIMPLEMENTED, 15 INTERNAL, 16 UNAVAILABLE,
//            17 DATA_LOSS, 18 UNAUTHENTICATED
//   100+     command-line parse errors (CLI11's codes)
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "mamba/forecasting/v1/forecasting.grpc.pb.h"
#include "mamba/recommendation/v1/recommendation.grpc.pb.h"

namespace mambactl {

inline constexpr int kExitLocalError = 1;
inline constexpr int kExitNotServing = 2;
inline constexpr int kExitStatusBase = 2;  // exit code = 2 + grpc status code

// A failure on this side of the wire (files, options); main prints it and exits 1.
struct LocalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class OutputFormat { table, csv, json };

struct GlobalOptions {
  std::string addr = "localhost:50051";
  std::string token, token_file;
  std::string tls_ca, tls_cert, tls_key, tls_server_name;
  int64_t timeout_ms = 30000;  // 0: no deadline
  std::string output = "table";

  OutputFormat format() const;
};

// The channel(s) to the server and what every call carries.
class Connection {
 public:
  // Reads the token and TLS files (LocalError when they cannot be read).
  explicit Connection(const GlobalOptions& opts);

  // The shared channel (created on first use).
  std::shared_ptr<grpc::Channel> channel();
  // A channel of its own (its own TCP connection): `index` keeps channels apart.
  std::shared_ptr<grpc::Channel> new_channel(int index) const;
  // Sets the deadline (now + --timeout-ms) and the authorization header on `ctx`.
  void prepare(grpc::ClientContext& ctx) const;

  const GlobalOptions& options() const { return opts_; }

 private:
  GlobalOptions opts_;
  std::string bearer_;  // "" or "Bearer <token>"
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  std::shared_ptr<grpc::Channel> channel_;
};

// "NOT_FOUND" for grpc::StatusCode::NOT_FOUND; "CODE_<n>" for an unknown number.
std::string status_code_name(int code);
int exit_code_for(const grpc::Status& status);
// Prints "error: <CODE_NAME>: <message>" (plus the server's ErrorDetail, when it sent
// one in the trailing metadata of `ctx`) to stderr and returns exit_code_for(status).
int report_status(const grpc::Status& status, const grpc::ClientContext* ctx = nullptr);

// Rows of JSON cells (string, number or null) under named columns.
struct Column {
  std::string name;
  int decimals = -1;  // numbers: fixed decimals; -1: shortest text that reads back as a float
};

struct Table {
  std::vector<Column> columns;
  std::vector<std::vector<nlohmann::json>> rows;

  // table: aligned columns (numbers right-aligned); csv: header + rows (RFC 4180 quoting);
  // json: an array of objects {column: cell}.
  void print(OutputFormat format, std::FILE* out = stdout) const;
  nlohmann::ordered_json to_json() const;  // keys in column order
};

// What a Forecast request is built from: a series CSV (mamba::forecasting::read_series_csv:
// the `date` column, else the first, holds the timestamps; every other column is a variable).
struct SeriesArgs {
  std::string csv;
  int64_t rows = 0;  // send only the last `rows` rows (0: all)
  std::string model;
  int64_t version = 0;
  int32_t horizon = 0;
  std::vector<double> quantiles;
  std::string series_id;
};

// Reads the CSV (LocalError on a bad file) and builds the request; `time_column` gets the
// name of the CSV's timestamp column.
mamba::forecasting::v1::ForecastRequest build_forecast_request(const SeriesArgs& args,
                                                               std::string* time_column = nullptr);

// When `name` is empty: the name of the server's only model (ListModels), so --model may be
// left out against a server with one model. Several names -> LocalError; none -> "" stays
// (the server answers). A failed ListModels returns its status.
grpc::Status resolve_model_name(Connection& conn, std::string& name);

// What every `mambactl bench` command shares: the closed-loop load and its measurement
// (bench.cc's header comment).
struct LoadArgs {
  std::vector<int> concurrency{1, 8, 64};
  double duration_s = 10;  // measure at least this long per level
  double window_s = 2;
  int max_windows = 10;
  double warmup_s = 1;
  int channels = 1;  // 0: one channel per stream
  bool quiet = false;
};

struct BenchArgs : LoadArgs {
  SeriesArgs series;
  bool rows_given = false;  // --rows given; else the model's seq_len (GetModel)
};

// `mambactl bench forecast` (bench.cc): returns the exit code.
int run_bench_forecast(Connection& conn, BenchArgs args);

// `mambactl bench recommend`: RecommendFromHistory with a history of `history_len` items
// drawn uniformly from `items` (empty: the model's catalogue, from ListItems), or Recommend
// for `users` (stream i asks for users[i % size]) when users is not empty.
struct RecBenchArgs : LoadArgs {
  std::string model;
  int64_t version = 0;
  std::vector<std::string> users;
  std::vector<std::string> items;
  int64_t history_len = 200;
  int32_t k = 10;
  // fresh: a new random history for every call (no server cache can answer it);
  // repeat: each stream draws one history and sends it on every call.
  std::string history_mode = "fresh";
  bool include_seen = false;
  uint64_t seed = 1;
  std::vector<std::string> filters;  // --filter (Recommend only), parse_rec_filter's syntax
};
int run_bench_recommend(Connection& conn, RecBenchArgs args);

// `--filter` of recommend / bench recommend into a Recommend filter:
//   NAME=V1|V2|...  one of the values (token / token_seq attributes; one value: equality)
//   NAME=LO..HI     a float range, inclusive (NAME=LO.. or NAME=..HI for one side)
// A value with ".." counts as a range only when both sides are numbers or empty.
// Throws LocalError naming the bad filter.
void parse_rec_filter(const std::string& text, mamba::recommendation::v1::AttributeFilter* out);

// A cell as text (NaN for a NaN or null number).
std::string cell_text(const nlohmann::json& cell, int decimals);

}  // namespace mambactl
