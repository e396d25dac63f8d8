// JSON-lines logs on stderr, one object per line:
//   {"ts":"2026-12-03T07:00:00.123Z","level":"info","msg":"listening","port":50051}
// init_json_logging() replaces spdlog's default logger, so plain spdlog::info("...") calls
// anywhere (the core, the services) come out as JSON too; log_event() adds fields.
// Thread-safety: the logger is thread-safe (spdlog's _mt sink); init_json_logging() is
// meant to be called once at startup, before other threads log.
#pragma once

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <string_view>

namespace mamba::serve {

// level: "trace", "debug", "info", "warn", "error", "critical", "off". Throws mamba::Error
// on an unknown level.
void init_json_logging(std::string_view level = "info");

// Logs `msg` with extra fields merged into the line's object (fields must be an object;
// "ts", "level" and "msg" are set by the logger).
void log_event(spdlog::level::level_enum level, std::string_view msg, const nlohmann::json& fields);

}  // namespace mamba::serve
