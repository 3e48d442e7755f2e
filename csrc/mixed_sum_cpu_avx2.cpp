// The CPU kernels compiled for AVX2 + FMA + F16C (8-wide float, hardware half
// conversion), chosen at run time by mixed_sum_cpu.cpp when the CPU has them.
// Every header is included before the target pragma, so inline code shared with
// the baseline translation unit keeps the baseline ISA (the linker may pick either
// copy); only this file's own, ISA-private kernels are compiled for AVX2.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "mixed_sum_cpu.h"

#if defined(SDARTS_CPU_AVX2)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define SDARTS_CPU_NS avx2
#define SDARTS_CPU_F16C 1
#include "mixed_sum_cpu_impl.h"
#undef SDARTS_CPU_F16C
#undef SDARTS_CPU_NS
#pragma GCC pop_options
#else
// No AVX2 build on this compiler/CPU family: the dispatcher never calls these.
namespace sdarts {
namespace cpu {
namespace avx2 {
void forward(const Call& call) { base::forward(call); }
void backward(const Call& call) { base::backward(call); }
}  // namespace avx2
}  // namespace cpu
}  // namespace sdarts
#endif
