#include "mamba/serve/options.h"

#include <CLI/CLI.hpp>

#include "mamba/kernels/cuda_runtime_info.h"

namespace mamba::serve {

void add_server_flags(CLI::App& app, ServerOptions& o) {
  app.add_option("--host", o.host, "Address the gRPC server binds")->envname("MAMBA_HOST")->capture_default_str();
  app.add_option("--port", o.port, "gRPC port (0 = any free port)")->envname("MAMBA_PORT")->capture_default_str();
  app.add_option("--port-file", o.port_file, "Write the bound gRPC port to this file")->envname("MAMBA_PORT_FILE");
  app.add_option("--metrics-port-file", o.metrics_port_file, "Write the bound metrics port to this file")
      ->envname("MAMBA_METRICS_PORT_FILE");
  app.add_option("--metrics-host", o.metrics_host, "Address of the metrics HTTP endpoint")
      ->envname("MAMBA_METRICS_HOST")->capture_default_str();
  app.add_option("--metrics-port", o.metrics_port, "Prometheus /metrics and /healthz port (0 = off, -1 = any free port)")
      ->envname("MAMBA_METRICS_PORT")->capture_default_str();
  app.add_option("--model-root", o.model_root, "Model repository: <root>/<name>/<version>/")
      ->envname("MAMBA_MODEL_ROOT");
  app.add_option("--poll-seconds", o.poll_seconds, "Model repository watch interval (0 = load once)")
      ->envname("MAMBA_POLL_SECONDS")->capture_default_str();
  app.add_option("--device", o.device, "auto, cpu or cuda:N")->envname("MAMBA_DEVICE")->capture_default_str();
  app.add_option("--max-batch", o.max_batch, "Largest batch the dynamic batcher forms")
      ->envname("MAMBA_MAX_BATCH")->capture_default_str();
  app.add_option("--max-queue-delay-us", o.max_queue_delay_us, "Longest a request waits for its batch to fill")
      ->envname("MAMBA_MAX_QUEUE_DELAY_US")->capture_default_str();
  app.add_option("--max-queue", o.max_queue, "Requests waiting per batcher before RESOURCE_EXHAUSTED")
      ->envname("MAMBA_MAX_QUEUE")->capture_default_str();
  app.add_option("--max-receive-bytes", o.max_receive_bytes, "Largest request message")
      ->envname("MAMBA_MAX_RECEIVE_BYTES")->capture_default_str();
  app.add_option("--tls-cert", o.tls_cert, "Server certificate (PEM)")->envname("MAMBA_TLS_CERT");
  app.add_option("--tls-key", o.tls_key, "Server private key (PEM)")->envname("MAMBA_TLS_KEY");
  app.add_option("--tls-client-ca", o.tls_client_ca, "CA for client certificates (PEM): mutual TLS")
      ->envname("MAMBA_TLS_CLIENT_CA");
  app.add_option("--auth-token-file", o.auth_token_file, "Bearer tokens, one per line")
      ->envname("MAMBA_AUTH_TOKEN_FILE");
  app.add_option("--drain-seconds", o.drain_seconds, "After SIGTERM: NOT_SERVING but accepting, this long")
      ->envname("MAMBA_DRAIN_SECONDS")->capture_default_str();
  app.add_option("--grace-seconds", o.grace_seconds, "Then in-flight calls get this long to finish")
      ->envname("MAMBA_GRACE_SECONDS")->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error")
      ->envname("MAMBA_LOG_LEVEL")->capture_default_str();
}

mamba::Device resolve_device(const std::string& spec, int cuda_devices) {
  if (spec == "auto") return cuda_devices > 0 ? mamba::Device::cuda(0) : mamba::Device::cpu();
  mamba::Device d;
  try {
    d = mamba::Device::parse(spec);
  } catch (const std::exception&) {
    throw Error("--device: '" + spec + "' is not auto, cpu or cuda:N");
  }
  if (!d.is_cpu() && d.index >= cuda_devices) {
    throw Error("--device: " + spec + " requested, but the CUDA runtime reports " + std::to_string(cuda_devices) +
                " device(s)" + (cuda_devices == 0 ? " (" + mamba::kernels::cuda_device_description(0) + ")" : ""));
  }
  return d;
}

void finalize_server_options(ServerOptions& o) {
  auto require = [](bool ok, const std::string& msg) {
    if (!ok) throw Error(msg);
  };
  require(o.port >= 0 && o.port <= 65535, "--port: must be 0..65535");
  require(o.metrics_port >= -1 && o.metrics_port <= 65535, "--metrics-port: must be -1..65535");
  require(o.poll_seconds >= 0, "--poll-seconds: must be >= 0");
  require(o.max_batch >= 1, "--max-batch: must be at least 1");
  require(o.max_queue_delay_us >= 0, "--max-queue-delay-us: must be >= 0");
  require(o.max_queue >= 1, "--max-queue: must be at least 1");
  require(o.max_receive_bytes >= 1024 && o.max_receive_bytes <= (int64_t{1} << 31) - 1,
          "--max-receive-bytes: must be 1024..2147483647");
  require(o.drain_seconds >= 0 && o.grace_seconds >= 0, "--drain-seconds/--grace-seconds: must be >= 0");
  require(o.tls_cert.empty() == o.tls_key.empty(), "--tls-cert and --tls-key go together");
  require(o.tls_client_ca.empty() || !o.tls_cert.empty(), "--tls-client-ca needs --tls-cert and --tls-key");
  o.resolved_device = resolve_device(o.device, mamba::kernels::cuda_device_count());
}

}  // namespace mamba::serve
