// Just enough of CUDA to run kernels/ofa.cu on the host, so its kernels are tested on machines
// without a GPU (tests/cuda_kernels_on_host.rs). Every thread of a block is an OS thread:
// __syncthreads and warp shuffles block for real, so a missing barrier or a wrong shuffle
// partner gives wrong sums here as it would on the device. Blocks run one after another, which
// is why __shared__ can be a plain static.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

struct dim3 {
  uint32_t x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// A barrier that threads leave when they return, as exited threads stop counting on a GPU.
class Barrier {
 public:
  explicit Barrier(uint32_t n) : expected_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    uint64_t gen = generation_;
    if (++arrived_ >= expected_) {
      release();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen; });
  }
  void leave() {
    std::unique_lock<std::mutex> lock(m_);
    expected_--;
    if (arrived_ > 0 && arrived_ >= expected_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    generation_++;
    cv_.notify_all();
  }
  std::mutex m_;
  std::condition_variable cv_;
  uint32_t expected_;
  uint32_t arrived_ = 0;
  uint64_t generation_ = 0;
};

struct BlockState {
  Barrier block;
  std::vector<Barrier *> warps;
  std::vector<uint64_t> lanes;  // one exchange slot per thread, for shuffles
  explicit BlockState(uint32_t threads) : block(threads), lanes(threads) {
    for (uint32_t w = 0; w < (threads + 31) / 32; w++)
      warps.push_back(new Barrier(threads - w * 32 < 32 ? threads - w * 32 : 32));
  }
  ~BlockState() {
    for (auto *w : warps) delete w;
  }
};

inline BlockState *block_state = nullptr;

inline uint32_t flat_thread() {
  return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline void __syncthreads() { block_state->block.wait(); }

template <typename V>
inline V shuffle(V v, uint32_t src_lane) {
  static_assert(sizeof(V) <= sizeof(uint64_t), "shuffle of at most 8 bytes");
  uint32_t me = flat_thread();
  Barrier &warp = *block_state->warps[me / 32];
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  block_state->lanes[me] = bits;
  warp.wait();
  uint64_t theirs = block_state->lanes[(me & ~31u) | (src_lane & 31u)];
  warp.wait();
  V out;
  std::memcpy(&out, &theirs, sizeof(V));
  return out;
}

template <typename V>
inline V __shfl_xor_sync(uint32_t, V v, int mask) {
  return shuffle(v, (flat_thread() & 31u) ^ (uint32_t)mask);
}

template <typename V>
inline V __shfl_sync(uint32_t, V v, int lane) {
  return shuffle(v, (uint32_t)lane);
}

// bf16 and f16 with the device's conversions (round to nearest even).
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
  uint32_t u = (uint32_t)h.bits << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return {0x7fc0};
  u += 0x7fff + ((u >> 16) & 1);
  return {(uint16_t)(u >> 16)};
}
struct __half {
  _Float16 v;
};
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half(float f) { return {(_Float16)f}; }

// Runs `kernel` on every thread of a `grid` of `block`s, blocks one at a time.
inline void launch(dim3 grid, dim3 block, const std::function<void()> &kernel) {
  gridDim = grid;
  blockDim = block;
  const uint32_t threads = block.x * block.y * block.z;
  for (uint32_t bz = 0; bz < grid.z; bz++)
    for (uint32_t by = 0; by < grid.y; by++)
      for (uint32_t bx = 0; bx < grid.x; bx++) {
        BlockState state(threads);
        block_state = &state;
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (uint32_t t = 0; t < threads; t++) {
          pool.emplace_back([&, t] {
            blockIdx = {bx, by, bz};
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            kernel();
            state.block.leave();
            state.warps[t / 32]->leave();
          });
        }
        for (auto &th : pool) th.join();
        block_state = nullptr;
      }
}
