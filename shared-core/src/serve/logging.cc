#include "mamba/serve/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <ctime>

#include "mamba/tensor/tensor.h"

namespace mamba::serve {

namespace {

// log_event() sends its fields as a payload that starts with this byte followed by a JSON
// object holding "msg" and the fields; any other payload is a plain message.
constexpr char kFieldsMarker = '\x1e';

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const auto t = msg.time;
    const auto secs = time_point_cast<seconds>(t);
    const auto ms = duration_cast<milliseconds>(t - secs).count();
    const std::time_t tt = system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char ts[80];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));

    nlohmann::ordered_json line;
    line["ts"] = ts;
    const auto lv = spdlog::level::to_string_view(msg.level);
    line["level"] = std::string(lv.data(), lv.size());
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    bool done = false;
    if (!payload.empty() && payload.front() == kFieldsMarker) {
      auto fields = nlohmann::ordered_json::parse(payload.substr(1), nullptr, /*allow_exceptions=*/false);
      if (fields.is_object()) {
        for (auto& [k, v] : fields.items()) line[k] = v;
        done = true;
      }
    }
    if (!done) line["msg"] = std::string(payload);
    if (msg.logger_name.size() && msg.logger_name != std::string_view("mamba"))
      line["logger"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    // Invalid UTF-8 in a message must not throw out of the logger.
    const std::string s = line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    dest.append(s.data(), s.data() + s.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

void init_json_logging(std::string_view level) {
  const auto lv = spdlog::level::from_str(std::string(level));
  if (lv == spdlog::level::off && level != "off") throw Error("unknown log level '" + std::string(level) + "'");
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("mamba", sink);
  logger->set_formatter(std::make_unique<JsonFormatter>());
  logger->set_level(lv);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void log_event(spdlog::level::level_enum level, std::string_view msg, const nlohmann::json& fields) {
  nlohmann::ordered_json obj;
  obj["msg"] = std::string(msg);
  if (fields.is_object())
    for (auto& [k, v] : fields.items())
      if (k != "ts" && k != "level" && k != "msg") obj[k] = v;
  std::string payload(1, kFieldsMarker);
  payload += obj.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  spdlog::log(level, "{}", payload);
}

}  // namespace mamba::serve
