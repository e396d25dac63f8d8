#include "mamba/io/json_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "mamba/io/atomic_file.h"
#include "mamba/tensor/tensor.h"

namespace mamba::io {
namespace {

constexpr const char* kOp = "config";

std::string describe(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return std::string(v.type_name()) + " " + s;
}

}  // namespace

nlohmann::json load_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(kOp, "cannot open '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(kOp, "cannot read '" + path + "'");
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(kOp, "'" + path + "' is not valid JSON: " + e.what());
  }
}

void write_json_file_atomic(const std::string& path, const nlohmann::json& value, int indent) {
  std::string text;
  try {
    text = value.dump(indent);
  } catch (const nlohmann::json::exception& e) {
    fail(kOp, "cannot write '" + path + "': " + e.what());
  }
  text.push_back('\n');
  write_file_atomic(path, text);
}

JsonConfig::JsonConfig(nlohmann::json value, std::string source) : value_(std::move(value)), source_(std::move(source)) {
  if (!value_.is_object()) fail(kOp, "'" + source_ + "': expected a JSON object, got " + describe(value_));
}

JsonConfig JsonConfig::load(const std::string& path) { return JsonConfig(load_json_file(path), path); }

const nlohmann::json* JsonConfig::find(const std::string& field) const {
  const auto it = value_.find(field);
  if (it == value_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool JsonConfig::has(const std::string& field) const { return find(field) != nullptr; }

const nlohmann::json& JsonConfig::require(const std::string& field, const char* expected) const {
  const nlohmann::json* v = find(field);
  if (!v) fail(kOp, "'" + source_ + "': missing required field '" + field + "' (" + expected + ")");
  return *v;
}

void JsonConfig::wrong_type(const std::string& field, const char* expected, const nlohmann::json& got) const {
  fail(kOp, "'" + source_ + "': field '" + field + "': expected " + expected + ", got " + describe(got));
}

int64_t JsonConfig::as_int(const std::string& field, const nlohmann::json& v) const {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      wrong_type(field, "an integer within int64", v);
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  wrong_type(field, "an integer", v);
}

double JsonConfig::as_double(const std::string& field, const nlohmann::json& v) const {
  if (!v.is_number()) wrong_type(field, "a number", v);
  return v.get<double>();
}

std::string JsonConfig::as_string(const std::string& field, const nlohmann::json& v) const {
  if (!v.is_string()) wrong_type(field, "a string", v);
  return v.get<std::string>();
}

bool JsonConfig::as_bool(const std::string& field, const nlohmann::json& v) const {
  if (!v.is_boolean()) wrong_type(field, "a boolean", v);
  return v.get<bool>();
}

int64_t JsonConfig::get_int(const std::string& field) const { return as_int(field, require(field, "an integer")); }
int64_t JsonConfig::get_int(const std::string& field, int64_t fallback) const {
  const nlohmann::json* v = find(field);
  return v ? as_int(field, *v) : fallback;
}
double JsonConfig::get_double(const std::string& field) const { return as_double(field, require(field, "a number")); }
double JsonConfig::get_double(const std::string& field, double fallback) const {
  const nlohmann::json* v = find(field);
  return v ? as_double(field, *v) : fallback;
}
std::string JsonConfig::get_string(const std::string& field) const {
  return as_string(field, require(field, "a string"));
}
std::string JsonConfig::get_string(const std::string& field, const std::string& fallback) const {
  const nlohmann::json* v = find(field);
  return v ? as_string(field, *v) : fallback;
}
bool JsonConfig::get_bool(const std::string& field) const { return as_bool(field, require(field, "a boolean")); }
bool JsonConfig::get_bool(const std::string& field, bool fallback) const {
  const nlohmann::json* v = find(field);
  return v ? as_bool(field, *v) : fallback;
}

JsonConfig JsonConfig::get_object(const std::string& field) const {
  const nlohmann::json& v = require(field, "an object");
  if (!v.is_object()) wrong_type(field, "an object", v);
  return JsonConfig(v, source_ + ": " + field);
}

}  // namespace mamba::io
