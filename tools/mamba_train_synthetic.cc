// mamba-train-synthetic: the two synthetic tasks of the Mamba paper, trained on the CPU.
//
//   mamba-train-synthetic selective-copy [--compare] [--lti] [options]
//   mamba-train-synthetic induction [--eval-lengths 256,1024,4096] [options]
//
// selective-copy: a region of `--seq-len` tokens holds `--tokens` data tokens (ids
//   1..`--vocab`) at random positions among blanks (0); `--tokens` marker tokens follow, and
//   at the j-th marker the model must output the j-th data token. Content-aware recall:
//   an LTI SSM (`--lti`: B, C and delta not input-dependent, like S4) cannot know where
//   the tokens were. `--compare` trains both with the same budget and prints a table.
// induction: random tokens; a trigger token appears once, followed by the answer token;
//   the sequence ends with the trigger and the model must output the answer. Trained at
//   `--seq-len` (256), evaluated at longer lengths through the same model.
//
// Options: --steps N --batch B --d-model D --layers L --d-state N --lr LR --seed S
//          --eval N (held-out sequences) --log FILE (JSON lines) --threads T
//          --min-accuracy A (exit 1 if the final accuracy is lower; for tests)
//          --out DIR (write the trained model as config.json + model.safetensors)
//          --checkpoint-dir DIR --checkpoint-every N (atomic checkpoints: model, optimiser,
//          data RNG, step), --resume (continue from DIR's latest checkpoint exactly: the
//          loss curve equals an uninterrupted run's), --stop-after N (stop at step N, as if
//          killed; for tests)
//          --nproc N (data parallel: start N processes through mamba::train::launch_processes,
//          each on its shard of every global batch of N x --batch sequences; see README)
//          --backend cpu|nccl (the communicator; nccl: one GPU per process)
// Run under mamba-launch (or with MAMBA_RANK / MAMBA_WORLD_SIZE / MAMBA_RENDEZVOUS set),
// the tool joins the job itself: --batch is the per-process batch, rank 0 writes the log,
// the checkpoints and --out, and prints the results.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <filesystem>

#include "mamba/io/json_config.h"
#include "mamba/io/safetensors.h"
#include "mamba/kernels/parallel.h"
#include "mamba/nn/mamba_lm.h"
#include "mamba/train/distributed.h"
#include "mamba/train/launch.h"
#include "mamba/train/modules.h"
#include "mamba/train/trainer.h"
#include "mamba/train/optimizer.h"
#include "mamba/train/schedule.h"

using mamba::Tensor;

namespace {

struct Options {
  std::string task;
  int64_t steps = 1500, batch = 32, d_model = 64, layers = 2, d_state = 16;
  int64_t seq_len = -1, tokens = 8, vocab = -1, eval = 512;
  double lr = 3e-3, min_accuracy = -1;
  uint64_t seed = 1;
  bool lti = false, compare = false;
  std::vector<int64_t> eval_lengths;
  std::string log;
  std::string checkpoint_dir, out;
  int64_t checkpoint_every = 0, stop_after = -1;
  bool resume = false;
  int nproc = 0;
  std::string backend = "cpu";
  mamba::train::Communicator* comm = nullptr;  // the job's ranks (world size 1: one process)
};

struct Batch {
  Tensor ids, targets;
};

// ---- the tasks ----------------------------------------------------------------------

// Vocabulary: 0 blank, 1..K data tokens, K + 1 marker.
Batch selective_copy_batch(const Options& o, int64_t batch, std::mt19937_64& rng) {
  const int64_t R = o.seq_len, M = o.tokens, K = o.vocab, L = R + M;
  std::vector<int64_t> ids(static_cast<size_t>(batch * L), 0), tg(static_cast<size_t>(batch * L), -1);
  std::uniform_int_distribution<int64_t> tok(1, K);
  std::vector<int64_t> pos(static_cast<size_t>(R));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < R; ++i) pos[i] = i;
    std::shuffle(pos.begin(), pos.end(), rng);
    std::sort(pos.begin(), pos.begin() + M);
    for (int64_t j = 0; j < M; ++j) {
      const int64_t t = tok(rng);
      ids[b * L + pos[j]] = t;
      ids[b * L + R + j] = K + 1;
      tg[b * L + R + j] = t;
    }
  }
  return {Tensor::from_vector_i64(ids, {batch, L}), Tensor::from_vector_i64(tg, {batch, L})};
}

// Vocabulary: 1..K - 1 ordinary tokens, K the trigger (0 unused).
Batch induction_batch(const Options& o, int64_t batch, int64_t L, std::mt19937_64& rng) {
  const int64_t K = o.vocab;
  std::vector<int64_t> ids(static_cast<size_t>(batch * L)), tg(static_cast<size_t>(batch * L), -1);
  std::uniform_int_distribution<int64_t> tok(1, K - 1), where(0, L - 3);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < L; ++i) ids[b * L + i] = tok(rng);
    const int64_t p = where(rng), answer = tok(rng);
    ids[b * L + p] = K;
    ids[b * L + p + 1] = answer;
    ids[b * L + L - 1] = K;
    tg[b * L + L - 1] = answer;
  }
  return {Tensor::from_vector_i64(ids, {batch, L}), Tensor::from_vector_i64(tg, {batch, L})};
}

Batch make_batch(const Options& o, int64_t batch, int64_t length, std::mt19937_64& rng) {
  return o.task == "selective-copy" ? selective_copy_batch(o, batch, rng) : induction_batch(o, batch, length, rng);
}

// ---- training -------------------------------------------------------------------------

mamba::nn::MambaLM build_model(const Options& o, bool selective, uint64_t seed) {
  nlohmann::json cfg = {{"d_model", o.d_model},
                        {"n_layer", o.layers},
                        {"vocab_size", o.vocab + 2},
                        {"pad_vocab_size_multiple", 8},
                        {"ssm_cfg", {{"layer", "Mamba1"}, {"d_state", o.d_state}, {"selective", selective}}}};
  mamba::nn::MambaLM lm(mamba::nn::MambaLMConfig::from_json(cfg));
  // The reference initialisation (train/modules.h).
  std::mt19937_64 rng(seed);
  for (auto& [name, t] : lm.parameters()) mamba::train::reference_init(name, *t, rng);
  lm.refresh_derived();
  return lm;
}

struct Result {
  std::string model;
  double accuracy = 0;
  double seconds = 0;
  double samples_per_s = 0;
  double final_loss = 0;
  double train_accuracy = 0;  // over every training batch of this run
  std::map<int64_t, double> length_accuracy;
};

// Held-out accuracy and mean loss at `length` over o.eval fresh sequences.
std::pair<double, double> evaluate_heldout(const mamba::nn::MambaLM& lm, const Options& o, int64_t length,
                                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  int64_t correct = 0, counted = 0;
  double loss = 0;
  for (int64_t done = 0; done < o.eval;) {
    const int64_t n = std::min<int64_t>(o.eval - done, length > 1024 ? 8 : 64);
    const Batch b = make_batch(o, n, length, rng);
    const auto s = lm.evaluate(b.ids, b.targets);
    correct += s.correct;
    counted += s.counted;
    loss += s.loss * static_cast<double>(s.counted);
    done += n;
  }
  if (!counted) return {0.0, 0.0};
  return {static_cast<double>(correct) / static_cast<double>(counted), loss / static_cast<double>(counted)};
}

// Thrown by train_step at --stop-after: the run ends there as if killed.
struct StopRequested {};

Result train(const Options& o, bool selective) {
  Result r;
  r.model = selective ? "Mamba (selective S6)" : "LTI SSM (no selection, S4-like)";
  mamba::nn::MambaLM lm = build_model(o, selective, o.seed);
  std::vector<Tensor> grads;
  for (auto& [name, t] : lm.parameters()) grads.push_back(Tensor::zeros(t->shape()));
  mamba::train::AdamWOptions ao;
  ao.weight_decay = 0.1;
  mamba::train::AdamW opt(mamba::train::make_params(lm.parameters(), grads), ao);
  const mamba::train::WarmupCosine schedule{std::min<int64_t>(100, o.steps / 10), o.steps, o.lr, o.lr * 0.05};

  mamba::train::TrainerOptions to;
  to.max_steps = o.steps;
  to.grad_clip = 1.0;
  to.seed = o.seed * 7919 + 1;  // the data stream: batches are drawn from the trainer's RNG
  to.progress = mamba::train::ProgressMode::lines;
  to.progress_every = std::max<int64_t>(1, o.steps / 10);
  to.eval_at_end = false;
  to.comm = o.comm;
  const int world = o.comm->world_size(), rank = o.comm->rank();
  const std::string tag = selective ? "s6" : "lti";
  if (!o.log.empty()) to.log_path = o.compare ? o.log + "." + tag : o.log;
  if (!o.checkpoint_dir.empty()) {
    to.checkpoint_dir = o.checkpoint_dir + "/" + tag;
    to.checkpoint_every = o.checkpoint_every;
    to.resume = o.resume;
  }
  mamba::train::TrainerCallbacks cb;
  mamba::train::Trainer* trainer = nullptr;
  int64_t correct = 0, counted = 0;
  cb.train_step = [&](int64_t step) -> mamba::train::StepResult {
    if (step == o.stop_after) throw StopRequested{};
    // The global batch, drawn from the trainer's RNG (the same on every rank); this rank
    // trains on rows [rank * batch, (rank + 1) * batch).
    Batch b = make_batch(o, o.batch * world, o.seq_len, trainer->rng());
    if (world > 1) {
      b.ids = b.ids.slice(0, rank * o.batch, (rank + 1) * o.batch).clone();
      b.targets = b.targets.slice(0, rank * o.batch, (rank + 1) * o.batch).clone();
    }
    std::vector<Tensor> g;
    const auto st = lm.forward_backward(b.ids, b.targets, g);
    for (size_t k = 0; k < g.size(); ++k) grads[k] = g[k];  // Param::grad points at these slots
    correct += st.correct;
    counted += st.counted;
    mamba::train::StepResult res;
    res.loss = st.loss;
    res.samples = o.batch;
    res.loss_weight = static_cast<double>(st.counted);  // the loss is a mean over the counted targets
    return res;
  };
  cb.after_update = [&] { lm.refresh_derived(); };
  mamba::train::Trainer tr(to, opt, schedule, cb);
  trainer = &tr;
  const auto t0 = std::chrono::steady_clock::now();
  mamba::train::TrainSummary summary;
  try {
    summary = tr.run();
  } catch (const StopRequested&) {
    std::printf("  [%s] stopping at step %lld (--stop-after)\n", selective ? "S6" : "LTI",
                static_cast<long long>(o.stop_after));
    std::exit(3);
  }
  if (summary.resumed_from > 0)
    std::printf("  [%s] resumed from step %lld\n", selective ? "S6" : "LTI", static_cast<long long>(summary.resumed_from));
  const int64_t steps_run = summary.steps_this_run;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.samples_per_s = static_cast<double>(steps_run * o.batch * world) / r.seconds;
  if (rank != 0) return r;  // the replicas are identical: rank 0 evaluates and writes
  r.train_accuracy = counted ? static_cast<double>(correct) / static_cast<double>(counted) : 0.0;
  std::tie(r.accuracy, r.final_loss) = evaluate_heldout(lm, o, o.seq_len, 424242);
  if (!o.out.empty()) {  // a model directory in the reference layout: mamba-demo and the servers load it
    const std::string dir = o.out + (o.compare ? (selective ? "/s6" : "/lti") : "");
    std::filesystem::create_directories(dir);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& [name, t] : lm.parameters()) tensors.emplace_back(name, *t);
    mamba::io::save_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
    mamba::io::write_json_file_atomic(dir + "/config.json", lm.config().to_json());
    std::printf("  [%s] model written to %s\n", selective ? "S6" : "LTI", dir.c_str());
  }
  for (int64_t len : o.eval_lengths)
    r.length_accuracy[len] = evaluate_heldout(lm, o, len, 4242 + static_cast<uint64_t>(len)).first;
  return r;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stoll(x));
  return v;
}

int usage() {
  std::fprintf(stderr,
               "usage: mamba-train-synthetic selective-copy|induction [--compare] [--lti] [--steps N] [--batch B]\n"
               "       [--d-model D] [--layers L] [--d-state N] [--seq-len L] [--tokens M] [--vocab K] [--lr LR]\n"
               "       [--seed S] [--eval N] [--eval-lengths a,b,c] [--log FILE] [--threads T] [--min-accuracy A]\n"
               "       [--checkpoint-dir DIR --checkpoint-every N] [--resume] [--stop-after N] [--out MODEL_DIR]\n"
               "       [--nproc N] [--backend cpu|nccl]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  mamba::kernels::flush_denormals();
  if (argc < 2) return usage();
  Options o;
  o.task = argv[1];
  if (o.task != "selective-copy" && o.task != "induction") return usage();
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value for " + a);
      return argv[++i];
    };
    try {
      if (a == "--compare") o.compare = true;
      else if (a == "--lti") o.lti = true;
      else if (a == "--steps") o.steps = std::stoll(next());
      else if (a == "--batch") o.batch = std::stoll(next());
      else if (a == "--d-model") o.d_model = std::stoll(next());
      else if (a == "--layers") o.layers = std::stoll(next());
      else if (a == "--d-state") o.d_state = std::stoll(next());
      else if (a == "--seq-len") o.seq_len = std::stoll(next());
      else if (a == "--tokens") o.tokens = std::stoll(next());
      else if (a == "--vocab") o.vocab = std::stoll(next());
      else if (a == "--lr") o.lr = std::stod(next());
      else if (a == "--seed") o.seed = std::stoull(next());
      else if (a == "--eval") o.eval = std::stoll(next());
      else if (a == "--eval-lengths") o.eval_lengths = parse_list(next());
      else if (a == "--log") o.log = next();
      else if (a == "--threads") mamba::kernels::set_num_threads(static_cast<int>(std::stoll(next())));
      else if (a == "--min-accuracy") o.min_accuracy = std::stod(next());
      else if (a == "--checkpoint-dir") o.checkpoint_dir = next();
      else if (a == "--out") o.out = next();
      else if (a == "--checkpoint-every") o.checkpoint_every = std::stoll(next());
      else if (a == "--resume") o.resume = true;
      else if (a == "--stop-after") o.stop_after = std::stoll(next());
      else if (a == "--nproc") o.nproc = static_cast<int>(std::stoll(next()));
      else if (a == "--backend") o.backend = next();
      else return usage();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mamba-train-synthetic: %s: %s\n", a.c_str(), e.what());
      return 2;
    }
  }
  mamba::kernels::flush_denormals();  // again: --threads may have grown the team
  if (o.task == "selective-copy") {
    if (o.seq_len < 0) o.seq_len = 64;
    if (o.vocab < 0) o.vocab = 8;
    if (o.tokens < 1 || o.tokens > o.seq_len) return std::fprintf(stderr, "--tokens must be in [1, --seq-len]\n"), 2;
  } else {
    if (o.seq_len < 0) o.seq_len = 256;
    if (o.vocab < 0) o.vocab = 16;
    if (o.eval_lengths.empty()) o.eval_lengths = {256, 1024, 4096};
    if (o.seq_len < 4) return std::fprintf(stderr, "--seq-len must be >= 4\n"), 2;
  }
  if (o.steps < 1 || o.batch < 1 || o.vocab < 2) return usage();
  if (o.backend != "cpu" && o.backend != "nccl") return std::fprintf(stderr, "--backend must be cpu or nccl\n"), 2;
  if (o.nproc != 0) {  // the launcher: this program again, N times, without --nproc
    if (o.nproc < 1) return std::fprintf(stderr, "--nproc must be >= 1 (got %d)\n", o.nproc), 2;
    mamba::train::LaunchOptions lo;
    lo.nproc = o.nproc;
    lo.cuda = o.backend == "nccl";
    lo.argv.push_back(std::filesystem::read_symlink("/proc/self/exe").string());
    for (int i = 1; i < argc; ++i) {
      if (std::string(argv[i]) == "--nproc") {
        ++i;
        continue;
      }
      lo.argv.emplace_back(argv[i]);
    }
    try {
      return mamba::train::launch_processes(lo);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mamba-train-synthetic: %s\n", e.what());
      return 2;
    }
  }
  std::unique_ptr<mamba::train::Communicator> comm;
  try {
    comm = mamba::train::communicator_from_env(o.backend);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-train-synthetic: %s\n", e.what());
    return 1;
  }
  o.comm = comm.get();
  if (comm->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 reports
  if (comm->world_size() > 1)
    std::printf("data parallel: %d processes (%s), global batch %lld = %d x %lld\n", comm->world_size(),
                comm->backend(), static_cast<long long>(o.batch) * comm->world_size(), comm->world_size(),
                static_cast<long long>(o.batch));
  std::printf("task %s: seq_len %lld, vocab %lld%s; %lld-layer d_model %lld d_state %lld; %lld steps x batch %lld; "
              "%d threads\n",
              o.task.c_str(), static_cast<long long>(o.seq_len), static_cast<long long>(o.vocab),
              o.task == "selective-copy" ? (", " + std::to_string(o.tokens) + " tokens to copy").c_str() : "",
              static_cast<long long>(o.layers), static_cast<long long>(o.d_model), static_cast<long long>(o.d_state),
              static_cast<long long>(o.steps), static_cast<long long>(o.batch), mamba::kernels::num_threads());
  std::vector<Result> results;
  try {
    if (comm->rank() != 0) {  // train alongside rank 0; it reports
      if (o.compare) train(o, true), train(o, false);
      else train(o, !o.lti);
      return 0;
    }
    if (o.compare) {
      results.push_back(train(o, true));
      results.push_back(train(o, false));
    } else {
      results.push_back(train(o, !o.lti));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mamba-train-synthetic: %s\n", e.what());
    return 1;
  }
  std::printf("\n| model | accuracy (len %lld) |", static_cast<long long>(o.seq_len));
  for (int64_t len : o.eval_lengths) std::printf(" len %lld |", static_cast<long long>(len));
  std::printf(" held-out loss | train s | samples/s |\n|---|---:|");
  for (size_t i = 0; i < o.eval_lengths.size(); ++i) std::printf("---:|");
  std::printf("---:|---:|---:|\n");
  for (const auto& r : results) {
    std::printf("| %s | %.4f |", r.model.c_str(), r.accuracy);
    for (int64_t len : o.eval_lengths) std::printf(" %.4f |", r.length_accuracy.at(len));
    std::printf(" %.4f | %.1f | %.0f |\n", r.final_loss, r.seconds, r.samples_per_s);
  }
  if (o.min_accuracy >= 0 && results.front().accuracy < o.min_accuracy) {
    std::printf("accuracy %.4f is below --min-accuracy %.4f\n", results.front().accuracy, o.min_accuracy);
    return 1;
  }
  return 0;
}
