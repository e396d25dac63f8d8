#include "mamba/serve/errors.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <new>

#include "mamba/tensor/tensor.h"

namespace mamba::serve {

void throw_invalid(std::string_view field, std::string_view what) {
  throw ServiceError(grpc::StatusCode::INVALID_ARGUMENT, std::string(field) + ": " + std::string(what),
                     std::string(field));
}

grpc::Status status_from_exception(std::exception_ptr e, std::string_view where) {
  try {
    std::rethrow_exception(e);
  } catch (const ServiceError& err) {
    return grpc::Status(err.code(), err.what());
  } catch (const mamba::Error& err) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, err.what());
  } catch (const std::bad_alloc&) {
    spdlog::warn("{}: out of memory", where);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of memory for this request");
  } catch (const std::exception& err) {
    spdlog::error("{}: internal error: {}", where, err.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
  } catch (...) {
    spdlog::error("{}: internal error: unknown exception", where);
    return grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
  }
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

void check_limit(std::string_view field, uint64_t count, uint64_t limit, std::string_view unit) {
  if (count <= limit) return;
  throw ServiceError(grpc::StatusCode::RESOURCE_EXHAUSTED,
                     std::string(field) + ": " + std::to_string(count) + " " + std::string(unit) +
                         " exceeds the limit of " + std::to_string(limit),
                     std::string(field), static_cast<int64_t>(std::min<uint64_t>(limit, INT64_MAX)));
}

void check_range(std::string_view field, int64_t value, int64_t min, int64_t max) {
  if (value < min)
    throw_invalid(field, "must be at least " + std::to_string(min) + " (got " + std::to_string(value) + ")");
  if (value > max)
    throw_invalid(field, "must be at most " + std::to_string(max) + " (got " + std::to_string(value) + ")");
}

std::string indexed(std::string_view field, size_t index) {
  return std::string(field) + "[" + std::to_string(index) + "]";
}

size_t proto_dtype_size(int dtype) {
  switch (dtype) {
    case 1: return 4;  // F32
    case 2: return 8;  // F64
    case 3: return 2;  // BF16
    case 4: return 2;  // F16
    case 5: return 4;  // I32
    case 6: return 8;  // I64
    case 7: return 1;  // U8
    default: return 0;
  }
}

uint64_t check_tensor_bytes(std::string_view field, int dtype, std::span<const int64_t> shape,
                            uint64_t data_bytes, uint64_t max_bytes) {
  const size_t elem = proto_dtype_size(dtype);
  if (elem == 0) throw_invalid(std::string(field) + ".dtype", "unknown or unset dtype " + std::to_string(dtype));
  // Multiply in unsigned 64-bit, stopping as soon as the product passes max_bytes: every
  // intermediate is <= max_bytes * (a dimension), which __builtin_mul_overflow guards.
  uint64_t bytes = elem;
  bool over = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) throw_invalid(indexed(std::string(field) + ".shape", i), "negative dimension " + std::to_string(shape[i]));
    if (over) continue;  // keep checking for negative dimensions
    uint64_t next = 0;
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(shape[i]), &next) || next > max_bytes) over = true;
    bytes = next;
  }
  // A zero dimension makes the product 0 even after an earlier "overflow".
  for (int64_t d : shape)
    if (d == 0) { over = false; bytes = 0; }
  if (over) {
    throw ServiceError(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       std::string(field) + ": the shape describes more than the limit of " +
                           std::to_string(max_bytes) + " bytes",
                       std::string(field), static_cast<int64_t>(std::min<uint64_t>(max_bytes, INT64_MAX)));
  }
  check_limit(field, bytes, max_bytes, "bytes");
  if (bytes != data_bytes) {
    throw_invalid(std::string(field) + ".data", std::to_string(data_bytes) + " bytes, but the shape and dtype need " +
                                                    std::to_string(bytes));
  }
  return bytes;
}

bool is_valid_model_name(std::string_view name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void check_model_name(std::string_view field, std::string_view name) {
  if (name.empty()) throw_invalid(field, "a model name is required");
  if (!is_valid_model_name(name))
    throw_invalid(field, "invalid model name (1 to 128 of A-Z a-z 0-9 . _ -, not starting with '.')");
}

void check_model_version(std::string_view field, int64_t version) {
  if (version < 0) throw_invalid(field, "must be 0 (newest) or a positive version (got " + std::to_string(version) + ")");
}

}  // namespace mamba::serve
