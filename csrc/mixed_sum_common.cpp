// Contract checks shared by the CPU and CUDA entry points: cheap, and the error
// messages name the offending argument.
#include "mixed_sum.h"

#include <ATen/ATen.h>

namespace sdarts {

namespace {

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

void check_like(const Tensor& t, const Tensor& like, at::MemoryFormat fmt, const char* who, const char* what) {
  TORCH_CHECK(t.defined(), who, ": ", what, " is undefined");
  TORCH_CHECK(t.device() == like.device(), who, ": ", what, " is on ", t.device(), " but the inputs are on ",
              like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), who, ": ", what, " has dtype ", t.scalar_type(),
              " but the inputs have ", like.scalar_type());
  TORCH_CHECK(t.sizes() == like.sizes(), who, ": ", what, " has shape ", t.sizes(), " but the inputs have ",
              like.sizes());
  TORCH_CHECK(t.is_contiguous(fmt), who, ": ", what, " must have the inputs' layout (",
              fmt == at::MemoryFormat::ChannelsLast ? "channels_last" : "contiguous NCHW", "), got strides ",
              t.strides());
}

void check_param(const Tensor& t, const Tensor& like, at::IntArrayRef shape, const char* who, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, who, ": ", what, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), who, ": ", what, " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.sizes() == shape, who, ": ", what, " must have shape ", shape, ", got ", t.sizes());
}

}  // namespace

Tensor empty_in_format(const Tensor& like, at::MemoryFormat format) {
  Tensor t = at::empty_like(like);
  if (!t.is_contiguous(format)) t = at::empty(like.sizes(), like.options().memory_format(format));
  return t;
}

MixedGeometry check_inputs(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                           const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool,
                           c10::DeviceType device_type, const char* who) {
  const int64_t B = static_cast<int64_t>(branches.size());
  TORCH_CHECK(B <= kMaxBranches, who, ": at most ", kMaxBranches, " branches per call, got ", B);
  const bool have_x = x.has_value() && x->defined();
  TORCH_CHECK(B > 0 || have_x, who, ": x is required when there are no branches");
  TORCH_CHECK(have_x || !(has_skip || has_pool), who, ": has_skip/has_pool need x");

  const Tensor& like = B > 0 ? branches[0] : *x;
  TORCH_CHECK(like.defined(), who, ": branches[0] is undefined");
  TORCH_CHECK(like.device().type() == device_type, who, ": inputs must be on ", device_type, ", got ",
              like.device());
  TORCH_CHECK(like.dim() == 4, who, ": inputs must be 4-D (N, C, H, W), got shape ", like.sizes());
  TORCH_CHECK(supported_dtype(like.scalar_type()), who, ": unsupported dtype ", like.scalar_type(),
              " (float32, float16, bfloat16 or float64)");

  at::MemoryFormat fmt;
  if (like.is_contiguous()) {
    fmt = at::MemoryFormat::Contiguous;
  } else if (like.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    fmt = at::MemoryFormat::ChannelsLast;
  } else {
    TORCH_CHECK(false, who, ": inputs must be contiguous NCHW or channels_last, got strides ", like.strides());
  }
  for (int64_t k = 0; k < B; ++k) check_like(branches[k], like, fmt, who, "a branch");
  if (have_x) check_like(*x, like, fmt, who, "x");

  MixedGeometry g{like, fmt, fmt == at::MemoryFormat::ChannelsLast, B,
                  like.size(0), like.size(1), like.size(2), like.size(3)};

  TORCH_CHECK(coef.defined(), who, ": coef is undefined");
  check_param(coef, like, {B + 2}, who, "coef");
  const bool have_scale = scale.has_value() && scale->defined();
  const bool have_shift = shift.has_value() && shift->defined();
  TORCH_CHECK(have_scale == have_shift, who, ": scale and shift must be given together");
  if (have_scale) {
    check_param(*scale, like, {B, g.C}, who, "scale");
    check_param(*shift, like, {B, g.C}, who, "shift");
  }
  return g;
}

}  // namespace sdarts
