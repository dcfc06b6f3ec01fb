// Runs one kernel of kernels/ofa.cu on the host (emulation.h), for tests/cuda_kernels_on_host.rs:
//
//   run KERNEL DTYPE SHIFT BLOCKS THREADS PARAMS...
//
// reads the kernel's inputs from stdin as little-endian f32 arrays (in the order its comment
// below lists them), rounds them to DTYPE (f32, bf16, f16), runs the kernel on a grid of BLOCKS
// blocks of THREADS threads, and writes its output to stdout as f32. SHIFT (0 or 1) places every
// array one element past an aligned address, so the kernels' unaligned paths run too.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define OFA_HOST_EMULATION
#include "../ofa.cu"

namespace {

std::vector<float> read_f32(size_t n) {
  std::vector<float> v(n);
  if (n && std::fread(v.data(), sizeof(float), n, stdin) != n) {
    std::fprintf(stderr, "stdin ended before %zu values\n", n);
    std::exit(2);
  }
  return v;
}

// A device-like array of T, one element past alignment when shifted.
template <typename T> struct Array {
  std::vector<T> storage;
  T *ptr = nullptr;
  size_t len = 0;
  Array(size_t n, bool shift) : storage(n + 8), len(n) {
    uintptr_t base = (uintptr_t)storage.data();
    uintptr_t aligned = (base + 4 * sizeof(T) - 1) / (4 * sizeof(T)) * (4 * sizeof(T));
    ptr = reinterpret_cast<T *>(aligned) + (shift ? 1 : 0);
  }
};

template <typename T> Array<T> input(size_t n, bool shift) {
  Array<T> a(n, shift);
  std::vector<float> v = read_f32(n);
  for (size_t i = 0; i < n; i++) a.ptr[i] = from_f<T>(v[i]);
  return a;
}

template <typename T> void write(const Array<T> &a) {
  std::vector<float> v(a.len);
  for (size_t i = 0; i < a.len; i++) v[i] = to_f(a.ptr[i]);
  std::fwrite(v.data(), sizeof(float), v.size(), stdout);
}

uint32_t arg(char **argv, int i) { return (uint32_t)std::strtoul(argv[i], nullptr, 10); }

template <typename T>
int run(const std::string &kernel, bool shift, dim3 grid, dim3 block, int argc, char **argv) {
  if (kernel == "attn_softmax" && argc == 14) {
    // PARAMS: B H LQ LK HAS_MASK SCALE BIAS_LQ BIAS_LK; stdin: scores [B,H,LQ,LK], bias
    // [H,BIAS_LQ,BIAS_LK] (its top-left LQ x LK corner is read), mask [B,LK]
    uint32_t b = arg(argv, 6), h = arg(argv, 7), lq = arg(argv, 8), lk = arg(argv, 9);
    bool has_mask = arg(argv, 10) != 0;
    float scale = std::strtof(argv[11], nullptr);
    uint32_t bias_lq = arg(argv, 12), bias_lk = arg(argv, 13);
    auto s = input<T>((size_t)b * h * lq * lk, shift);
    auto bias = input<T>((size_t)h * bias_lq * bias_lk, shift);
    Array<T> mask = has_mask ? input<T>((size_t)b * lk, shift) : Array<T>(0, false);
    Array<T> out((size_t)b * h * lq * lk, shift);
    launch(grid, block, [&] {
      attn_softmax<T>(s.ptr, bias.ptr, has_mask ? mask.ptr : nullptr, out.ptr, b * h * lq, h,
                      lq, lk, scale, bias_lq * bias_lk, bias_lk);
    });
    write(out);
    return 0;
  }
  if (kernel == "channel_op" && argc == 12) {
    // PARAMS: N C HW MODE RELU HAS_RES; stdin: x [N], p [C], residual [N]
    uint32_t n = arg(argv, 6), c = arg(argv, 7), hw = arg(argv, 8), mode = arg(argv, 9),
             relu = arg(argv, 10);
    bool has_res = arg(argv, 11) != 0;
    auto x = input<T>(n, shift);
    auto p = input<T>(c, shift);
    Array<T> res = has_res ? input<T>(n, shift) : Array<T>(0, false);
    Array<T> out(n, shift);
    launch(grid, block, [&] {
      channel_op<T>(x.ptr, p.ptr, has_res ? res.ptr : nullptr, out.ptr, n, c, hw, mode, relu);
    });
    write(out);
    return 0;
  }
  if (kernel == "norm_rows" && argc == 12) {
    // PARAMS: ROWS N EPS GELU HAS_PRE_BIAS HAS_RES; stdin: x [ROWS,N], pre_bias [N], w [N],
    // b [N], residual [ROWS,N]
    uint32_t rows = arg(argv, 6), n = arg(argv, 7);
    float eps = std::strtof(argv[8], nullptr);
    uint32_t gelu = arg(argv, 9);
    bool has_pre = arg(argv, 10) != 0, has_res = arg(argv, 11) != 0;
    auto x = input<T>((size_t)rows * n, shift);
    Array<T> pre = has_pre ? input<T>(n, shift) : Array<T>(0, false);
    auto w = input<T>(n, shift);
    auto b = input<T>(n, shift);
    Array<T> res = has_res ? input<T>((size_t)rows * n, shift) : Array<T>(0, false);
    Array<T> out((size_t)rows * n, shift);
    launch(grid, block, [&] {
      norm_rows<T>(x.ptr, has_pre ? pre.ptr : nullptr, w.ptr, b.ptr, has_res ? res.ptr : nullptr,
                   out.ptr, rows, n, eps, gelu);
    });
    write(out);
    return 0;
  }
  if ((kernel == "split_heads" || kernel == "merge_heads") && argc == 11) {
    // PARAMS: B L H DH HAS_EXTRA; stdin: x [B,L,H*DH] (split) or o [B,H,L,DH] (merge), then the
    // bias [H*DH] (split) or the per-head scale [H] (merge)
    uint32_t b = arg(argv, 6), l = arg(argv, 7), h = arg(argv, 8), dh = arg(argv, 9);
    bool has_extra = arg(argv, 10) != 0;
    const bool split = kernel == "split_heads";
    auto x = input<T>((size_t)b * l * h * dh, shift);
    Array<T> extra = has_extra ? input<T>(split ? h * dh : h, shift) : Array<T>(0, false);
    Array<T> out((size_t)b * l * h * dh, shift);
    const T *e = has_extra ? extra.ptr : nullptr;
    launch(grid, block, [&] {
      if (split)
        split_heads<T>(x.ptr, e, out.ptr, b, l, h, dh);
      else
        merge_heads<T>(x.ptr, e, out.ptr, b, l, h, dh);
    });
    write(out);
    return 0;
  }
  if (kernel == "im2col" && argc == 13) {
    // PARAMS: B C H W K STRIDE PAD; stdin: x [B,C,H,W]. BLOCKS is the grid's y (its x is one
    // block per column row, as the launcher sets it).
    uint32_t b = arg(argv, 6), c = arg(argv, 7), h = arg(argv, 8), w = arg(argv, 9),
             k = arg(argv, 10), s = arg(argv, 11), pad = arg(argv, 12);
    uint32_t oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
    auto x = input<T>((size_t)b * c * h * w, shift);
    Array<T> out((size_t)b * c * k * k * oh * ow, shift);
    launch(dim3{b * c * k * k, grid.x, 1}, block,
           [&] { im2col<T>(x.ptr, out.ptr, c, h, w, k, s, pad, oh, ow); });
    write(out);
    return 0;
  }
  if (kernel == "im2col_nhwc" && argc == 13) {
    // PARAMS: B H W C K STRIDE PAD; stdin: x [B,H,W,C]
    uint32_t b = arg(argv, 6), h = arg(argv, 7), w = arg(argv, 8), c = arg(argv, 9),
             k = arg(argv, 10), s = arg(argv, 11), pad = arg(argv, 12);
    uint32_t oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
    uint32_t segments = b * oh * ow * k * k;
    auto x = input<T>((size_t)b * h * w * c, shift);
    Array<T> out((size_t)segments * c, shift);
    launch(grid, block,
           [&] { im2col_nhwc<T>(x.ptr, out.ptr, segments, c, h, w, k, s, pad, oh, ow); });
    write(out);
    return 0;
  }
  if (kernel == "normalize_pixels" && argc == 14) {
    // PARAMS: B PLANE MEAN0 MEAN1 MEAN2 STD0 STD1 STD2; stdin: pixels [B,PLANE,3] (0..255, as
    // bytes there).
    uint32_t b = arg(argv, 6), plane = arg(argv, 7);
    float m[3], sd[3];
    for (int c = 0; c < 3; c++) {
      m[c] = std::strtof(argv[8 + c], nullptr);
      sd[c] = std::strtof(argv[11 + c], nullptr);
    }
    std::vector<float> v = read_f32((size_t)b * plane * 3);
    Array<uint8_t> x(v.size(), shift);
    for (size_t i = 0; i < v.size(); i++) x.ptr[i] = (uint8_t)v[i];
    Array<T> out((size_t)b * 3 * plane, shift);
    launch(grid, block, [&] {
      normalize_pixels<T>(x.ptr, out.ptr, b * plane, plane, m[0], m[1], m[2], sd[0], sd[1], sd[2]);
    });
    write(out);
    return 0;
  }
  std::fprintf(stderr, "unknown kernel %s or wrong number of parameters (%d)\n", kernel.c_str(),
               argc);
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: run KERNEL DTYPE SHIFT BLOCKS THREADS PARAMS...\n");
    return 2;
  }
  const std::string kernel = argv[1], dtype = argv[2];
  const bool shift = arg(argv, 3) != 0;
  const dim3 grid{arg(argv, 4), 1, 1}, block{arg(argv, 5), 1, 1};
  if (dtype == "f32") return run<float>(kernel, shift, grid, block, argc, argv);
  if (dtype == "bf16") return run<__nv_bfloat16>(kernel, shift, grid, block, argc, argv);
  if (dtype == "f16") return run<__half>(kernel, shift, grid, block, argc, argv);
  std::fprintf(stderr, "unknown dtype %s\n", dtype.c_str());
  return 2;
}
