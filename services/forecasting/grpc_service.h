// The forecasting gRPC service (mamba.forecasting.v1.ForecastingService) on the shared
// serving runtime, and the request checks it shares with `mamba-forecast batch`.
//
// Forecast: the request's series is checked against the model (variables by name, or by
// position when the request names none; at least seq_len values, all finite in the
// look-back; timestamps, when given, one per value and evenly spaced), its last seq_len
// rows become one window, and windows of concurrent requests for the same model version
// run as one batch (DynamicBatcher). The mean forecast comes with the requested quantiles
// (validation-residual quantiles, model_dir.h) and the future timestamps.
// Status codes: INVALID_ARGUMENT (bad series, horizon, quantile; names the field),
// RESOURCE_EXHAUSTED (over --max-series-length / --max-stream-series / the batch queue),
// NOT_FOUND (unknown model or version), FAILED_PRECONDITION (no model loaded),
// UNAUTHENTICATED, DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE (draining).
// Thread-safety: the service object is shared by gRPC's threads; it holds no mutable state
// of its own.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mamba/forecasting/model_dir.h"
#include "mamba/forecasting/v1/forecasting.grpc.pb.h"
#include "mamba/serve/batcher.h"
#include "mamba/serve/model_repository.h"
#include "mamba/serve/runtime.h"

namespace mamba::forecasting {

struct ServiceLimits {
  int64_t max_series_length = 100000;  // values per variable
  int64_t max_stream_series = 1024;    // series per ForecastStream call
  int64_t max_quantiles = 99;
};

// One series checked and ready for the network.
struct ForecastJob {
  std::shared_ptr<const ForecastModel> model;
  std::string model_name;
  int64_t model_version = 0;
  std::string series_id;
  Tensor window;  // (seq_len, V) in the data's units, the model's variable order
  Tensor marks;   // (seq_len, F) time features of the look-back, when the model takes them
  int64_t horizon = 0;
  std::vector<double> quantiles;
  std::vector<std::string> future_timestamps;  // horizon of them, or empty
};

// Checks `req` against `model` and builds its job. Throws serve::ServiceError naming the
// field (see the file comment). `field_prefix` prefixes field names ("requests[3].").
ForecastJob make_forecast_job(const v1::ForecastRequest& req, std::shared_ptr<const ForecastModel> model,
                              const ServiceLimits& limits, const std::string& field_prefix = "");

// Runs a batch of jobs for one model version: one forward pass for all windows.
std::vector<v1::ForecastResponse> run_forecast_batch(std::vector<ForecastJob>& jobs);

class ForecastingService final : public v1::ForecastingService::Service {
 public:
  using Batcher = serve::DynamicBatcher<ForecastJob, v1::ForecastResponse>;
  ForecastingService(serve::Runtime& rt, serve::ModelRepository<ForecastModel>& repo, Batcher& batcher,
                     ServiceLimits limits);

  grpc::Status Forecast(grpc::ServerContext* ctx, const v1::ForecastRequest* req, v1::ForecastResponse* resp) override;
  grpc::Status ForecastStream(grpc::ServerContext* ctx, const v1::ForecastStreamRequest* req,
                              grpc::ServerWriter<v1::ForecastResponse>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;
  grpc::Status GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* req, common::v1::ModelInfo* resp) override;

  static constexpr const char* kName = "mamba.forecasting.v1.ForecastingService";

 private:
  std::future<v1::ForecastResponse> submit(serve::Call& call, const v1::ForecastRequest& req, const std::string& prefix);

  serve::Runtime& rt_;
  serve::ModelRepository<ForecastModel>& repo_;
  Batcher& batcher_;
  ServiceLimits limits_;
};

// `mamba-forecast serve`: the server main (flags already parsed into `opts`).
int run_server(serve::ServerOptions opts, const ServiceLimits& limits);

}  // namespace mamba::forecasting
