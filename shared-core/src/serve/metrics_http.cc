// The /metrics and /healthz endpoint. cpp-httplib is included here only.
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "mamba/serve/metrics.h"
#include "mamba/tensor/tensor.h"

namespace mamba::serve {

struct MetricsHttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> finished{false};
};

MetricsHttpServer::MetricsHttpServer(MetricsRegistry& registry, std::function<bool()> healthy)
    : impl_(std::make_unique<Impl>()) {
  // Scrapes are rare and cheap: two worker threads, not httplib's default of 8+.
  impl_->server.new_task_queue = [] { return new httplib::ThreadPool(2); };
  impl_->server.Get("/metrics", [&registry](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl_->server.Get("/healthz", [healthy = std::move(healthy)](const httplib::Request&, httplib::Response& res) {
    const bool ok = !healthy || healthy();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ok\n" : "not serving\n", "text/plain");
  });
}

MetricsHttpServer::~MetricsHttpServer() { stop(); }

int MetricsHttpServer::start(const std::string& host, int port) {
  if (impl_->thread.joinable()) throw Error("metrics server: already started");
  int bound = port;
  if (port == 0) {
    bound = impl_->server.bind_to_any_port(host);
  } else if (!impl_->server.bind_to_port(host, port)) {
    bound = -1;
  }
  if (bound <= 0) throw Error("metrics server: cannot bind " + host + ":" + std::to_string(port));
  port_ = bound;
  impl_->thread = std::thread([this] {
    impl_->server.listen_after_bind();
    impl_->finished = true;
  });
  return bound;
}

void MetricsHttpServer::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  // httplib's stop() does nothing until the listening loop runs: wait for it (or its end).
  for (int i = 0; i < 1000 && !impl_->server.is_running() && !impl_->finished; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace mamba::serve
