#include "mamba/serve/runtime.h"

#include <absl/synchronization/mutex.h>
#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_interceptor.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "mamba/common/v1/common.pb.h"
#include "mamba/io/atomic_file.h"
#include "mamba/serve/logging.h"
#include "mamba/tensor/tensor.h"

namespace mamba::serve {

// ---- Call -----------------------------------------------------------------------------

Call::Call(grpc::ServerContext& ctx, std::string_view service, std::string_view method)
    : ctx_(ctx), service_(service), method_(method) {
  const auto d = ctx.deadline();  // system_clock; max() when the client set none
  if (d == std::chrono::system_clock::time_point::max()) {
    deadline_ = Clock::time_point::max();
  } else {
    const auto left = d - std::chrono::system_clock::now();
    deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
  }
}

bool Call::cancelled() const { return ctx_.IsCancelled(); }

void Call::check_alive() const {
  if (cancelled()) throw ServiceError(grpc::StatusCode::CANCELLED, "the call was cancelled");
  if (Clock::now() >= deadline_) throw ServiceError(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed");
}

// ---- signals --------------------------------------------------------------------------

namespace {

int g_signal_pipe[2] = {-1, -1};

void on_signal(int) {
  const int saved = errno;
  const char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

std::string read_file(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string(flag) + ": cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::pair<std::string_view, std::string_view> split_method(std::string_view full) {
  if (!full.empty() && full.front() == '/') full.remove_prefix(1);
  const size_t slash = full.rfind('/');
  if (slash == std::string_view::npos) return {"", full};
  return {full.substr(0, slash), full.substr(slash + 1)};
}

}  // namespace

// ---- the guard: handlers must go through handle() ---------------------------------------

struct HandledCalls {
  std::mutex mu;
  std::unordered_set<const void*> calls;  // ServerContextBase* of calls inside handle()
  Counter* bypassed = nullptr;
  void add(const void* c) {
    std::lock_guard<std::mutex> lock(mu);
    calls.insert(c);
  }
  bool contains(const void* c) {
    std::lock_guard<std::mutex> lock(mu);
    return calls.count(c) != 0;
  }
  void remove(const void* c) {
    std::lock_guard<std::mutex> lock(mu);
    calls.erase(c);
  }
};

namespace {

namespace gx = grpc::experimental;

bool exempt_method(std::string_view m) {
  return m.starts_with("/grpc.health.v1.Health/") || m.starts_with("/grpc.reflection.");
}

class GuardInterceptor final : public gx::Interceptor {
 public:
  GuardInterceptor(std::shared_ptr<HandledCalls> calls, gx::ServerRpcInfo* info)
      : calls_(std::move(calls)), ctx_(info->server_context()), method_(info->method() ? info->method() : ""),
        exempt_(exempt_method(method_)) {}
  ~GuardInterceptor() override {
    if (!exempt_) calls_->remove(ctx_);
  }

  void Intercept(gx::InterceptorBatchMethods* m) override {
    if (!exempt_) {
      const bool msg = m->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_MESSAGE);
      const bool status = m->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS);
      if ((msg || status) && !calls_->contains(ctx_)) {
        if (msg) {
          if (grpc::ByteBuffer* bb = m->GetSerializedSendMessage()) {
            grpc::Slice empty;
            *bb = grpc::ByteBuffer(&empty, 1);
          }
        }
        if (status && m->GetSendStatus().ok()) {
          spdlog::error("{}: the handler bypassed Runtime::handle (no auth, no metrics); answering INTERNAL", method_);
          if (calls_->bypassed) calls_->bypassed->inc();
          m->ModifySendStatus(grpc::Status(grpc::StatusCode::INTERNAL, "handler bypassed Runtime::handle"));
        }
      }
      if (status) calls_->remove(ctx_);
    }
    m->Proceed();
  }

 private:
  std::shared_ptr<HandledCalls> calls_;
  const void* ctx_;
  std::string method_;
  bool exempt_;
};

class GuardFactory final : public gx::ServerInterceptorFactoryInterface {
 public:
  explicit GuardFactory(std::shared_ptr<HandledCalls> calls) : calls_(std::move(calls)) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new GuardInterceptor(calls_, info);
  }

 private:
  std::shared_ptr<HandledCalls> calls_;
};

}  // namespace

// ---- Runtime --------------------------------------------------------------------------

Runtime::Runtime(ServerOptions options) : options_(std::move(options)), handled_(std::make_shared<HandledCalls>()) {
  // Debian's abseil is built with absl::Mutex deadlock detection on: every lock of gRPC's
  // mutexes updated a lock graph (GraphCycles, a few % of a loaded server's CPU). It is a
  // debugging aid with no effect on behaviour; off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (!options_.auth_token_file.empty()) auth_ = TokenAuthenticator(load_token_file(options_.auth_token_file));
  add_process_metrics(metrics_);
  handled_->bypassed =
      &metrics_.counter("mamba_handler_bypass_total", "Calls whose handler did not go through Runtime::handle");
}

Runtime::~Runtime() {
  bool running = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    running = server_ != nullptr && !finished_;
  }
  if (running) {
    request_shutdown();
    wait();
  }
  if (lifecycle_thread_.joinable()) lifecycle_thread_.join();
}

BatcherOptions Runtime::batcher_options(std::string name) {
  BatcherOptions b;
  b.name = std::move(name);
  b.max_batch = static_cast<size_t>(options_.max_batch);
  b.max_queue_delay = std::chrono::microseconds(options_.max_queue_delay_us);
  b.max_queue = static_cast<size_t>(options_.max_queue);
  b.metrics = &metrics_;
  return b;
}

grpc::Status Runtime::authorize(const grpc::ServerContextBase& ctx) const {
  if (!auth_.enabled()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find("authorization");
  const std::string_view value = it == md.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
  if (auth_.check(value)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      it == md.end() ? "missing 'authorization: Bearer <token>' metadata" : "invalid token");
}

grpc::Status Runtime::status_of(std::exception_ptr e, grpc::ServerContextBase* ctx, std::string_view full_method) {
  try {
    std::rethrow_exception(e);
  } catch (const ServiceError& err) {
    if (!err.field().empty()) {
      mamba::common::v1::ErrorDetail detail;
      detail.set_field(err.field());
      detail.set_limit(err.limit());
      detail.set_message(err.what());
      ctx->AddTrailingMetadata(kErrorDetailKey, detail.SerializeAsString());
    }
    return grpc::Status(err.code(), err.what());
  } catch (...) {
    return status_from_exception(std::current_exception(), full_method);
  }
}

void Runtime::record(std::string_view full_method, const grpc::Status& status, double seconds) {
  const auto [service, method] = split_method(full_method);
  const std::string svc(service), meth(method);
  metrics_.counter("mamba_requests_total", "RPCs handled, by final status code",
                   {{"service", svc}, {"method", meth}, {"code", status_code_name(status.error_code())}})
      .inc();
  metrics_.histogram("mamba_request_duration_seconds", "RPC latency in the handler", MetricsRegistry::latency_buckets(),
                     {{"service", svc}, {"method", meth}})
      .observe(seconds);
  if (!status.ok() && status.error_code() != grpc::StatusCode::INTERNAL)
    spdlog::debug("{}: {} {}", full_method, status_code_name(status.error_code()), status.error_message());
}

grpc::Status Runtime::handle(grpc::ServerContext* ctx, std::string_view full_method,
                             const std::function<void(Call&)>& body) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto [service, method] = split_method(full_method);
  handled_->add(static_cast<const grpc::ServerContextBase*>(ctx));
  grpc::Status status = authorize(*ctx);
  if (status.ok()) {
    try {
      Call call(*ctx, service, method);
      call.check_alive();
      body(call);
    } catch (...) {
      status = status_of(std::current_exception(), ctx, full_method);
    }
  }
  record(full_method, status, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return status;
}

// ---- AsyncCall / handle_async ---------------------------------------------------------

AsyncCall::AsyncCall(Runtime& rt, grpc::CallbackServerContext* ctx, std::string_view full_method)
    : rt_(rt), ctx_(ctx), full_method_(full_method), t0_(Clock::now()) {
  const auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) {
    deadline_ = Clock::time_point::max();
  } else {
    deadline_ = t0_ + std::chrono::duration_cast<Clock::duration>(d - std::chrono::system_clock::now());
  }
}

void AsyncCall::finish(const grpc::Status& status) {
  if (finished_.exchange(true)) {
    spdlog::error("{}: the call was finished twice (ignored: {})", full_method_, status.error_message());
    return;
  }
  rt_.record(full_method_, status, std::chrono::duration<double>(Clock::now() - t0_).count());
  Finish(status);  // gRPC deletes this (OnDone) afterwards
}

void AsyncCall::fail(std::exception_ptr e) {
  if (finished_.load()) {
    spdlog::error("{}: the call was finished twice (an error after the end ignored)", full_method_);
    return;
  }
  finish(rt_.status_of(e, ctx_, full_method_));
}

grpc::ServerUnaryReactor* Runtime::handle_async(grpc::CallbackServerContext* ctx, std::string_view full_method,
                                                const std::function<void(AsyncCall&)>& body) {
  auto* call = new AsyncCall(*this, ctx, full_method);
  handled_->add(static_cast<const grpc::ServerContextBase*>(ctx));
  const grpc::Status auth = authorize(*ctx);
  if (!auth.ok()) {
    call->finish(auth);
    return call;
  }
  try {
    if (ctx->IsCancelled()) throw ServiceError(grpc::StatusCode::CANCELLED, "the call was cancelled");
    if (AsyncCall::Clock::now() >= call->deadline())
      throw ServiceError(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed");
    body(*call);
  } catch (...) {
    // The body threw before handing the call on (a finished call is not finished again).
    call->fail(std::current_exception());
  }
  return call;
}

void Runtime::apply_health_locked() {
  if (!server_ || draining_) return;
  auto* hs = server_->GetHealthCheckService();
  if (!hs) return;
  bool all = true;
  for (const auto& [name, ok] : health_) {
    hs->SetServingStatus(name, ok);
    all = all && ok;
  }
  hs->SetServingStatus(all);  // the overall status ("")
}

void Runtime::set_serving(const std::string& service, bool serving) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = health_.find(service);
  const bool changed = it == health_.end() || it->second != serving;
  health_[service] = serving;
  if (changed) log_event(spdlog::level::info, "health", {{"service", service}, {"serving", serving}});
  apply_health_locked();
}

bool Runtime::serving() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return false;
  for (const auto& [name, ok] : health_)
    if (!ok) return false;
  return true;
}

int Runtime::metrics_port() const { return metrics_http_ ? metrics_http_->port() : 0; }

void Runtime::start(const std::vector<grpc::Service*>& services) {
  std::lock_guard<std::mutex> lock(mu_);
  if (server_) throw Error("Runtime::start: already started");

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();  // before the builder exists

  std::shared_ptr<grpc::ServerCredentials> creds;
  const bool tls = !options_.tls_cert.empty();
  if (tls) {
    grpc::SslServerCredentialsOptions ssl(options_.tls_client_ca.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_key_cert_pairs.push_back(
        {read_file(options_.tls_key, "--tls-key"), read_file(options_.tls_cert, "--tls-cert")});
    if (!options_.tls_client_ca.empty()) ssl.pem_root_certs = read_file(options_.tls_client_ca, "--tls-client-ca");
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  grpc::ServerBuilder builder;
  const std::string address = options_.host + ":" + std::to_string(options_.port);
  int bound = 0;
  builder.AddListeningPort(address, creds, &bound);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_receive_bytes));
  // Without this, Linux's SO_REUSEPORT lets a second server bind a busy port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::vector<std::unique_ptr<gx::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<GuardFactory>(handled_));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server_ = builder.BuildAndStart();
  if (!server_ || bound == 0) {
    server_.reset();
    throw Error("cannot listen on " + address + " (port in use or address invalid)");
  }
  port_ = bound;
  apply_health_locked();

  if (options_.metrics_port != 0) {
    metrics_http_ = std::make_unique<MetricsHttpServer>(metrics_, [this] { return serving(); });
    try {
      metrics_http_->start(options_.metrics_host, options_.metrics_port < 0 ? 0 : options_.metrics_port);
    } catch (...) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
      metrics_http_.reset();
      throw;
    }
  }
  if (!options_.port_file.empty()) io::write_file_atomic(options_.port_file, std::to_string(port_) + "\n");
  if (!options_.metrics_port_file.empty() && metrics_http_)
    io::write_file_atomic(options_.metrics_port_file, std::to_string(metrics_http_->port()) + "\n");
  log_event(spdlog::level::info, "listening",
            {{"address", options_.host}, {"port", port_}, {"tls", tls}, {"mtls", !options_.tls_client_ca.empty()},
             {"auth", auth_.enabled()}, {"metrics_port", metrics_http_ ? metrics_http_->port() : 0},
             {"device", options_.resolved_device.str()}, {"max_receive_bytes", options_.max_receive_bytes}});
  lifecycle_thread_ = std::thread([this] { lifecycle(); });
}

void Runtime::lifecycle() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return shutdown_requested_; });
    draining_ = true;
    if (auto* hs = server_->GetHealthCheckService()) hs->Shutdown();  // all NOT_SERVING, for good
  }
  log_event(spdlog::level::info, "draining", {{"drain_seconds", options_.drain_seconds},
                                              {"grace_seconds", options_.grace_seconds}});
  std::this_thread::sleep_for(std::chrono::duration<double>(options_.drain_seconds));
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(options_.grace_seconds));
  server_->Shutdown(deadline);  // in-flight calls finish; the rest are cancelled at the deadline
  server_->Wait();
  if (metrics_http_) metrics_http_->stop();
  log_event(spdlog::level::info, "stopped", nlohmann::json::object());
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }
  cv_.notify_all();
}

void Runtime::request_shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_requested_) return;
    shutdown_requested_ = true;
  }
  cv_.notify_all();
}

void Runtime::wait() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!server_) return;
    cv_.wait(lock, [this] { return finished_; });
  }
  if (lifecycle_thread_.joinable() && lifecycle_thread_.get_id() != std::this_thread::get_id())
    lifecycle_thread_.join();
}

int Runtime::run(const std::vector<grpc::Service*>& services) {
  if (g_signal_pipe[0] < 0 && ::pipe2(g_signal_pipe, O_CLOEXEC) != 0) throw Error("Runtime::run: pipe2 failed");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  try {
    start(services);
  } catch (...) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    throw;
  }
  // Reads the self-pipe: a 1 is a signal, a 0 means the server stopped on its own.
  std::thread signal_thread([this] {
    for (;;) {
      char byte = 0;
      const ssize_t n = ::read(g_signal_pipe[0], &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || byte == 0) return;
      log_event(spdlog::level::info, "signal received, shutting down", nlohmann::json::object());
      request_shutdown();
    }
  });
  wait();
  const char stop = 0;
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &stop, 1);
  signal_thread.join();
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  return 0;
}

}  // namespace mamba::serve
