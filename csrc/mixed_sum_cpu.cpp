// CPU entry points of the mixed-sum kernel: contract checks, output allocation and
// the choice between the baseline build of the kernels and the AVX2 one
// (mixed_sum_cpu_avx2.cpp), made from the running CPU's features (detected once) and a
// run-time switch: set_cpu_simd(false) (Python: sdarts._C.set_simd(False)), or
// SDARTS_NO_SIMD=1 in the environment when the extension loads, forces the baseline build.
#include <ATen/ATen.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#define SDARTS_CPU_NS base
#include "mixed_sum_cpu_impl.h"
#undef SDARTS_CPU_NS

namespace sdarts {

namespace {

bool avx2_supported() {
#if defined(SDARTS_CPU_AVX2)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 || std::strcmp(v, "yes") == 0);
}

std::atomic<bool> simd_enabled{!env_flag("SDARTS_NO_SIMD")};

bool use_avx2() { return simd_enabled.load(std::memory_order_relaxed) && avx2_supported(); }

cpu::Call prepare(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                  const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool, const char* who,
                  std::vector<Tensor>& keep) {
  cpu::Call call;
  call.geo = check_inputs(branches, coef, scale, shift, x, has_skip, has_pool, c10::DeviceType::CPU, who);
  call.branches = branches;
  if (x.has_value() && x->defined()) call.x = *x;
  // Parameters are tiny; .contiguous() is a no-op in the normal case.
  keep.push_back(coef.contiguous());
  call.coef = keep.back().const_data_ptr<float>();
  if (scale.has_value() && scale->defined()) {
    keep.push_back(scale->contiguous());
    call.scale = keep.back().const_data_ptr<float>();
  }
  if (shift.has_value() && shift->defined()) {
    keep.push_back(shift->contiguous());
    call.shift = keep.back().const_data_ptr<float>();
  }
  call.skip = has_skip;
  call.pool = has_pool;
  return call;
}

}  // namespace

bool cpu_simd_available() { return avx2_supported(); }

bool set_cpu_simd(bool enabled) { return simd_enabled.exchange(enabled); }

std::string cpu_isa() { return use_avx2() ? "avx2" : "base"; }

Tensor mixed_forward_cpu(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                         const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool) {
  std::vector<Tensor> keep;
  keep.reserve(3);
  cpu::Call call = prepare(branches, coef, scale, shift, x, has_skip, has_pool, "mixed_forward_cpu", keep);
  call.out = empty_in_format(call.geo.like, call.geo.format);
  if (call.out.numel() == 0) return call.out;
  if (use_avx2())
    cpu::avx2::forward(call);
  else
    cpu::base::forward(call);
  return call.out;
}

BackwardResult mixed_backward_cpu(const Tensor& grad_out, const std::vector<Tensor>& branches, const Tensor& coef,
                                  const OptTensor& scale, const OptTensor& x, bool has_skip, bool has_pool,
                                  bool need_branch_grads, bool need_x_grad) {
  std::vector<Tensor> keep;
  keep.reserve(3);
  // The backward takes no shift; pass scale for both so the pairing check holds.
  cpu::Call call = prepare(branches, coef, scale, scale, x, has_skip, has_pool, "mixed_backward_cpu", keep);
  call.shift = nullptr;
  const MixedGeometry& geo = call.geo;
  TORCH_CHECK(grad_out.defined() && grad_out.device() == geo.like.device() &&
                  grad_out.scalar_type() == geo.like.scalar_type() && grad_out.sizes() == geo.like.sizes(),
              "mixed_backward_cpu: grad_out must match the inputs' shape, dtype and device");
  call.g = grad_out.contiguous(geo.format);
  call.need_b = need_branch_grads;
  call.need_x = need_x_grad && call.x.defined() && (has_skip || has_pool);

  std::vector<Tensor> grad_b;
  if (need_branch_grads)
    for (int64_t k = 0; k < geo.B; ++k) grad_b.push_back(empty_in_format(geo.like, geo.format));
  call.grad_b = grad_b;
  Tensor grad_x = call.need_x ? empty_in_format(call.x, geo.format) : at::empty({0}, geo.like.options());
  call.grad_x = grad_x;
  auto f32 = geo.like.options().dtype(at::kFloat);
  Tensor chan_dot = at::zeros({geo.B, geo.C}, f32);
  Tensor chan_gsum = at::zeros({geo.C}, f32);
  Tensor dot_skip = at::zeros({}, f32);
  Tensor dot_pool = at::zeros({}, f32);
  if (geo.like.numel() > 0) {
    call.chan_dot = chan_dot.mutable_data_ptr<float>();
    call.chan_gsum = chan_gsum.mutable_data_ptr<float>();
    call.dot_skip = dot_skip.mutable_data_ptr<float>();
    call.dot_pool = dot_pool.mutable_data_ptr<float>();
    if (use_avx2())
      cpu::avx2::backward(call);
    else
      cpu::base::backward(call);
  }
  return {grad_b, grad_x, chan_dot, chan_gsum, dot_skip, dot_pool};
}

}  // namespace sdarts
