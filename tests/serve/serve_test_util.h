// Helpers shared by the serving runtime's tests.
#pragma once

#include <grpcpp/support/status.h>

#include "mamba/serve/errors.h"

namespace mamba::serve::testing {

// The status code a ServiceError thrown by f() carries; OK when f() returns.
template <class F>
grpc::StatusCode code_of(F&& f) {
  try {
    f();
  } catch (const ServiceError& e) {
    return e.code();
  }
  return grpc::StatusCode::OK;
}

}  // namespace mamba::serve::testing
