// The serving runtime: one bootstrap for every service binary.
//
// A service implements its generated synchronous gRPC service class and runs every
// handler body through Runtime::handle(), which
//   1. checks the bearer token (auth.h): UNAUTHENTICATED, and the body never runs;
//   2. refuses a call that is already cancelled (CANCELLED) or past its deadline;
//   3. runs the body with a Call (deadline, cancellation, Call::await for batcher futures);
//   4. translates exceptions to a status (errors.h);
//   5. records mamba_requests_total{service,method,code} and
//      mamba_request_duration_seconds{service,method}.
// grpc.health.v1 and reflection are gRPC's own services and need no token.
// A guard (a server interceptor) catches a handler that forgets handle(): its response
// messages are blanked and its OK status becomes INTERNAL "handler bypassed
// Runtime::handle" (logged), so a forgotten wrapper fails loudly instead of serving
// unauthenticated. (gRPC 1.51 interceptors cannot reject a call up front, which is why
// the check itself lives in handle().)
//
//   class ForecastingImpl final : public mamba::forecasting::v1::ForecastingService::Service {
//     grpc::Status Forecast(grpc::ServerContext* ctx, const ForecastRequest* req,
//                           ForecastResponse* resp) override {
//       return rt_.handle(ctx, "mamba.forecasting.v1.ForecastingService/Forecast", [&](Call& call) {
//         auto model = repo_.get(req->model().name(), req->model().version());  // NOT_FOUND ...
//         mamba::serve::check_limit("series.timestamps", req->series().timestamps_size(), max_len_, "values");
//         auto fut = batcher_.submit(req->model().name(), Job{model, req}, call.deadline(), call.cancel_flag());
//         *resp = call.await(fut);
//       });
//     }
//   };
//   int main(int argc, char** argv) {
//     ServerOptions opts; CLI::App app; add_server_flags(app, opts); CLI11_PARSE(app, argc, argv);
//     finalize_server_options(opts); init_json_logging(opts.log_level);
//     Runtime rt(opts);
//     ModelRepository<Forecaster> repo(opts.model_root, load_forecaster,
//                                      {.poll_seconds = opts.poll_seconds, .metrics = &rt.metrics()});
//     rt.serve_health_from(repo, "mamba.forecasting.v1.ForecastingService");  // NOT_SERVING until loaded
//     repo.start();
//     DynamicBatcher<Job, ForecastResponse> batcher(rt.batcher_options("forecast"), run_batch);
//     ForecastingImpl impl(rt, repo, batcher);
//     return rt.run({&impl});   // returns 0 after SIGTERM/SIGINT and the drain
//   }
//
// Lifecycle: start() binds (port 0 = any free port; port() tells which, --port-file gets
// it), starts the gRPC server and the metrics endpoint. request_shutdown() (SIGTERM/SIGINT
// under run()) sets every health status NOT_SERVING, keeps accepting for drain_seconds so
// load balancers notice, then Shutdown(now + grace_seconds): in-flight calls finish (those
// still running at the deadline are cancelled), new ones get UNAVAILABLE. wait() returns
// when that is done.
// Thread-safety: handle(), authorize(), set_serving(), metrics(), request_shutdown() may be
// called from any thread; start()/run()/wait() from one thread. One Runtime per process
// installs signal handlers (run()).
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mamba/serve/auth.h"
#include "mamba/serve/batcher.h"
#include "mamba/serve/errors.h"
#include "mamba/serve/metrics.h"
#include "mamba/serve/model_repository.h"
#include "mamba/serve/options.h"

namespace grpc {
class Server;
class Service;
}  // namespace grpc

namespace mamba::serve {

class MetricsHttpServer;
struct HandledCalls;
class Runtime;

// One call, as a handler body sees it. Valid only during the body.
class Call {
 public:
  using Clock = std::chrono::steady_clock;
  Call(grpc::ServerContext& ctx, std::string_view service, std::string_view method);

  grpc::ServerContext& context() { return ctx_; }
  std::string_view service() const { return service_; }
  std::string_view method() const { return method_; }
  // The client's deadline on the steady clock (time_point::max() when none).
  Clock::time_point deadline() const { return deadline_; }
  bool cancelled() const;
  // Throws ServiceError CANCELLED or DEADLINE_EXCEEDED when the call is over; call it
  // between the steps of long work.
  void check_alive() const;
  // Set when the body gives up waiting (see await); give it to DynamicBatcher::submit.
  std::shared_ptr<const std::atomic<bool>> cancel_flag() const { return cancel_flag_; }

  // Waits for `fut`, checking the deadline and cancellation every 20 ms; when the call is
  // over, sets cancel_flag() (so the batcher drops the request) and throws (see
  // check_alive). Rethrows what the future holds.
  template <class T>
  T await(std::future<T>& fut) {
    while (fut.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
      if (cancelled() || Clock::now() >= deadline_) {
        cancel_flag_->store(true);
        check_alive();
      }
    }
    return fut.get();
  }

 private:
  grpc::ServerContext& ctx_;
  std::string_view service_, method_;
  Clock::time_point deadline_;
  std::shared_ptr<std::atomic<bool>> cancel_flag_ = std::make_shared<std::atomic<bool>>(false);
};

// One call of a method registered with gRPC's callback API (Runtime::handle_async): the
// call's reactor. The body hands the call to other threads (a batcher, a pool) and one of
// them ends it with finish() or fail(), exactly once, from any thread; the object is
// deleted by gRPC after that (do not touch it once it is finished). A second finish/fail
// is ignored (and logged). Cancellation (the client's, or gRPC's at the deadline) sets
// cancel_flag(); the call must still be finished.
class AsyncCall final : public grpc::ServerUnaryReactor {
 public:
  using Clock = std::chrono::steady_clock;
  grpc::CallbackServerContext& context() { return *ctx_; }
  Clock::time_point deadline() const { return deadline_; }  // max() when the client set none
  bool cancelled() const { return cancel_flag_->load(std::memory_order_relaxed); }
  std::shared_ptr<const std::atomic<bool>> cancel_flag() const { return cancel_flag_; }
  void finish() { finish(grpc::Status::OK); }
  // The status Runtime::handle gives for this exception (ErrorDetail trailer included).
  void fail(std::exception_ptr e);
  void finish(const grpc::Status& status);

 private:
  friend class Runtime;
  AsyncCall(Runtime& rt, grpc::CallbackServerContext* ctx, std::string_view full_method);
  void OnCancel() override { cancel_flag_->store(true); }
  void OnDone() override { delete this; }

  Runtime& rt_;
  grpc::CallbackServerContext* ctx_;
  std::string full_method_;
  Clock::time_point t0_, deadline_;
  std::shared_ptr<std::atomic<bool>> cancel_flag_ = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> finished_{false};
};

class Runtime {
 public:
  // Reads the auth token file (throws mamba::Error naming it on failure). Does not bind.
  explicit Runtime(ServerOptions options);
  ~Runtime();  // request_shutdown() + wait() if still running
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const ServerOptions& options() const { return options_; }
  MetricsRegistry& metrics() { return metrics_; }
  // Batcher options from the flags (--max-batch, --max-queue-delay-us, --max-queue) with
  // this runtime's metrics.
  BatcherOptions batcher_options(std::string name);

  // ---- per call ----
  // See the top of this file. `full_method` is "package.Service/Method"; its two halves
  // become the metrics labels. The body fills the response (or writes a stream).
  grpc::Status handle(grpc::ServerContext* ctx, std::string_view full_method, const std::function<void(Call&)>& body);
  // The same for a method registered with the callback API (the generated
  // WithCallbackMethod_X classes): checks the token and the deadline, then runs `body` on
  // the calling gRPC thread, which must not block (hand slow work to other threads); the
  // body or those threads end the call through AsyncCall (above). An exception thrown by
  // the body itself ends the call with handle()'s status for it. Returns the reactor to
  // give back to gRPC. The metrics and the guard are handle()'s.
  grpc::ServerUnaryReactor* handle_async(grpc::CallbackServerContext* ctx, std::string_view full_method,
                                         const std::function<void(AsyncCall&)>& body);
  // The token check alone (OK or UNAUTHENTICATED).
  grpc::Status authorize(const grpc::ServerContextBase& ctx) const;

  // ---- health ----
  // grpc.health.v1 status of `service` (e.g. "mamba.forecasting.v1.ForecastingService").
  // The overall status ("") is SERVING when every registered service is. Before start()
  // the statuses are remembered; after request_shutdown() everything stays NOT_SERVING.
  void set_serving(const std::string& service, bool serving);
  bool serving() const;  // the overall status (and not draining)
  // `service` is NOT_SERVING until `repo` has a loaded model (and again if it has none).
  // The repository calls back into this Runtime: destroy (or stop()) it first.
  template <class M>
  void serve_health_from(ModelRepository<M>& repo, const std::string& service) {
    set_serving(service, false);
    repo.set_on_change([this, service](size_t loaded) { set_serving(service, loaded > 0); });
  }

  // ---- lifecycle ----
  // Builds and starts the server with `services` (not owned; they must outlive the
  // Runtime) and the metrics endpoint. Throws mamba::Error when a port cannot be bound
  // or a TLS file cannot be read.
  void start(const std::vector<grpc::Service*>& services);
  int port() const { return port_; }  // the bound gRPC port, after start()
  int metrics_port() const;           // the bound metrics port, 0 when off
  // Starts the drain (see above) and returns at once. Idempotent; thread-safe.
  void request_shutdown();
  bool draining() const { return draining_.load(); }
  // Blocks until the server has shut down (after request_shutdown()).
  void wait();
  // start(), then SIGTERM/SIGINT call request_shutdown(); returns 0 once shut down.
  int run(const std::vector<grpc::Service*>& services);

 private:
  void apply_health_locked();
  void lifecycle();
  friend class AsyncCall;
  // An exception as a status (a ServiceError's field goes into the ErrorDetail trailer).
  grpc::Status status_of(std::exception_ptr e, grpc::ServerContextBase* ctx, std::string_view full_method);
  // mamba_requests_total and mamba_request_duration_seconds of one call.
  void record(std::string_view full_method, const grpc::Status& status, double seconds);

  ServerOptions options_;
  TokenAuthenticator auth_;
  MetricsRegistry metrics_;

  mutable std::mutex mu_;  // guards health_, server_, shutdown flags
  std::condition_variable cv_;
  std::map<std::string, bool> health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  int port_ = 0;
  bool shutdown_requested_ = false;
  bool finished_ = false;
  std::atomic<bool> draining_{false};
  std::thread lifecycle_thread_;
  std::shared_ptr<HandledCalls> handled_;  // calls inside handle(), for the guard
};

}  // namespace mamba::serve
