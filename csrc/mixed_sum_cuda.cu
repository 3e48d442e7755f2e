// CUDA mixed-sum kernels (contract: sdarts/ops/reference.py).
//
// Grid: blockIdx.y picks a tile of CT channels, blockIdx.x a tile of "pixels" (n, h, w);
// a block is (CT, RY) threads, CT = 1 for NCHW (the RY threads walk consecutive w of one
// plane) and CT = min(32, pow2 >= C) for channels_last (the CT threads read consecutive
// channels of one pixel), so the loads are coalesced in both layouts.  Every thread
// keeps one channel, so its coefficients stay in registers and its per-channel sums
// reduce over threadIdx.y only: a fixed shared-memory tree, then per-block partials
// (tile, C, B + 3) reduced by at::sum.  No atomics: results are deterministic.
// Arithmetic is in float (double for double inputs); coef/scale/shift are read on the
// device, so nothing synchronizes with the host.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>

#include "mixed_sum.h"

namespace sdarts {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxB = static_cast<int>(kMaxBranches);
constexpr int kMaxQ = kMaxB + 3;  // per-channel partials: dot_0..dot_{B-1}, gsum, dskip, dpool

template <typename T>
struct ConstPtrs {
  const T* p[kMaxB];
};
template <typename T>
struct MutPtrs {
  T* p[kMaxB];
};

struct Geo {
  int B, C, H, W;
  int P;      // pixels N * H * W
  int HW;
  int CT;     // channels per block (blockDim.x)
  int RY;     // pixel lanes per block (blockDim.y)
  int items;  // pixels per lane
};

// 1 / (in-range taps of a 3-tap window at i of n), exactly rounded in A like the CPU's 1/cnt
// (constants, so --use_fast_math's approximate division does not apply).
template <typename A>
__device__ __forceinline__ A inv_taps(int i, int n) {
  const int cnt = 1 + (i > 0) + (i + 1 < n);
  return cnt == 3 ? A(1) / A(3) : (cnt == 2 ? A(0.5) : A(1));
}

// Offset of (pixel j, channel c) and the pixel's h, w.
template <bool CL>
__device__ __forceinline__ int64_t locate(const Geo& g, int j, int c, int& h, int& w) {
  if constexpr (CL) {
    const int q = j / g.W;
    w = j - q * g.W;
    h = q % g.H;
    return static_cast<int64_t>(j) * g.C + c;
  } else {
    const int n = j / g.HW;
    const int r = j - n * g.HW;
    h = r / g.W;
    w = r - h * g.W;
    return (static_cast<int64_t>(n) * g.C + c) * g.HW + r;
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    mixed_forward_kernel(ConstPtrs<T> br, const T* __restrict__ x, T* __restrict__ out,
                         const float* __restrict__ coef, const float* __restrict__ scale,
                         const float* __restrict__ shift, Geo g, bool skip, bool pool) {
  using A = at::opmath_type<T>;
  const int c = blockIdx.y * g.CT + threadIdx.x;
  if (c >= g.C) return;  // no block-wide sync below
  A a[kMaxB];
  A bias = 0;
#pragma unroll
  for (int k = 0; k < kMaxB; ++k) {
    if (k < g.B) {
      const A ck = static_cast<A>(coef[k]);
      a[k] = scale ? ck * static_cast<A>(scale[k * g.C + c]) : ck;
      if (shift) bias += ck * static_cast<A>(shift[k * g.C + c]);
    }
  }
  const A ws = skip ? static_cast<A>(coef[g.B]) : A(0);
  const A wp = pool ? static_cast<A>(coef[g.B + 1]) : A(0);
  const int64_t sW = CL ? g.C : 1;
  const int64_t sH = CL ? static_cast<int64_t>(g.W) * g.C : g.W;
  const int j0 = blockIdx.x * (g.RY * g.items) + threadIdx.y;
  for (int it = 0; it < g.items; ++it) {
    const int j = j0 + it * g.RY;
    if (j >= g.P) break;
    int h, w;
    const int64_t off = locate<CL>(g, j, c, h, w);
    A acc = bias;
#pragma unroll
    for (int k = 0; k < kMaxB; ++k)
      if (k < g.B) acc += a[k] * static_cast<A>(br.p[k][off]);
    if (skip) acc += ws * static_cast<A>(x[off]);
    if (pool) {
      A s = 0;
#pragma unroll
      for (int dh = -1; dh <= 1; ++dh) {
        if (h + dh < 0 || h + dh >= g.H) continue;
#pragma unroll
        for (int dw = -1; dw <= 1; ++dw) {
          if (w + dw < 0 || w + dw >= g.W) continue;
          s += static_cast<A>(x[off + dh * sH + dw * sW]);
        }
      }
      acc += wp * inv_taps<A>(h, g.H) * inv_taps<A>(w, g.W) * s;
    }
    out[off] = static_cast<T>(acc);
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    mixed_backward_kernel(const T* __restrict__ gout, ConstPtrs<T> br, const T* __restrict__ x, MutPtrs<T> gb,
                          T* __restrict__ gx, const float* __restrict__ coef, const float* __restrict__ scale,
                          Geo g, bool skip, bool pool, bool need_b, float* __restrict__ part) {
  using A = at::opmath_type<T>;
  __shared__ float sm[kMaxQ][kThreads];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * g.CT + tx;
  const int c = blockIdx.y * g.CT + tx;
  const bool active = c < g.C;
  A dot[kMaxB];
#pragma unroll
  for (int k = 0; k < kMaxB; ++k) dot[k] = 0;
  A gsum = 0, dskip = 0, dpool = 0;

  if (active) {
    A a[kMaxB];
#pragma unroll
    for (int k = 0; k < kMaxB; ++k)
      if (k < g.B) a[k] = scale ? static_cast<A>(coef[k]) * static_cast<A>(scale[k * g.C + c])
                                : static_cast<A>(coef[k]);
    const A ws = skip ? static_cast<A>(coef[g.B]) : A(0);
    const A wp = pool ? static_cast<A>(coef[g.B + 1]) : A(0);
    const int64_t sW = CL ? g.C : 1;
    const int64_t sH = CL ? static_cast<int64_t>(g.W) * g.C : g.W;
    const int j0 = blockIdx.x * (g.RY * g.items) + ty;
    for (int it = 0; it < g.items; ++it) {
      const int j = j0 + it * g.RY;
      if (j >= g.P) break;
      int h, w;
      const int64_t off = locate<CL>(g, j, c, h, w);
      const A gv = static_cast<A>(gout[off]);
      gsum += gv;
#pragma unroll
      for (int k = 0; k < kMaxB; ++k) {
        if (k < g.B) {
          dot[k] += gv * static_cast<A>(br.p[k][off]);
          if (need_b) gb.p[k][off] = static_cast<T>(a[k] * gv);
        }
      }
      A xv = 0;
      if (skip || pool) xv = static_cast<A>(x[off]);
      if (skip) dskip += gv * xv;
      A pt = 0;  // pool^T(g) here: sum over the window of g / (its window's tap count)
      if (pool) {
#pragma unroll
        for (int dh = -1; dh <= 1; ++dh) {
          const int hn = h + dh;
          if (hn < 0 || hn >= g.H) continue;
          A row = 0;
#pragma unroll
          for (int dw = -1; dw <= 1; ++dw) {
            const int wn = w + dw;
            if (wn < 0 || wn >= g.W) continue;
            row += inv_taps<A>(wn, g.W) * static_cast<A>(gout[off + dh * sH + dw * sW]);
          }
          pt += inv_taps<A>(hn, g.H) * row;
        }
        dpool += xv * pt;  // <g, pool(x)> = <x, pool^T(g)>
      }
      if (gx) gx[off] = static_cast<T>(ws * gv + wp * pt);
    }
  }

  // Fixed-order tree over threadIdx.y (the CT channels of the block stay apart).
  const int nq = g.B + 3;
#pragma unroll
  for (int k = 0; k < kMaxB; ++k)
    if (k < g.B) sm[k][tid] = static_cast<float>(dot[k]);
  sm[g.B][tid] = static_cast<float>(gsum);
  sm[g.B + 1][tid] = static_cast<float>(dskip);
  sm[g.B + 2][tid] = static_cast<float>(dpool);
  __syncthreads();
  for (int s = g.RY / 2; s > 0; s >>= 1) {
    if (ty < s)
      for (int q = 0; q < nq; ++q) sm[q][tid] += sm[q][tid + s * g.CT];
    __syncthreads();
  }
  if (ty == 0 && active) {
    float* dst = part + (static_cast<int64_t>(blockIdx.x) * g.C + c) * nq;
    for (int q = 0; q < nq; ++q) dst[q] = sm[q][tx];
  }
}

// Launch shape for a geometry: see the file comment.
Geo make_geo(const MixedGeometry& m, dim3& grid, dim3& block) {
  TORCH_CHECK(m.N * m.H * m.W <= std::numeric_limits<int>::max() && m.C <= std::numeric_limits<int>::max(),
              "mixed_sum_cuda: too many pixels for 32-bit pixel indices");
  Geo g;
  g.B = static_cast<int>(m.B);
  g.C = static_cast<int>(m.C);
  g.H = static_cast<int>(m.H);
  g.W = static_cast<int>(m.W);
  g.HW = static_cast<int>(m.H * m.W);
  g.P = static_cast<int>(m.N * m.H * m.W);
  int ct = 1;
  if (m.channels_last)
    while (ct < 32 && ct < g.C) ct *= 2;
  g.CT = ct;
  g.RY = kThreads / ct;
  g.items = std::max(4, 256 / g.RY);  // >= 256 pixels per block: fewer partials
  const int64_t tiles = (static_cast<int64_t>(g.P) + g.RY * g.items - 1) / (g.RY * g.items);
  const int64_t ctiles = (g.C + ct - 1) / ct;
  TORCH_CHECK(ctiles <= 65535, "mixed_sum_cuda: too many channels (", g.C, ") for the grid");
  TORCH_CHECK(tiles <= std::numeric_limits<int>::max(), "mixed_sum_cuda: tensor too large");
  grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(ctiles));
  block = dim3(ct, g.RY);
  return g;
}

const float* opt_ptr(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->const_data_ptr<float>() : nullptr;
}

}  // namespace

Tensor mixed_forward_cuda(const std::vector<Tensor>& branches, const Tensor& coef, const OptTensor& scale,
                          const OptTensor& shift, const OptTensor& x, bool has_skip, bool has_pool) {
  const MixedGeometry m =
      check_inputs(branches, coef, scale, shift, x, has_skip, has_pool, c10::DeviceType::CUDA, "mixed_forward_cuda");
  c10::cuda::CUDAGuard guard(m.like.device());
  Tensor out = empty_in_format(m.like, m.format);
  if (out.numel() == 0) return out;
  // Parameters are tiny; .contiguous() is a no-op in the normal case (and never syncs).
  const Tensor coef_c = coef.contiguous();
  const OptTensor scale_c = scale.has_value() && scale->defined() ? OptTensor(scale->contiguous()) : OptTensor();
  const OptTensor shift_c = shift.has_value() && shift->defined() ? OptTensor(shift->contiguous()) : OptTensor();
  dim3 grid, block;
  const Geo g = make_geo(m, grid, block);
  const bool have_x = x.has_value() && x->defined();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.like.scalar_type(), "sdarts_mixed_forward_cuda", [&] {
    ConstPtrs<scalar_t> br{};
    for (int64_t k = 0; k < m.B; ++k) br.p[k] = branches[k].const_data_ptr<scalar_t>();
    const scalar_t* xp = have_x ? x->const_data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<grid, block, 0, stream>>>(br, xp, out.mutable_data_ptr<scalar_t>(), coef_c.const_data_ptr<float>(),
                                         opt_ptr(scale_c), opt_ptr(shift_c), g, has_skip, has_pool);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (m.channels_last)
      launch(mixed_forward_kernel<scalar_t, true>);
    else
      launch(mixed_forward_kernel<scalar_t, false>);
  });
  return out;
}

BackwardResult mixed_backward_cuda(const Tensor& grad_out, const std::vector<Tensor>& branches, const Tensor& coef,
                                   const OptTensor& scale, const OptTensor& x, bool has_skip, bool has_pool,
                                   bool need_branch_grads, bool need_x_grad) {
  // The backward takes no shift; pass scale for both so the pairing check holds.
  const MixedGeometry m = check_inputs(branches, coef, scale, scale, x, has_skip, has_pool, c10::DeviceType::CUDA,
                                       "mixed_backward_cuda");
  TORCH_CHECK(grad_out.defined() && grad_out.device() == m.like.device() &&
                  grad_out.scalar_type() == m.like.scalar_type() && grad_out.sizes() == m.like.sizes(),
              "mixed_backward_cuda: grad_out must match the inputs' shape, dtype and device");
  c10::cuda::CUDAGuard guard(m.like.device());
  const Tensor g = grad_out.contiguous(m.format);
  const bool have_x = x.has_value() && x->defined();
  const bool need_x = need_x_grad && have_x && (has_skip || has_pool);

  std::vector<Tensor> grad_b;
  if (need_branch_grads)
    for (int64_t k = 0; k < m.B; ++k) grad_b.push_back(empty_in_format(m.like, m.format));
  Tensor grad_x = need_x ? empty_in_format(*x, m.format) : m.like.new_empty({0});
  const auto f32 = m.like.options().dtype(at::kFloat);
  if (m.like.numel() == 0) {
    return {grad_b, grad_x, m.like.new_zeros({m.B, m.C}, f32), m.like.new_zeros({m.C}, f32),
            m.like.new_zeros({}, f32), m.like.new_zeros({}, f32)};
  }
  const Tensor coef_c = coef.contiguous();
  const OptTensor scale_c = scale.has_value() && scale->defined() ? OptTensor(scale->contiguous()) : OptTensor();
  dim3 grid, block;
  const Geo geo = make_geo(m, grid, block);
  const int64_t nq = m.B + 3;
  // Every (tile, channel) entry is written by exactly one block.
  Tensor part = m.like.new_empty({static_cast<int64_t>(grid.x), m.C, nq}, f32);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.like.scalar_type(), "sdarts_mixed_backward_cuda", [&] {
    ConstPtrs<scalar_t> br{};
    MutPtrs<scalar_t> gbp{};
    for (int64_t k = 0; k < m.B; ++k) {
      br.p[k] = branches[k].const_data_ptr<scalar_t>();
      if (need_branch_grads) gbp.p[k] = grad_b[k].mutable_data_ptr<scalar_t>();
    }
    const scalar_t* xp = have_x ? x->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel) {
      kernel<<<grid, block, 0, stream>>>(g.const_data_ptr<scalar_t>(), br, xp, gbp, gxp,
                                         coef_c.const_data_ptr<float>(), opt_ptr(scale_c), geo, has_skip, has_pool,
                                         need_branch_grads, part.mutable_data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (m.channels_last)
      launch(mixed_backward_kernel<scalar_t, true>);
    else
      launch(mixed_backward_kernel<scalar_t, false>);
  });
  // Deterministic reductions of the per-block partials (at::sum uses no atomics).
  const Tensor tot = part.sum(0);  // (C, B + 3)
  Tensor chan_dot = tot.narrow(1, 0, m.B).t().contiguous();
  Tensor chan_gsum = tot.select(1, m.B).contiguous();
  Tensor dot_skip = tot.select(1, m.B + 1).sum();
  Tensor dot_pool = tot.select(1, m.B + 2).sum();
  return {grad_b, grad_x, chan_dot, chan_gsum, dot_skip, dot_pool};
}

}  // namespace sdarts
