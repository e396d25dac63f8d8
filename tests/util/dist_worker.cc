// mamba-dist-worker: one rank of a data-parallel test job (tests/unit/test_distributed.cc
// starts several, directly or through mamba-launch). It joins the job from the environment
// (distributed.h) and runs one scenario:
//
//   collectives OUT   all_reduce_sum (float, double; sizes 0..100003), all_reduce_mean,
//                     broadcast from every root, barrier; this rank's results go to
//                     OUT/rank<r>.bin (the test checks them against a plain reference)
//   die K RANK        all_reduce in a loop; rank RANK kills itself (SIGKILL) at iteration K
//   mismatch          rank 0 reduces 10 floats, the others 12
//   join              rendezvous and barrier only
//   bench N REPS      all_reduce_sum of N floats REPS times; rank 0 prints the time per call
//                     and the bus bandwidth (2 (W-1)/W x 4N bytes per call); a figure only
//   train OUT         a linear model trained by the Trainer on a DataLoader shard of a
//                     37-sample dataset (per-rank batch 12 / world); this rank's final
//                     parameters go to OUT/params.rank<r>.bin, its summary to
//                     OUT/summary.rank<r>.json; rank 0 writes OUT/log.jsonl and OUT/ckpt
//
// MAMBA_TEST_BACKEND=nccl uses the nccl backend instead of cpu.
// Exit status 0, or 1 with "mamba-dist-worker: <error>" on stderr.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist_values.h"
#include "mamba/train/data_loader.h"
#include "mamba/train/distributed.h"
#include "mamba/train/optimizer.h"
#include "mamba/train/trainer.h"

namespace mt = mamba::train;

namespace {

void write_file(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + tmp);
  }
  std::rename(tmp.c_str(), path.c_str());
}

template <class T> void append(std::string& out, const std::vector<T>& v) {
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

int collectives(mt::Communicator& comm, const std::string& out_dir) {
  const int r = comm.rank();
  std::string out;
  for (size_t n : mamba::testing::kDistSizes) {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = mamba::testing::dist_value_f(n, r, i);
    comm.all_reduce_sum(f.data(), n);
    append(out, f);
    std::vector<double> d(n);
    for (size_t i = 0; i < n; ++i) d[i] = mamba::testing::dist_value_d(n, r, i);
    comm.all_reduce_sum(d.data(), n);
    append(out, d);
  }
  {
    const size_t n = mamba::testing::kDistMeanSize;
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = mamba::testing::dist_value_f(n, r, i);
    comm.all_reduce_mean(f.data(), n);
    append(out, f);
  }
  for (int root = 0; root < comm.world_size(); ++root) {
    std::vector<unsigned char> b(mamba::testing::kDistBroadcastBytes, 0);
    if (r == root)
      for (size_t i = 0; i < b.size(); ++i) b[i] = mamba::testing::dist_byte(root, i);
    comm.broadcast(b.data(), b.size(), root);
    append(out, b);
  }
  comm.barrier();
  write_file(out_dir + "/rank" + std::to_string(r) + ".bin", out);
  return 0;
}

int die(mt::Communicator& comm, int at, int who) {
  std::vector<float> v(1000, 1.0f);
  for (int it = 0; it < 1000000; ++it) {
    if (comm.rank() == who && it == at) ::raise(SIGKILL);
    comm.all_reduce_sum(v.data(), v.size());
    std::fill(v.begin(), v.end(), 1.0f);
  }
  return 0;
}

// ---- train: y = W x + b on 37 samples -------------------------------------------------------

constexpr int kIn = 5, kOut = 3;

class LinearData final : public mt::Dataset {
 public:
  LinearData(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  int64_t size() const override { return n_; }
  int64_t length(int64_t) const override { return 1; }
  mt::Sample get(int64_t i) const override {
    std::vector<float> x(kIn), y(kOut);
    for (int k = 0; k < kIn; ++k) x[k] = mamba::testing::dist_value_f(seed_, static_cast<int>(i), static_cast<size_t>(k)) ;
    for (int j = 0; j < kOut; ++j) {
      float s = 0.1f * static_cast<float>(j);
      for (int k = 0; k < kIn; ++k) s += static_cast<float>((j + 1) * (k % 3) - 2) * 0.3f * x[k];
      y[j] = s + 0.01f * mamba::testing::dist_value_f(seed_ + 1, static_cast<int>(i), static_cast<size_t>(j));
    }
    return {{{"x", mamba::Tensor::from_vector(x, {kIn})}, {"y", mamba::Tensor::from_vector(y, {kOut})}}};
  }

 private:
  int64_t n_;
  uint64_t seed_;
};

// Mean over the rows of 0.5 |W x + b - y|^2; gradients into gw, gb (when given).
double linear_loss(const mamba::Tensor& W, const mamba::Tensor& b, const float* x, const float* y, int64_t rows,
                   float* gw, float* gb) {
  const float* w = W.data<float>();
  const float* bb = b.data<float>();
  double loss = 0;
  for (int64_t i = 0; i < rows; ++i) {
    for (int j = 0; j < kOut; ++j) {
      float p = bb[j];
      for (int k = 0; k < kIn; ++k) p += w[j * kIn + k] * x[i * kIn + k];
      const float e = p - y[i * kOut + j];
      loss += 0.5 * static_cast<double>(e) * e;
      if (gw) {
        const float s = e / static_cast<float>(rows);
        for (int k = 0; k < kIn; ++k) gw[j * kIn + k] += s * x[i * kIn + k];
        gb[j] += s;
      }
    }
  }
  return rows ? loss / static_cast<double>(rows) : 0.0;
}

int train(mt::Communicator& comm, const std::string& out_dir, bool resume) {
  const int W = comm.world_size(), r = comm.rank();
  if (12 % W) throw std::runtime_error("train: the world size must divide 12");
  // Every rank initialises differently on purpose: the trainer broadcasts rank 0's values.
  mamba::Tensor w = mamba::Tensor::zeros({kOut, kIn}), b = mamba::Tensor::zeros({kOut});
  for (int i = 0; i < kOut * kIn; ++i) w.data<float>()[i] = 0.1f * mamba::testing::dist_value_f(99, r, static_cast<size_t>(i));
  std::vector<mamba::Tensor> grads;
  mt::SGDOptions so;
  so.momentum = 0.9;
  mt::SGD opt(mt::make_params({{"w", &w}, {"b", &b}}, grads), so);

  auto data = std::make_shared<LinearData>(37, 7);
  mt::DataLoaderOptions lo;
  lo.batch_size = 12 / W;
  lo.shuffle = true;
  lo.seed = 11;
  lo.world = W;
  lo.rank = r;
  mt::DataLoader loader(data, lo);
  LinearData val(10, 8);

  mt::TrainerOptions to;
  to.max_epochs = 3;
  to.steps_per_epoch = loader.batches_per_epoch();
  to.eval_every = 4;
  to.checkpoint_dir = out_dir + "/ckpt";
  to.checkpoint_every = 4;
  to.log_path = out_dir + "/log.jsonl";
  to.grad_clip = 1.0;
  to.progress = mt::ProgressMode::off;
  to.resume = resume;
  to.seed = 5;
  to.comm = &comm;
  mt::TrainerCallbacks cb;
  cb.train_step = [&](int64_t) -> mt::StepResult {
    auto batch = loader.next();
    if (!batch) batch = loader.next();  // the next epoch
    mt::StepResult res;
    res.samples = batch->size();
    if (batch->size() == 0) return res;  // an empty shard of the short last batch
    const mamba::Tensor& x = batch->at("x");
    const mamba::Tensor& y = batch->at("y");
    res.loss = linear_loss(w, b, x.data<float>(), y.data<float>(), batch->size(), grads[0].data<float>(),
                           grads[1].data<float>());
    return res;
  };
  cb.evaluate = [&]() -> mt::Metrics {
    const int64_t lo_i = r * val.size() / W, hi_i = (r + 1) * val.size() / W;
    std::vector<float> x, y;
    for (int64_t i = lo_i; i < hi_i; ++i) {
      const auto s = val.get(i);
      const float* xs = s.at("x").data<float>();
      const float* ys = s.at("y").data<float>();
      x.insert(x.end(), xs, xs + kIn);
      y.insert(y.end(), ys, ys + kOut);
    }
    const double loss = linear_loss(w, b, x.data(), y.data(), hi_i - lo_i, nullptr, nullptr);
    return {{"loss", loss}, {"samples", static_cast<double>(hi_i - lo_i)}};
  };
  cb.state_extra = [&] { return nlohmann::json{{"epoch", loader.epoch()}, {"position", loader.position()}}; };
  cb.load_extra = [&](const nlohmann::json& j) { loader.set_position(j.at("epoch"), j.at("position")); };
  mt::Trainer trainer(to, opt, mt::LrSchedule([](int64_t) { return 0.05; }), cb);
  const mt::TrainSummary sum = trainer.run();

  std::string params;
  params.append(reinterpret_cast<const char*>(w.data<float>()), sizeof(float) * kOut * kIn);
  params.append(reinterpret_cast<const char*>(b.data<float>()), sizeof(float) * kOut);
  write_file(out_dir + "/params.rank" + std::to_string(r) + ".bin", params);
  nlohmann::json js = {{"steps", sum.steps}, {"best_step", sum.best_step}, {"resumed_from", sum.resumed_from},
                       {"final_metrics", sum.final_metrics}, {"best_checkpoint", sum.best_checkpoint}};
  write_file(out_dir + "/summary.rank" + std::to_string(r) + ".json", js.dump());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mamba-dist-worker collectives OUT | die K RANK | mismatch | join | train OUT [--resume]\n");
    return 2;
  }
  const std::string mode = argv[1];
  try {
    const char* backend = std::getenv("MAMBA_TEST_BACKEND");  // cpu (default) or nccl
    auto comm = mt::communicator_from_env(backend && *backend ? backend : "cpu");
    if (mode == "collectives" && argc >= 3) return collectives(*comm, argv[2]);
    if (mode == "die" && argc >= 4) return die(*comm, std::atoi(argv[2]), std::atoi(argv[3]));
    if (mode == "mismatch") {
      std::vector<float> v(comm->rank() == 0 ? 10 : 12, 1.0f);
      comm->all_reduce_sum(v.data(), v.size());
      return 0;
    }
    if (mode == "bench" && argc >= 4) {
      const size_t n = std::stoull(argv[2]);
      const int reps = std::atoi(argv[3]);
      std::vector<float> v(n, 1.0f);
      comm->all_reduce_sum(v.data(), n);  // warm-up
      comm->barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) comm->all_reduce_sum(v.data(), n);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      const int W = comm->world_size();
      if (comm->rank() == 0)
        std::printf("all_reduce_sum %zu floats (%.1f MB), %d ranks (%s): %.3f ms per call, bus bandwidth %.2f GB/s\n", n,
                    4.0 * n / 1e6, W, comm->backend(), s * 1e3, 4.0 * n * 2 * (W - 1) / W / s / 1e9);
      return 0;
    }
    if (mode == "join") {
      comm->barrier();
      std::printf("joined: rank %d of %d\n", comm->rank(), comm->world_size());
      return 0;
    }
    if (mode == "train" && argc >= 3) return train(*comm, argv[2], argc >= 4 && std::string(argv[3]) == "--resume");
    std::fprintf(stderr, "mamba-dist-worker: bad arguments\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-dist-worker: %s\n", e.what());
    return 1;
  }
}
