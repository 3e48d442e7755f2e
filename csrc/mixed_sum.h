// Declarations shared by the CPU and CUDA mixed-sum kernels and the bindings.
// The contract is the docstring of sdarts/ops/reference.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace sdarts {

constexpr int64_t kMaxBranches = 8;

using Tensor = at::Tensor;
using OptTensor = std::optional<at::Tensor>;
using BackwardResult = std::tuple<std::vector<Tensor>, Tensor, Tensor, Tensor, Tensor, Tensor>;

// What check_inputs learned about a call: the reference tensor, its layout and shape.
struct MixedGeometry {
  Tensor like;              // branches[0], or x when there are no branches
  at::MemoryFormat format;  // Contiguous (NCHW) or ChannelsLast
  bool channels_last;
  int64_t B, N, C, H, W;
};

// Validates the contract (devices, dtypes, shapes, layouts) with TORCH_CHECKs.
MixedGeometry check_inputs(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                           const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool,
                           c10::DeviceType device_type, const char* who);

// Tensor of like's shape, dtype and device, dense in `format` (empty_like keeps the layout).
Tensor empty_in_format(const Tensor& like, at::MemoryFormat format);

// The CPU kernels' instruction-set dispatch: whether the AVX2+FMA+F16C build exists and this
// CPU runs it; the switch that allows it (true by default, false when SDARTS_NO_SIMD=1 was set
// at load time; returns the previous setting); and the build the next call will use
// ("avx2" or "base").
bool cpu_simd_available();
bool set_cpu_simd(bool enabled);
std::string cpu_isa();

Tensor mixed_forward_cpu(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                         const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool);

BackwardResult mixed_backward_cpu(const Tensor& grad_out, const std::vector<Tensor>& branches, const Tensor& coef,
                                  const OptTensor& scale, const OptTensor& x, bool has_skip, bool has_pool,
                                  bool need_branch_grads, bool need_x_grad);

#ifdef SDARTS_WITH_CUDA
Tensor mixed_forward_cuda(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                          const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool);

BackwardResult mixed_backward_cuda(const Tensor& grad_out, const std::vector<Tensor>& branches, const Tensor& coef,
                                   const OptTensor& scale, const OptTensor& x, bool has_skip, bool has_pool,
                                   bool need_branch_grads, bool need_x_grad);
#endif

}  // namespace sdarts
