// Errors at the service edge: what a handler throws, and how exceptions become statuses.
//
// Inside a handler (a body run by Runtime::handle, see runtime.h) throw ServiceError with
// the gRPC code the client should see; the helpers below throw it with messages that name
// the field and the limit. At the edge, status_from_exception() translates:
//   ServiceError         -> its code and message
//   mamba::Error         -> INVALID_ARGUMENT (the core's errors are about the input's shapes)
//   std::bad_alloc       -> RESOURCE_EXHAUSTED
//   anything else        -> INTERNAL "internal error" (the what() is logged, not sent)
// Codes used across the suite (../shared/ARCHITECTURE.md): INVALID_ARGUMENT for bad input,
// NOT_FOUND for an unknown model, FAILED_PRECONDITION for no model loaded,
// RESOURCE_EXHAUSTED for over-limit requests, DEADLINE_EXCEEDED, UNAVAILABLE while draining.
// Thread-safety: all functions are pure and may be called from any thread.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mamba::serve {

// `field` and `limit` (when set) also reach the client as a mamba.common.v1.ErrorDetail
// in the binary trailing metadata "mamba-error-detail-bin" (Runtime::handle adds it).
class ServiceError : public std::runtime_error {
 public:
  ServiceError(grpc::StatusCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ServiceError(grpc::StatusCode code, const std::string& message, std::string field, int64_t limit = 0)
      : std::runtime_error(message), code_(code), field_(std::move(field)), limit_(limit) {}
  grpc::StatusCode code() const { return code_; }
  const std::string& field() const { return field_; }  // "" when the error is not about one field
  int64_t limit() const { return limit_; }             // 0 when no limit applies

 private:
  grpc::StatusCode code_;
  std::string field_;
  int64_t limit_ = 0;
};

// The trailing metadata key of the serialized mamba.common.v1.ErrorDetail.
inline constexpr const char* kErrorDetailKey = "mamba-error-detail-bin";

[[noreturn]] void throw_invalid(std::string_view field, std::string_view what);  // INVALID_ARGUMENT "field: what"

// Translates the exception (see the table above). Logs INTERNAL ones with `where`.
grpc::Status status_from_exception(std::exception_ptr e, std::string_view where);

// "OK", "INVALID_ARGUMENT", ... (the names Prometheus labels and logs use).
const char* status_code_name(grpc::StatusCode code);

// ---- limits (RESOURCE_EXHAUSTED, "field: 5000 values exceeds the limit of 4096") ----
// `unit` is the plural noun of the count: "values", "bytes", "series", "variables".
void check_limit(std::string_view field, uint64_t count, uint64_t limit, std::string_view unit);
// INVALID_ARGUMENT "field: must be at least 1 (got 0)" / "at most".
void check_range(std::string_view field, int64_t value, int64_t min, int64_t max);
// "series.variables" + 2 -> "series.variables[2]"
std::string indexed(std::string_view field, size_t index);

// ---- tensors ----
// Element size of a mamba.common.v1.DType enum value (1..7), 0 for an unknown value.
size_t proto_dtype_size(int dtype);
// Checks a mamba.common.v1.Tensor's description against its data, before anything is
// allocated: a known dtype, no negative dimension, product(shape) * element size computed
// without overflow, <= max_bytes (RESOURCE_EXHAUSTED), and == data_bytes (INVALID_ARGUMENT).
// Returns the byte size. An empty shape is a scalar (one element).
uint64_t check_tensor_bytes(std::string_view field, int dtype, std::span<const int64_t> shape,
                            uint64_t data_bytes, uint64_t max_bytes);

// ---- model selectors ----
// A model name is an opaque key looked up in the repository, never a path: 1..128 of
// [A-Za-z0-9._-], not starting with '.' (so no "..", "/etc/passwd", "a/b", ""). Throws
// INVALID_ARGUMENT naming `field` otherwise. Versions: >= 0 (0 = newest).
bool is_valid_model_name(std::string_view name);
void check_model_name(std::string_view field, std::string_view name);
void check_model_version(std::string_view field, int64_t version);

}  // namespace mamba::serve
