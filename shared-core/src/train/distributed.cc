// The environment, the rendezvous and the "cpu" (TCP ring) backend of distributed.h.
#include "mamba/train/distributed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "mamba/tensor/tensor.h"

namespace mamba::train {

void Communicator::all_reduce_mean(float* data, size_t n) {
  all_reduce_sum(data, n);
  const auto w = static_cast<float>(world_size());
  if (world_size() > 1)
    for (size_t i = 0; i < n; ++i) data[i] /= w;
}

void Communicator::all_reduce_mean(double* data, size_t n) {
  all_reduce_sum(data, n);
  const auto w = static_cast<double>(world_size());
  if (world_size() > 1)
    for (size_t i = 0; i < n; ++i) data[i] /= w;
}

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail_dist(const std::string& message) { throw Error("distributed: " + message); }

std::string fmt_seconds(double s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

// ---- the environment ------------------------------------------------------------------

const char* lookup(const EnvLookup& env, const char* name) {
  const char* v = env ? env(name) : std::getenv(name);
  return (v && *v) ? v : nullptr;
}

int64_t parse_int(const char* name, const char* value) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0')
    fail_dist(std::string(name) + "='" + value + "' is not an integer");
  return v;
}

double parse_seconds(const char* name, const char* value) {
  char* end = nullptr;
  const double v = std::strtod(value, &end);
  if (end == value || *end != '\0' || !std::isfinite(v) || v <= 0)
    fail_dist(std::string(name) + "='" + value + "' must be a number of seconds > 0");
  return v;
}

// One setting that two spellings may give (MAMBA_RANK / RANK): they must agree.
std::optional<int64_t> paired_int(const EnvLookup& env, const char* ours, const char* theirs) {
  const char* a = lookup(env, ours);
  const char* b = lookup(env, theirs);
  std::optional<int64_t> va, vb;
  if (a) va = parse_int(ours, a);
  if (b) vb = parse_int(theirs, b);
  if (va && vb && *va != *vb)
    fail_dist(std::string(ours) + "=" + a + " and " + theirs + "=" + b + " disagree (set one, or both to the same value)");
  return va ? va : vb;
}

struct HostPort {
  std::string host;
  int port = 0;
};

HostPort parse_tcp(const std::string& spec, const std::string& what) {
  const std::string rest = spec.substr(6);  // after tcp://
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
    fail_dist(what + "='" + spec + "' must be tcp://host:port");
  HostPort hp;
  hp.host = rest.substr(0, colon);
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') hp.host = hp.host.substr(1, hp.host.size() - 2);
  const std::string port = rest.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || p < 1 || p > 65535)
    fail_dist(what + "='" + spec + "': port '" + port + "' must be an integer in 1..65535");
  hp.port = static_cast<int>(p);
  return hp;
}

void check_rendezvous(const std::string& spec, const std::string& what) {
  if (spec.rfind("file:", 0) == 0) {
    if (spec.size() == 5) fail_dist(what + "='" + spec + "': file: needs a path (file:/shared/dir/rendezvous)");
    return;
  }
  if (spec.rfind("tcp://", 0) == 0) {
    parse_tcp(spec, what);
    return;
  }
  fail_dist(what + "='" + spec + "' must be file:/path or tcp://host:port");
}

}  // namespace

DistConfig dist_config_from_env(const EnvLookup& env) {
  DistConfig c;
  const auto rank = paired_int(env, "MAMBA_RANK", "RANK");
  const auto world = paired_int(env, "MAMBA_WORLD_SIZE", "WORLD_SIZE");
  if (!rank && !world) return c;  // a single process
  if (!world)
    fail_dist("MAMBA_RANK (or RANK) is set but MAMBA_WORLD_SIZE is not: set MAMBA_WORLD_SIZE to the number of processes");
  if (*world < 1 || *world > 65536)
    fail_dist("MAMBA_WORLD_SIZE=" + std::to_string(*world) + " must be in 1..65536");
  if (!rank)
    fail_dist("MAMBA_WORLD_SIZE=" + std::to_string(*world) + " is set but MAMBA_RANK (or RANK) is not: set it to this " +
              "process's rank in 0.." + std::to_string(*world - 1));
  if (*rank < 0 || *rank >= *world)
    fail_dist("MAMBA_RANK=" + std::to_string(*rank) + " must be in 0..MAMBA_WORLD_SIZE-1 = 0.." +
              std::to_string(*world - 1));
  c.rank = static_cast<int>(*rank);
  c.world_size = static_cast<int>(*world);
  const auto local = paired_int(env, "MAMBA_LOCAL_RANK", "LOCAL_RANK");
  if (local && *local < 0) fail_dist("MAMBA_LOCAL_RANK=" + std::to_string(*local) + " must be >= 0");
  c.local_rank = local ? static_cast<int>(*local) : c.rank;

  if (const char* r = lookup(env, "MAMBA_RENDEZVOUS")) {
    c.rendezvous = r;
    check_rendezvous(c.rendezvous, "MAMBA_RENDEZVOUS");
  } else {
    const char* addr = lookup(env, "MASTER_ADDR");
    const char* port = lookup(env, "MASTER_PORT");
    if (addr && !port) fail_dist("MASTER_ADDR is set but MASTER_PORT is not (both name rank 0's tcp://host:port)");
    if (port && !addr) fail_dist("MASTER_PORT is set but MASTER_ADDR is not (both name rank 0's tcp://host:port)");
    if (addr) {
      c.rendezvous = std::string("tcp://") + addr + ":" + port;
      check_rendezvous(c.rendezvous, "MASTER_ADDR:MASTER_PORT");
    }
  }
  if (c.world_size > 1 && c.rendezvous.empty())
    fail_dist("MAMBA_WORLD_SIZE=" + std::to_string(c.world_size) +
              " needs a rendezvous: set MAMBA_RENDEZVOUS=file:/shared/path or tcp://host:port (or MASTER_ADDR and " +
              "MASTER_PORT)");
  if (const char* t = lookup(env, "MAMBA_RENDEZVOUS_TIMEOUT_S")) c.rendezvous_timeout_s = parse_seconds("MAMBA_RENDEZVOUS_TIMEOUT_S", t);
  if (const char* t = lookup(env, "MAMBA_COMM_TIMEOUT_S")) c.op_timeout_s = parse_seconds("MAMBA_COMM_TIMEOUT_S", t);
  if (const char* h = lookup(env, "MAMBA_RENDEZVOUS_HOST")) c.advertise_host = h;
  return c;
}

namespace {

// ---- the local communicator -------------------------------------------------------------

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  const char* backend() const override { return "local"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int root) override {
    if (root != 0) fail_dist("broadcast: root " + std::to_string(root) + " is not a rank of world size 1");
  }
  void barrier() override {}
};

// ---- sockets ------------------------------------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::string errno_text() { return std::strerror(errno); }

void set_nonblocking(int fd) {
  const int fl = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int ms_left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1000));  // wake at least every second
}

// An IPv4 address for `host` ("localhost", "127.0.0.1", a name).
sockaddr_in resolve(const std::string& host, int port, const std::string& what) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res) fail_dist(what + ": cannot resolve host '" + host + "': " + ::gai_strerror(rc));
  sockaddr_in a = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  ::freeaddrinfo(res);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

std::string ip_of(const sockaddr_in& a) {
  char buf[INET_ADDRSTRLEN] = {0};
  ::inet_ntop(AF_INET, &a.sin_addr, buf, sizeof buf);
  return buf;
}

// A listening socket on `addr` (port 0: any free port). Returns the socket and its port.
std::pair<Fd, int> listen_on(sockaddr_in addr, const std::string& what) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) fail_dist(what + ": socket: " + errno_text());
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    fail_dist(what + ": cannot listen on " + ip_of(addr) + ":" + std::to_string(ntohs(addr.sin_port)) + ": " +
              errno_text());
  if (::listen(fd.get(), 1024) != 0) fail_dist(what + ": listen: " + errno_text());
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  set_nonblocking(fd.get());
  return {std::move(fd), ntohs(addr.sin_port)};
}

// Accepts one connection before `deadline`; an invalid Fd when the deadline passes.
Fd accept_until(int listener, Clock::time_point deadline, sockaddr_in* peer) {
  while (true) {
    pollfd p{listener, POLLIN, 0};
    const int left = ms_left(deadline);
    if (left <= 0 && Clock::now() >= deadline) return Fd();
    const int rc = ::poll(&p, 1, std::max(left, 1));
    if (rc < 0 && errno != EINTR) fail_dist("accept: poll: " + errno_text());
    if (rc <= 0) continue;
    socklen_t len = sizeof(sockaddr_in);
    sockaddr_in tmp{};
    const int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(peer ? peer : &tmp), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
      fail_dist("accept: " + errno_text());
    }
    set_nonblocking(fd);
    set_nodelay(fd);
    return Fd(fd);
  }
}

// One connection attempt, bounded by `deadline`. Returns an invalid Fd (and the reason)
// when refused or not answered in time.
Fd try_connect(const sockaddr_in& addr, Clock::time_point deadline, std::string* why) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) fail_dist("socket: " + errno_text());
  set_nonblocking(fd.get());
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      *why = errno_text();
      return Fd();
    }
    while (true) {
      pollfd p{fd.get(), POLLOUT, 0};
      const int rc = ::poll(&p, 1, std::max(ms_left(deadline), 1));
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) {
        if (Clock::now() < deadline) continue;
        *why = "no answer";
        return Fd();
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        *why = std::strerror(err);
        return Fd();
      }
      break;
    }
  }
  set_nodelay(fd.get());
  return fd;
}

// Moves bytes on non-blocking sockets until both directions are done: `out` bytes to
// `send_fd` and `in` bytes from `recv_fd` at the same time (so a ring never deadlocks on
// full socket buffers). Either side may be empty (fd -1 or 0 bytes).
struct Transfer {
  int send_fd = -1;
  const char* out = nullptr;
  size_t out_n = 0;
  int recv_fd = -1;
  char* in = nullptr;
  size_t in_n = 0;
};

// What a failed transfer reports: who the peers were, which call, the deadline.
struct TransferContext {
  int self = 0;
  int send_peer = -1;
  int recv_peer = -1;
  std::string call;
  double timeout_s = 0;
  const char* timeout_var = "MAMBA_COMM_TIMEOUT_S";
};

void transfer(const Transfer& t, Clock::time_point deadline, const TransferContext& ctx) {
  size_t sent = 0, got = 0;
  const std::string me = "rank " + std::to_string(ctx.self);
  while (sent < t.out_n || got < t.in_n) {
    pollfd p[2];
    int np = 0, si = -1, ri = -1;
    if (sent < t.out_n) si = np, p[np++] = {t.send_fd, POLLOUT, 0};
    if (got < t.in_n) ri = np, p[np++] = {t.recv_fd, POLLIN, 0};
    const int rc = ::poll(p, static_cast<nfds_t>(np), std::max(ms_left(deadline), 1));
    if (rc < 0) {
      if (errno == EINTR) continue;
      fail_dist(me + ": " + ctx.call + ": poll: " + errno_text());
    }
    if (rc == 0) {
      if (Clock::now() < deadline) continue;
      const int peer = got < t.in_n ? ctx.recv_peer : ctx.send_peer;
      fail_dist(me + ": " + ctx.call + " timed out after " + fmt_seconds(ctx.timeout_s) + " s (" + ctx.timeout_var +
                ") waiting for rank " + std::to_string(peer));
    }
    if (si >= 0 && (p[si].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t k = ::send(t.send_fd, t.out + sent, t.out_n - sent, MSG_NOSIGNAL);
      if (k > 0) {
        sent += static_cast<size_t>(k);
      } else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        fail_dist(me + ": " + ctx.call + ": the connection to rank " + std::to_string(ctx.send_peer) + " failed (" +
                  errno_text() + "; did rank " + std::to_string(ctx.send_peer) + " exit or crash?)");
      }
    }
    if (ri >= 0 && (p[ri].revents & (POLLIN | POLLERR | POLLHUP))) {
      const ssize_t k = ::recv(t.recv_fd, t.in + got, t.in_n - got, 0);
      if (k > 0) {
        got += static_cast<size_t>(k);
      } else if (k == 0) {
        fail_dist(me + ": " + ctx.call + ": the connection from rank " + std::to_string(ctx.recv_peer) +
                  " closed (did rank " + std::to_string(ctx.recv_peer) + " exit or crash?)");
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        fail_dist(me + ": " + ctx.call + ": the connection from rank " + std::to_string(ctx.recv_peer) + " failed (" +
                  errno_text() + "; did rank " + std::to_string(ctx.recv_peer) + " exit or crash?)");
      }
    }
  }
}

void send_bytes(int fd, const void* p, size_t n, Clock::time_point deadline, const TransferContext& ctx) {
  Transfer t;
  t.send_fd = fd;
  t.out = static_cast<const char*>(p);
  t.out_n = n;
  transfer(t, deadline, ctx);
}

void recv_bytes(int fd, void* p, size_t n, Clock::time_point deadline, const TransferContext& ctx) {
  Transfer t;
  t.recv_fd = fd;
  t.in = static_cast<char*>(p);
  t.in_n = n;
  transfer(t, deadline, ctx);
}

// ---- the rendezvous protocol ------------------------------------------------------------------

constexpr uint32_t kMagic = 0x4d424452;  // "MBDR"
constexpr uint32_t kVersion = 1;

struct Hello {  // a rank to rank 0, and a ring neighbour to the next
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  int32_t rank = 0;
  int32_t world_size = 0;
  int32_t ring_port = 0;
  int32_t purpose = 0;  // 0 join (to rank 0), 1 ring link
};

struct Reply {  // rank 0 to each rank: ok, or why not (then `error_len` bytes of text follow)
  uint32_t magic = kMagic;
  int32_t ok = 0;
  uint32_t error_len = 0;
};

struct Peer {  // where a rank's ring listener is
  char ip[INET_ADDRSTRLEN] = {0};
  int32_t port = 0;
};

// The header of every collective's messages: ranks that disagree on the call fail loudly.
struct CallHeader {
  uint32_t magic = kMagic;
  uint32_t kind = 0;  // 1 all_reduce float, 2 all_reduce double, 3 broadcast
  uint64_t count = 0;
  uint64_t seq = 0;
  int32_t root = 0;
  int32_t pad = 0;
};

const char* kind_name(uint32_t k) {
  switch (k) {
    case 1: return "all_reduce_sum(float)";
    case 2: return "all_reduce_sum(double)";
    case 3: return "broadcast";
    default: return "unknown call";
  }
}

// Rank 0's address as written into a file: rendezvous ("host port\n").
void write_address_file(const std::string& path, const std::string& host, int port) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) fail_dist("rendezvous: cannot write '" + tmp + "' (MAMBA_RENDEZVOUS=file:" + path + ")");
    f << host << ' ' << port << '\n';
    f.flush();
    if (!f) fail_dist("rendezvous: cannot write '" + tmp + "'");
  }
  std::filesystem::rename(tmp, path);
}

std::optional<HostPort> read_address_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  HostPort hp;
  if (!(f >> hp.host >> hp.port) || hp.port <= 0) return std::nullopt;  // absent, or being written
  return hp;
}

class TcpCommunicator final : public Communicator {
 public:
  explicit TcpCommunicator(const DistConfig& c) : cfg_(c) { connect_all(); }

  int rank() const override { return cfg_.rank; }
  int world_size() const override { return cfg_.world_size; }
  const char* backend() const override { return "cpu"; }

  void all_reduce_sum(float* data, size_t n) override { ring_all_reduce(data, n, 1); }
  void all_reduce_sum(double* data, size_t n) override { ring_all_reduce(data, n, 2); }

  void broadcast(void* data, size_t bytes, int root) override {
    if (root < 0 || root >= cfg_.world_size)
      fail_dist("broadcast: root " + std::to_string(root) + " is not a rank of world size " +
                std::to_string(cfg_.world_size));
    const std::string call = "broadcast (call " + std::to_string(seq_ + 1) + ")";
    const auto deadline = op_deadline();
    exchange_headers(3, bytes, root, deadline);
    // A chain along the ring: root -> root+1 -> ... -> root-1.
    const int W = cfg_.world_size, r = cfg_.rank;
    const int next = (r + 1) % W, prev = (r + W - 1) % W;
    char* p = static_cast<char*>(data);
    if (r != root) recv_bytes(prev_.get(), p, bytes, deadline, ctx(call));
    if (next != root) send_bytes(next_.get(), p, bytes, deadline, ctx(call));
    (void)prev;
  }

  void barrier() override {
    double one = 1;
    all_reduce_sum(&one, 1);
  }

 private:
  TransferContext ctx(const std::string& call, double timeout = -1) const {
    TransferContext c;
    c.self = cfg_.rank;
    c.send_peer = (cfg_.rank + 1) % cfg_.world_size;
    c.recv_peer = (cfg_.rank + cfg_.world_size - 1) % cfg_.world_size;
    c.call = call;
    c.timeout_s = timeout > 0 ? timeout : cfg_.op_timeout_s;
    return c;
  }

  Clock::time_point op_deadline() const {
    return Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(cfg_.op_timeout_s * 1000));
  }

  // Each rank sends its call's header to the next and checks the previous rank's.
  void exchange_headers(uint32_t kind, uint64_t count, int root, Clock::time_point deadline) {
    CallHeader mine, theirs;
    mine.kind = kind;
    mine.count = count;
    mine.seq = ++seq_;
    mine.root = root;
    const std::string call = std::string(kind_name(kind)) + " (call " + std::to_string(seq_) + ")";
    Transfer t;
    t.send_fd = next_.get();
    t.out = reinterpret_cast<const char*>(&mine);
    t.out_n = sizeof mine;
    t.recv_fd = prev_.get();
    t.in = reinterpret_cast<char*>(&theirs);
    t.in_n = sizeof theirs;
    transfer(t, deadline, ctx(call));
    if (theirs.magic != kMagic || theirs.kind != mine.kind || theirs.count != mine.count || theirs.seq != mine.seq ||
        theirs.root != mine.root) {
      const int prev = (cfg_.rank + cfg_.world_size - 1) % cfg_.world_size;
      auto describe = [](const CallHeader& h) {
        return std::string(kind_name(h.kind)) + " of " + std::to_string(h.count) + (h.kind == 3 ? " bytes" : " elements") +
               (h.kind == 3 ? " from root " + std::to_string(h.root) : "") + " as call " + std::to_string(h.seq);
      };
      fail_dist("collective mismatch: rank " + std::to_string(cfg_.rank) + " called " + describe(mine) + ", rank " +
                std::to_string(prev) + " called " + describe(theirs) +
                " (every rank must make the same calls in the same order)");
    }
  }

  // The ring: reduce-scatter (W-1 steps), then all-gather (W-1 steps); see the header.
  template <class T> void ring_all_reduce(T* data, size_t n, uint32_t kind) {
    const int W = cfg_.world_size, r = cfg_.rank;
    const auto deadline = op_deadline();
    exchange_headers(kind, n, 0, deadline);
    const std::string call = std::string(kind_name(kind)) + " (call " + std::to_string(seq_) + ")";
    const size_t base = n / static_cast<size_t>(W), rem = n % static_cast<size_t>(W);
    auto begin = [&](int c) { return static_cast<size_t>(c) * base + std::min(static_cast<size_t>(c), rem); };
    auto mod = [W](int x) { return ((x % W) + W) % W; };
    std::vector<T>& tmp = scratch<T>();
    tmp.resize(base + 1);
    const TransferContext tc = ctx(call);
    for (int s = 0; s < W - 1; ++s) {
      const int sc = mod(r - s), rc = mod(r - s - 1);
      Transfer t;
      t.send_fd = next_.get();
      t.out = reinterpret_cast<const char*>(data + begin(sc));
      t.out_n = (begin(sc + 1) - begin(sc)) * sizeof(T);
      t.recv_fd = prev_.get();
      t.in = reinterpret_cast<char*>(tmp.data());
      t.in_n = (begin(rc + 1) - begin(rc)) * sizeof(T);
      transfer(t, deadline, tc);
      T* dst = data + begin(rc);
      const size_t m = begin(rc + 1) - begin(rc);
      for (size_t i = 0; i < m; ++i) dst[i] = tmp[i] + dst[i];  // the partial sum of earlier ranks, then ours
    }
    for (int s = 0; s < W - 1; ++s) {
      const int sc = mod(r + 1 - s), rc = mod(r - s);
      Transfer t;
      t.send_fd = next_.get();
      t.out = reinterpret_cast<const char*>(data + begin(sc));
      t.out_n = (begin(sc + 1) - begin(sc)) * sizeof(T);
      t.recv_fd = prev_.get();
      t.in = reinterpret_cast<char*>(data + begin(rc));
      t.in_n = (begin(rc + 1) - begin(rc)) * sizeof(T);
      transfer(t, deadline, tc);
    }
  }

  template <class T> std::vector<T>& scratch() {
    if constexpr (std::is_same_v<T, float>) return scratch_f_;
    else return scratch_d_;
  }

  // ---- rendezvous ----
  void connect_all() {
    const int W = cfg_.world_size, r = cfg_.rank;
    const double T = cfg_.rendezvous_timeout_s;
    const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(T * 1000));
    const bool file = cfg_.rendezvous.rfind("file:", 0) == 0;
    const std::string file_path = file ? cfg_.rendezvous.substr(5) : "";
    const std::string where = "MAMBA_RENDEZVOUS=" + cfg_.rendezvous;
    const std::string timeout_text = fmt_seconds(T) + " s (MAMBA_RENDEZVOUS_TIMEOUT_S)";

    std::vector<Peer> table(static_cast<size_t>(W));
    Fd ring_listener;
    std::string rank0_host;  // how this rank reaches rank 0

    if (r == 0) {
      sockaddr_in bind_addr{};
      std::string advertise;
      if (file) {
        advertise = cfg_.advertise_host.empty() ? "127.0.0.1" : cfg_.advertise_host;
        bind_addr = resolve(cfg_.advertise_host.empty() ? "127.0.0.1" : "0.0.0.0", 0, "rendezvous");
      } else {
        const HostPort hp = parse_tcp(cfg_.rendezvous, "MAMBA_RENDEZVOUS");
        bind_addr = resolve(hp.host, hp.port, "rendezvous (" + where + ")");
        // A loopback address is bound as is (one host); any other is served on every interface.
        if ((ntohl(bind_addr.sin_addr.s_addr) >> 24) != 127) bind_addr.sin_addr.s_addr = htonl(INADDR_ANY);
      }
      auto [store, store_port] = listen_on(bind_addr, "rendezvous (" + where + ")");
      sockaddr_in ring_addr = bind_addr;
      ring_addr.sin_port = 0;
      auto [rl, ring_port] = listen_on(ring_addr, "rendezvous ring listener");
      ring_listener = std::move(rl);
      table[0].port = ring_port;
      if (file) write_address_file(file_path, advertise, store_port);

      // Every other rank connects and says who it is.
      std::vector<Fd> joined(static_cast<size_t>(W));
      std::string error;
      int count = 1;
      while (count < W && error.empty()) {
        sockaddr_in peer{};
        Fd c = accept_until(store.get(), deadline, &peer);
          if (!c.valid()) break;
        Hello h;
        try {
          // A connection that says nothing (not one of ours) is dropped after 5 s.
          recv_bytes(c.get(), &h, sizeof h, std::min(deadline, Clock::now() + std::chrono::seconds(5)),
                     rendezvous_ctx(-1, timeout_text));
        } catch (const Error&) {
          continue;  // a stray connection or one that gave up
        }
        if (h.magic != kMagic || h.version != kVersion || h.purpose != 0) continue;  // not one of ours
        if (h.world_size != W) {
          error = "rank " + std::to_string(h.rank) + " has MAMBA_WORLD_SIZE=" + std::to_string(h.world_size) +
                  " but rank 0 has " + std::to_string(W);
        } else if (h.rank < 1 || h.rank >= W) {
          error = "a process joined with rank " + std::to_string(h.rank) + ", outside 1.." + std::to_string(W - 1);
        } else if (joined[static_cast<size_t>(h.rank)].valid()) {
          error = "two processes joined with MAMBA_RANK=" + std::to_string(h.rank);
        }
        if (!error.empty()) {
          send_error(c.get(), error, deadline);
          break;
        }
        std::snprintf(table[static_cast<size_t>(h.rank)].ip, INET_ADDRSTRLEN, "%s", ip_of(peer).c_str());
        table[static_cast<size_t>(h.rank)].port = h.ring_port;
        joined[static_cast<size_t>(h.rank)] = std::move(c);
        ++count;
      }
      if (error.empty() && count < W) {
        std::string missing;
        for (int k = 1; k < W; ++k)
          if (!joined[static_cast<size_t>(k)].valid()) missing += (missing.empty() ? "" : ", ") + std::to_string(k);
        error = "rendezvous timed out after " + timeout_text + ": rank 0 waited at " + where + " for rank" +
                (missing.find(',') != std::string::npos ? "s " : " ") + missing + " of world size " +
                std::to_string(W) + ", which never joined";
      }
      if (file) std::filesystem::remove(file_path);  // the job is formed (or failed): nobody else may use it
      if (!error.empty()) {
        for (auto& c : joined)
          if (c.valid()) send_error(c.get(), error, deadline);
        fail_dist(error);
      }
      Reply ok;
      ok.ok = 1;
      for (int k = 1; k < W; ++k) {
        const auto& c = joined[static_cast<size_t>(k)];
        send_bytes(c.get(), &ok, sizeof ok, deadline, rendezvous_ctx(k, timeout_text));
        send_bytes(c.get(), table.data(), sizeof(Peer) * table.size(), deadline, rendezvous_ctx(k, timeout_text));
      }
    } else {
      // Find rank 0, connect (retrying until it listens), say who we are, get the table.
      Fd c;
      std::string why = "no answer";
      HostPort target;
      while (!c.valid()) {
        if (Clock::now() >= deadline) {
          if (file && !std::filesystem::exists(file_path))
            fail_dist("rendezvous timed out after " + timeout_text + ": rank " + std::to_string(r) + " waited for '" +
                      file_path + "' (" + where + "), which rank 0 never wrote (did rank 0 start?)");
          fail_dist("rendezvous timed out after " + timeout_text + ": rank " + std::to_string(r) +
                    " could not reach rank 0 at " + (file ? target.host + ":" + std::to_string(target.port) + " (" + where + ")" : where) +
                    ": " + why + " (did rank 0 start?)");
        }
        if (file) {
          auto hp = read_address_file(file_path);
          if (!hp) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
          }
          target = *hp;
        } else {
          target = parse_tcp(cfg_.rendezvous, "MAMBA_RENDEZVOUS");
        }
        const sockaddr_in addr = resolve(target.host, target.port, "rendezvous (" + where + ")");
        c = try_connect(addr, std::min(deadline, Clock::now() + std::chrono::seconds(5)), &why);
        if (!c.valid()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      rank0_host = target.host;
      // Our ring listener, on the address rank 0 sees us at.
      sockaddr_in local{};
      socklen_t len = sizeof local;
      ::getsockname(c.get(), reinterpret_cast<sockaddr*>(&local), &len);
      local.sin_port = 0;
      auto [rl, ring_port] = listen_on(local, "rendezvous ring listener");
      ring_listener = std::move(rl);
      Hello h;
      h.rank = r;
      h.world_size = W;
      h.ring_port = ring_port;
      const TransferContext tc = rendezvous_ctx(0, timeout_text);
      send_bytes(c.get(), &h, sizeof h, deadline, tc);
      // Rank 0 answers when everyone has joined, or with the reason at its own deadline
      // (which may fall a little after ours): wait a few seconds more to hear it.
      const auto reply_deadline = deadline + std::chrono::seconds(5);
      Reply rep;
      recv_bytes(c.get(), &rep, sizeof rep, reply_deadline, tc);
      if (rep.magic != kMagic) fail_dist("rendezvous: rank 0 at " + where + " sent an unexpected reply");
      if (!rep.ok) {
        std::string text(std::min<uint32_t>(rep.error_len, 4096), '\0');
        recv_bytes(c.get(), text.data(), text.size(), reply_deadline, tc);
        fail_dist("rendezvous failed (reported by rank 0): " + text);
      }
      recv_bytes(c.get(), table.data(), sizeof(Peer) * table.size(), reply_deadline, tc);
    }

    // The ring: connect to the next rank, accept the previous one.
    const int next = (r + 1) % W, prev = (r + W - 1) % W;
    const std::string next_host = next == 0 ? rank0_host : std::string(table[static_cast<size_t>(next)].ip);
    std::string why = "no answer";
    const sockaddr_in next_addr =
        resolve(next_host, table[static_cast<size_t>(next)].port, "ring link to rank " + std::to_string(next));
    while (!next_.valid()) {
      if (Clock::now() >= deadline)
        fail_dist("rendezvous timed out after " + timeout_text + ": rank " + std::to_string(r) +
                  " could not connect to rank " + std::to_string(next) + " at " + next_host + ":" +
                  std::to_string(table[static_cast<size_t>(next)].port) + ": " + why);
      next_ = try_connect(next_addr, deadline, &why);
      if (!next_.valid()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Hello link;
    link.rank = r;
    link.world_size = W;
    link.purpose = 1;
    send_bytes(next_.get(), &link, sizeof link, deadline, rendezvous_ctx(next, timeout_text));
    while (!prev_.valid()) {
      Fd c = accept_until(ring_listener.get(), deadline, nullptr);
      if (!c.valid())
        fail_dist("rendezvous timed out after " + timeout_text + ": rank " + std::to_string(r) + " waited for rank " +
                  std::to_string(prev) + " to connect");
      Hello h;
      try {
        recv_bytes(c.get(), &h, sizeof h, deadline, rendezvous_ctx(prev, timeout_text));
      } catch (const Error&) {
        continue;
      }
      if (h.magic == kMagic && h.purpose == 1 && h.rank == prev && h.world_size == W) prev_ = std::move(c);
    }
    barrier();  // everyone is linked
  }

  TransferContext rendezvous_ctx(int peer, const std::string& timeout_text) const {
    TransferContext c;
    c.self = cfg_.rank;
    c.send_peer = peer;
    c.recv_peer = peer;
    c.call = "rendezvous";
    c.timeout_s = cfg_.rendezvous_timeout_s;
    c.timeout_var = "MAMBA_RENDEZVOUS_TIMEOUT_S";
    (void)timeout_text;
    return c;
  }

  void send_error(int fd, const std::string& text, Clock::time_point deadline) {
    Reply rep;
    rep.ok = 0;
    rep.error_len = static_cast<uint32_t>(text.size());
    try {
      send_bytes(fd, &rep, sizeof rep, deadline, rendezvous_ctx(-1, ""));
      send_bytes(fd, text.data(), text.size(), deadline, rendezvous_ctx(-1, ""));
    } catch (const Error&) {
      // that rank is gone; rank 0 reports the error itself
    }
  }

  DistConfig cfg_;
  Fd next_, prev_;  // we send to the next rank and receive from the previous one
  uint64_t seq_ = 0;
  std::vector<float> scratch_f_;
  std::vector<double> scratch_d_;
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

std::unique_ptr<Communicator> make_communicator(const DistConfig& config, const std::string& backend) {
  if (backend != "cpu" && backend != "nccl")
    fail_dist("unknown backend '" + backend + "' (cpu or nccl)");
  if (config.world_size < 1) fail_dist("world_size " + std::to_string(config.world_size) + " must be >= 1");
  if (config.rank < 0 || config.rank >= config.world_size)
    fail_dist("rank " + std::to_string(config.rank) + " must be in 0.." + std::to_string(config.world_size - 1));
  if (backend == "nccl" && !nccl_available())
    fail_dist("the nccl backend is not in this build (configure with CUDA and NCCL: nccl.h and libnccl.so)");
  if (config.world_size == 1) return make_local_communicator();
  if (config.rendezvous.empty())
    fail_dist("world size " + std::to_string(config.world_size) + " needs a rendezvous (MAMBA_RENDEZVOUS)");
  check_rendezvous(config.rendezvous, "MAMBA_RENDEZVOUS");
  if (!(config.rendezvous_timeout_s > 0)) fail_dist("rendezvous_timeout_s must be > 0");
  if (!(config.op_timeout_s > 0)) fail_dist("op_timeout_s must be > 0");
  auto tcp = std::make_unique<TcpCommunicator>(config);
  if (backend == "nccl") return detail::make_nccl_communicator(config, std::move(tcp));
  return tcp;
}

std::unique_ptr<Communicator> communicator_from_env(const std::string& backend) {
  return make_communicator(dist_config_from_env(), backend);
}

}  // namespace mamba::train
