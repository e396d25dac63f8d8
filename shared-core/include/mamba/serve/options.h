// What every service binary takes on its command line (and from the environment).
//
// Each flag has an environment fallback, used when the flag is not given:
//   --host MAMBA_HOST (0.0.0.0)              --port MAMBA_PORT (50051; 0 = any free port)
//   --port-file MAMBA_PORT_FILE --metrics-port-file MAMBA_METRICS_PORT_FILE
//               --metrics-host MAMBA_METRICS_HOST (127.0.0.1)
//   --metrics-port MAMBA_METRICS_PORT (0 = off, -1 = any free port: tests)
//   --model-root MAMBA_MODEL_ROOT            --poll-seconds MAMBA_POLL_SECONDS (10; 0 = no watch)
//   --device MAMBA_DEVICE (auto|cpu|cuda:N)  --max-batch MAMBA_MAX_BATCH (8)
//   --max-queue-delay-us MAMBA_MAX_QUEUE_DELAY_US (2000)
//   --max-queue MAMBA_MAX_QUEUE (1024 requests waiting per batcher)
//   --max-receive-bytes MAMBA_MAX_RECEIVE_BYTES (4 MiB)
//   --tls-cert MAMBA_TLS_CERT --tls-key MAMBA_TLS_KEY --tls-client-ca MAMBA_TLS_CLIENT_CA
//   --auth-token-file MAMBA_AUTH_TOKEN_FILE  --drain-seconds MAMBA_DRAIN_SECONDS (5)
//   --grace-seconds MAMBA_GRACE_SECONDS (10) --log-level MAMBA_LOG_LEVEL (info)
// Per-service request limits (series length, volume size, ...) are the service's own flags,
// added to the same CLI::App.
//
// Usage in a main():
//   mamba::serve::ServerOptions opts;
//   CLI::App app{"mamba-forecasting"};
//   mamba::serve::add_server_flags(app, opts);
//   app.add_option("--max-series-length", max_len);   // the service's own
//   CLI11_PARSE(app, argc, argv);
//   mamba::serve::finalize_server_options(opts);       // validates; resolves the device
#pragma once

#include <cstdint>
#include <string>

#include "mamba/tensor/tensor.h"

namespace CLI {
class App;
}

namespace mamba::serve {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 50051;  // 0 = any free port (Runtime::port() tells which)
  std::string port_file;  // when set, the bound port is written there (atomically)
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;  // 0 = no metrics endpoint; -1 = any free port (Runtime::metrics_port())
  std::string metrics_port_file;  // when set, the bound metrics port is written there (atomically)
  std::string model_root;
  double poll_seconds = 10;  // model repository watch interval; 0 = load once
  std::string device = "auto";
  mamba::Device resolved_device;  // set by finalize_server_options()
  int max_batch = 8;
  int64_t max_queue_delay_us = 2000;
  int max_queue = 1024;
  int64_t max_receive_bytes = 4 << 20;
  std::string tls_cert, tls_key, tls_client_ca;  // PEM files; a client CA turns on mTLS
  std::string auth_token_file;                   // empty = no authentication
  double drain_seconds = 5;  // after SIGTERM: NOT_SERVING but still accepting, this long
  double grace_seconds = 10;  // then in-flight calls get this long to finish
  std::string log_level = "info";
};

// Registers the flags above (with their environment fallbacks) on `app`, writing into
// `opts`, which must outlive parsing.
void add_server_flags(CLI::App& app, ServerOptions& opts);

// Checks ranges and combinations (a TLS cert needs a key; a client CA needs both) and
// resolves --device: "auto" -> cuda:0 when the CUDA runtime reports a device, else cpu;
// "cuda:N" must name a device the runtime reports. Throws mamba::Error naming the flag.
void finalize_server_options(ServerOptions& opts);

// Device resolution on its own (what finalize_server_options uses); `cuda_devices` is the
// number of devices the CUDA runtime reports.
mamba::Device resolve_device(const std::string& spec, int cuda_devices);

}  // namespace mamba::serve
