// A versioned model repository on disk, watched and hot-swapped.
//
// Layout: <root>/<name>/<version>/ where <name> is a valid model name (errors.h) and
// <version> a positive integer ("1", "2", "17"); anything else under root is ignored (one
// log line). A version directory holds whatever the service's loader reads, plus
// optionally config.json and metrics.json, which list() reports verbatim.
//
// Serving policy: per name, the newest `keep_versions` versions that load successfully
// (default 1: only the newest). get(name, 0) returns the newest loaded one; get(name, v)
// that exact version if it is loaded.
// Loading: the loader is called with a version directory and returns the model or throws.
// A version that throws is refused with a log line; whatever was serving keeps serving,
// and the broken version is not retried until its fingerprint (the newest mtime of the
// directory and the files directly in it) changes, e.g. when a half-copied version is
// completed. Versions are loaded outside the lock: get() never waits for a load.
// Swapping: a newly loaded version replaces the old one atomically (a shared_ptr swap
// under a mutex); requests that already hold the old pointer finish with it, and the old
// model is freed when the last of them lets go. No request fails because of a swap.
// Watching: start() loads once synchronously, then (poll_seconds > 0) a background thread
// rescans every poll_seconds. reload_now() rescans synchronously (tests, admin).
// Thread-safety: every method may be called from any thread; scans are serialised.
//
//   mamba::serve::ModelRepository<Forecaster> repo(opts.model_root,
//       [](const std::filesystem::path& dir) { return std::make_shared<const Forecaster>(dir); },
//       {.poll_seconds = opts.poll_seconds, .metrics = &runtime.metrics()});
//   runtime.serve_health_from(repo, "mamba.forecasting.v1.ForecastingService");
//   repo.start();
//   std::shared_ptr<const Forecaster> m = repo.get(req.model().name(), req.model().version());
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <condition_variable>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace mamba::serve {

class MetricsRegistry;

struct LoadedModelInfo {
  std::string name;
  int64_t version = 0;
  std::filesystem::path dir;
  std::string config_json;   // contents of config.json, "" when absent
  std::string metrics_json;  // contents of metrics.json, "" when absent
  std::chrono::system_clock::time_point loaded_at;
  std::string loaded_at_rfc3339() const;  // "2026-12-03T07:00:00Z"
};

struct RepositoryOptions {
  double poll_seconds = 10;  // 0 = no background watch
  int keep_versions = 1;     // loaded versions per name (the newest that load)
  MetricsRegistry* metrics = nullptr;  // mamba_model_version{model} when set
  // Called (on the scanning thread, without the repository's lock) after a scan changed the
  // set of loaded versions; the argument is the number of names with a loaded version.
  std::function<void(size_t loaded_names)> on_change = nullptr;
};

// The type-erased core; use ModelRepository<M> below.
class ModelRepositoryBase {
 public:
  using Loader = std::function<std::shared_ptr<const void>(const std::filesystem::path& version_dir)>;

  ModelRepositoryBase(std::filesystem::path root, Loader loader, RepositoryOptions options);
  ~ModelRepositoryBase();  // stop()s
  ModelRepositoryBase(const ModelRepositoryBase&) = delete;
  ModelRepositoryBase& operator=(const ModelRepositoryBase&) = delete;

  // Scans once (synchronously), then starts the watch thread when poll_seconds > 0.
  // A missing root is not an error (logged; nothing is loaded until it appears).
  void start();
  void stop();  // idempotent; joins the watch thread
  // Rescans now; returns when the scan is done.
  void reload_now();
  // Registers the callback (replacing RepositoryOptions::on_change) and calls it once now.
  void set_on_change(std::function<void(size_t loaded_names)> on_change);

  // Throws ServiceError: INVALID_ARGUMENT for a bad name or negative version (nothing is
  // ever joined into a path), NOT_FOUND for an unknown name or a version that is not
  // loaded, FAILED_PRECONDITION when no model at all is loaded.
  std::shared_ptr<const void> get_erased(std::string_view name, int64_t version, LoadedModelInfo* info = nullptr) const;
  LoadedModelInfo info(std::string_view name, int64_t version) const;  // same errors as get
  std::vector<LoadedModelInfo> list() const;  // every loaded version, by name then version
  size_t loaded_names() const;
  const std::filesystem::path& root() const { return root_; }

 private:
  struct Loaded {
    std::shared_ptr<const void> model;
    LoadedModelInfo info;
    int64_t fingerprint = 0;
  };
  void scan();
  void watch_loop();

  const std::filesystem::path root_;
  const Loader loader_;
  RepositoryOptions options_;

  mutable std::mutex mu_;  // guards models_ and options_.on_change
  std::map<std::string, std::map<int64_t, Loaded>, std::less<>> models_;

  std::mutex scan_mu_;  // serialises scans; guards failed_
  std::map<std::filesystem::path, int64_t> failed_;  // version dir -> fingerprint that failed

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread watcher_;
};

template <class M>
class ModelRepository {
 public:
  using Loader = std::function<std::shared_ptr<const M>(const std::filesystem::path& version_dir)>;

  ModelRepository(std::filesystem::path root, Loader loader, RepositoryOptions options = {})
      : base_(std::move(root),
              [loader = std::move(loader)](const std::filesystem::path& dir) -> std::shared_ptr<const void> {
                return loader(dir);
              },
              std::move(options)) {}

  void start() { base_.start(); }
  void stop() { base_.stop(); }
  void reload_now() { base_.reload_now(); }
  void set_on_change(std::function<void(size_t)> f) { base_.set_on_change(std::move(f)); }

  // See ModelRepositoryBase::get_erased for the errors. `info` (optional) receives the
  // version's description (e.g. the version number to echo in a response).
  std::shared_ptr<const M> get(std::string_view name, int64_t version = 0, LoadedModelInfo* info = nullptr) const {
    return std::static_pointer_cast<const M>(base_.get_erased(name, version, info));
  }
  LoadedModelInfo info(std::string_view name, int64_t version = 0) const { return base_.info(name, version); }
  std::vector<LoadedModelInfo> list() const { return base_.list(); }
  size_t loaded_names() const { return base_.loaded_names(); }
  const std::filesystem::path& root() const { return base_.root(); }

 private:
  ModelRepositoryBase base_;
};

}  // namespace mamba::serve
