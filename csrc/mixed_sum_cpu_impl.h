// CPU mixed-sum kernels.  This file is included by one translation unit per ISA
// (mixed_sum_cpu.cpp: baseline, mixed_sum_cpu_avx2.cpp: AVX2+FMA+F16C) with
// SDARTS_CPU_NS naming the namespace, so every symbol here is ISA-private.
//
// Both layouts are seen as "slabs" of `rows` contiguous rows of Lp elements:
//   NCHW           slab = plane (n, c), Lp = W, horizontal neighbours 1 apart (Cr = 1);
//   channels_last  slab = image n, Lp = W * C, horizontal neighbours C apart (Cr = C).
// A slab is cut into blocks of R whole rows (about 2K elements) processed by flat,
// vectorizable loops; per-channel work differs by layout only in the affine and
// per-channel reduction loops.  The 3x3 pool is computed on the fly from the block
// and its halo rows (vertical 3-sum, then a masked horizontal 3-sum), so pool(x) is
// never materialized.  half/bf16 are converted to float once per block.
// Reductions: SIMD lanes within a block, double per task, then tasks in task order;
// blocks and tasks depend only on the shape, so the results are bitwise the same
// whatever the number of threads.
#ifndef SDARTS_CPU_NS
#error "define SDARTS_CPU_NS before including mixed_sum_cpu_impl.h"
#endif

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

#if defined(SDARTS_CPU_F16C)
#include <immintrin.h>
#endif

namespace sdarts {
namespace cpu {
namespace SDARTS_CPU_NS {
namespace {

constexpr int64_t kBlockElems = 2048;  // block size target: a few such float rows stay in L1
constexpr int64_t kMaxTasks = 256;     // channels_last partials: tasks * (B + 1) * C doubles

// ------------------------------------------------------------ conversions

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline uint32_t bits_from_f32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// dst[0..n) = src as the accumulation type.
template <typename T, typename A>
inline void load_row(const T* __restrict__ src, A* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dst[j] = f32_from_bits(static_cast<uint32_t>(src[j].x) << 16);
  } else {
    int64_t j = 0;
#if defined(SDARTS_CPU_F16C)
    if constexpr (std::is_same_v<T, c10::Half>) {
      for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
    }
#endif
#pragma omp simd
    for (int64_t i = j; i < n; ++i) dst[i] = static_cast<A>(src[i]);
  }
}

// dst[0..n) = src rounded to nearest even (NaN stays NaN), like c10's conversions.
template <typename T, typename A>
inline void store_row(const A* __restrict__ src, T* __restrict__ dst, int64_t n) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t u = bits_from_f32(src[j]);
      const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
      dst[j].x = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);
    }
  } else {
    int64_t j = 0;
#if defined(SDARTS_CPU_F16C)
    if constexpr (std::is_same_v<T, c10::Half>) {
      for (; j + 8 <= n; j += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
#pragma omp simd
    for (int64_t i = j; i < n; ++i) dst[i] = static_cast<T>(src[i]);
  }
}

// The n elements at src as A: src itself when no conversion is needed.
template <typename T, typename A>
inline const A* as_acc(const T* src, A* buf, int64_t n) {
  if constexpr (std::is_same_v<T, A>) {
    (void)buf;
    (void)n;
    return src;
  } else {
    load_row<T, A>(src, buf, n);
    return buf;
  }
}

// ------------------------------------------------------------ geometry

struct Layout {
  int64_t N, C, H, W;
  int64_t Cr;      // distance between horizontal neighbours
  int64_t Lp;      // elements per row
  int64_t rows;    // rows per slab
  int64_t nslabs;
  int64_t R;       // rows per block
  int64_t bps;     // blocks per slab
  int64_t nblocks;
  int64_t G;       // blocks per task
  int64_t ntasks;
  int64_t grain;   // tasks per parallel chunk at least (keeps tiny calls serial)
  int64_t M;       // channels_last: lane period, a multiple of C >= 64 (see Args::aexp)
};

Layout make_layout(const MixedGeometry& g) {
  Layout l{};
  l.N = g.N;
  l.C = g.C;
  l.H = g.H;
  l.W = g.W;
  l.rows = g.H;
  if (!g.channels_last) {
    l.Cr = 1;
    l.Lp = g.W;
    l.nslabs = g.N * g.C;
  } else {
    l.Cr = g.C;
    l.Lp = g.W * g.C;
    l.nslabs = g.N;
  }
  l.R = std::clamp<int64_t>((kBlockElems + l.Lp - 1) / l.Lp, 1, l.rows);
  l.bps = (l.rows + l.R - 1) / l.R;
  l.nblocks = l.nslabs * l.bps;
  // NCHW: a task is one block (its partials belong to one channel);
  // channels_last: consecutive blocks, at most kMaxTasks tasks.
  l.G = g.channels_last ? (l.nblocks + kMaxTasks - 1) / kMaxTasks : 1;
  l.ntasks = (l.nblocks + l.G - 1) / l.G;
  const int64_t task_elems = std::max<int64_t>(1, l.G * l.R * l.Lp);
  l.grain = std::max<int64_t>(1, 32768 / task_elems);
  l.M = g.channels_last ? g.C * ((64 + g.C - 1) / g.C) : 0;
  return l;
}

struct Block {
  int64_t slab, h0, rows, n, off;
  bool up, dn;  // the row above / below the block exists
};

inline Block block_of(const Layout& l, int64_t b) {
  Block k;
  k.slab = b / l.bps;
  k.h0 = (b % l.bps) * l.R;
  k.rows = std::min(l.R, l.rows - k.h0);
  k.n = k.rows * l.Lp;
  k.off = (k.slab * l.rows + k.h0) * l.Lp;
  k.up = k.h0 > 0;
  k.dn = k.h0 + k.rows < l.rows;
  return k;
}

template <typename T>
struct Args {
  using A = at::opmath_type<T>;
  int64_t B = 0;
  std::array<const T*, kMaxBranches> b{};
  std::array<T*, kMaxBranches> gb{};
  const T* x = nullptr;
  const T* g = nullptr;
  T* out = nullptr;
  T* gx = nullptr;
  std::vector<A> a;      // (B, C): coef[k] * scale[k][c]
  std::vector<A> bias;   // (C,): sum_k coef[k] * shift[k][c]
  std::vector<A> wslab;  // (rows * Lp): 1 / tap count of the pool window at each slab element
  std::vector<A> ml, mr; // (R * Lp): 1 where the left / right neighbour is in the row
  // channels_last: a and bias repeated over M = C * ceil(64 / C) elements, so per-channel
  // work runs as flat loops of M lanes (a block starts at channel 0 and M is a multiple of C)
  // instead of one short loop of C per pixel.
  std::vector<A> aexp, bexp;
  A ws = 0, wp = 0;      // effective skip / pool weights (0 when the candidate is absent)
  bool skip = false, pool = false, need_b = false, need_x = false;
};

template <typename A>
inline A inv_count(int64_t i, int64_t n) {
  return A(1) / A(1 + (i > 0) + (i + 1 < n));
}

template <typename T>
Args<T> make_args(const Call& call, const Layout& l) {
  using A = at::opmath_type<T>;
  Args<T> p;
  const int64_t B = call.geo.B, C = call.geo.C;
  p.B = B;
  for (int64_t k = 0; k < B; ++k) p.b[k] = call.branches[k].const_data_ptr<T>();
  if (call.x.defined()) p.x = call.x.const_data_ptr<T>();
  p.a.resize(B * C);
  p.bias.assign(C, A(0));
  for (int64_t k = 0; k < B; ++k) {
    const A ck = static_cast<A>(call.coef[k]);
    for (int64_t c = 0; c < C; ++c) {
      p.a[k * C + c] = call.scale ? ck * static_cast<A>(call.scale[k * C + c]) : ck;
      if (call.shift) p.bias[c] += ck * static_cast<A>(call.shift[k * C + c]);
    }
  }
  if (l.M > 0) {
    p.aexp.resize(B * l.M);
    p.bexp.resize(l.M);
    for (int64_t j = 0; j < l.M; ++j) {
      for (int64_t k = 0; k < B; ++k) p.aexp[k * l.M + j] = p.a[k * C + j % C];
      p.bexp[j] = p.bias[j % C];
    }
  }
  p.skip = call.skip;
  p.pool = call.pool;
  p.ws = call.skip ? static_cast<A>(call.coef[B]) : A(0);
  p.wp = call.pool ? static_cast<A>(call.coef[B + 1]) : A(0);
  if (call.pool) {
    p.wslab.resize(l.rows * l.Lp);
    for (int64_t h = 0; h < l.rows; ++h)
      for (int64_t j = 0; j < l.Lp; ++j)
        p.wslab[h * l.Lp + j] = inv_count<A>(h, l.rows) * inv_count<A>(j / l.Cr, l.W);
    p.ml.resize(l.R * l.Lp);
    p.mr.resize(l.R * l.Lp);
    for (int64_t i = 0; i < l.R * l.Lp; ++i) {
      const int64_t w = (i % l.Lp) / l.Cr;
      p.ml[i] = w > 0 ? A(1) : A(0);
      p.mr[i] = w + 1 < l.W ? A(1) : A(0);
    }
  }
  return p;
}

template <typename A>
struct Scratch {
  // acc/tmp/tmp2: a block; xb/gb/u: a block and its two halo rows; vs: a block padded by Cr
  // zeros on each side; lane: channels_last per-channel lanes (Layout::M).
  std::vector<A> acc, tmp, tmp2, xb, gb, u, vs, lane;
  explicit Scratch(const Layout& l) {
    const int64_t n = l.R * l.Lp, nh = (l.R + 2) * l.Lp;
    acc.resize(n);
    tmp.resize(n);
    tmp2.resize(n);
    xb.resize(nh);
    gb.resize(nh);
    u.resize(nh);
    vs.assign(n + 2 * l.Cr, A(0));
    lane.resize(l.M);
  }
};

// Block rows (plus the existing halo rows when `halo`) as A; returns row h0.
template <typename T, typename A>
inline const A* load_block(const T* base, const Block& k, int64_t Lp, bool halo, A* buf) {
  const T* src = base + k.off;
  if constexpr (std::is_same_v<T, A>) {
    (void)Lp;
    (void)halo;
    (void)buf;
    return src;
  } else {
    const int64_t up = halo && k.up ? Lp : 0, dn = halo && k.dn ? Lp : 0;
    load_row<T, A>(src - up, buf + Lp - up, k.n + up + dn);
    return buf + Lp;
  }
}

// pooled[i] = (left ? vp[i] : 0) + vp[i + Cr] + (right ? vp[i + 2 Cr] : 0), vp = vs padded.
// Selects, not products, so an inf in one row cannot leak NaN into the next.
#define SDARTS_HSUM(vp, ml, mr, i, Cr) \
  (((ml)[i] != A(0) ? (vp)[i] : A(0)) + (vp)[(i) + (Cr)] + ((mr)[i] != A(0) ? (vp)[(i) + 2 * (Cr)] : A(0)))

// ------------------------------------------------------------ forward

template <typename T, bool CL>
void forward_block(const Args<T>& p, const Layout& l, const Block& k, Scratch<at::opmath_type<T>>& s) {
  using A = at::opmath_type<T>;
  constexpr bool same = std::is_same_v<T, A>;
  const int64_t n = k.n, Cr = l.Cr, C = l.C, Lp = l.Lp, B = p.B;
  A* __restrict__ acc;
  if constexpr (same)
    acc = p.out + k.off;  // accumulate in place: no extra pass
  else
    acc = s.acc.data();

  if constexpr (CL) {
    const int64_t M = l.M;
    const A* __restrict__ bias = p.bexp.data();
    const A* __restrict__ b0 = B > 0 ? as_acc<T, A>(p.b[0] + k.off, s.tmp.data(), n) : nullptr;
    const A* __restrict__ a0 = p.aexp.data();
    for (int64_t i0 = 0; i0 < n; i0 += M) {
      const int64_t m = std::min(M, n - i0);
      A* __restrict__ ai = acc + i0;
      if (b0) {
        const A* __restrict__ bi = b0 + i0;
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) ai[j] = bias[j] + a0[j] * bi[j];
      } else {
        std::copy(bias, bias + m, ai);
      }
    }
    for (int64_t b = 1; b < B; ++b) {
      const A* __restrict__ bk = as_acc<T, A>(p.b[b] + k.off, s.tmp.data(), n);
      const A* __restrict__ ak = p.aexp.data() + b * M;
      for (int64_t i0 = 0; i0 < n; i0 += M) {
        const int64_t m = std::min(M, n - i0);
        A* __restrict__ ai = acc + i0;
        const A* __restrict__ bi = bk + i0;
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) ai[j] += ak[j] * bi[j];
      }
    }
  } else {
    const int64_t c = k.slab % C;
    const A bias = p.bias[c];
    if (B > 0) {
      const A* __restrict__ b0 = as_acc<T, A>(p.b[0] + k.off, s.tmp.data(), n);
      const A a0 = p.a[c];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] = bias + a0 * b0[i];
    } else {
      std::fill(acc, acc + n, bias);
    }
    for (int64_t b = 1; b < B; ++b) {
      const A* __restrict__ bk = as_acc<T, A>(p.b[b] + k.off, s.tmp.data(), n);
      const A ab = p.a[b * C + c];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] += ab * bk[i];
    }
  }

  if (p.skip || p.pool) {
    const A* __restrict__ xm = load_block<T, A>(p.x, k, Lp, p.pool, s.xb.data());
    if (p.skip) {
      const A ws = p.ws;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] += ws * xm[i];
    }
    if (p.pool) {
      A* __restrict__ vp = s.vs.data();
      A* __restrict__ v = vp + Cr;  // vertical 3-sums of the block rows
      const int64_t lo = k.up ? 0 : Lp, hi = k.dn ? n : n - Lp;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) v[i] = xm[i];
#pragma omp simd
      for (int64_t i = lo; i < n; ++i) v[i] += xm[i - Lp];
#pragma omp simd
      for (int64_t i = 0; i < hi; ++i) v[i] += xm[i + Lp];
      std::fill(v + n, v + n + Cr, A(0));
      const A* __restrict__ w = p.wslab.data() + k.h0 * Lp;
      const A* __restrict__ ml = p.ml.data();
      const A* __restrict__ mr = p.mr.data();
      const A wp = p.wp;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) acc[i] += wp * w[i] * SDARTS_HSUM(vp, ml, mr, i, Cr);
    }
  }
  if constexpr (!same) store_row<T, A>(acc, p.out + k.off, n);
}

template <typename T, bool CL>
void forward_impl(const Call& call, const Layout& l) {
  using A = at::opmath_type<T>;
  Args<T> p = make_args<T>(call, l);
  p.out = call.out.mutable_data_ptr<T>();
  at::parallel_for(0, l.ntasks, l.grain, [&](int64_t begin, int64_t end) {
    Scratch<A> s(l);
    for (int64_t b = begin * l.G; b < std::min(end * l.G, l.nblocks); ++b)
      forward_block<T, CL>(p, l, block_of(l, b), s);
  });
}

// ------------------------------------------------------------ backward

// Adds a block's sums to the task partials: NCHW [dot_0..dot_{B-1}, gsum, dskip, dpool]
// (one channel), channels_last [dot (B, C), gsum (C), dskip, dpool].
template <typename T, bool CL>
void backward_block(const Args<T>& p, const Layout& l, const Block& k, Scratch<at::opmath_type<T>>& s,
                    double* __restrict__ part) {
  using A = at::opmath_type<T>;
  constexpr bool same = std::is_same_v<T, A>;
  const int64_t n = k.n, Cr = l.Cr, C = l.C, Lp = l.Lp, B = p.B;
  const int64_t nchan = CL ? (B + 1) * C : B + 1;
  const A* __restrict__ gm = load_block<T, A>(p.g, k, Lp, p.pool, s.gb.data());

  if constexpr (CL) {
    // Per-channel sums accumulate in M lanes (lane j holds channel j % C), then fold.
    const int64_t M = l.M;
    A* __restrict__ lane = s.lane.data();
    auto fold = [&](int64_t q) {
      for (int64_t r = 0; r < M; r += C)
        for (int64_t c = 0; c < C; ++c) part[q * C + c] += static_cast<double>(lane[r + c]);
    };
    std::fill(lane, lane + M, A(0));
    for (int64_t i0 = 0; i0 < n; i0 += M) {
      const int64_t m = std::min(M, n - i0);
      const A* __restrict__ gi = gm + i0;
#pragma omp simd
      for (int64_t j = 0; j < m; ++j) lane[j] += gi[j];
    }
    fold(B);
    for (int64_t b = 0; b < B; ++b) {
      const A* __restrict__ bk = as_acc<T, A>(p.b[b] + k.off, s.tmp.data(), n);
      std::fill(lane, lane + M, A(0));
      if (p.need_b) {
        const A* __restrict__ ak = p.aexp.data() + b * M;
        A* __restrict__ gbk;
        if constexpr (same)
          gbk = p.gb[b] + k.off;
        else
          gbk = s.tmp2.data();
        for (int64_t i0 = 0; i0 < n; i0 += M) {
          const int64_t m = std::min(M, n - i0);
          const A* __restrict__ gi = gm + i0;
          const A* __restrict__ bi = bk + i0;
          A* __restrict__ go = gbk + i0;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) {
            const A gv = gi[j];
            lane[j] += gv * bi[j];
            go[j] = ak[j] * gv;
          }
        }
        if constexpr (!same) store_row<T, A>(gbk, p.gb[b] + k.off, n);
      } else {
        for (int64_t i0 = 0; i0 < n; i0 += M) {
          const int64_t m = std::min(M, n - i0);
          const A* __restrict__ gi = gm + i0;
          const A* __restrict__ bi = bk + i0;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) lane[j] += gi[j] * bi[j];
        }
      }
      fold(b);
    }
  } else {
    const int64_t c = k.slab % C;
    A gs = 0;
#pragma omp simd reduction(+ : gs)
    for (int64_t i = 0; i < n; ++i) gs += gm[i];
    part[B] += static_cast<double>(gs);
    for (int64_t b = 0; b < B; ++b) {
      const A* __restrict__ bk = as_acc<T, A>(p.b[b] + k.off, s.tmp.data(), n);
      A d = 0;
      if (p.need_b) {
        const A ab = p.a[b * C + c];
        A* __restrict__ gbk;
        if constexpr (same)
          gbk = p.gb[b] + k.off;
        else
          gbk = s.tmp2.data();
#pragma omp simd reduction(+ : d)
        for (int64_t i = 0; i < n; ++i) {
          const A gv = gm[i];
          d += gv * bk[i];
          gbk[i] = ab * gv;
        }
        if constexpr (!same) store_row<T, A>(gbk, p.gb[b] + k.off, n);
      } else {
#pragma omp simd reduction(+ : d)
        for (int64_t i = 0; i < n; ++i) d += gm[i] * bk[i];
      }
      part[b] += static_cast<double>(d);
    }
  }

  if (!(p.skip || p.pool)) return;
  const A* __restrict__ xm = as_acc<T, A>(p.x + k.off, s.xb.data(), n);
  A* __restrict__ gx = nullptr;
  if (p.need_x) {
    if constexpr (same)
      gx = p.gx + k.off;
    else
      gx = s.tmp2.data();
  }
  if (p.skip) {
    A d = 0;
#pragma omp simd reduction(+ : d)
    for (int64_t i = 0; i < n; ++i) d += gm[i] * xm[i];
    part[nchan] += static_cast<double>(d);
  }
  if (p.pool) {
    // pool^T(g): u = g / count over the block and its halo rows, then the same
    // vertical + horizontal 3-sums; dot_pool = <x, pool^T(g)> = <g, pool(x)>.
    A* __restrict__ u = s.u.data();  // row h0 - 1 at u[0]
    const int64_t nu = n + 2 * Lp;
    const int64_t lo = k.up ? 0 : Lp, hi = k.dn ? nu : nu - Lp;
    const A* __restrict__ w = p.wslab.data();
    const int64_t wo = k.h0 * Lp - Lp;  // slab offset of u[0]; indices from lo on are >= 0
    std::fill(u, u + lo, A(0));
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) u[i] = w[wo + i] * gm[i - Lp];
    std::fill(u + hi, u + nu, A(0));
    A* __restrict__ vp = s.vs.data();
    A* __restrict__ v = vp + Cr;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) v[i] = u[i] + u[i + Lp] + u[i + 2 * Lp];
    std::fill(v + n, v + n + Cr, A(0));
    const A* __restrict__ ml = p.ml.data();
    const A* __restrict__ mr = p.mr.data();
    A d = 0;
    if (gx) {
      const A ws = p.ws, wp = p.wp;
#pragma omp simd reduction(+ : d)
      for (int64_t i = 0; i < n; ++i) {
        const A pt = SDARTS_HSUM(vp, ml, mr, i, Cr);
        d += xm[i] * pt;
        gx[i] = ws * gm[i] + wp * pt;
      }
    } else {
#pragma omp simd reduction(+ : d)
      for (int64_t i = 0; i < n; ++i) d += xm[i] * SDARTS_HSUM(vp, ml, mr, i, Cr);
    }
    part[nchan + 1] += static_cast<double>(d);
  } else if (gx) {
    const A ws = p.ws;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) gx[i] = ws * gm[i];
  }
  if constexpr (!same) {
    if (gx) store_row<T, A>(gx, p.gx + k.off, n);
  }
}

template <typename T, bool CL>
void backward_impl(const Call& call, const Layout& l) {
  using A = at::opmath_type<T>;
  Args<T> p = make_args<T>(call, l);
  const int64_t B = p.B, C = l.C;
  p.g = call.g.const_data_ptr<T>();
  p.need_b = call.need_b;
  p.need_x = call.need_x;
  if (p.need_b)
    for (int64_t b = 0; b < B; ++b) p.gb[b] = call.grad_b[b].mutable_data_ptr<T>();
  if (p.need_x) p.gx = call.grad_x.mutable_data_ptr<T>();

  const int64_t nchan = CL ? (B + 1) * C : B + 1;
  const int64_t stride = nchan + 2;
  std::vector<double> part(l.ntasks * stride, 0.0);
  at::parallel_for(0, l.ntasks, l.grain, [&](int64_t begin, int64_t end) {
    Scratch<A> s(l);
    for (int64_t t = begin; t < end; ++t)
      for (int64_t b = t * l.G; b < std::min((t + 1) * l.G, l.nblocks); ++b)
        backward_block<T, CL>(p, l, block_of(l, b), s, part.data() + t * stride);
  });

  // Fixed-order reduction of the task partials.
  double dskip = 0.0, dpool = 0.0;
  for (int64_t t = 0; t < l.ntasks; ++t) {
    dskip += part[t * stride + nchan];
    dpool += part[t * stride + nchan + 1];
  }
  if constexpr (CL) {
    std::vector<double> tot(nchan, 0.0);
    for (int64_t t = 0; t < l.ntasks; ++t)
      for (int64_t i = 0; i < nchan; ++i) tot[i] += part[t * stride + i];
    for (int64_t i = 0; i < B * C; ++i) call.chan_dot[i] = static_cast<float>(tot[i]);
    for (int64_t c = 0; c < C; ++c) call.chan_gsum[c] = static_cast<float>(tot[B * C + c]);
  } else {
    // task == block, blocks ordered (n, c, block-of-plane)
    std::vector<double> tot(C * nchan, 0.0);
    for (int64_t t = 0; t < l.ntasks; ++t) {
      const int64_t c = (t / l.bps) % C;
      for (int64_t i = 0; i < nchan; ++i) tot[c * nchan + i] += part[t * stride + i];
    }
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t b = 0; b < B; ++b) call.chan_dot[b * C + c] = static_cast<float>(tot[c * nchan + b]);
      call.chan_gsum[c] = static_cast<float>(tot[c * nchan + B]);
    }
  }
  *call.dot_skip = static_cast<float>(dskip);
  *call.dot_pool = static_cast<float>(dpool);
}

#undef SDARTS_HSUM

}  // namespace

void forward(const Call& call) {
  const Layout l = make_layout(call.geo);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.geo.like.scalar_type(), "sdarts_mixed_forward_cpu",
                                  [&] {
                                    if (call.geo.channels_last)
                                      forward_impl<scalar_t, true>(call, l);
                                    else
                                      forward_impl<scalar_t, false>(call, l);
                                  });
}

void backward(const Call& call) {
  const Layout l = make_layout(call.geo);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.geo.like.scalar_type(),
                                  "sdarts_mixed_backward_cpu", [&] {
                                    if (call.geo.channels_last)
                                      backward_impl<scalar_t, true>(call, l);
                                    else
                                      backward_impl<scalar_t, false>(call, l);
                                  });
}

}  // namespace SDARTS_CPU_NS
}  // namespace cpu
}  // namespace sdarts
