#include "grpc_service.h"

#include <cmath>
#include <map>

#include <spdlog/spdlog.h>

#include "mamba/serve/common_proto.h"
#include "mamba/serve/errors.h"
#include "mamba/serve/logging.h"

namespace mamba::forecasting {

namespace sv = serve;
using grpc::StatusCode;

namespace {
[[noreturn]] void invalid(const std::string& field, const std::string& what) { sv::throw_invalid(field, what); }
}  // namespace

ForecastJob make_forecast_job(const v1::ForecastRequest& req, std::shared_ptr<const ForecastModel> model,
                              const ServiceLimits& limits, const std::string& p) {
  const ForecasterConfig& c = model->net_config();
  const auto& series = req.series();
  const int nv = series.variables_size();
  sv::check_limit(p + "series.variables", static_cast<uint64_t>(nv), ForecastModel::kMaxVariables, "variables");
  if (nv == 0) invalid(p + "series.variables", "the series has no variables");
  for (int i = 0; i < nv; ++i)
    sv::check_limit(sv::indexed(p + "series.variables", i) + ".values",
                    static_cast<uint64_t>(series.variables(i).values_size()),
                    static_cast<uint64_t>(limits.max_series_length), "values");
  const int64_t T = series.variables(0).values_size();
  if (T == 0) invalid(p + "series.variables[0].values", "the series is empty");
  for (int i = 1; i < nv; ++i)
    if (series.variables(i).values_size() != T)
      invalid(sv::indexed(p + "series.variables", i) + ".values",
              std::to_string(series.variables(i).values_size()) + " values, but variables[0] has " + std::to_string(T));
  if (T < c.seq_len)
    invalid(p + "series.variables[0].values",
            std::to_string(T) + " values, the model needs at least seq_len = " + std::to_string(c.seq_len));

  // The model's variables, by name when the request names them, else by position.
  const int64_t V = c.n_vars;
  std::vector<int> source(V, -1);
  bool named = true;
  for (int i = 0; i < nv; ++i) named = named && !series.variables(i).name().empty();
  if (named) {
    std::map<std::string, int> by_name;
    for (int i = 0; i < nv; ++i)
      if (!by_name.emplace(series.variables(i).name(), i).second)
        invalid(sv::indexed(p + "series.variables", i) + ".name", "duplicate variable '" + series.variables(i).name() + "'");
    for (int64_t v = 0; v < V; ++v) {
      auto it = by_name.find(model->variables[v]);
      if (it == by_name.end())
        invalid(p + "series.variables", "missing variable '" + model->variables[v] + "' that the model was trained on");
      source[v] = it->second;
    }
  } else {
    if (nv != V)
      invalid(p + "series.variables", std::to_string(nv) + " unnamed variables, the model takes " + std::to_string(V));
    for (int64_t v = 0; v < V; ++v) source[v] = static_cast<int>(v);
  }

  ForecastJob job;
  job.model = std::move(model);
  job.series_id = req.series_id();
  job.window = Tensor::empty({c.seq_len, V});
  float* w = job.window.data<float>();
  const int64_t first = T - c.seq_len;
  for (int64_t v = 0; v < V; ++v) {
    const auto& vals = series.variables(source[v]).values();
    for (int64_t t = 0; t < c.seq_len; ++t) {
      const double x = vals[static_cast<int>(first + t)];
      if (!std::isfinite(x) || std::fabs(x) > 3.0e38)
        invalid(sv::indexed(sv::indexed(p + "series.variables", source[v]) + ".values", first + t),
                std::isnan(x) ? "is NaN (missing); the last seq_len values must all be present"
                              : "is not a finite float");
      w[t * V + v] = static_cast<float>(x);
    }
  }

  job.horizon = req.horizon() == 0 ? c.horizon : req.horizon();
  if (req.horizon() < 0) invalid(p + "horizon", "must be >= 0 (0 = the model's horizon), got " + std::to_string(req.horizon()));
  if (job.horizon > c.horizon)
    invalid(p + "horizon", std::to_string(job.horizon) + " exceeds the model's horizon of " + std::to_string(c.horizon));

  sv::check_limit(p + "quantiles", static_cast<uint64_t>(req.quantiles_size()), static_cast<uint64_t>(limits.max_quantiles),
                  "quantiles");
  for (int i = 0; i < req.quantiles_size(); ++i) {
    const double q = req.quantiles(i);
    if (!(q > 0 && q < 1)) invalid(sv::indexed(p + "quantiles", i), "must be inside (0, 1), got " + std::to_string(q));
    job.quantiles.push_back(q);
  }
  if (!job.quantiles.empty() && !job.model->residual_quantiles.defined())
    invalid(p + "quantiles", "this model has no residual quantiles; ask for the mean only");

  if (series.timestamps_size() == 0 && c.n_time_features > 0)
    invalid(p + "series.timestamps", "this model uses time features: send one timestamp per value");
  if (series.timestamps_size() > 0) {
    if (series.timestamps_size() != T)
      invalid(p + "series.timestamps", std::to_string(series.timestamps_size()) + " timestamps for " + std::to_string(T) +
                                           " values");
    try {
      const std::vector<std::string> ts(series.timestamps().begin(), series.timestamps().end());
      const TimeIndex idx = parse_time_index(ts);
      job.future_timestamps = future_timestamps(idx, job.horizon);
      if (c.n_time_features > 0) {
        job.marks = window_time_features(idx.epoch_seconds, idx.interval_seconds, first, c.seq_len);
        if (job.marks.size(1) != c.n_time_features)
          invalid(p + "series.timestamps", "the sampling interval gives " + std::to_string(job.marks.size(1)) +
                                               " time features, the model was trained with " +
                                               std::to_string(c.n_time_features));
      }
    } catch (const Error& e) {
      invalid(p + "series.timestamps", e.what());
    }
  }
  return job;
}

std::vector<v1::ForecastResponse> run_forecast_batch(std::vector<ForecastJob>& jobs) {
  std::vector<v1::ForecastResponse> out(jobs.size());
  if (jobs.empty()) return out;
  const ForecastModel& m = *jobs[0].model;
  const ForecasterConfig& c = m.net_config();
  const int64_t B = static_cast<int64_t>(jobs.size()), L = c.seq_len, V = c.n_vars, H = c.horizon;
  Tensor x = Tensor::empty({B, L, V});
  for (int64_t b = 0; b < B; ++b) std::copy_n(jobs[b].window.data<float>(), L * V, x.data<float>() + b * L * V);
  Tensor marks;
  if (c.n_time_features > 0) {
    const int64_t F = c.n_time_features;
    marks = Tensor::empty({B, L, F});
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(jobs[b].marks.contiguous().data<float>(), L * F, marks.data<float>() + b * L * F);
  }
  const Tensor y = m.forecast_raw(x, marks).contiguous();  // (B, H, V)
  std::map<double, Tensor> offsets;                 // per quantile, shared by the batch
  for (int64_t b = 0; b < B; ++b) {
    const ForecastJob& j = jobs[b];
    v1::ForecastResponse& r = out[b];
    r.set_series_id(j.series_id);
    r.set_model_name(j.model_name);
    r.set_model_version(j.model_version);
    for (const auto& t : j.future_timestamps) r.add_timestamps(t);
    const float* yb = y.data<float>() + b * H * V;
    for (int64_t v = 0; v < V; ++v) {
      auto* vf = r.add_variables();
      vf->set_name(m.variables[v]);
      for (int64_t h = 0; h < j.horizon; ++h) vf->add_mean(yb[h * V + v]);
      for (double q : j.quantiles) {
        auto it = offsets.find(q);
        if (it == offsets.end()) it = offsets.emplace(q, m.quantile_offset(q)).first;
        const float* off = it->second.data<float>();
        auto* qv = vf->add_quantiles();
        qv->set_q(q);
        for (int64_t h = 0; h < j.horizon; ++h) qv->add_values(yb[h * V + v] + off[h * V + v]);
      }
    }
  }
  return out;
}

ForecastingService::ForecastingService(sv::Runtime& rt, sv::ModelRepository<ForecastModel>& repo, Batcher& batcher,
                                       ServiceLimits limits)
    : rt_(rt), repo_(repo), batcher_(batcher), limits_(limits) {}

std::future<v1::ForecastResponse> ForecastingService::submit(sv::Call& call, const v1::ForecastRequest& req,
                                                             const std::string& prefix) {
  sv::check_model_name(prefix + "model.name", req.model().name());
  sv::check_model_version(prefix + "model.version", req.model().version());
  sv::LoadedModelInfo info;
  auto model = repo_.get(req.model().name(), req.model().version(), &info);
  ForecastJob job = make_forecast_job(req, std::move(model), limits_, prefix);
  job.model_name = info.name;
  job.model_version = info.version;
  const std::string key = info.name + "/" + std::to_string(info.version);
  return batcher_.submit(key, std::move(job), call.deadline(), call.cancel_flag());
}

grpc::Status ForecastingService::Forecast(grpc::ServerContext* ctx, const v1::ForecastRequest* req,
                                          v1::ForecastResponse* resp) {
  return rt_.handle(ctx, std::string(kName) + "/Forecast", [&](sv::Call& call) {
    auto fut = submit(call, *req, "");
    *resp = call.await(fut);
  });
}

grpc::Status ForecastingService::ForecastStream(grpc::ServerContext* ctx, const v1::ForecastStreamRequest* req,
                                                grpc::ServerWriter<v1::ForecastResponse>* writer) {
  return rt_.handle(ctx, std::string(kName) + "/ForecastStream", [&](sv::Call& call) {
    sv::check_limit("requests", static_cast<uint64_t>(req->requests_size()),
                    static_cast<uint64_t>(limits_.max_stream_series), "series");
    // Submit in windows so the batcher groups series of one call without holding them all.
    const int window = std::max<int>(1, static_cast<int>(batcher_.options().max_batch) * 4);
    for (int start = 0; start < req->requests_size(); start += window) {
      call.check_alive();
      std::vector<std::future<v1::ForecastResponse>> futs;
      const int end = std::min(req->requests_size(), start + window);
      for (int i = start; i < end; ++i) futs.push_back(submit(call, req->requests(i), sv::indexed("requests", i) + "."));
      for (auto& f : futs) {
        v1::ForecastResponse r = call.await(f);
        if (!writer->Write(r)) throw sv::ServiceError(StatusCode::CANCELLED, "the client went away");
      }
    }
  });
}

grpc::Status ForecastingService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                            v1::ListModelsResponse* resp) {
  return rt_.handle(ctx, std::string(kName) + "/ListModels", [&](sv::Call&) {
    for (const auto& m : repo_.list()) sv::model_info_to_proto(m, resp->add_models());
  });
}

grpc::Status ForecastingService::GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* req,
                                          common::v1::ModelInfo* resp) {
  return rt_.handle(ctx, std::string(kName) + "/GetModel", [&](sv::Call&) {
    sv::check_model_name("model.name", req->model().name());
    sv::check_model_version("model.version", req->model().version());
    sv::model_info_to_proto(repo_.info(req->model().name(), req->model().version()), resp);
  });
}

int run_server(sv::ServerOptions opts, const ServiceLimits& limits) {
  sv::finalize_server_options(opts);
  sv::init_json_logging(opts.log_level);
  if (opts.model_root.empty()) throw Error("--model-root is required (or MAMBA_MODEL_ROOT)");
  sv::Runtime rt(opts);
  sv::RepositoryOptions ro;
  ro.poll_seconds = opts.poll_seconds;
  ro.metrics = &rt.metrics();
  sv::ModelRepository<ForecastModel> repo(
      opts.model_root,
      [](const std::filesystem::path& dir) { return std::make_shared<const ForecastModel>(ForecastModel::load(dir.string())); },
      ro);
  rt.serve_health_from(repo, ForecastingService::kName);
  repo.start();
  ForecastingService::Batcher batcher(rt.batcher_options("forecast"),
                                      [](const std::string&, std::vector<ForecastJob>& jobs) { return run_forecast_batch(jobs); });
  ForecastingService service(rt, repo, batcher, limits);
  sv::log_event(spdlog::level::info, "forecasting service starting",
                {{"model_root", opts.model_root}, {"device", opts.resolved_device.str()}});
  const int rc = rt.run({&service});
  batcher.stop();
  repo.stop();
  return rc;
}

}  // namespace mamba::forecasting
