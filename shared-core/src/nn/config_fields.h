// Reading layer hyperparameters from the reference's config.json objects (internal).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "mamba/tensor/tensor.h"

namespace mamba::nn {

inline int64_t json_int(const nlohmann::json& j, const char* key, int64_t def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number_integer()) fail("config", std::string("field '") + key + "' must be an integer, got " + j[key].dump());
  return j[key].get<int64_t>();
}

inline double json_double(const nlohmann::json& j, const char* key, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) fail("config", std::string("field '") + key + "' must be a number, got " + j[key].dump());
  return j[key].get<double>();
}

inline bool json_bool(const nlohmann::json& j, const char* key, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean()) fail("config", std::string("field '") + key + "' must be true or false, got " + j[key].dump());
  return j[key].get<bool>();
}

inline void json_reject_true(const nlohmann::json& j, const char* key, const char* what) {
  if (json_bool(j, key, false)) fail("config", std::string("field '") + key + "' = true (" + what + ") is not supported");
}

}  // namespace mamba::nn
