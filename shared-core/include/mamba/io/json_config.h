// Reading and writing JSON configuration files (config.json, preprocess.json) with errors
// that say which file, which field and what type was expected.
//
// JsonConfig pairs a JSON object with the name of where it came from (a file path, or
// "<path>: <field>" for a nested object), so every error reads like
//   "config: 'models/m/1/config.json': field 'd_model': expected an integer, got string \"16\""
// Getters with a fallback return it when the field is absent or null; getters without one
// throw when it is absent. A present field of the wrong type always throws.
// Duplicate keys in a file: the last one wins (nlohmann's behaviour; not detected here).
// Integers must be JSON integers (16, not 16.0 or "16"); doubles accept any number.
// Thread-safety: const methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace mamba::io {

// Reads and parses a JSON file (any JSON value). Throws mamba::Error naming the path and,
// for syntax errors, the position.
nlohmann::json load_json_file(const std::string& path);

// Writes `value` (pretty-printed with `indent` spaces; -1 for compact) plus a newline to
// `path` atomically (temp file + fsync + rename; see atomic_file.h).
void write_json_file_atomic(const std::string& path, const nlohmann::json& value, int indent = 2);

class JsonConfig {
 public:
  // `source` names the object in error messages. Throws if `value` is not an object.
  JsonConfig(nlohmann::json value, std::string source);
  // load_json_file + the object check.
  static JsonConfig load(const std::string& path);

  const nlohmann::json& json() const { return value_; }
  const std::string& source() const { return source_; }
  bool has(const std::string& field) const;  // present and not null

  int64_t get_int(const std::string& field) const;
  int64_t get_int(const std::string& field, int64_t fallback) const;
  double get_double(const std::string& field) const;
  double get_double(const std::string& field, double fallback) const;
  std::string get_string(const std::string& field) const;
  std::string get_string(const std::string& field, const std::string& fallback) const;
  bool get_bool(const std::string& field) const;
  bool get_bool(const std::string& field, bool fallback) const;
  // A nested object, its source "<source>: <field>". Throws when absent or not an object.
  JsonConfig get_object(const std::string& field) const;

 private:
  const nlohmann::json* find(const std::string& field) const;  // null when absent or null
  const nlohmann::json& require(const std::string& field, const char* expected) const;
  [[noreturn]] void wrong_type(const std::string& field, const char* expected, const nlohmann::json& got) const;
  int64_t as_int(const std::string& field, const nlohmann::json& v) const;
  double as_double(const std::string& field, const nlohmann::json& v) const;
  std::string as_string(const std::string& field, const nlohmann::json& v) const;
  bool as_bool(const std::string& field, const nlohmann::json& v) const;

  nlohmann::json value_;
  std::string source_;
};

}  // namespace mamba::io
