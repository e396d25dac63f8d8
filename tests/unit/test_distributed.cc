// Data parallel (train/distributed.h, launch.h, the Trainer and DataLoader with world/rank):
// real processes on loopback TCP, checked against plain references. Nothing here times
// anything; a process that would hang is killed after a safety limit and fails the test.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mamba/io/safetensors.h"
#include "mamba/train/data_loader.h"
#include "mamba/train/distributed.h"
#include "util/dist_values.h"

namespace fs = std::filesystem;
namespace mt = mamba::train;
using mamba::testing::kDistSizes;

namespace {

// ---- processes -----------------------------------------------------------------------

struct Outcome {
  int status = -1;  // waitpid status
  std::string out, err;
  bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
  std::string describe() const {
    std::ostringstream s;
    if (WIFEXITED(status)) s << "exit " << WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) s << "signal " << WTERMSIG(status);
    s << "\n--- stdout ---\n" << out << "--- stderr ---\n" << err;
    return s.str();
  }
};

using Env = std::vector<std::pair<std::string, std::string>>;

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::path(MAMBA_TEST_TMP) / "distributed" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Running {
  pid_t pid = -1;
  fs::path out, err;
};

// Starts argv with the distributed variables of this process cleared, then `env` set.
Running spawn(const std::vector<std::string>& argv, const Env& env, const fs::path& log_prefix) {
  Running r;
  r.out = log_prefix.string() + ".out";
  r.err = log_prefix.string() + ".err";
  std::fflush(stdout);  // or the child would write this process's buffered output again
  std::fflush(stderr);
  r.pid = ::fork();
  if (r.pid == 0) {
    for (const char* v : {"MAMBA_RANK", "MAMBA_WORLD_SIZE", "MAMBA_LOCAL_RANK", "MAMBA_RENDEZVOUS",
                          "MAMBA_RENDEZVOUS_TIMEOUT_S", "MAMBA_COMM_TIMEOUT_S", "MAMBA_RENDEZVOUS_HOST", "RANK",
                          "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"})
      ::unsetenv(v);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::FILE* o = std::freopen(r.out.c_str(), "w", stdout);
    std::FILE* e = std::freopen(r.err.c_str(), "w", stderr);
    if (!o || !e) std::_Exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::_Exit(127);
  }
  return r;
}

// Waits for every process; one still running after `limit_s` is killed and fails the test
// (a hang, which is what the timeout tests exist to rule out).
std::vector<Outcome> wait_all(const std::vector<Running>& procs, double limit_s = 240) {
  std::vector<Outcome> res(procs.size());
  std::vector<bool> done(procs.size(), false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(limit_s * 1000));
  size_t left = procs.size();
  while (left > 0) {
    for (size_t i = 0; i < procs.size(); ++i) {
      if (done[i]) continue;
      int st = 0;
      if (::waitpid(procs[i].pid, &st, WNOHANG) == procs[i].pid) {
        res[i].status = st;
        done[i] = true;
        --left;
      }
    }
    if (left == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < procs.size(); ++i)
        if (!done[i]) {
          ::kill(procs[i].pid, SIGKILL);
          ::waitpid(procs[i].pid, &res[i].status, 0);
          ADD_FAILURE() << "process " << i << " did not finish within " << limit_s << " s (hung?)";
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (size_t i = 0; i < procs.size(); ++i) {
    res[i].out = slurp(procs[i].out);
    res[i].err = slurp(procs[i].err);
  }
  return res;
}

Outcome run(const std::vector<std::string>& argv, const Env& env, const fs::path& log_prefix) {
  return wait_all({spawn(argv, env, log_prefix)}).front();
}

// `world` ranks of mamba-dist-worker started directly (not through the launcher).
std::vector<Outcome> run_ranks(int world, const std::vector<std::string>& args, const std::string& rendezvous,
                               const fs::path& dir, const Env& extra = {}) {
  std::vector<Running> procs;
  for (int r = 0; r < world; ++r) {
    Env env = {{"MAMBA_RANK", std::to_string(r)},
               {"MAMBA_WORLD_SIZE", std::to_string(world)},
               {"MAMBA_RENDEZVOUS", rendezvous},
               {"MAMBA_RENDEZVOUS_TIMEOUT_S", "60"}};
    env.insert(env.end(), extra.begin(), extra.end());
    std::vector<std::string> argv = {MAMBA_DIST_WORKER};
    argv.insert(argv.end(), args.begin(), args.end());
    procs.push_back(spawn(argv, env, dir / ("rank" + std::to_string(r))));
  }
  return wait_all(procs);
}

int free_port() {  // a port nobody listens on right now (the kernel's choice)
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// ---- the collectives' reference ----------------------------------------------------------

// The documented ring order: chunk c of W, element i = ((x_c + x_{c+1}) + ...) + x_{c+W-1}.
template <class T, class F> std::vector<T> ring_reference(size_t n, int W, F value) {
  std::vector<T> out(n);
  const size_t base = n / W, rem = n % W;
  auto begin = [&](int c) { return static_cast<size_t>(c) * base + std::min<size_t>(c, rem); };
  for (int c = 0; c < W; ++c)
    for (size_t i = begin(c); i < begin(c + 1); ++i) {
      T acc = value(c, i);
      for (int k = 1; k < W; ++k) acc = acc + value((c + k) % W, i);
      out[i] = acc;
    }
  return out;
}

// Checks one rank's collectives file against the reference; every rank's file must be
// byte-identical to rank 0's.
void check_collectives(const fs::path& dir, int W) {
  const std::string r0 = slurp(dir / "rank0.bin");
  ASSERT_FALSE(r0.empty());
  for (int r = 1; r < W; ++r)
    EXPECT_TRUE(slurp(dir / ("rank" + std::to_string(r) + ".bin")) == r0) << "rank " << r << " differs from rank 0";
  size_t off = 0;
  auto take = [&](void* dst, size_t bytes) {
    ASSERT_LE(off + bytes, r0.size());
    std::memcpy(dst, r0.data() + off, bytes);
    off += bytes;
  };
  for (size_t n : kDistSizes) {
    std::vector<float> f(n);
    take(f.data(), n * sizeof(float));
    const auto ref_f = ring_reference<float>(n, W, [&](int r, size_t i) { return mamba::testing::dist_value_f(n, r, i); });
    std::vector<double> d(n);
    take(d.data(), n * sizeof(double));
    const auto ref_d = ring_reference<double>(n, W, [&](int r, size_t i) { return mamba::testing::dist_value_d(n, r, i); });
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(&f[i], &ref_f[i], sizeof(float)), 0) << "float n=" << n << " i=" << i << ": " << f[i]
                                                                 << " vs " << ref_f[i];
      ASSERT_EQ(std::memcmp(&d[i], &ref_d[i], sizeof(double)), 0) << "double n=" << n << " i=" << i;
      // and close to the exact sum (a plain sanity bound: W float roundings)
      double exact = 0, mag = 0;
      for (int r = 0; r < W; ++r) {
        exact += static_cast<double>(mamba::testing::dist_value_f(n, r, i));
        mag += std::fabs(static_cast<double>(mamba::testing::dist_value_f(n, r, i)));
      }
      ASSERT_NEAR(f[i], exact, W * 6e-8 * mag + 1e-30);
    }
  }
  {
    const size_t n = mamba::testing::kDistMeanSize;
    std::vector<float> m(n);
    take(m.data(), n * sizeof(float));
    auto ref = ring_reference<float>(n, W, [&](int r, size_t i) { return mamba::testing::dist_value_f(n, r, i); });
    for (size_t i = 0; i < n; ++i) {
      const float want = ref[i] / static_cast<float>(W);
      ASSERT_EQ(std::memcmp(&m[i], &want, sizeof(float)), 0) << "mean i=" << i;
    }
  }
  for (int root = 0; root < W; ++root) {
    std::vector<unsigned char> b(mamba::testing::kDistBroadcastBytes);
    take(b.data(), b.size());
    for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(b[i], mamba::testing::dist_byte(root, i)) << "root " << root << " byte " << i;
  }
  EXPECT_EQ(off, r0.size());
}

// ---- the environment --------------------------------------------------------------------------

mt::DistConfig from(const std::map<std::string, std::string>& vars) {
  return mt::dist_config_from_env([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    from(vars);
  } catch (const mamba::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(DistEnv, NothingSetIsOneProcess) {
  const auto c = from({});
  EXPECT_EQ(c.world_size, 1);
  EXPECT_EQ(c.rank, 0);
  auto comm = mt::make_communicator(c);
  EXPECT_STREQ(comm->backend(), "local");
  float x[3] = {1, 2, 3};
  comm->all_reduce_mean(x, 3);
  comm->broadcast(x, sizeof x, 0);
  comm->barrier();
  EXPECT_EQ(x[2], 3.0f);
}

TEST(DistEnv, MambaVariables) {
  const auto c = from({{"MAMBA_RANK", "2"}, {"MAMBA_WORLD_SIZE", "4"}, {"MAMBA_RENDEZVOUS", "file:/tmp/x/rv"},
                       {"MAMBA_RENDEZVOUS_TIMEOUT_S", "2.5"}, {"MAMBA_LOCAL_RANK", "0"}});
  EXPECT_EQ(c.rank, 2);
  EXPECT_EQ(c.world_size, 4);
  EXPECT_EQ(c.local_rank, 0);
  EXPECT_EQ(c.rendezvous, "file:/tmp/x/rv");
  EXPECT_DOUBLE_EQ(c.rendezvous_timeout_s, 2.5);
}

TEST(DistEnv, TorchrunVariables) {
  const auto c = from({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.5"},
                       {"MASTER_PORT", "29500"}});
  EXPECT_EQ(c.rank, 1);
  EXPECT_EQ(c.world_size, 2);
  EXPECT_EQ(c.local_rank, 1);
  EXPECT_EQ(c.rendezvous, "tcp://10.0.0.5:29500");
  // Both spellings agreeing is fine.
  EXPECT_EQ(from({{"RANK", "1"}, {"MAMBA_RANK", "1"}, {"WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "tcp://h:1"}}).rank, 1);
}

TEST(DistEnv, ErrorsNameTheVariable) {
  EXPECT_NE(error_of({{"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "file:/x"}}).find("MAMBA_RANK"), std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "0"}}).find("MAMBA_WORLD_SIZE"), std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "x"}, {"MAMBA_WORLD_SIZE", "2"}}).find("MAMBA_RANK='x' is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "2"}, {"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "file:/x"}})
                .find("MAMBA_RANK=2 must be in 0..MAMBA_WORLD_SIZE-1 = 0..1"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "1"}, {"RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}}).find("MAMBA_RANK=1 and RANK=0 disagree"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}}).find("needs a rendezvous"), std::string::npos);
  EXPECT_NE(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("MASTER_PORT is not"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "http://h:1"}})
                .find("MAMBA_RENDEZVOUS='http://h:1' must be file:/path or tcp://host:port"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "tcp://h:70000"}})
                .find("port '70000' must be an integer in 1..65535"),
            std::string::npos);
  EXPECT_NE(error_of({{"MAMBA_RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", "file:/x"},
                      {"MAMBA_RENDEZVOUS_TIMEOUT_S", "-1"}})
                .find("MAMBA_RENDEZVOUS_TIMEOUT_S='-1' must be a number of seconds > 0"),
            std::string::npos);
}

TEST(DistEnv, NcclBackendWithoutGpuOrBuildIsAClearError) {
  mt::DistConfig c;
  c.world_size = 1;
  EXPECT_STREQ(mt::make_communicator(c, "nccl")->backend(), "local") << "world size 1 is always local";
  try {
    mt::make_communicator(c, "gloo");
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown backend 'gloo'"), std::string::npos);
  }
}

// Every global batch of the sharded loaders, concatenated in rank order, is the batch of one
// loader with the global batch size; in every epoch, with shuffling and length bucketing.
TEST(DataLoaderShards, RanksTogetherSeeTheGlobalBatches) {
  class Lengths final : public mt::Dataset {
   public:
    int64_t size() const override { return 23; }
    int64_t length(int64_t i) const override { return (i * 7) % 5 + 1; }
    mt::Sample get(int64_t i) const override {
      return {{{"id", mamba::Tensor::from_vector_i64(std::vector<int64_t>(length(i), i), {length(i)})}}};
    }
  };
  auto data = std::make_shared<Lengths>();
  for (bool drop_last : {false, true})
    for (int W : {1, 2, 3, 5}) {
      mt::DataLoaderOptions g;
      g.batch_size = 3 * W;
      g.shuffle = true;
      g.seed = 42;
      g.bucket_size_multiplier = 2;
      g.drop_last = drop_last;
      mt::DataLoader global(data, g);
      std::vector<std::unique_ptr<mt::DataLoader>> ranks;
      for (int r = 0; r < W; ++r) {
        mt::DataLoaderOptions o = g;
        o.batch_size = 3;
        o.world = W;
        o.rank = r;
        o.num_workers = r % 2;  // workers or not: the same batches
        ranks.push_back(std::make_unique<mt::DataLoader>(data, o));
        EXPECT_EQ(ranks.back()->batches_per_epoch(), global.batches_per_epoch());
      }
      for (int epoch = 0; epoch < 2; ++epoch) {
        const auto want = global.plan(epoch);
        for (size_t b = 0; b < want.size(); ++b) {
          std::vector<int64_t> got;
          for (int r = 0; r < W; ++r) {
            const auto batch = ranks[r]->next();
            ASSERT_TRUE(batch.has_value()) << "W=" << W << " rank " << r << " batch " << b;
            if (want[b].size() == static_cast<size_t>(3 * W)) {
              EXPECT_EQ(batch->size(), 3);
            }
            got.insert(got.end(), batch->indices.begin(), batch->indices.end());
            if (batch->size() > 0) {
              EXPECT_EQ(batch->at("id").size(0), batch->size());
            }
          }
          EXPECT_EQ(got, want[b]) << "W=" << W << " epoch " << epoch << " batch " << b;
        }
        for (int r = 0; r < W; ++r) EXPECT_FALSE(ranks[r]->next().has_value());  // epoch end
      }
    }
}

TEST(DataLoaderShards, FewerSamplesThanRanksGiveEmptyBatches) {
  class Plain final : public mt::Dataset {
   public:
    int64_t size() const override { return 13; }
    int64_t length(int64_t) const override { return 1; }
    mt::Sample get(int64_t i) const override { return {{{"x", mamba::Tensor::from_vector_i64({i}, {1})}}}; }
  };
  // Global batches of 10: the last has 3 samples for 5 ranks: parts of 0, 1, 0, 1, 1.
  const std::vector<int64_t> sizes = {0, 1, 0, 1, 1};
  for (int r = 0; r < 5; ++r) {
    mt::DataLoaderOptions o;
    o.batch_size = 2;
    o.world = 5;
    o.rank = r;
    mt::DataLoader l(std::make_shared<Plain>(), o);
    const auto first = l.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->indices, (std::vector<int64_t>{2 * r, 2 * r + 1}));
    const auto last = l.next();
    ASSERT_TRUE(last);
    EXPECT_EQ(last->size(), sizes[r]) << "rank " << r;
    if (last->size() == 0) {
      EXPECT_TRUE(last->fields.empty());
    }
    EXPECT_FALSE(l.next());
  }
  mt::DataLoaderOptions bad;
  bad.world = 2;
  bad.rank = 2;
  try {
    mt::DataLoader l(std::make_shared<Plain>(), bad);
    FAIL();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank must be in 0..world-1 = 0..1, got 2"), std::string::npos);
  }
}

// ---- collectives across real processes ------------------------------------------------------------

TEST(Collectives, TwoRanksOverTcpAreExactAndBitIdentical) {
  const fs::path dir = fresh_dir("coll2");
  const auto res = run_ranks(2, {"collectives", dir.string()}, "tcp://127.0.0.1:" + std::to_string(free_port()), dir);
  for (const auto& o : res) ASSERT_TRUE(o.exited(0)) << o.describe();
  check_collectives(dir, 2);
}

TEST(Collectives, ThreeRanksThroughTheLauncherAreExactAndBitIdentical) {
  const fs::path dir = fresh_dir("coll3");
  const Outcome o = run({MAMBA_LAUNCH, "--nproc", "3", "--", MAMBA_DIST_WORKER, "collectives", dir.string()}, {},
                        dir / "launch");
  ASSERT_TRUE(o.exited(0)) << o.describe();
  check_collectives(dir, 3);
}

TEST(Collectives, FourRanksOverAFile) {
  const fs::path dir = fresh_dir("coll4");
  const auto res = run_ranks(4, {"collectives", dir.string()}, "file:" + (dir / "rv").string(), dir);
  for (const auto& o : res) ASSERT_TRUE(o.exited(0)) << o.describe();
  check_collectives(dir, 4);
  EXPECT_FALSE(fs::exists(dir / "rv")) << "rank 0 removes the rendezvous file once the job is formed";
}

TEST(Collectives, MismatchedCallsFailNamingTheCall) {
  const fs::path dir = fresh_dir("mismatch");
  const auto res = run_ranks(2, {"mismatch"}, "file:" + (dir / "rv").string(), dir);
  for (const auto& o : res) {
    EXPECT_TRUE(o.exited(1)) << o.describe();
    EXPECT_NE(o.err.find("collective mismatch"), std::string::npos) << o.err;
  }
}

// ---- failures: a peer that never comes, a peer that dies ---------------------------------------------

TEST(Rendezvous, MissingPeerTimesOutInsteadOfHanging) {
  const fs::path dir = fresh_dir("timeout");
  const std::string rv = "file:" + (dir / "rv").string();
  const Env base = {{"MAMBA_WORLD_SIZE", "3"}, {"MAMBA_RENDEZVOUS", rv}, {"MAMBA_RENDEZVOUS_TIMEOUT_S", "1"}};
  // Rank 0 and rank 2 come; rank 1 never does.
  Env e0 = base, e2 = base;
  e0.emplace_back("MAMBA_RANK", "0");
  e2.emplace_back("MAMBA_RANK", "2");
  const auto res = wait_all({spawn({MAMBA_DIST_WORKER, "join"}, e0, dir / "r0"), spawn({MAMBA_DIST_WORKER, "join"}, e2, dir / "r2")});
  EXPECT_TRUE(res[0].exited(1)) << res[0].describe();
  EXPECT_NE(res[0].err.find("rendezvous timed out after 1 s (MAMBA_RENDEZVOUS_TIMEOUT_S): rank 0 waited"),
            std::string::npos) << res[0].err;
  EXPECT_NE(res[0].err.find("for rank 1 of world size 3, which never joined"), std::string::npos) << res[0].err;
  EXPECT_TRUE(res[1].exited(1)) << res[1].describe();
  EXPECT_NE(res[1].err.find("rendezvous failed (reported by rank 0)"), std::string::npos) << res[1].err;

  // A rank whose rank 0 never starts: the file never appears / the port never answers.
  Env e1 = base;
  e1.emplace_back("MAMBA_RANK", "1");
  fs::remove(dir / "rv");
  const Outcome alone = run({MAMBA_DIST_WORKER, "join"}, e1, dir / "r1");
  EXPECT_TRUE(alone.exited(1)) << alone.describe();
  EXPECT_NE(alone.err.find("which rank 0 never wrote"), std::string::npos) << alone.err;
  const Outcome tcp = run({MAMBA_DIST_WORKER, "join"},
                          {{"MAMBA_RANK", "1"}, {"MAMBA_WORLD_SIZE", "2"},
                           {"MAMBA_RENDEZVOUS", "tcp://127.0.0.1:" + std::to_string(free_port())},
                           {"MAMBA_RENDEZVOUS_TIMEOUT_S", "1"}},
                          dir / "tcp");
  EXPECT_TRUE(tcp.exited(1)) << tcp.describe();
  EXPECT_NE(tcp.err.find("could not reach rank 0 at MAMBA_RENDEZVOUS=tcp://127.0.0.1:"), std::string::npos) << tcp.err;
}

TEST(Rendezvous, WorldSizeDisagreementIsReportedToBoth) {
  const fs::path dir = fresh_dir("worlds");
  const std::string rv = "file:" + (dir / "rv").string();
  const auto res = wait_all(
      {spawn({MAMBA_DIST_WORKER, "join"}, {{"MAMBA_RANK", "0"}, {"MAMBA_WORLD_SIZE", "2"}, {"MAMBA_RENDEZVOUS", rv}}, dir / "r0"),
       spawn({MAMBA_DIST_WORKER, "join"}, {{"MAMBA_RANK", "1"}, {"MAMBA_WORLD_SIZE", "3"}, {"MAMBA_RENDEZVOUS", rv}}, dir / "r1")});
  for (const auto& o : res) {
    EXPECT_TRUE(o.exited(1)) << o.describe();
    EXPECT_NE(o.err.find("rank 1 has MAMBA_WORLD_SIZE=3 but rank 0 has 2"), std::string::npos) << o.err;
  }
}

TEST(Failures, AKilledRankMakesItsPeersFailNotHang) {
  const fs::path dir = fresh_dir("killed");
  const auto res = run_ranks(3, {"die", "3", "1"}, "file:" + (dir / "rv").string(), dir);
  EXPECT_TRUE(WIFSIGNALED(res[1].status) && WTERMSIG(res[1].status) == SIGKILL) << res[1].describe();
  for (int r : {0, 2}) {
    EXPECT_TRUE(res[r].exited(1)) << res[r].describe();
    EXPECT_NE(res[r].err.find("exit or crash?"), std::string::npos) << res[r].err;
  }
  // Rank 2 receives from rank 1: it names it.
  EXPECT_NE(res[2].err.find("the connection from rank 1 closed"), std::string::npos) << res[2].err;
}

TEST(Launcher, AKilledRankMakesTheLauncherFail) {
  const fs::path dir = fresh_dir("launch_killed");
  const Outcome o = run({MAMBA_LAUNCH, "--nproc", "3", "--", MAMBA_DIST_WORKER, "die", "3", "1"}, {}, dir / "launch");
  EXPECT_FALSE(o.exited(0)) << o.describe();
  EXPECT_NE(o.err.find("rank 1 (pid"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("was killed by signal 9"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("mamba-launch: failed (exit status"), std::string::npos) << o.err;
}

TEST(Launcher, AFailedRankStopsTheOthersAndGivesItsStatus) {
  const fs::path dir = fresh_dir("launch_exit");
  // Rank 1 exits 5 at once; rank 0 would sleep for 1000 s unless the launcher stops it.
  const Outcome o = run({MAMBA_LAUNCH, "--nproc", "2", "--grace-s", "5", "--", "/bin/sh", "-c",
                         "if [ \"$MAMBA_RANK\" = 1 ]; then exit 5; fi; exec sleep 1000"},
                        {}, dir / "launch");
  EXPECT_TRUE(o.exited(5)) << o.describe();
  EXPECT_NE(o.err.find("rank 1 (pid"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("exited with status 5; stopping the other ranks"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("rank 0 (pid"), std::string::npos) << o.err;  // reported as stopped (SIGTERM)
}

TEST(Launcher, SetsTheEnvironmentOfEachRank) {
  const fs::path dir = fresh_dir("launch_env");
  const Outcome o = run({MAMBA_LAUNCH, "--nproc", "3", "--device", "cuda", "--gpus", "4,5,6", "--", "/bin/sh", "-c",
                         "echo \"$MAMBA_RANK/$MAMBA_WORLD_SIZE/$MAMBA_LOCAL_RANK/$CUDA_VISIBLE_DEVICES/${RANK:-none}\" > " +
                             dir.string() + "/env.$MAMBA_RANK"},
                        {{"RANK", "7"}}, dir / "launch");
  ASSERT_TRUE(o.exited(0)) << o.describe();
  for (int r = 0; r < 3; ++r) {
    std::string line = slurp(dir / ("env." + std::to_string(r)));
    EXPECT_EQ(line, std::to_string(r) + "/3/0/" + std::to_string(4 + r) + "/none\n");
  }
}

// ---- training -------------------------------------------------------------------------------------

namespace {

std::vector<float> read_floats(const fs::path& p) {
  const std::string s = slurp(p);
  std::vector<float> v(s.size() / sizeof(float));
  std::memcpy(v.data(), s.data(), v.size() * sizeof(float));
  return v;
}

std::vector<std::pair<int64_t, double>> step_losses(const fs::path& log) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream f(log);
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("samples_per_s")) out.emplace_back(j.at("step").get<int64_t>(), j.at("loss").get<double>());
  }
  return out;
}

}  // namespace

// The Trainer with a DataLoader shard per rank (37 samples, global batch 12, shuffled, a
// short last batch that leaves some ranks empty): the replicas end bit-identical, and equal
// the single process with the global batch up to float summation order.
TEST(DataParallelTrainer, ShardedRunsMatchOneProcessAndReplicasAgree) {
  const fs::path one = fresh_dir("trainer1");
  const Outcome single = run({MAMBA_DIST_WORKER, "train", one.string()}, {}, one / "run");
  ASSERT_TRUE(single.exited(0)) << single.describe();
  const auto ref = read_floats(one / "params.rank0.bin");
  const auto ref_losses = step_losses(one / "log.jsonl");
  ASSERT_EQ(ref_losses.size(), 12u);
  const auto ref_sum = nlohmann::json::parse(slurp(one / "summary.rank0.json"));
  for (int W : {2, 3, 4}) {
    const fs::path dir = fresh_dir("trainer" + std::to_string(W));
    const Outcome o = run({MAMBA_LAUNCH, "--nproc", std::to_string(W), "--", MAMBA_DIST_WORKER, "train", dir.string()}, {},
                          dir / "launch");
    ASSERT_TRUE(o.exited(0)) << o.describe();
    const auto p0 = read_floats(dir / "params.rank0.bin");
    for (int r = 1; r < W; ++r)
      EXPECT_TRUE(read_floats(dir / ("params.rank" + std::to_string(r) + ".bin")) == p0) << "W=" << W << " rank " << r;
    ASSERT_EQ(p0.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(p0[i], ref[i], 1e-5) << "W=" << W << " param " << i;
    const auto losses = step_losses(dir / "log.jsonl");
    ASSERT_EQ(losses.size(), ref_losses.size()) << "rank 0 alone writes the log";
    for (size_t s = 0; s < losses.size(); ++s) {
      EXPECT_EQ(losses[s].first, ref_losses[s].first);
      EXPECT_NEAR(losses[s].second, ref_losses[s].second, 1e-6 * std::fabs(ref_losses[s].second)) << "step " << s + 1;
    }
    for (int r = 0; r < W; ++r) {
      const auto js = nlohmann::json::parse(slurp(dir / ("summary.rank" + std::to_string(r) + ".json")));
      EXPECT_EQ(js["steps"], 12);
      EXPECT_EQ(js["best_step"], ref_sum["best_step"]);
      EXPECT_NEAR(js["final_metrics"]["loss"].get<double>(), ref_sum["final_metrics"]["loss"].get<double>(),
                  1e-6 * ref_sum["final_metrics"]["loss"].get<double>());
      EXPECT_EQ(js["final_metrics"]["samples"], 10) << "samples summed over the ranks";
    }
    EXPECT_TRUE(fs::exists(dir / "ckpt" / "checkpoint-12"));
  }
}

// mamba-train-synthetic --nproc 2 / 3 against one process with the same global batch.
TEST(DataParallelTrainer, SyntheticTaskLossPerStepMatchesOneProcess) {
  const std::vector<std::string> common = {MAMBA_TRAIN_SYNTHETIC, "selective-copy", "--seq-len", "16", "--tokens", "4",
                                           "--steps", "20", "--d-model", "16", "--layers", "2", "--eval", "16",
                                           "--threads", "1", "--seed", "3"};
  auto run_tool = [&](const std::string& name, int nproc, int batch) {
    const fs::path dir = fresh_dir(name);
    std::vector<std::string> argv = common;
    for (const std::string& a : {std::string("--batch"), std::to_string(batch), std::string("--log"),
                                 (dir / "log.jsonl").string(), std::string("--out"), (dir / "model").string()})
      argv.push_back(a);
    if (nproc > 1) argv.insert(argv.end(), {"--nproc", std::to_string(nproc)});
    const Outcome o = run(argv, {}, dir / "run");
    EXPECT_TRUE(o.exited(0)) << o.describe();
    return dir;
  };
  const fs::path ref = run_tool("synthetic1", 1, 12);
  const auto ref_losses = step_losses(ref / "log.jsonl");
  ASSERT_EQ(ref_losses.size(), 20u);
  const auto ref_params = mamba::io::load_safetensors((ref / "model" / "model.safetensors").string());
  for (int W : {2, 3}) {
    const fs::path dir = run_tool("synthetic" + std::to_string(W), W, 12 / W);
    const auto losses = step_losses(dir / "log.jsonl");
    ASSERT_EQ(losses.size(), ref_losses.size());
    double worst = 0;
    for (size_t s = 0; s < losses.size(); ++s) {
      const double rel = std::fabs(losses[s].second - ref_losses[s].second) / std::fabs(ref_losses[s].second);
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 1e-6) << "W=" << W << " step " << s + 1 << ": " << losses[s].second << " vs " << ref_losses[s].second;
    }
    const auto params = mamba::io::load_safetensors((dir / "model" / "model.safetensors").string());
    ASSERT_EQ(params.size(), ref_params.size());
    double worst_param = 0;
    for (size_t k = 0; k < params.size(); ++k) {
      ASSERT_EQ(params[k].first, ref_params[k].first);
      const float* a = params[k].second.data<float>();
      const float* b = ref_params[k].second.data<float>();
      for (int64_t i = 0; i < params[k].second.numel(); ++i) worst_param = std::max<double>(worst_param, std::fabs(a[i] - b[i]));
    }
    EXPECT_LE(worst_param, 1e-5) << "W=" << W;
    std::printf("W=%d: max relative loss difference %.3g over 20 steps, max abs parameter difference %.3g\n", W, worst,
                worst_param);
  }
}

// A 2-rank run stopped part-way resumes with 2 ranks onto exactly the uninterrupted curve;
// resuming it with 3 ranks is refused.
TEST(DataParallelTrainer, ResumeWithTheSameWorldSizeIsExact) {
  const std::vector<std::string> common = {MAMBA_TRAIN_SYNTHETIC, "selective-copy", "--seq-len", "16", "--tokens", "4",
                                           "--steps", "16", "--batch", "4", "--d-model", "16", "--eval", "16",
                                           "--threads", "1", "--seed", "9"};
  const fs::path dir = fresh_dir("resume");
  auto with = [&](int nproc, std::vector<std::string> extra) {
    std::vector<std::string> a = common;
    a.insert(a.end(), {"--nproc", std::to_string(nproc)});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const Outcome full = run(with(2, {"--log", (dir / "full.jsonl").string()}), {}, dir / "full");
  ASSERT_TRUE(full.exited(0)) << full.describe();
  const std::string ck = (dir / "ckpt").string();
  const Outcome killed = run(with(2, {"--log", (dir / "resumed.jsonl").string(), "--checkpoint-dir", ck,
                                      "--checkpoint-every", "5", "--stop-after", "12"}),
                             {}, dir / "killed");
  EXPECT_TRUE(killed.exited(3)) << killed.describe();
  const Outcome refused =
      run(with(3, {"--log", (dir / "three.jsonl").string(), "--checkpoint-dir", ck, "--resume"}), {}, dir / "three");
  EXPECT_FALSE(refused.exited(0)) << refused.describe();
  EXPECT_NE(refused.err.find("was written by a run of 2 process(es) but this run has 3"), std::string::npos) << refused.err;
  const Outcome resumed = run(with(2, {"--log", (dir / "resumed.jsonl").string(), "--checkpoint-dir", ck, "--resume"}),
                              {}, dir / "resumed");
  ASSERT_TRUE(resumed.exited(0)) << resumed.describe();
  EXPECT_NE(resumed.out.find("resumed from step 10"), std::string::npos) << resumed.out;
  const auto a = step_losses(dir / "full.jsonl");
  auto b = step_losses(dir / "resumed.jsonl");
  ASSERT_EQ(a.size(), 16u);
  std::map<int64_t, double> last;  // readers keep the last line of each step
  for (const auto& [s, l] : b) last[s] = l;
  ASSERT_EQ(last.size(), 16u);
  for (const auto& [s, l] : a) EXPECT_EQ(last[s], l) << "step " << s << " (bit-identical)";
}

// ---- the nccl backend -------------------------------------------------------------------------
// Built only with CUDA + NCCL. Without a visible GPU every rank fails with a clear error
// (checked on any machine by hiding the GPUs); the GPU runs are tests/device/nccl_run.sh.
TEST(NcclBackend, RanksWithoutAGpuFailClearly) {
  if (!mt::nccl_available()) GTEST_SKIP() << "built without NCCL";
  const fs::path dir = fresh_dir("nccl_nogpu");
  const auto res = run_ranks(2, {"join"}, "file:" + (dir / "rv").string(), dir,
                             {{"MAMBA_TEST_BACKEND", "nccl"}, {"CUDA_VISIBLE_DEVICES", ""}});
  for (const auto& o : res) {
    EXPECT_TRUE(o.exited(1)) << o.describe();
    EXPECT_NE(o.err.find("sees no CUDA device"), std::string::npos) << o.err;
  }
}
