// Errors and limits at the edge, tensor byte-size checks (overflow), model names, the
// metrics text format, server options (flags, environment, device), JSON log lines.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <limits>
#include <new>

#include "mamba/serve/common_proto.h"
#include "mamba/serve/errors.h"
#include "mamba/serve/logging.h"
#include "mamba/serve/metrics.h"
#include "mamba/serve/options.h"
#include "mamba/tensor/tensor.h"

using namespace mamba::serve;

namespace {

template <class F>
std::pair<grpc::StatusCode, std::string> error_of(F&& f) {
  try {
    f();
  } catch (const ServiceError& e) {
    return {e.code(), e.what()};
  }
  return {grpc::StatusCode::OK, ""};
}

constexpr int F32 = 1, F64 = 2, BF16 = 3, U8 = 7;

}  // namespace

TEST(Limits, MessageNamesTheFieldAndTheLimit) {
  EXPECT_NO_THROW(check_limit("series.variables[2].values", 4096, 4096, "values"));
  auto [code, msg] = error_of([] { check_limit(indexed("series.variables", 2) + ".values", 5000, 4096, "values"); });
  EXPECT_EQ(code, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(msg, "series.variables[2].values: 5000 values exceeds the limit of 4096");
  try {
    check_limit("series.timestamps", 10, 8, "values");
    ADD_FAILURE();
  } catch (const ServiceError& e) {
    EXPECT_EQ(e.field(), "series.timestamps");
    EXPECT_EQ(e.limit(), 8);
  }
  auto [c2, m2] = error_of([] { check_range("horizon", 0, 1, 720); });
  EXPECT_EQ(c2, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(m2, "horizon: must be at least 1 (got 0)");
  auto [c3, m3] = error_of([] { check_range("horizon", 1000, 1, 720); });
  EXPECT_EQ(m3, "horizon: must be at most 720 (got 1000)");
}

TEST(Limits, TensorByteSizeIsCheckedWithoutOverflow) {
  const std::vector<int64_t> s23{2, 3};
  EXPECT_EQ(check_tensor_bytes("t", F32, s23, 24, 1 << 20), 24u);
  EXPECT_EQ(check_tensor_bytes("t", BF16, s23, 12, 1 << 20), 12u);
  EXPECT_EQ(check_tensor_bytes("t", F64, {}, 8, 1 << 20), 8u);  // a scalar
  // Mismatched data: INVALID_ARGUMENT naming .data.
  auto [c1, m1] = error_of([&] { check_tensor_bytes("image", F32, s23, 23, 1 << 20); });
  EXPECT_EQ(c1, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(m1, "image.data: 23 bytes, but the shape and dtype need 24");
  // Shapes whose product overflows 64 bits: RESOURCE_EXHAUSTED, no wrap-around to a small size.
  const std::vector<int64_t> huge{int64_t{1} << 62, int64_t{1} << 62};
  EXPECT_EQ(error_of([&] { check_tensor_bytes("t", F32, huge, 0, 1 << 20); }).first,
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  const std::vector<int64_t> wraps{int64_t{1} << 32, int64_t{1} << 32};  // 2^64 elements * 1 byte == 0 mod 2^64
  EXPECT_EQ(error_of([&] { check_tensor_bytes("t", U8, wraps, 0, 1 << 20); }).first,
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  const std::vector<int64_t> max_dims{std::numeric_limits<int64_t>::max(), 3};
  EXPECT_EQ(error_of([&] { check_tensor_bytes("t", F64, max_dims, 0, std::numeric_limits<uint64_t>::max()); }).first,
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Over the byte limit.
  const std::vector<int64_t> big{1024, 1024};
  auto [c2, m2] = error_of([&] { check_tensor_bytes("t", F32, big, 4 << 20, 1 << 20); });
  EXPECT_EQ(c2, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(m2, "t: the shape describes more than the limit of 1048576 bytes");
  // A zero dimension: zero bytes, whatever the others.
  const std::vector<int64_t> zero{int64_t{1} << 62, 0};
  EXPECT_EQ(check_tensor_bytes("t", F32, zero, 0, 1 << 20), 0u);
  // Negative dimension, unknown dtype.
  const std::vector<int64_t> neg{2, -1};
  auto [c3, m3] = error_of([&] { check_tensor_bytes("t", F32, neg, 0, 1 << 20); });
  EXPECT_EQ(c3, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(m3, "t.shape[1]: negative dimension -1");
  EXPECT_EQ(error_of([&] { check_tensor_bytes("t", 0, s23, 24, 1 << 20); }).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(error_of([&] { check_tensor_bytes("t", 99, s23, 24, 1 << 20); }).first, grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(Limits, ModelNamesAreKeysNotPaths) {
  for (const char* ok : {"etth1", "ETTh1-mamba_v2", "a.b", "x1"}) EXPECT_TRUE(is_valid_model_name(ok)) << ok;
  for (const char* bad : {"", ".", "..", "../x", "/etc/passwd", "a/b", ".hidden", "a\\b", "a b", "a\nb"})
    EXPECT_FALSE(is_valid_model_name(bad)) << bad;
  EXPECT_FALSE(is_valid_model_name(std::string(129, 'a')));
  EXPECT_TRUE(is_valid_model_name(std::string(128, 'a')));
  auto [code, msg] = error_of([] { check_model_name("model.name", "../x"); });
  EXPECT_EQ(code, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(msg.rfind("model.name: ", 0), 0u);
  EXPECT_EQ(error_of([] { check_model_version("model.version", -1); }).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NO_THROW(check_model_version("model.version", 0));
}

TEST(Errors, ExceptionsBecomeStatusCodes) {
  auto status_of = [](auto&& thrower) {
    try {
      thrower();
    } catch (...) {
      return status_from_exception(std::current_exception(), "test");
    }
    return grpc::Status::OK;
  };
  auto s1 = status_of([] { throw ServiceError(grpc::StatusCode::NOT_FOUND, "model.name: no model"); });
  EXPECT_EQ(s1.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s1.error_message(), "model.name: no model");
  auto s2 = status_of([] { throw mamba::Error("matmul: shapes [2, 3] and [4, 5]"); });
  EXPECT_EQ(s2.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s2.error_message(), "matmul: shapes [2, 3] and [4, 5]");
  EXPECT_EQ(status_of([] { throw std::bad_alloc(); }).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  auto s4 = status_of([] { throw std::runtime_error("secret internals"); });
  EXPECT_EQ(s4.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s4.error_message(), "internal error");  // not leaked to the client
  EXPECT_EQ(status_of([] { throw 42; }).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_STREQ(status_code_name(grpc::StatusCode::UNAUTHENTICATED), "UNAUTHENTICATED");
}

TEST(Metrics, RendersPrometheusText) {
  MetricsRegistry r;
  r.counter("mamba_requests_total", "RPCs", {{"service", "s"}, {"method", "M"}, {"code", "OK"}}).inc(3);
  r.gauge("mamba_model_version", "v", {{"model", "a\"b"}}).set(7);
  auto& h = r.histogram("mamba_batch_size", "sizes", {1, 2, 4}, {{"batcher", "x"}});
  h.observe(1);
  h.observe(3);
  h.observe(100);
  const std::string t = r.render();
  EXPECT_NE(t.find("# TYPE mamba_requests_total counter\n"), std::string::npos);
  EXPECT_NE(t.find("mamba_requests_total{service=\"s\",method=\"M\",code=\"OK\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_model_version{model=\"a\\\"b\"} 7\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_bucket{batcher=\"x\",le=\"1\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_bucket{batcher=\"x\",le=\"2\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_bucket{batcher=\"x\",le=\"4\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_bucket{batcher=\"x\",le=\"+Inf\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_sum{batcher=\"x\"} 104\n"), std::string::npos) << t;
  EXPECT_NE(t.find("mamba_batch_size_count{batcher=\"x\"} 3\n"), std::string::npos) << t;
  EXPECT_THROW(r.gauge("mamba_requests_total", "wrong type"), mamba::Error);
  EXPECT_THROW(r.counter("bad name", "x"), mamba::Error);
  add_process_metrics(r);
  const std::string t2 = r.render();
  EXPECT_NE(t2.find("mamba_memory_bytes{kind=\"rss\"} "), std::string::npos) << t2;
  EXPECT_EQ(t2.find("mamba_memory_bytes{kind=\"rss\"} 0\n"), std::string::npos) << t2;
  EXPECT_NE(t2.find("mamba_memory_bytes{kind=\"cpu_allocator_cached\"} "), std::string::npos) << t2;
}

TEST(Options, FlagsEnvironmentAndDefaults) {
  ServerOptions o;
  EXPECT_EQ(o.max_receive_bytes, 4 << 20);
  EXPECT_EQ(o.drain_seconds, 5);
  ::setenv("MAMBA_PORT", "6001", 1);
  ::setenv("MAMBA_MAX_BATCH", "16", 1);
  CLI::App app{"test"};
  add_server_flags(app, o);
  const char* argv[] = {"test", "--max-batch", "32", "--metrics-port", "9100", "--model-root", "/models"};
  app.parse(7, const_cast<char**>(argv));
  ::unsetenv("MAMBA_PORT");
  ::unsetenv("MAMBA_MAX_BATCH");
  EXPECT_EQ(o.port, 6001);       // from the environment
  EXPECT_EQ(o.max_batch, 32);    // the flag wins over MAMBA_MAX_BATCH
  EXPECT_EQ(o.metrics_port, 9100);
  EXPECT_EQ(o.model_root, "/models");
  EXPECT_NO_THROW(finalize_server_options(o));
}

TEST(Options, DeviceIsValidatedAgainstTheCudaRuntime) {
  EXPECT_TRUE(resolve_device("auto", 0).is_cpu());
  EXPECT_EQ(resolve_device("auto", 2), mamba::Device::cuda(0));
  EXPECT_TRUE(resolve_device("cpu", 0).is_cpu());
  EXPECT_EQ(resolve_device("cuda:1", 2), mamba::Device::cuda(1));
  EXPECT_THROW(resolve_device("cuda:0", 0), mamba::Error);
  EXPECT_THROW(resolve_device("cuda:2", 2), mamba::Error);
  EXPECT_THROW(resolve_device("tpu", 0), mamba::Error);
}

TEST(Options, InvalidCombinationsAreRefused) {
  auto finalize = [](auto&& edit) {
    ServerOptions o;
    o.device = "cpu";
    edit(o);
    finalize_server_options(o);
  };
  EXPECT_THROW(finalize([](ServerOptions& o) { o.tls_cert = "c.pem"; }), mamba::Error);
  EXPECT_THROW(finalize([](ServerOptions& o) { o.tls_client_ca = "ca.pem"; }), mamba::Error);
  EXPECT_THROW(finalize([](ServerOptions& o) { o.port = 70000; }), mamba::Error);
  EXPECT_THROW(finalize([](ServerOptions& o) { o.max_batch = 0; }), mamba::Error);
  EXPECT_THROW(finalize([](ServerOptions& o) { o.max_receive_bytes = 10; }), mamba::Error);
  EXPECT_NO_THROW(finalize([](ServerOptions& o) {
    o.tls_cert = "c.pem";
    o.tls_key = "k.pem";
    o.tls_client_ca = "ca.pem";
  }));
}

TEST(Logging, LinesAreJsonObjects) {
  init_json_logging("info");
  testing::internal::CaptureStderr();
  spdlog::info("plain \"quoted\" message");
  log_event(spdlog::level::warn, "with fields", {{"port", 50051}, {"model", "m"}});
  spdlog::debug("below the level");
  spdlog::default_logger()->flush();
  const std::string out = testing::internal::GetCapturedStderr();
  std::vector<nlohmann::json> lines;
  size_t pos = 0;
  while (pos < out.size()) {
    const size_t nl = out.find('\n', pos);
    lines.push_back(nlohmann::json::parse(out.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  ASSERT_EQ(lines.size(), 2u) << out;
  EXPECT_EQ(lines[0]["level"], "info");
  EXPECT_EQ(lines[0]["msg"], "plain \"quoted\" message");
  EXPECT_TRUE(lines[0]["ts"].get<std::string>().ends_with("Z"));
  EXPECT_EQ(lines[1]["level"], "warning");
  EXPECT_EQ(lines[1]["msg"], "with fields");
  EXPECT_EQ(lines[1]["port"], 50051);
  EXPECT_EQ(lines[1]["model"], "m");
  EXPECT_THROW(init_json_logging("loud"), mamba::Error);
}

TEST(CommonProto, TensorRoundTripAndChecksBeforeAllocating) {
  mamba::Tensor t = mamba::Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  mamba::common::v1::Tensor p;
  tensor_to_proto(t.transpose(0, 1), &p);  // a non-contiguous view goes out contiguous
  EXPECT_EQ(p.dtype(), mamba::common::v1::DTYPE_F32);
  ASSERT_EQ(p.shape_size(), 2);
  EXPECT_EQ(p.shape(0), 3);
  EXPECT_EQ(p.data().size(), 24u);
  mamba::Tensor back = tensor_from_proto("input", p, 1 << 20);
  EXPECT_EQ(back.shape(), (mamba::Shape{3, 2}));
  EXPECT_EQ(back.to_vector_f32(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  p.add_shape(int64_t{1} << 62);  // describes far more than max_bytes: refused, nothing allocated
  EXPECT_EQ(error_of([&] { tensor_from_proto("input", p, 1 << 20); }).first, grpc::StatusCode::RESOURCE_EXHAUSTED);
  mamba::common::v1::Tensor unset;
  EXPECT_EQ(error_of([&] { tensor_from_proto("input", unset, 1 << 20); }).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(dtype_to_proto(mamba::DType::u8), mamba::common::v1::DTYPE_U8);
  EXPECT_EQ(dtype_to_proto(mamba::DType::bf16), mamba::common::v1::DTYPE_BF16);
}
