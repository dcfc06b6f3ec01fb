// CUDA kernels for what candle's generic operations do slowly at this model's shapes (each
// measured on an H200 at batch 16): a broadcast add of the attention bias over the batch ran at
// 250 GB/s, the per-channel epilogues of the ResNet took three strided passes, and candle's
// im2col made a 3x3 convolution run at 7 TFLOP/s. Each is one pass here. Every kernel computes
// in f32 and stores in the tensor's type (f32, bf16 or f16). Later: the feed-forward block's
// bias, GELU and layer norm, and a layer norm with its residual add, each one pass over the rows
// instead of two or three; attention rows one warp each with 4-wide loads.
//
// tests/cuda_kernels_on_host.rs compiles this file for the host with kernels/host/emulation.h
// (every CUDA thread an OS thread) and checks each kernel against candle's operations.
#ifdef OFA_HOST_EMULATION
#include "host/emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#include <math.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

// Block-wide reduction (max or sum) of one value per thread; blockDim.x is a multiple of 32.
template <bool MAX>
__device__ float block_reduce(float v, float *shared) {
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffff, v, o);
    v = MAX ? fmaxf(v, w) : v + w;
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  int warps = blockDim.x >> 5;
  v = lane < warps ? shared[lane] : (MAX ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffff, v, o);
    v = MAX ? fmaxf(v, w) : v + w;
  }
  __syncthreads();
  return v;
}

// Four consecutive elements, loaded or stored in one instruction (8 bytes in bf16/f16, 16 in
// f32) where the pointer allows it.
template <typename T> struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

template <typename T> __device__ __forceinline__ bool aligned4(const T *p) {
  return p == nullptr || ((uintptr_t)p % (4 * sizeof(T))) == 0;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// One attention row of up to 32 * 32 keys in one warp's registers: read once, written once.
// VEC 4 reads four keys per lane and load (the caller checks lk % 4 and the alignment).
template <typename T, int VEC>
__device__ void softmax_row_regs(const T *sr, const T *br, const T *mr, T *o, uint32_t lk,
                                 float scale, uint32_t lane) {
  constexpr int CHUNKS = 32 / VEC;
  float v[32];
  float m = -INFINITY;
#pragma unroll
  for (int c = 0; c < CHUNKS; c++) {
    const uint32_t j0 = (lane + 32 * c) * VEC;
    if (VEC == 4 && j0 < lk) {
      Pack4<T> s4 = *reinterpret_cast<const Pack4<T> *>(sr + j0);
      Pack4<T> b4 = *reinterpret_cast<const Pack4<T> *>(br + j0);
#pragma unroll
      for (int e = 0; e < VEC; e++) v[c * VEC + e] = to_f(s4.v[e]) * scale + to_f(b4.v[e]);
      if (mr) {
        Pack4<T> m4 = *reinterpret_cast<const Pack4<T> *>(mr + j0);
#pragma unroll
        for (int e = 0; e < VEC; e++) v[c * VEC + e] += to_f(m4.v[e]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; e++) {
        const uint32_t j = j0 + e;
        v[c * VEC + e] = j < lk ? to_f(sr[j]) * scale + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f)
                                : -INFINITY;
      }
    }
#pragma unroll
    for (int e = 0; e < VEC; e++) m = fmaxf(m, v[c * VEC + e]);
  }
  m = warp_max(m);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 32; i++) {
    v[i] = m == -INFINITY ? 0.0f : expf(v[i] - m);
    sum += v[i];
  }
  sum = warp_sum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
  for (int c = 0; c < CHUNKS; c++) {
    const uint32_t j0 = (lane + 32 * c) * VEC;
    if (VEC == 4 && j0 < lk) {
      Pack4<T> o4;
#pragma unroll
      for (int e = 0; e < VEC; e++) o4.v[e] = from_f<T>(v[c * VEC + e] * inv);
      *reinterpret_cast<Pack4<T> *>(o + j0) = o4;
    } else if (VEC == 1 && j0 < lk) {
      o[j0] = from_f<T>(v[c] * inv);
    }
  }
}

// Longer rows: three passes over the row (it stays in L1/L2).
template <typename T>
__device__ void softmax_row_long(const T *sr, const T *br, const T *mr, T *o, uint32_t lk,
                                 float scale, uint32_t lane) {
  float m = -INFINITY;
  for (uint32_t j = lane; j < lk; j += 32)
    m = fmaxf(m, to_f(sr[j]) * scale + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f));
  m = warp_max(m);
  float sum = 0.0f;
  for (uint32_t j = lane; j < lk; j += 32) {
    float v = to_f(sr[j]) * scale + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f);
    sum += m == -INFINITY ? 0.0f : expf(v - m);
  }
  sum = warp_sum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (uint32_t j = lane; j < lk; j += 32) {
    float v = to_f(sr[j]) * scale + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f);
    o[j] = from_f<T>(m == -INFINITY ? 0.0f : expf(v - m) * inv);
  }
}

// probs = softmax(scores * scale + bias + mask) over the last axis, one warp per row (a block
// per row left most of each block waiting on its two barriers: 0.9 TB/s at batch 16).
// scores, out: [B, H, Lq, Lk] (rows = B * H * Lq); bias: [H, Lq, Lk] (shared by the batch)
// with strides bias_sh, bias_sq (the corner of a bias built for a longer text reads in place);
// mask: [B, Lk] or null. Any grid: warps stride over the rows.
template <typename T>
__device__ void attn_softmax(const T *s, const T *bias, const T *mask, T *out, uint32_t rows,
                             uint32_t h, uint32_t lq, uint32_t lk, float scale, uint32_t bias_sh,
                             uint32_t bias_sq) {
  const uint32_t lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const bool vec = lk % 4 == 0 && bias_sh % 4 == 0 && bias_sq % 4 == 0 && aligned4(s) &&
                   aligned4(bias) && aligned4(mask) && aligned4(out);
  const uint32_t hlq = h * lq;
  for (uint32_t row = blockIdx.x * warps + (threadIdx.x >> 5); row < rows;
       row += gridDim.x * warps) {
    const uint32_t b = row / hlq, hq = row % hlq;
    const T *sr = s + (uint64_t)row * lk;
    const T *br = bias + (uint64_t)(hq / lq) * bias_sh + (uint64_t)(hq % lq) * bias_sq;
    const T *mr = mask ? mask + (uint64_t)b * lk : nullptr;
    T *o = out + (uint64_t)row * lk;
    if (lk > 32 * 32)
      softmax_row_long<T>(sr, br, mr, o, lk, scale, lane);
    else if (vec)
      softmax_row_regs<T, 4>(sr, br, mr, o, lk, scale, lane);
    else
      softmax_row_regs<T, 1>(sr, br, mr, o, lk, scale, lane);
  }
}

// out = act(x (+|*) p[channel] + residual); x, residual, out: [N, C, HW]; p: [C].
// mode 0: add, 1: multiply. relu: clamp below at 0 after the residual. Each thread takes four
// consecutive elements (one load each where aligned); any grid. 32-bit indices (the caller
// checks the size): 64-bit division is emulated and dominated the kernel.
template <typename T>
__device__ __forceinline__ float channel_value(float x, float p, const T *res, uint32_t i,
                                               uint32_t mode, uint32_t relu) {
  float v = mode ? x * p : x + p;
  if (res) v += to_f(res[i]);
  return relu ? fmaxf(v, 0.0f) : v;
}

template <typename T>
__device__ void channel_op(const T *x, const T *p, const T *res, T *out, uint32_t n,
                           uint32_t c, uint32_t hw, uint32_t mode, uint32_t relu) {
  const bool vec = n % 4 == 0 && aligned4(x) && aligned4(res) && aligned4(out);
  const uint32_t groups = (n + 3) / 4;
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += gridDim.x * blockDim.x) {
    const uint32_t i0 = 4 * g;
    if (vec) {
      Pack4<T> x4 = *reinterpret_cast<const Pack4<T> *>(x + i0), o4;
#pragma unroll
      for (int e = 0; e < 4; e++)
        o4.v[e] = from_f<T>(
            channel_value(to_f(x4.v[e]), to_f(p[((i0 + e) / hw) % c]), res, i0 + e, mode, relu));
      *reinterpret_cast<Pack4<T> *>(out + i0) = o4;
    } else {
      for (uint32_t i = i0; i < i0 + 4 && i < n; i++)
        out[i] = from_f<T>(channel_value(to_f(x[i]), to_f(p[(i / hw) % c]), res, i, mode, relu));
    }
  }
}

// The exact GELU, x * Phi(x), as torch's default.
__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// One row's value before the norm: x, plus the bias, through the GELU when asked.
template <typename T>
__device__ __forceinline__ float pre_norm(const T *xr, const T *pre_bias, uint32_t j, bool gelu) {
  float v = to_f(xr[j]);
  if (pre_bias) v += to_f(pre_bias[j]);
  return gelu ? gelu_erf(v) : v;
}

#define NORM_PER_THREAD 8
// out = LN(act(x + pre_bias)) * w + b (+ residual), over rows of n; one block per row (any
// grid: blocks stride over the rows). act is the GELU when gelu, else none; pre_bias and
// residual may be null. Rows of up to NORM_PER_THREAD * blockDim.x stay in registers; the
// variance is taken around the mean (two passes over the registers), as the reference does.
template <typename T>
__device__ void norm_rows(const T *x, const T *pre_bias, const T *w, const T *b, const T *res,
                          T *out, uint32_t rows, uint32_t n, float eps, uint32_t gelu) {
  __shared__ float shared[32];
  const uint32_t step = blockDim.x;
  const float inv_n = 1.0f / (float)n;
  for (uint32_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T *xr = x + (uint64_t)row * n;
    const T *rr = res ? res + (uint64_t)row * n : nullptr;
    T *o = out + (uint64_t)row * n;
    if (n <= NORM_PER_THREAD * step) {
      float v[NORM_PER_THREAD];
      float sum = 0.0f;
#pragma unroll
      for (int t = 0; t < NORM_PER_THREAD; t++) {
        const uint32_t j = threadIdx.x + t * step;
        v[t] = j < n ? pre_norm(xr, pre_bias, j, gelu) : 0.0f;
        sum += v[t];
      }
      const float mean = block_reduce<false>(sum, shared) * inv_n;
      float sq = 0.0f;
#pragma unroll
      for (int t = 0; t < NORM_PER_THREAD; t++) {
        const uint32_t j = threadIdx.x + t * step;
        const float d = j < n ? v[t] - mean : 0.0f;
        sq += d * d;
      }
      const float rstd = 1.0f / sqrtf(block_reduce<false>(sq, shared) * inv_n + eps);
#pragma unroll
      for (int t = 0; t < NORM_PER_THREAD; t++) {
        const uint32_t j = threadIdx.x + t * step;
        if (j < n) {
          float y = (v[t] - mean) * rstd * to_f(w[j]) + to_f(b[j]);
          if (rr) y += to_f(rr[j]);
          o[j] = from_f<T>(y);
        }
      }
      continue;
    }
    // Longer rows: the values are recomputed on each of three passes.
    float sum = 0.0f;
    for (uint32_t j = threadIdx.x; j < n; j += step) sum += pre_norm(xr, pre_bias, j, gelu);
    const float mean = block_reduce<false>(sum, shared) * inv_n;
    float sq = 0.0f;
    for (uint32_t j = threadIdx.x; j < n; j += step) {
      const float d = pre_norm(xr, pre_bias, j, gelu) - mean;
      sq += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_reduce<false>(sq, shared) * inv_n + eps);
    for (uint32_t j = threadIdx.x; j < n; j += step) {
      float y = (pre_norm(xr, pre_bias, j, gelu) - mean) * rstd * to_f(w[j]) + to_f(b[j]);
      if (rr) y += to_f(rr[j]);
      o[j] = from_f<T>(y);
    }
  }
}

// Attention heads out of and back into the model's [B, L, H * dh] rows, each with the
// elementwise work that sits beside it (a projection's bias going in, NormFormer's per-head
// scale coming out) instead of a copy plus a pass of its own. Each thread moves four elements
// of one head row (dh is a multiple of 4 in every OFA model; the caller checks); any grid.
//
// out[b, h, l, e] = x[b, l, h * dh + e] + bias[h * dh + e] (bias may be null).
template <typename T>
__device__ void split_heads(const T *x, const T *bias, T *out, uint32_t nb, uint32_t l,
                            uint32_t h, uint32_t dh) {
  const uint32_t groups = nb * h * l * (dh / 4);
  const bool vec = aligned4(x) && aligned4(bias) && aligned4(out);
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += gridDim.x * blockDim.x) {
    const uint32_t o = 4 * g, e = o % dh, t = o / dh;
    const uint32_t li = t % l, hi = (t / l) % h, bi = t / (l * h);
    const uint32_t feature = hi * dh + e;
    const uint64_t src = ((uint64_t)bi * l + li) * h * dh + feature;
    Pack4<T> v;
    if (vec) {
      v = *reinterpret_cast<const Pack4<T> *>(x + src);
    } else {
#pragma unroll
      for (int k = 0; k < 4; k++) v.v[k] = x[src + k];
    }
    if (bias) {
#pragma unroll
      for (int k = 0; k < 4; k++) v.v[k] = from_f<T>(to_f(v.v[k]) + to_f(bias[feature + k]));
    }
    if (vec) {
      *reinterpret_cast<Pack4<T> *>(out + o) = v;
    } else {
#pragma unroll
      for (int k = 0; k < 4; k++) out[o + k] = v.v[k];
    }
  }
}

// out[b, l, h * dh + e] = o[b, h, l, e] * scale[h] (scale may be null).
template <typename T>
__device__ void merge_heads(const T *o, const T *scale, T *out, uint32_t nb, uint32_t l,
                            uint32_t h, uint32_t dh) {
  const uint32_t groups = nb * l * h * (dh / 4);
  const bool vec = aligned4(o) && aligned4(out);
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += gridDim.x * blockDim.x) {
    const uint32_t i = 4 * g, e = i % dh, t = i / dh;
    const uint32_t hi = t % h, li = (t / h) % l, bi = t / (h * l);
    const uint64_t src = (((uint64_t)bi * h + hi) * l + li) * dh + e;
    Pack4<T> v;
    if (vec) {
      v = *reinterpret_cast<const Pack4<T> *>(o + src);
    } else {
#pragma unroll
      for (int k = 0; k < 4; k++) v.v[k] = o[src + k];
    }
    if (scale) {
      const float c = to_f(scale[hi]);
#pragma unroll
      for (int k = 0; k < 4; k++) v.v[k] = from_f<T>(to_f(v.v[k]) * c);
    }
    if (vec) {
      *reinterpret_cast<Pack4<T> *>(out + i) = v;
    } else {
#pragma unroll
      for (int k = 0; k < 4; k++) out[i + k] = v.v[k];
    }
  }
}

// cols[b, (c*k + ky)*k + kx, oy*ow + ox] = x[b, c, oy*s + ky - pad, ox*s + kx - pad] (0 outside).
// Grid: x over the B*C*k*k column rows, y over chunks of the output plane.
template <typename T>
__device__ void im2col(const T *x, T *cols, uint32_t ch, uint32_t h, uint32_t w, uint32_t k,
                       uint32_t s, uint32_t pad, uint32_t oh, uint32_t ow) {
  const uint32_t plane = oh * ow, kk = k * k;
  const uint32_t r = blockIdx.x;
  const uint32_t ck = r % (ch * kk), b = r / (ch * kk);
  const uint32_t c = ck / kk, ky = (ck / k) % k, kx = ck % k;
  const T *src = x + ((uint64_t)b * ch + c) * h * w;
  T *dst = cols + (uint64_t)r * plane;
  for (uint32_t p = blockIdx.y * blockDim.x + threadIdx.x; p < plane; p += gridDim.y * blockDim.x) {
    int iy = (int)((p / ow) * s + ky) - (int)pad, ix = (int)((p % ow) * s + kx) - (int)pad;
    dst[p] = (iy >= 0 && iy < (int)h && ix >= 0 && ix < (int)w) ? src[iy * w + ix]
                                                                  : from_f<T>(0.0f);
  }
}

// Channels-last im2col for the ResNet's blocks on a GPU, where a convolution is then one GEMM of
// [B*OH*OW, k*k*C] by [k*k*C, O] (the batched per-image GEMMs of the NCHW layout have only O
// rows each): cols[(b*oh + oy)*ow + ox, (ky*k + kx)*c + ci] = x[b, oy*s + ky - pad,
// ox*s + kx - pad, ci] (0 outside). A segment is the C contiguous values of one (output pixel,
// ky, kx); each warp copies one segment at a time, so the divisions are paid per segment, not
// per element, and the copy is four elements per load where C and the pointers allow. Any grid.
template <typename T>
__device__ void im2col_nhwc(const T *x, T *cols, uint32_t segments, uint32_t c, uint32_t h,
                            uint32_t w, uint32_t k, uint32_t s, uint32_t pad, uint32_t oh,
                            uint32_t ow) {
  const uint32_t lane = threadIdx.x & 31, kk = k * k;
  const uint32_t warps = (gridDim.x * blockDim.x) >> 5;
  const bool vec = c % 4 == 0 && aligned4(x) && aligned4(cols);
  for (uint32_t seg = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; seg < segments;
       seg += warps) {
    const uint32_t row = seg / kk, kidx = seg - row * kk;
    const uint32_t ky = kidx / k, kx = kidx - ky * k;
    const uint32_t ox = row % ow, t = row / ow, oy = t % oh, b = t / oh;
    const int iy = (int)(oy * s + ky) - (int)pad, ix = (int)(ox * s + kx) - (int)pad;
    const bool inside = iy >= 0 && iy < (int)h && ix >= 0 && ix < (int)w;
    const T *src = x + (inside ? (((uint64_t)b * h + iy) * w + ix) * c : 0);
    T *dst = cols + (uint64_t)seg * c;
    if (vec) {
      for (uint32_t j = lane * 4; j < c; j += 128) {
        Pack4<T> v;
        if (inside) {
          v = *reinterpret_cast<const Pack4<T> *>(src + j);
        } else {
#pragma unroll
          for (int e = 0; e < 4; e++) v.v[e] = from_f<T>(0.0f);
        }
        *reinterpret_cast<Pack4<T> *>(dst + j) = v;
      }
    } else {
      for (uint32_t j = lane; j < c; j += 32) dst[j] = inside ? src[j] : from_f<T>(0.0f);
    }
  }
}

// out[b, c, p] = (x[b, p, c] / 255 - mean[c]) / std[c]: torchvision's ToTensor then Normalize on
// a batch of prepared uint8 HWC images, in f32 as the CPU computes it (this file is compiled
// without fast math, so both divisions round as IEEE's), stored in the model's type. The pixels
// cross to the GPU as bytes, a quarter of the f32 planes the host used to build and upload.
template <typename T>
__device__ void normalize_pixels(const uint8_t *x, T *out, uint32_t n, uint32_t plane, float m0,
                                 float m1, float m2, float s0, float s1, float s2) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const uint32_t b = i / plane, p = i - b * plane;
    const uint8_t *px = x + (uint64_t)i * 3;
    T *o = out + (uint64_t)b * 3 * plane + p;
    o[0] = from_f<T>(((float)px[0] / 255.0f - m0) / s0);
    o[plane] = from_f<T>(((float)px[1] / 255.0f - m1) / s1);
    o[2 * (uint64_t)plane] = from_f<T>(((float)px[2] / 255.0f - m2) / s2);
  }
}

#define INSTANTIATE(T, SUFFIX)                                                              \
  extern "C" __global__ void attn_softmax_##SUFFIX(                                         \
      const T *s, const T *bias, const T *mask, T *out, uint32_t rows, uint32_t h,          \
      uint32_t lq, uint32_t lk, float scale, uint32_t bias_sh, uint32_t bias_sq) {           \
    attn_softmax<T>(s, bias, mask, out, rows, h, lq, lk, scale, bias_sh, bias_sq);          \
  }                                                                                          \
  extern "C" __global__ void norm_rows_##SUFFIX(const T *x, const T *pre_bias, const T *w,  \
                                                const T *b, const T *res, T *out,           \
                                                uint32_t rows, uint32_t n, float eps,       \
                                                uint32_t gelu) {                            \
    norm_rows<T>(x, pre_bias, w, b, res, out, rows, n, eps, gelu);                          \
  }                                                                                          \
  extern "C" __global__ void split_heads_##SUFFIX(const T *x, const T *bias, T *out,         \
                                                  uint32_t nb, uint32_t l, uint32_t h,       \
                                                  uint32_t dh) {                             \
    split_heads<T>(x, bias, out, nb, l, h, dh);                                              \
  }                                                                                          \
  extern "C" __global__ void merge_heads_##SUFFIX(const T *o, const T *scale, T *out,        \
                                                  uint32_t nb, uint32_t l, uint32_t h,       \
                                                  uint32_t dh) {                             \
    merge_heads<T>(o, scale, out, nb, l, h, dh);                                             \
  }                                                                                          \
  extern "C" __global__ void channel_op_##SUFFIX(const T *x, const T *p, const T *res,      \
                                                 T *out, uint32_t n, uint32_t c, uint32_t hw, \
                                                 uint32_t mode, uint32_t relu) {             \
    channel_op<T>(x, p, res, out, n, c, hw, mode, relu);                                    \
  }                                                                                          \
  extern "C" __global__ void im2col_##SUFFIX(const T *x, T *cols, uint32_t ch, uint32_t h,  \
                                             uint32_t w, uint32_t k, uint32_t s,             \
                                             uint32_t pad, uint32_t oh, uint32_t ow) {       \
    im2col<T>(x, cols, ch, h, w, k, s, pad, oh, ow);                                        \
  }                                                                                          \
  extern "C" __global__ void im2col_nhwc_##SUFFIX(                                          \
      const T *x, T *cols, uint32_t segments, uint32_t c, uint32_t h, uint32_t w, uint32_t k, \
      uint32_t s, uint32_t pad, uint32_t oh, uint32_t ow) {                                  \
    im2col_nhwc<T>(x, cols, segments, c, h, w, k, s, pad, oh, ow);                           \
  }                                                                                          \
  extern "C" __global__ void normalize_pixels_##SUFFIX(                                     \
      const uint8_t *x, T *out, uint32_t n, uint32_t plane, float m0, float m1, float m2,    \
      float s0, float s1, float s2) {                                                        \
    normalize_pixels<T>(x, out, n, plane, m0, m1, m2, s0, s1, s2);                           \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(__half, f16)
