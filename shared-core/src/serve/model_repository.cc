#include "mamba/serve/model_repository.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>

#include "mamba/serve/errors.h"
#include "mamba/serve/metrics.h"

namespace fs = std::filesystem;

namespace mamba::serve {

std::string LoadedModelInfo::loaded_at_rfc3339() const {
  const std::time_t t = std::chrono::system_clock::to_time_t(loaded_at);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

// "17" -> 17; anything but a positive decimal integer -> 0.
int64_t parse_version(const std::string& s) {
  if (s.empty() || s.size() > 18) return 0;
  for (char c : s)
    if (c < '0' || c > '9') return 0;
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

int64_t mtime_ns(const fs::path& p) {
  std::error_code ec;
  const auto t = fs::last_write_time(p, ec);
  return ec ? 0 : static_cast<int64_t>(t.time_since_epoch().count());
}

// The newest mtime of the directory and the entries directly in it.
int64_t fingerprint(const fs::path& dir) {
  int64_t fp = mtime_ns(dir);
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) fp = std::max(fp, mtime_ns(it->path()));
  return fp;
}

std::string read_small_file(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return "";
  const auto size = fs::file_size(p, ec);
  if (ec || size > (1u << 20)) return "";  // config/metrics files are small; don't report huge ones
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string versions_str(const std::map<int64_t, int>& m) {
  std::string s;
  for (const auto& [v, _] : m) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

}  // namespace

ModelRepositoryBase::ModelRepositoryBase(fs::path root, Loader loader, RepositoryOptions options)
    : root_(std::move(root)), loader_(std::move(loader)), options_(std::move(options)) {
  if (options_.keep_versions < 1) options_.keep_versions = 1;
}

ModelRepositoryBase::~ModelRepositoryBase() { stop(); }

void ModelRepositoryBase::start() {
  scan();
  if (options_.poll_seconds > 0 && !watcher_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stopping_ = false;
    }
    watcher_ = std::thread([this] { watch_loop(); });
  }
}

void ModelRepositoryBase::stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

void ModelRepositoryBase::reload_now() { scan(); }

void ModelRepositoryBase::set_on_change(std::function<void(size_t)> on_change) {
  std::function<void(size_t)> f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    options_.on_change = std::move(on_change);
    f = options_.on_change;
  }
  if (f) f(loaded_names());
}

void ModelRepositoryBase::watch_loop() {
  const auto period = std::chrono::duration<double>(options_.poll_seconds);
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stopping_; })) {
    lock.unlock();
    try {
      scan();
    } catch (const std::exception& e) {
      spdlog::error("model repository {}: scan failed: {}", root_.string(), e.what());
    }
    lock.lock();
  }
}

void ModelRepositoryBase::scan() {
  std::lock_guard<std::mutex> scan_lock(scan_mu_);
  std::error_code ec;
  if (!fs::is_directory(root_, ec)) {
    spdlog::warn("model repository {}: not a directory; keeping what is loaded", root_.string());
    return;
  }

  // What is on disk: name -> version -> dir.
  std::map<std::string, std::map<int64_t, fs::path>> on_disk;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code e2;
    if (!it->is_directory(e2)) continue;
    const std::string name = it->path().filename().string();
    if (!is_valid_model_name(name)) {
      spdlog::debug("model repository: ignoring {} (not a valid model name)", it->path().string());
      continue;
    }
    auto& versions = on_disk[name];
    for (fs::directory_iterator vit(it->path(), e2), vend; !e2 && vit != vend; vit.increment(e2)) {
      std::error_code e3;
      if (!vit->is_directory(e3)) continue;
      const int64_t v = parse_version(vit->path().filename().string());
      if (v > 0) versions[v] = vit->path();
    }
  }
  if (ec) {
    spdlog::warn("model repository {}: cannot list: {}; keeping what is loaded", root_.string(), ec.message());
    return;
  }

  std::map<std::string, std::map<int64_t, Loaded>, std::less<>> current;
  {
    std::lock_guard<std::mutex> lock(mu_);
    current = models_;
  }

  std::map<std::string, std::map<int64_t, Loaded>, std::less<>> next;
  for (const auto& [name, versions] : on_disk) {
    std::map<int64_t, Loaded> chosen;
    const auto cur_it = current.find(name);
    for (auto v = versions.rbegin(); v != versions.rend() && static_cast<int>(chosen.size()) < options_.keep_versions;
         ++v) {
      const fs::path& dir = v->second;
      const int64_t fp = fingerprint(dir);
      const Loaded* have = nullptr;
      if (cur_it != current.end()) {
        auto h = cur_it->second.find(v->first);
        if (h != cur_it->second.end()) have = &h->second;
      }
      if (have && have->fingerprint == fp) {
        chosen.emplace(v->first, *have);
        continue;
      }
      auto failed = failed_.find(dir);
      if (failed != failed_.end() && failed->second == fp) {
        if (have) chosen.emplace(v->first, *have);  // changed and broken: keep the old load
        continue;
      }
      try {
        std::shared_ptr<const void> model = loader_(dir);
        if (!model) throw std::runtime_error("the loader returned no model");
        Loaded l;
        l.model = std::move(model);
        l.fingerprint = fp;
        l.info.name = name;
        l.info.version = v->first;
        l.info.dir = dir;
        l.info.config_json = read_small_file(dir / "config.json");
        l.info.metrics_json = read_small_file(dir / "metrics.json");
        l.info.loaded_at = std::chrono::system_clock::now();
        chosen.emplace(v->first, std::move(l));
        failed_.erase(dir);
        spdlog::info("model repository: loaded {} version {} from {}", name, v->first, dir.string());
      } catch (const std::exception& e) {
        failed_[dir] = fp;
        spdlog::error("model repository: refusing {} version {} ({}): {}", name, v->first, dir.string(), e.what());
        if (have) chosen.emplace(v->first, *have);
      } catch (...) {
        failed_[dir] = fp;
        spdlog::error("model repository: refusing {} version {} ({}): unknown exception", name, v->first,
                      dir.string());
        if (have) chosen.emplace(v->first, *have);
      }
    }
    if (!chosen.empty()) next.emplace(name, std::move(chosen));
  }
  // Forget failures of directories that are gone.
  for (auto it = failed_.begin(); it != failed_.end();) {
    std::error_code e2;
    it = fs::exists(it->first, e2) ? std::next(it) : failed_.erase(it);
  }

  // Did anything change? (name, version, model pointer)
  auto signature = [](const auto& m) {
    std::set<std::tuple<std::string, int64_t, const void*>> s;
    for (const auto& [n, vs] : m)
      for (const auto& [v, l] : vs) s.emplace(n, v, l.model.get());
    return s;
  };
  const bool changed = signature(current) != signature(next);
  std::function<void(size_t)> on_change;
  size_t names = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    models_ = next;  // the swap; holders of the old pointers keep them
    names = models_.size();
    on_change = options_.on_change;
  }
  if (!changed) return;
  for (const auto& [n, vs] : current)
    for (const auto& [v, l] : vs) {
      auto it = next.find(n);
      if (it == next.end() || !it->second.count(v)) spdlog::info("model repository: unloaded {} version {}", n, v);
    }
  if (options_.metrics) {
    const char* help = "Newest loaded version of each model (0 = none)";
    for (const auto& [n, vs] : current)
      if (!next.count(n)) options_.metrics->gauge("mamba_model_version", help, {{"model", n}}).set(0);
    for (const auto& [n, vs] : next)
      options_.metrics->gauge("mamba_model_version", help, {{"model", n}}).set(static_cast<double>(vs.rbegin()->first));
  }
  if (on_change) on_change(names);
}

std::shared_ptr<const void> ModelRepositoryBase::get_erased(std::string_view name, int64_t version,
                                                            LoadedModelInfo* info) const {
  check_model_name("model.name", name);
  check_model_version("model.version", version);
  std::lock_guard<std::mutex> lock(mu_);
  if (models_.empty()) throw ServiceError(grpc::StatusCode::FAILED_PRECONDITION, "no model is loaded yet");
  auto it = models_.find(name);
  if (it == models_.end())
    throw ServiceError(grpc::StatusCode::NOT_FOUND, "model.name: no model named '" + std::string(name) + "' is loaded",
                       "model.name");
  const auto& versions = it->second;
  const Loaded* l = nullptr;
  if (version == 0) {
    l = &versions.rbegin()->second;
  } else {
    auto v = versions.find(version);
    if (v == versions.end()) {
      std::map<int64_t, int> vs;
      for (const auto& [k, _] : versions) vs[k] = 0;
      throw ServiceError(grpc::StatusCode::NOT_FOUND, "model.version: '" + std::string(name) + "' version " +
                                                          std::to_string(version) + " is not loaded (loaded: " +
                                                          versions_str(vs) + ")",
                         "model.version");
    }
    l = &v->second;
  }
  if (info) *info = l->info;
  return l->model;
}

LoadedModelInfo ModelRepositoryBase::info(std::string_view name, int64_t version) const {
  LoadedModelInfo i;
  get_erased(name, version, &i);
  return i;
}

std::vector<LoadedModelInfo> ModelRepositoryBase::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LoadedModelInfo> out;
  for (const auto& [n, vs] : models_)
    for (const auto& [v, l] : vs) out.push_back(l.info);
  return out;
}

size_t ModelRepositoryBase::loaded_names() const {
  std::lock_guard<std::mutex> lock(mu_);
  return models_.size();
}

}  // namespace mamba::serve
