// ModelRepository: newest valid version, hot swap under concurrent get(), broken versions
// refused (and not retried until they change), name validation, listing, the watch thread.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "serve_test_util.h"
#include "mamba/serve/errors.h"
#include "mamba/serve/metrics.h"
#include "mamba/serve/model_repository.h"

using namespace mamba::serve;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using mamba::serve::testing::code_of;

namespace {

struct Model {
  double scale = 0;
  int64_t version = 0;
};

fs::path fresh_root(const std::string& name) {
  fs::path root = fs::path(MAMBA_TEST_TMP) / ("repo_" + name);
  fs::remove_all(root);
  fs::create_directories(root);
  return root;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// A version with {"scale": s}, or a broken one (config.json not JSON).
void add_version(const fs::path& root, const std::string& name, int v, double scale, bool broken = false) {
  const fs::path dir = root / name / std::to_string(v);
  write(dir / "config.json", broken ? "{not json" : nlohmann::json{{"scale", scale}}.dump());
}

// Moves every mtime in the version dir 10 s forward, so the fingerprint surely changes
// (the filesystem clock is coarse).
void touch_forward(const fs::path& dir) {
  for (auto& e : fs::directory_iterator(dir)) fs::last_write_time(e.path(), fs::last_write_time(e.path()) + 10s);
  fs::last_write_time(dir, fs::last_write_time(dir) + 10s);
}

struct Loader {
  std::atomic<int> calls{0};
  std::shared_ptr<const Model> operator()(const fs::path& dir) {
    ++calls;
    std::ifstream in(dir / "config.json");
    auto j = nlohmann::json::parse(in);  // throws on a broken config
    return std::make_shared<const Model>(Model{j.at("scale").get<double>(), std::stoll(dir.filename().string())});
  }
};

}  // namespace

TEST(ModelRepository, ServesTheNewestValidVersion) {
  const auto root = fresh_root("newest");
  add_version(root, "m", 1, 1.0);
  add_version(root, "m", 2, 2.0);
  add_version(root, "m", 10, 10.0, /*broken=*/true);
  fs::create_directories(root / "m" / "notaversion");
  fs::create_directories(root / "m" / "0");
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0});
  repo.start();
  LoadedModelInfo info;
  auto m = repo.get("m", 0, &info);
  EXPECT_EQ(m->version, 2);
  EXPECT_EQ(info.version, 2);
  EXPECT_EQ(repo.get("m", 2)->scale, 2.0);
  EXPECT_EQ(code_of([&] { repo.get("m", 1); }), grpc::StatusCode::NOT_FOUND);  // only the newest is kept
  EXPECT_EQ(code_of([&] { repo.get("m", 10); }), grpc::StatusCode::NOT_FOUND);
}

TEST(ModelRepository, KeepsSeveralVersionsWhenAsked) {
  const auto root = fresh_root("keep");
  add_version(root, "m", 1, 1.0);
  add_version(root, "m", 2, 2.0);
  add_version(root, "m", 3, 3.0);
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0, .keep_versions = 2});
  repo.start();
  EXPECT_EQ(repo.get("m")->version, 3);
  EXPECT_EQ(repo.get("m", 2)->version, 2);
  EXPECT_EQ(code_of([&] { repo.get("m", 1); }), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(repo.list().size(), 2u);
}

TEST(ModelRepository, RefusesABrokenVersionAndKeepsTheOldOne) {
  const auto root = fresh_root("broken");
  add_version(root, "m", 1, 1.0);
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0});
  repo.start();
  EXPECT_EQ(repo.get("m")->version, 1);
  add_version(root, "m", 2, 2.0, /*broken=*/true);
  repo.reload_now();
  EXPECT_EQ(repo.get("m")->version, 1);
  const int calls = loader.calls;
  repo.reload_now();
  repo.reload_now();
  EXPECT_EQ(loader.calls, calls);  // not retried while unchanged
  // Repaired (its mtime changes): loaded on the next scan.
  add_version(root, "m", 2, 2.0);
  touch_forward(root / "m" / "2");
  repo.reload_now();
  EXPECT_EQ(repo.get("m")->version, 2);
  EXPECT_EQ(repo.get("m")->scale, 2.0);
}

TEST(ModelRepository, HotSwapsWhileOtherThreadsCallGet) {
  const auto root = fresh_root("swap");
  add_version(root, "m", 1, 1.0);
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0});
  repo.start();
  auto held = repo.get("m");  // an in-flight request's pointer

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, calls{0};
  std::atomic<int64_t> newest_seen{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      int64_t last = 0;
      while (!stop) {
        try {
          auto m = repo.get("m");
          if (!m || m->version < last || m->scale != static_cast<double>(m->version)) ++failures;
          last = m->version;
          newest_seen = std::max<int64_t>(newest_seen, m->version);
          ++calls;
        } catch (...) {
          ++failures;
        }
      }
    });
  }
  for (int v = 2; v <= 6; ++v) {
    add_version(root, "m", v, static_cast<double>(v));
    repo.reload_now();
    EXPECT_EQ(repo.get("m")->version, v);
  }
  // Let the readers see the last version (generous wait, no timing assert).
  for (int i = 0; i < 3000 && newest_seen < 6; ++i) std::this_thread::sleep_for(1ms);
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(calls, 0);
  EXPECT_EQ(newest_seen, 6);
  EXPECT_EQ(held->version, 1);  // still valid after being swapped out
  EXPECT_EQ(held->scale, 1.0);
}

TEST(ModelRepository, RejectsBadNamesWithoutTouchingPaths) {
  const auto root = fresh_root("names");
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0});
  repo.start();
  EXPECT_EQ(code_of([&] { repo.get("m"); }), grpc::StatusCode::FAILED_PRECONDITION);  // nothing loaded
  add_version(root, "m", 1, 1.0);
  repo.reload_now();
  for (const char* bad : {"../x", "/etc/passwd", "a/b", "", ".", "..", ".hidden", "a\\b", "x y"})
    EXPECT_EQ(code_of([&] { repo.get(bad); }), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  EXPECT_EQ(code_of([&] { repo.get("m", -1); }), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(code_of([&] { repo.get("other"); }), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(repo.get("m")->version, 1);
}

TEST(ModelRepository, ListsConfigAndMetricsAndCallsOnChange) {
  const auto root = fresh_root("list");
  add_version(root, "a", 3, 1.5);
  write(root / "a" / "3" / "metrics.json", R"({"mae": 0.25})");
  add_version(root, "b", 1, 2.0);
  Loader loader;
  MetricsRegistry metrics;
  std::atomic<size_t> last_names{999};
  std::atomic<int> changes{0};
  ModelRepository<Model> repo(root, std::ref(loader),
                              {.poll_seconds = 0, .metrics = &metrics, .on_change = [&](size_t n) {
                                 last_names = n;
                                 ++changes;
                               }});
  repo.start();
  EXPECT_EQ(last_names, 2u);
  EXPECT_EQ(changes, 1);
  const auto list = repo.list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[0].version, 3);
  EXPECT_EQ(nlohmann::json::parse(list[0].config_json).at("scale"), 1.5);
  EXPECT_EQ(list[0].metrics_json, R"({"mae": 0.25})");
  EXPECT_EQ(list[1].metrics_json, "");
  EXPECT_EQ(list[0].loaded_at_rfc3339().size(), 20u);
  repo.reload_now();
  EXPECT_EQ(changes, 1);  // nothing changed
  fs::remove_all(root / "b");
  repo.reload_now();
  EXPECT_EQ(last_names, 1u);
  EXPECT_EQ(changes, 2);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("mamba_model_version{model=\"a\"} 3"), std::string::npos) << text;
  EXPECT_NE(text.find("mamba_model_version{model=\"b\"} 0"), std::string::npos) << text;
}

TEST(ModelRepository, TheWatchThreadPicksUpNewVersions) {
  const auto root = fresh_root("watch");
  add_version(root, "m", 1, 1.0);
  Loader loader;
  ModelRepository<Model> repo(root, std::ref(loader), {.poll_seconds = 0.02});
  repo.start();
  EXPECT_EQ(repo.get("m")->version, 1);
  add_version(root, "m", 2, 2.0);
  int64_t v = 0;
  for (int i = 0; i < 3000 && v != 2; ++i) {  // up to ~30 s
    std::this_thread::sleep_for(10ms);
    v = repo.get("m")->version;
  }
  EXPECT_EQ(v, 2);
  repo.stop();
}
