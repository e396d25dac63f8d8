#include "mamba/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "mamba/io/atomic_file.h"
#include "mamba/io/json_config.h"
#include "mamba/io/safetensors.h"

namespace mamba::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kOp = "checkpoint";
constexpr const char* kFormat = "mamba-suite-checkpoint";
constexpr int64_t kVersion = 1;
constexpr const char* kPrefix = "checkpoint-";
constexpr const char* kStagingPrefix = ".checkpoint-";

[[noreturn]] void fail_at(const std::string& path, const std::string& what) { fail(kOp, "'" + path + "': " + what); }

std::string checkpoint_name(int64_t step) { return kPrefix + std::to_string(step); }

// The step of a "checkpoint-<digits>" name, or -1.
int64_t parse_checkpoint_name(const std::string& name) {
  const size_t n = std::strlen(kPrefix);
  if (name.size() <= n || name.compare(0, n, kPrefix) != 0 || name.size() - n > 18) return -1;
  int64_t step = 0;
  for (size_t i = n; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// Removes staging directories left by interrupted saves.
void remove_stale_staging(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kStagingPrefix, 0) == 0 && name.find(".partial") != std::string::npos) {
      std::error_code ignore;
      fs::remove_all(entry.path(), ignore);
    }
  }
}

void remove_old_checkpoints(const std::string& dir, int64_t step, int64_t keep_last) {
  if (keep_last <= 0) return;
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int64_t s = parse_checkpoint_name(entry.path().filename().string());
    if (s >= 0 && s <= step && entry.is_directory(ec)) steps.push_back(s);
  }
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = static_cast<size_t>(keep_last); i < steps.size(); ++i) {
    if (steps[i] == step) continue;
    std::error_code ignore;
    fs::remove_all(fs::path(dir) / checkpoint_name(steps[i]), ignore);
  }
}

TrainerState parse_trainer_state(const std::string& path, int64_t expected_step, const char* optimizer_kind) {
  const io::JsonConfig c = io::JsonConfig::load(path);
  auto field_error = [&](const std::string& field, const std::string& what) {
    fail_at(path, "field '" + field + "': " + what);
  };
  if (c.get_string("format") != kFormat) field_error("format", "expected \"" + std::string(kFormat) + "\"");
  if (const int64_t v = c.get_int("version"); v != kVersion)
    field_error("version", "unsupported version " + std::to_string(v) + " (this build reads " + std::to_string(kVersion) + ")");
  if (const int64_t s = c.get_int("step"); s != expected_step)
    field_error("step", std::to_string(s) + " does not match the directory's step " + std::to_string(expected_step));
  if (const std::string k = c.get_string("optimizer"); k != optimizer_kind)
    field_error("optimizer", "written by '" + k + "', loading into '" + optimizer_kind + "'");
  TrainerState st;
  st.rng_state = c.get_string("rng_state", "");
  if (!st.rng_state.empty()) {
    std::mt19937_64 probe;
    try {
      restore_rng(st.rng_state, probe);
    } catch (const Error&) {
      field_error("rng_state", "not a std::mt19937_64 state");
    }
  }
  st.data_position = c.get_int("data_position", 0);
  if (st.data_position < 0) field_error("data_position", "negative");
  if (c.has("best_metric")) st.best_metric = c.get_double("best_metric");
  if (c.has("extra")) {
    if (!c.json().at("extra").is_object()) field_error("extra", "expected an object");
    st.extra = c.json().at("extra");
  }
  return st;
}

}  // namespace

std::string rng_state_string(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

void restore_rng(const std::string& state, std::mt19937_64& rng) {
  std::istringstream is(state);
  std::mt19937_64 parsed;
  is >> parsed;
  if (is.fail()) fail("restore_rng", "not a std::mt19937_64 state");
  is >> std::ws;
  if (!is.eof()) fail("restore_rng", "trailing characters after the std::mt19937_64 state");
  rng = parsed;
}

std::string save_checkpoint(const std::string& dir, int64_t step, const std::vector<Param>& params,
                            const Optimizer& optimizer, const TrainerState& state, int64_t keep_last) {
  if (step < 0) fail_at(dir, "step must be >= 0, got " + std::to_string(step));
  if (state.best_metric && !std::isfinite(*state.best_metric))
    fail_at(dir, "best_metric must be finite (JSON cannot hold " + std::to_string(*state.best_metric) + ")");
  if (!state.extra.is_object()) fail_at(dir, "extra must be a JSON object");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_at(dir, "cannot create directory: " + ec.message());
  remove_stale_staging(dir);

  const std::string name = checkpoint_name(step);
  const std::string staging = (fs::path(dir) / (std::string(kStagingPrefix) + std::to_string(step) + ".partial")).string();
  const std::string final_dir = (fs::path(dir) / name).string();
  fs::create_directory(staging, ec);
  if (ec) fail_at(staging, "cannot create directory: " + ec.message());
  try {
    NamedTensors model;
    model.reserve(params.size());
    for (const Param& p : params) model.emplace_back(p.name, *p.value);
    io::save_safetensors(staging + "/model.safetensors", model, {{"format", "pt"}});
    io::save_safetensors(staging + "/optimizer.safetensors", optimizer.state_tensors(),
                         {{"optimizer", optimizer.kind()}});
    json js = {{"format", kFormat},
               {"version", kVersion},
               {"step", step},
               {"optimizer", optimizer.kind()},
               {"rng_state", state.rng_state},
               {"data_position", state.data_position},
               {"best_metric", state.best_metric ? json(*state.best_metric) : json(nullptr)},
               {"extra", state.extra}};
    io::write_json_file_atomic(staging + "/trainer_state.json", js);
    io::fsync_directory(staging);
    io::replace_directory(staging, final_dir);
    io::fsync_directory(dir);
  } catch (...) {
    std::error_code ignore;
    fs::remove_all(staging, ignore);
    throw;
  }
  fs::remove_all(staging, ec);  // the replaced checkpoint of the same step, if any
  io::write_file_atomic((fs::path(dir) / "latest").string(), name + "\n");
  remove_old_checkpoints(dir, step, keep_last);
  return final_dir;
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  const std::string pointer = (fs::path(dir) / "latest").string();
  std::error_code ec;
  if (!fs::exists(pointer, ec)) return std::nullopt;
  std::ifstream in(pointer, std::ios::binary);
  if (!in) fail_at(pointer, std::string("cannot open: ") + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), {});
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  if (parse_checkpoint_name(text) < 0) fail_at(pointer, "expected \"checkpoint-<step>\", got \"" + text.substr(0, 64) + "\"");
  const std::string path = (fs::path(dir) / text).string();
  if (!fs::is_directory(path, ec)) fail_at(pointer, "names '" + path + "', which is not a directory");
  return path;
}

CheckpointInfo load_checkpoint(const std::string& checkpoint_path, const std::vector<Param>& params,
                               Optimizer& optimizer) {
  const std::string dirname = fs::path(checkpoint_path).lexically_normal().filename().string();
  const int64_t step = parse_checkpoint_name(dirname.empty() ? fs::path(checkpoint_path).parent_path().filename().string() : dirname);
  if (step < 0) fail_at(checkpoint_path, "not a \"checkpoint-<step>\" directory");

  // 1. Read and check everything.
  const std::string state_path = checkpoint_path + "/trainer_state.json";
  CheckpointInfo info{checkpoint_path, step, parse_trainer_state(state_path, step, optimizer.kind())};

  const std::string model_path = checkpoint_path + "/model.safetensors";
  const io::SafeTensorsFile model(model_path);
  for (const Param& p : params) {
    if (!model.has(p.name)) fail_at(model_path, "missing tensor '" + p.name + "'");
    const io::TensorInfo& ti = model.info(p.name);
    if (ti.shape != p.value->shape())
      fail_at(model_path, "tensor '" + p.name + "': shape " + shape_str(ti.shape) + ", expected " + shape_str(p.value->shape()));
    if (!ti.dtype || !dtype_is_float(*ti.dtype))
      fail_at(model_path, "tensor '" + p.name + "': dtype " + ti.dtype_name + " is not a float type");
  }
  if (model.size() != params.size()) {
    std::unordered_map<std::string, int> known;
    for (const Param& p : params) known[p.name] = 1;
    for (const std::string& n : model.names())
      if (!known.count(n)) fail_at(model_path, "unexpected tensor '" + n + "' (not a parameter of this model)");
  }

  const std::string opt_path = checkpoint_path + "/optimizer.safetensors";
  const io::SafeTensorsFile opt_file(opt_path);
  const auto kind = opt_file.metadata().find("optimizer");
  if (kind == opt_file.metadata().end()) fail_at(opt_path, "metadata field 'optimizer' is missing");
  if (kind->second != optimizer.kind())
    fail_at(opt_path, "metadata field 'optimizer': written by '" + kind->second + "', loading into '" + optimizer.kind() + "'");
  NamedTensors opt_state;
  for (const std::string& n : opt_file.names()) opt_state.emplace_back(n, opt_file.tensor(n));

  // 2. Restore: the optimiser checks its tensors before changing anything; the parameter
  // copies cannot fail after the checks above.
  optimizer.load_state_tensors(opt_state, opt_path);
  for (const Param& p : params) p.value->copy_from(model.tensor(p.name));
  return info;
}

std::optional<CheckpointInfo> load_latest_checkpoint(const std::string& dir, const std::vector<Param>& params,
                                                     Optimizer& optimizer) {
  const std::optional<std::string> path = latest_checkpoint(dir);
  if (!path) return std::nullopt;
  return load_checkpoint(*path, params, optimizer);
}

}  // namespace mamba::train
