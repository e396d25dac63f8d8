// The runtime over real gRPC on loopback, in-process: a tiny Echo service whose "model" is
// a version directory with {"scale": s}. Health before/after a model exists, auth,
// errors, /metrics and /healthz, draining shutdown with a call in flight, SIGTERM via run().
#include <gtest/gtest.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "mamba/common/v1/common.pb.h"
#include "mamba/serve/runtime.h"
#include "mamba/test/v1/echo.grpc.pb.h"

using namespace mamba::serve;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace echo = mamba::test::v1;
using grpc::health::v1::HealthCheckResponse;

namespace {

constexpr const char* kService = "mamba.test.v1.EchoService";
constexpr const char* kToken = "tok-abc-123";

struct EchoModel {
  double scale = 1;
};

std::shared_ptr<const EchoModel> load_echo(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  auto j = nlohmann::json::parse(in);
  return std::make_shared<const EchoModel>(EchoModel{j.at("scale").get<double>()});
}

class EchoImpl final : public echo::EchoService::Service {
 public:
  EchoImpl(Runtime& rt, ModelRepository<EchoModel>& repo) : rt_(rt), repo_(repo) {}

  grpc::Status Echo(grpc::ServerContext* ctx, const echo::EchoRequest* req, echo::EchoReply* resp) override {
    return rt_.handle(ctx, "mamba.test.v1.EchoService/Echo", [&](Call& call) {
      LoadedModelInfo info;
      auto model = repo_.get(req->model(), 0, &info);
      if (req->block()) {
        entered.set_value();
        while (gate.wait_for(10ms) != std::future_status::ready) call.check_alive();
      }
      resp->set_value(req->value() * model->scale);
      resp->set_version(info.version);
    });
  }

  grpc::Status Unguarded(grpc::ServerContext*, const echo::EchoRequest* req, echo::EchoReply* resp) override {
    resp->set_value(req->value());  // forgot rt_.handle(): no auth, no metrics
    return grpc::Status::OK;
  }

  grpc::Status Count(grpc::ServerContext* ctx, const echo::EchoRequest* req,
                     grpc::ServerWriter<echo::EchoReply>* writer) override {
    return rt_.handle(ctx, "mamba.test.v1.EchoService/Count", [&](Call& call) {
      LoadedModelInfo info;
      auto model = repo_.get(req->model(), 0, &info);
      for (int i = 1; i <= static_cast<int>(req->value()); ++i) {
        call.check_alive();
        echo::EchoReply r;
        r.set_value(i * model->scale);
        r.set_version(info.version);
        writer->Write(r);
      }
    });
  }

  std::promise<void> entered;
  std::shared_future<void> gate;

 private:
  Runtime& rt_;
  ModelRepository<EchoModel>& repo_;
};

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::path(MAMBA_TEST_TMP) / name;
  fs::remove_all(d);
  fs::create_directories(d / "models");
  std::ofstream(d / "tokens") << "# test\n" << kToken << "\n";
  return d;
}

ServerOptions test_options(const fs::path& dir) {
  ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.port_file = (dir / "port").string();
  o.metrics_host = "127.0.0.1";
  o.metrics_port = -1;
  o.model_root = (dir / "models").string();
  o.poll_seconds = 0;
  o.device = "cpu";
  o.auth_token_file = (dir / "tokens").string();
  o.drain_seconds = 3;
  o.grace_seconds = 60;
  finalize_server_options(o);
  return o;
}

struct Client {
  explicit Client(int port)
      : channel(grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials())),
        health(grpc::health::v1::Health::NewStub(channel)),
        echo(echo::EchoService::NewStub(channel)) {}

  HealthCheckResponse::ServingStatus check(const std::string& service, grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    grpc::Status s = health->Check(&ctx, req, &resp);
    if (status) *status = s;
    return s.ok() ? resp.status() : HealthCheckResponse::UNKNOWN;
  }

  grpc::Status call(const std::string& model, double value, const char* token, echo::EchoReply* reply,
                    bool block = false) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 60s);
    if (token) ctx.AddMetadata("authorization", std::string("Bearer ") + token);
    echo::EchoRequest req;
    req.set_model(model);
    req.set_value(value);
    req.set_block(block);
    return echo->Echo(&ctx, req, reply);
  }

  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  std::unique_ptr<echo::EchoService::Stub> echo;
};

void add_model(const fs::path& dir, int version, double scale) {
  const fs::path v = dir / "models" / "echo" / std::to_string(version);
  fs::create_directories(v);
  std::ofstream(v / "config.json") << nlohmann::json{{"scale", scale}}.dump();
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

TEST(Loopback, HealthAuthMetricsAndDrainingShutdown) {
  const fs::path dir = fresh_dir("loopback");
  Runtime rt(test_options(dir));
  ModelRepository<EchoModel> repo(rt.options().model_root, load_echo, {.poll_seconds = 0, .metrics = &rt.metrics()});
  rt.serve_health_from(repo, kService);
  repo.start();
  EchoImpl impl(rt, repo);
  rt.start({&impl});
  ASSERT_GT(rt.port(), 0);
  ASSERT_GT(rt.metrics_port(), 0);
  {
    std::ifstream in(dir / "port");
    int p = 0;
    in >> p;
    EXPECT_EQ(p, rt.port());
  }

  Client c(rt.port());
  EXPECT_EQ(c.check(kService), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(c.check(""), HealthCheckResponse::NOT_SERVING);
  echo::EchoReply reply;
  EXPECT_EQ(c.call("echo", 2, kToken, &reply).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  add_model(dir, 1, 3.0);
  repo.reload_now();
  EXPECT_EQ(c.check(kService), HealthCheckResponse::SERVING);
  EXPECT_EQ(c.check(""), HealthCheckResponse::SERVING);

  EXPECT_EQ(c.call("echo", 2, nullptr, &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(c.call("echo", 2, "wrong", &reply).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status ok = c.call("echo", 2, kToken, &reply);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(reply.value(), 6.0);
  EXPECT_EQ(reply.version(), 1);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    echo::EchoRequest req;
    req.set_model("../x");
    grpc::Status bad = c.echo->Echo(&ctx, req, &reply);
    EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(bad.error_message().rfind("model.name: ", 0), 0u) << bad.error_message();
    // The field also comes back machine-readable.
    const auto& trailers = ctx.GetServerTrailingMetadata();
    auto it = trailers.find(kErrorDetailKey);
    ASSERT_NE(it, trailers.end());
    mamba::common::v1::ErrorDetail detail;
    ASSERT_TRUE(detail.ParseFromArray(it->second.data(), static_cast<int>(it->second.size())));
    EXPECT_EQ(detail.field(), "model.name");
    EXPECT_EQ(detail.message(), bad.error_message());
  }
  EXPECT_EQ(c.call("nope", 2, kToken, &reply).error_code(), grpc::StatusCode::NOT_FOUND);
  // Over --max-receive-bytes (4 MiB): refused by gRPC before the handler runs.
  EXPECT_EQ(c.call(std::string(5 << 20, 'x'), 2, kToken, &reply).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    echo::EchoRequest req;
    req.set_value(42);
    echo::EchoReply r;
    grpc::Status s = c.echo->Unguarded(&ctx, req, &r);  // no token either
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
    EXPECT_EQ(r.value(), 0.0);
  }

  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 30s);
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    echo::EchoRequest req;
    req.set_model("echo");
    req.set_value(4);
    auto reader = c.echo->Count(&ctx, req);
    std::vector<double> got;
    echo::EchoReply r;
    while (reader->Read(&r)) got.push_back(r.value());
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(got, (std::vector<double>{3, 6, 9, 12}));
  }

  httplib::Client http("127.0.0.1", rt.metrics_port());
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  const std::string m = res->body;
  const std::string labels = "{service=\"mamba.test.v1.EchoService\",method=\"Echo\",code=";
  EXPECT_TRUE(contains(m, "mamba_requests_total" + labels + "\"UNAUTHENTICATED\"} 2\n")) << m;
  EXPECT_TRUE(contains(m, "mamba_requests_total" + labels + "\"OK\"} 1\n")) << m;
  EXPECT_TRUE(contains(m, "mamba_requests_total" + labels + "\"FAILED_PRECONDITION\"} 1\n")) << m;
  EXPECT_TRUE(contains(m, "mamba_requests_total" + labels + "\"INVALID_ARGUMENT\"} 1\n")) << m;
  EXPECT_TRUE(contains(m, "mamba_request_duration_seconds_count{service=\"mamba.test.v1.EchoService\",method=\"Echo\"} 6\n"))
      << m;
  EXPECT_TRUE(contains(m, "mamba_model_version{model=\"echo\"} 1\n")) << m;
  EXPECT_TRUE(contains(m, "mamba_memory_bytes{kind=\"rss\"} ")) << m;
  EXPECT_TRUE(contains(m, "mamba_handler_bypass_total 1\n")) << m;
  auto hz = http.Get("/healthz");
  ASSERT_TRUE(hz);
  EXPECT_EQ(hz->status, 200);

  // A call in flight when the shutdown starts completes; health goes NOT_SERVING meanwhile.
  std::promise<void> open_gate;
  impl.gate = open_gate.get_future().share();
  auto entered = impl.entered.get_future();
  echo::EchoReply inflight_reply;
  grpc::Status inflight_status;
  std::thread inflight([&] { inflight_status = c.call("echo", 5, kToken, &inflight_reply, /*block=*/true); });
  ASSERT_EQ(entered.wait_for(60s), std::future_status::ready);
  rt.request_shutdown();
  bool saw_not_serving = false;
  for (int i = 0; i < 2000 && !saw_not_serving; ++i) {  // the drain lasts 3 s; usually the first check sees it
    saw_not_serving = c.check("") == HealthCheckResponse::NOT_SERVING && c.check(kService) == HealthCheckResponse::NOT_SERVING;
    if (!saw_not_serving) std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(saw_not_serving);
  EXPECT_FALSE(rt.serving());
  auto hz2 = http.Get("/healthz");
  if (hz2) {
    EXPECT_EQ(hz2->status, 503);
  }
  open_gate.set_value();
  inflight.join();
  EXPECT_TRUE(inflight_status.ok()) << inflight_status.error_message();
  EXPECT_EQ(inflight_reply.value(), 15.0);
  rt.wait();
  // Shut down: new calls fail.
  Client c2(rt.port());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  EXPECT_FALSE(c2.call("echo", 1, kToken, &reply).ok());
}

TEST(Loopback, RunReturnsZeroAfterSigterm) {
  const fs::path dir = fresh_dir("sigterm");
  ServerOptions o = test_options(dir);
  o.drain_seconds = 0;
  o.metrics_port = 0;
  Runtime rt(o);
  add_model(dir, 1, 2.0);
  ModelRepository<EchoModel> repo(o.model_root, load_echo, {.poll_seconds = 0});
  rt.serve_health_from(repo, kService);
  repo.start();
  EchoImpl impl(rt, repo);
  std::atomic<int> rc{-1};
  std::thread server([&] { rc = rt.run({&impl}); });
  for (int i = 0; i < 6000 && !fs::exists(dir / "port"); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(fs::exists(dir / "port"));
  int port = 0;
  std::ifstream(dir / "port") >> port;
  Client c(port);
  EXPECT_EQ(c.check(kService), HealthCheckResponse::SERVING);
  echo::EchoReply reply;
  EXPECT_TRUE(c.call("echo", 4, kToken, &reply).ok());
  EXPECT_EQ(reply.value(), 8.0);
  ::kill(::getpid(), SIGTERM);
  server.join();
  EXPECT_EQ(rc, 0);
}

TEST(Loopback, APortInUseIsAnError) {
  const fs::path dir = fresh_dir("busy");
  Runtime first(test_options(dir));
  first.start({});
  ServerOptions o = test_options(dir);
  o.port = first.port();
  o.port_file.clear();
  Runtime second(o);
  EXPECT_THROW(second.start({}), mamba::Error);
  first.request_shutdown();
  first.wait();
}

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate.
bool make_certs(const fs::path& d) {
  std::ofstream(d / "server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  std::ofstream(d / "client.ext") << "extendedKeyUsage=clientAuth\n";
  const std::string q = "cd '" + d.string() + "' && ";
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
  const std::string cmd =
      q + "openssl req -x509" + ec + "-keyout ca.key -out ca.pem -days 2 -subj /CN=mamba-test-ca && " +
      "openssl req" + ec + "-keyout server.key -out server.csr -subj /CN=localhost && " +
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
      "-extfile server.ext && " +
      "openssl req" + ec + "-keyout client.key -out client.csr -subj /CN=mamba-test-client && " +
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 "
      "-extfile client.ext";
  return std::system((cmd + " > openssl.log 2>&1").c_str()) == 0;
}

}  // namespace

TEST(Loopback, MutualTls) {
  if (std::system("command -v openssl > /dev/null 2>&1") != 0) GTEST_SKIP() << "openssl not installed";
  const fs::path dir = fresh_dir("mtls");
  ASSERT_TRUE(make_certs(dir)) << slurp(dir / "openssl.log");
  add_model(dir, 1, 2.0);
  ServerOptions o = test_options(dir);
  o.tls_cert = (dir / "server.pem").string();
  o.tls_key = (dir / "server.key").string();
  o.tls_client_ca = (dir / "ca.pem").string();
  o.drain_seconds = 0;
  finalize_server_options(o);
  Runtime rt(o);
  ModelRepository<EchoModel> repo(o.model_root, load_echo, {.poll_seconds = 0});
  rt.serve_health_from(repo, kService);
  repo.start();
  EchoImpl impl(rt, repo);
  rt.start({&impl});

  auto call_with = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(rt.port()), creds, args);
    auto stub = echo::EchoService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    echo::EchoRequest req;
    req.set_model("echo");
    req.set_value(21);
    echo::EchoReply reply;
    grpc::Status s = stub->Echo(&ctx, req, &reply);
    return std::make_pair(s, reply.value());
  };
  grpc::SslCredentialsOptions with_cert;
  with_cert.pem_root_certs = slurp(dir / "ca.pem");
  with_cert.pem_private_key = slurp(dir / "client.key");
  with_cert.pem_cert_chain = slurp(dir / "client.pem");
  auto [ok, value] = call_with(grpc::SslCredentials(with_cert));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(value, 42.0);

  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = slurp(dir / "ca.pem");
  EXPECT_FALSE(call_with(grpc::SslCredentials(no_cert)).first.ok());  // mTLS: a client certificate is required
  EXPECT_FALSE(call_with(grpc::InsecureChannelCredentials()).first.ok());
  rt.request_shutdown();
  rt.wait();
}

TEST(Loopback, MissingTlsFilesAreAnError) {
  const fs::path dir = fresh_dir("tlsmissing");
  ServerOptions o = test_options(dir);
  o.tls_cert = (dir / "nope.pem").string();
  o.tls_key = (dir / "nope.key").string();
  finalize_server_options(o);
  Runtime rt(o);
  EXPECT_THROW(rt.start({}), mamba::Error);
}

TEST(Loopback, ReflectionListsTheServices) {
  const fs::path dir = fresh_dir("reflection");
  ServerOptions o = test_options(dir);
  o.drain_seconds = 0;
  Runtime rt(o);
  ModelRepository<EchoModel> repo(o.model_root, load_echo, {.poll_seconds = 0});
  repo.start();
  EchoImpl impl(rt, repo);
  rt.start({&impl});

  // grpc.reflection.v1alpha over a generic stub (its generated client is not installed):
  // ServerReflectionRequest{list_services: ""} is field 7, an empty string: bytes 3a 00.
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(rt.port()), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;  // no token: reflection is not behind auth
  ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && got == reinterpret_cast<void*>(tag) && ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  grpc::Slice request(std::string("\x3a\x00", 2));
  call->Write(grpc::ByteBuffer(&request, 1), reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_NE(bytes.find("mamba.test.v1.EchoService"), std::string::npos);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  EXPECT_TRUE(step(5));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  rt.request_shutdown();
  rt.wait();
}
