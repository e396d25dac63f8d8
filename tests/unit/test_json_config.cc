// JSON config helpers: typed getters with errors that name the file and field.
#include "mamba/io/json_config.h"

#include "mamba/tensor/tensor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using mamba::io::JsonConfig;

namespace {

std::string tmp_path(const std::string& name) {
  const fs::path d = fs::path(MAMBA_TEST_TMP) / "json_config";
  fs::create_directories(d);
  return (d / name).string();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Runs f, expects mamba::Error containing every needle.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected mamba::Error";
  } catch (const mamba::Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << n << " not in: " << e.what();
  }
}

}  // namespace

TEST(JsonConfig, TypedGetters) {
  const std::string path = tmp_path("config.json");
  write_text(path, R"({"d_model": 768, "n_layer": 24, "eps": 1e-5, "lr": 3, "name": "mamba", "tie": true,
                      "dt_rank": null, "ssm_cfg": {"d_state": 16, "layer": "Mamba2"}, "big": 18446744073709551615})");
  const JsonConfig c = JsonConfig::load(path);
  EXPECT_EQ(c.source(), path);
  EXPECT_EQ(c.get_int("d_model"), 768);
  EXPECT_EQ(c.get_int("missing", 7), 7);
  EXPECT_EQ(c.get_int("dt_rank", 5), 5) << "null counts as absent";
  EXPECT_DOUBLE_EQ(c.get_double("eps"), 1e-5);
  EXPECT_DOUBLE_EQ(c.get_double("lr"), 3.0) << "an integer is a valid double";
  EXPECT_DOUBLE_EQ(c.get_double("missing", 0.5), 0.5);
  EXPECT_EQ(c.get_string("name"), "mamba");
  EXPECT_EQ(c.get_string("missing", "x"), "x");
  EXPECT_TRUE(c.get_bool("tie"));
  EXPECT_FALSE(c.get_bool("missing", false));
  EXPECT_TRUE(c.has("d_model"));
  EXPECT_FALSE(c.has("dt_rank"));
  const JsonConfig ssm = c.get_object("ssm_cfg");
  EXPECT_EQ(ssm.get_int("d_state"), 16);
  expect_error([&] { ssm.get_int("layer"); }, {path + ": ssm_cfg", "field 'layer'", "expected an integer", "string"});

  expect_error([&] { c.get_int("missing"); }, {path, "missing required field 'missing'", "an integer"});
  expect_error([&] { c.get_int("dt_rank"); }, {"missing required field 'dt_rank'"});
  expect_error([&] { c.get_int("eps"); }, {path, "field 'eps'", "expected an integer", "number"});
  expect_error([&] { c.get_int("name", 1); }, {"field 'name'", "expected an integer", "\"mamba\""});
  expect_error([&] { c.get_int("big"); }, {"field 'big'", "within int64"});
  expect_error([&] { c.get_double("name"); }, {"field 'name'", "expected a number"});
  expect_error([&] { c.get_string("d_model"); }, {"field 'd_model'", "expected a string", "768"});
  expect_error([&] { c.get_string("d_model", "x"); }, {"expected a string"});
  expect_error([&] { c.get_bool("d_model"); }, {"field 'd_model'", "expected a boolean"});
  expect_error([&] { c.get_bool("name", true); }, {"expected a boolean"});
  expect_error([&] { c.get_object("name"); }, {"field 'name'", "expected an object"});
  expect_error([&] { c.get_object("nope"); }, {"missing required field 'nope'"});
}

TEST(JsonConfig, FileErrors) {
  expect_error([] { mamba::io::load_json_file(tmp_path("absent.json")); }, {"absent.json", "cannot open"});
  const std::string bad = tmp_path("bad.json");
  write_text(bad, "{\"a\": 1,");
  expect_error([&] { mamba::io::load_json_file(bad); }, {bad, "not valid JSON"});
  const std::string arr = tmp_path("array.json");
  write_text(arr, "[1, 2]");
  EXPECT_TRUE(mamba::io::load_json_file(arr).is_array());
  expect_error([&] { JsonConfig::load(arr); }, {arr, "expected a JSON object", "array"});
}

TEST(JsonConfig, AtomicWriteRoundTrip) {
  const std::string path = tmp_path("written.json");
  nlohmann::json j = {{"d_model", 16}, {"name", "m"}, {"nested", {{"x", 1.5}}}};
  mamba::io::write_json_file_atomic(path, j);
  EXPECT_EQ(mamba::io::load_json_file(path), j);
  j["d_model"] = 32;
  mamba::io::write_json_file_atomic(path, j, -1);
  EXPECT_EQ(JsonConfig::load(path).get_int("d_model"), 32);
  // No temp file of this target left (other tests may be writing theirs in the same directory).
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_NE(e.path().filename().string().rfind("written.json.tmp.", 0), 0u) << e.path();
  expect_error([&] { mamba::io::write_json_file_atomic(tmp_path("no/dir/x.json"), j); }, {"no/dir/x.json"});
}
