// CUDA kernels for what candle's generic operations do slowly at this model's shapes (each
// measured on an H200 at batch 16): a broadcast add of the attention bias over the batch ran at
// 250 GB/s, the per-channel epilogues of the ResNet took three strided passes, and candle's
// im2col made a 3x3 convolution run at 7 TFLOP/s. Each is one pass here. Every kernel computes
// in f32 and stores in the tensor's type (f32, bf16 or f16).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
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

// probs = softmax(scores + bias + mask) over the last axis, one block per row.
// scores, out: [B, H, Lq, Lk]; bias: [H, Lq, Lk] (shared by the batch); mask: [B, Lk] or null.
// Rows up to PER_THREAD * blockDim.x long are read once and kept in registers.
#define PER_THREAD 8
template <typename T>
__device__ void attn_softmax(const T *s, const T *bias, const T *mask, T *out, uint32_t hlq,
                             uint32_t lk) {
  __shared__ float shared[32];
  const uint32_t row = blockIdx.x;
  const uint32_t b = row / hlq, hq = row % hlq;
  const T *sr = s + (uint64_t)row * lk;
  const T *br = bias + (uint64_t)hq * lk;
  const T *mr = mask ? mask + (uint64_t)b * lk : nullptr;
  T *o = out + (uint64_t)row * lk;
  const uint32_t step = blockDim.x;
  if (lk <= PER_THREAD * step) {
    float v[PER_THREAD];
    float m = -INFINITY;
#pragma unroll
    for (int t = 0; t < PER_THREAD; t++) {
      uint32_t j = threadIdx.x + t * step;
      v[t] = j < lk ? to_f(sr[j]) + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f) : -INFINITY;
      m = fmaxf(m, v[t]);
    }
    m = block_reduce<true>(m, shared);
    float sum = 0.0f;
#pragma unroll
    for (int t = 0; t < PER_THREAD; t++) {
      v[t] = m == -INFINITY ? 0.0f : expf(v[t] - m);
      sum += v[t];
    }
    sum = block_reduce<false>(sum, shared);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int t = 0; t < PER_THREAD; t++) {
      uint32_t j = threadIdx.x + t * step;
      if (j < lk) o[j] = from_f<T>(v[t] * inv);
    }
    return;
  }
  // Longer rows: three passes over the row (it stays in L1/L2).
  float m = -INFINITY;
  for (uint32_t j = threadIdx.x; j < lk; j += step)
    m = fmaxf(m, to_f(sr[j]) + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f));
  m = block_reduce<true>(m, shared);
  float sum = 0.0f;
  for (uint32_t j = threadIdx.x; j < lk; j += step) {
    float v = to_f(sr[j]) + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f);
    sum += m == -INFINITY ? 0.0f : expf(v - m);
  }
  sum = block_reduce<false>(sum, shared);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (uint32_t j = threadIdx.x; j < lk; j += step) {
    float v = to_f(sr[j]) + to_f(br[j]) + (mr ? to_f(mr[j]) : 0.0f);
    o[j] = from_f<T>(m == -INFINITY ? 0.0f : expf(v - m) * inv);
  }
}

// out = act(x (+|*) p[channel] + residual); x, residual, out: [N, C, HW]; p: [C].
// mode 0: add, 1: multiply. relu: clamp below at 0 after the residual. 32-bit indices (the
// caller checks the size): 64-bit division is emulated and dominated the kernel.
template <typename T>
__device__ void channel_op(const T *x, const T *p, const T *res, T *out, uint32_t n,
                           uint32_t c, uint32_t hw, uint32_t mode, uint32_t relu) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    float pc = to_f(p[(i / hw) % c]);
    float v = mode ? to_f(x[i]) * pc : to_f(x[i]) + pc;
    if (res) v += to_f(res[i]);
    if (relu) v = fmaxf(v, 0.0f);
    out[i] = from_f<T>(v);
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

#define INSTANTIATE(T, SUFFIX)                                                              \
  extern "C" __global__ void attn_softmax_##SUFFIX(const T *s, const T *bias, const T *mask, \
                                                   T *out, uint32_t hlq, uint32_t lk) {      \
    attn_softmax<T>(s, bias, mask, out, hlq, lk);                                           \
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
  }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(__half, f16)
