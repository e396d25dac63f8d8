// Elementwise arithmetic with NumPy/PyTorch broadcasting.
//
// Shapes: a and b broadcast from the trailing dimension (sizes equal, or one of them 1, or
// missing); the result has the broadcast shape and a's dtype. Inputs may have any strides.
// Dtypes: f32 or f64, and a and b must match (no implicit promotion).
// Errors: mamba::Error naming the op and both shapes when they do not broadcast.
// Every function allocates a new contiguous result except add_, which writes into a.
#pragma once
#include "mamba/tensor/tensor.h"

namespace mamba::ops {

enum class BinaryOp : uint8_t { add, sub, mul, div };

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);  // IEEE: x/0 is +-inf or NaN

// Scalar variants: a (op) s, s converted to a's dtype.
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);

// In place: a += b, with b broadcast to a's shape (a's shape must be the broadcast shape).
// a may be a strided view; returns a.
Tensor& add_(Tensor& a, const Tensor& b);

// The broadcast shape of two shapes, or throws naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op = "ops::broadcast_shapes");

// General entry point and its plain reference (one element at a time, odometer loop).
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor binary_ref(BinaryOp op, const Tensor& a, const Tensor& b);

}  // namespace mamba::ops
