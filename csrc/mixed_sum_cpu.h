// The prepared call that the CPU entry points hand to an ISA-specific kernel
// (mixed_sum_cpu_impl.h is compiled once per ISA; see mixed_sum_cpu.cpp).
#pragma once

#include "mixed_sum.h"

// An AVX2 build of the kernels beside the baseline one (GCC on x86-64; Clang lacks
// `#pragma GCC target`).
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__) && !defined(SDARTS_NO_AVX2)
#define SDARTS_CPU_AVX2 1
#endif

namespace sdarts {
namespace cpu {

struct Call {
  MixedGeometry geo;
  std::vector<Tensor> branches;
  Tensor x;  // undefined when not given
  const float* coef = nullptr;
  const float* scale = nullptr;  // null without scale/shift
  const float* shift = nullptr;
  bool skip = false, pool = false;
  // forward
  Tensor out;
  // backward
  Tensor g;  // grad_out in the inputs' layout
  std::vector<Tensor> grad_b;
  Tensor grad_x;
  bool need_b = false, need_x = false;
  float* chan_dot = nullptr;   // (B, C)
  float* chan_gsum = nullptr;  // (C,)
  float* dot_skip = nullptr;   // scalar
  float* dot_pool = nullptr;   // scalar
};

namespace base {
void forward(const Call& call);
void backward(const Call& call);
}  // namespace base

namespace avx2 {
void forward(const Call& call);
void backward(const Call& call);
}  // namespace avx2

}  // namespace cpu
}  // namespace sdarts
