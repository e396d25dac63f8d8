// A trained recommendation model as one directory, what `mamba-rec train` writes and
// `mamba-rec evaluate` loads:
//   config.json        {"format": "mamba-rec", "version": 1, "model": Mamba4RecConfig,
//                       "training": {...options...}, "trained_on", "created"}
//   model.safetensors  the parameters (config in __metadata__ too)
//   items.json         the item vocabulary: an array, entry i = external key of dense id i
//                      (entry 0, the padding id, is null)
//   metrics.json       validation/test metrics of the model and the baselines
// Written into a staging directory renamed over the target, so a reader never sees a
// half-written model. Errors: mamba::Error naming the file and the field.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "mamba/recommendation/mamba4rec.h"
#include "mamba/recommendation/protocol.h"

namespace mamba::recommendation {

struct RecModel {
  std::shared_ptr<Mamba4Rec> net;
  ItemVocab items;
  nlohmann::json config;   // config.json as written (extra fields kept)
  nlohmann::json metrics;  // object

  static RecModel load(const std::string& dir);
  void save(const std::string& dir) const;  // dir's parent must exist
};

}  // namespace mamba::recommendation
