#include "mamba/recommendation/model_dir.h"

#include <unistd.h>

#include <filesystem>

#include "mamba/io/atomic_file.h"
#include "mamba/io/json_config.h"

namespace mamba::recommendation {

namespace fs = std::filesystem;

RecModel RecModel::load(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  const io::JsonConfig cfg = io::JsonConfig::load(cfg_path);
  if (cfg.get_string("format", "") != "mamba-rec") fail("rec model", "'" + cfg_path + "': field 'format' is not \"mamba-rec\"");
  if (!cfg.has("model")) fail("rec model", "'" + cfg_path + "': missing field 'model'");
  RecModel m;
  m.config = cfg.json();
  const Mamba4RecConfig net_cfg = Mamba4RecConfig::from_json(cfg.json()["model"]);
  const std::string items_path = dir + "/items.json";
  const nlohmann::json items = io::load_json_file(items_path);
  if (!items.is_array() || items.empty()) fail("rec model", "'" + items_path + "': not a non-empty array");
  std::vector<std::string> keys{""};
  for (size_t i = 1; i < items.size(); ++i) {
    if (!items[i].is_string()) fail("rec model", "'" + items_path + "': entry " + std::to_string(i) + " is not a string");
    keys.push_back(items[i].get<std::string>());
  }
  m.items = ItemVocab(std::move(keys));
  if (m.items.num_items() != net_cfg.num_items)
    fail("rec model", "'" + items_path + "': " + std::to_string(m.items.num_items()) + " items for a model of num_items " +
                          std::to_string(net_cfg.num_items));
  m.net = std::make_shared<Mamba4Rec>(net_cfg, 0);
  m.net->load_weights(dir + "/model.safetensors");
  const std::string metrics_path = dir + "/metrics.json";
  m.metrics = fs::exists(metrics_path) ? io::load_json_file(metrics_path) : nlohmann::json::object();
  return m;
}

void RecModel::save(const std::string& dir) const {
  if (!net) fail("rec model", "no network to save");
  if (items.num_items() != net->config().num_items) fail("rec model", "vocabulary and network disagree on num_items");
  io::write_directory_atomic(fs::absolute(dir).string(), [&](const std::string& staging_dir) {
    const fs::path staging(staging_dir);
    nlohmann::json c = config.is_object() ? config : nlohmann::json::object();
    c["format"] = "mamba-rec";
    c["version"] = 1;
    c["model"] = net->config().to_json();
    io::write_json_file_atomic((staging / "config.json").string(), c);
    net->save_weights((staging / "model.safetensors").string());
    nlohmann::json keys = nlohmann::json::array();
    keys.push_back(nullptr);
    for (int64_t i = 1; i <= items.num_items(); ++i) keys.push_back(items.key(static_cast<int32_t>(i)));
    io::write_json_file_atomic((staging / "items.json").string(), keys, -1);
    io::write_json_file_atomic((staging / "metrics.json").string(), metrics.is_object() ? metrics : nlohmann::json::object());
  });
}

}  // namespace mamba::recommendation
