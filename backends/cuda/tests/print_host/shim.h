// Runs printed CUDA C++ on the CPU, for tests of the printer: each CUDA thread of a block is a
// ucontext fiber, `__syncthreads` and the warp collectives (shuffles, mma) switch fibers until the
// block or the warp has arrived, shared memory is a static array (blocks run one after another).
// Not a GPU model beyond that: the emulator is the checker, this only proves the text means what
// the kernel IR says.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };

struct __nv_bfloat16 { unsigned short bits; };
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned int vl3_float_bits(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned int)h.bits << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  unsigned int u = vl3_float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{(unsigned short)(u >> 16)};
}

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) longlong2 { long long x, y; };
struct alignas(2) uchar2 { unsigned char x, y; };
struct alignas(4) uchar4 { unsigned char x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return {x, y, z, w}; }
inline longlong2 make_longlong2(long long x, long long y) { return {x, y}; }
inline uchar2 make_uchar2(unsigned char x, unsigned char y) { return {x, y}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return {x, y, z, w}; }

namespace vl3 {

enum class Wait { None, Block, Warp };

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  uint3 thread;
  bool done = false;
  Wait wait = Wait::None;
};

inline uint3 block_index, block_dim, grid_dim;
inline std::vector<Fiber> fibers;
inline int current = 0;
inline ucontext_t scheduler;
inline void (*body)(void*) = nullptr;
inline void* body_state = nullptr;
inline unsigned char* dynamic_smem = nullptr;
/// One 64-bit slot per thread for warp exchanges.
inline std::vector<unsigned long long> slots;
inline std::vector<float> mma_slots;

inline void fail(const char* what) {
  std::fprintf(stderr, "shim: %s (block %u,%u,%u)\n", what, block_index.x, block_index.y, block_index.z);
  std::exit(3);
}

inline void yield(Wait wait) {
  fibers[current].wait = wait;
  swapcontext(&fibers[current].context, &scheduler);
}

inline void trampoline() {
  body(body_state);
  fibers[current].done = true;
  swapcontext(&fibers[current].context, &scheduler);
}

inline int lane() { return current & 31; }

/// Releases whatever barrier everyone concerned has reached; fails on a barrier some never reach.
inline bool release() {
  int n = (int)fibers.size();
  int at_block = 0, done = 0;
  for (auto& f : fibers) {
    at_block += f.wait == Wait::Block;
    done += f.done;
  }
  if (at_block == n) {
    for (auto& f : fibers) f.wait = Wait::None;
    return true;
  }
  bool released = false;
  for (int w = 0; w < n; w += 32) {
    int at_warp = 0;
    for (int i = w; i < w + 32 && i < n; i++) at_warp += fibers[i].wait == Wait::Warp;
    if (at_warp == 32) {
      for (int i = w; i < w + 32; i++) fibers[i].wait = Wait::None;
      released = true;
    }
  }
  if (!released && done < n) fail("deadlock: a barrier or warp collective that not all threads reach");
  return released;
}

inline void run_block() {
  // Each pass runs every runnable fiber to its next wait; after it, every live fiber waits.
  for (;;) {
    for (int i = 0; i < (int)fibers.size(); i++) {
      if (fibers[i].done || fibers[i].wait != Wait::None) continue;
      current = i;
      swapcontext(&scheduler, &fibers[i].context);
    }
    bool all_done = true;
    for (auto& f : fibers) all_done = all_done && f.done;
    if (all_done) return;
    release();
  }
}

template <class F>
void launch(dim3 grid, dim3 block, size_t dynamic_bytes, F kernel) {
  std::vector<unsigned char> smem(dynamic_bytes + 1, 0xab);
  dynamic_smem = smem.data();
  int n = (int)(block.x * block.y * block.z);
  if (n % 32 != 0) fail("block size must be a multiple of 32");
  block_dim = {block.x, block.y, block.z};
  grid_dim = {grid.x, grid.y, grid.z};
  slots.assign(n, 0);
  mma_slots.assign((size_t)n * 14, 0.0f);
  body = [](void* state) { (*static_cast<F*>(state))(); };
  body_state = &kernel;
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        block_index = {bx, by, bz};
        fibers.assign(n, Fiber{});
        for (int i = 0; i < n; i++) {
          Fiber& f = fibers[i];
          f.thread = {i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
          f.stack.resize(256 * 1024);
          getcontext(&f.context);
          f.context.uc_stack.ss_sp = f.stack.data();
          f.context.uc_stack.ss_size = f.stack.size();
          f.context.uc_link = nullptr;
          makecontext(&f.context, trampoline, 0);
        }
        run_block();
      }
}

template <class T>
T shuffle_from(T value, int source) {
  unsigned long long bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  slots[current] = bits;
  yield(Wait::Warp);
  bits = slots[(current & ~31) + source];
  yield(Wait::Warp);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

/// mma.m16n8k16 row.col bf16·bf16+f32 with the PTX fragment layouts (group g = lane/4,
/// t = lane%4): a0 A[g][2t..], a1 A[g+8][2t..], a2 A[g][2t+8..], a3 A[g+8][2t+8..];
/// b0 B[2t..][g], b1 B[2t+8..][g]; c/d {0,1} C[g][2t..], {2,3} C[g+8][2t..].
inline void mma(float& d0, float& d1, float& d2, float& d3, unsigned a0, unsigned a1, unsigned a2,
                unsigned a3, unsigned b0, unsigned b1, float c0, float c1, float c2, float c3) {
  float* mine = &mma_slots[(size_t)current * 14];
  unsigned regs[6] = {a0, a1, a2, a3, b0, b1};
  std::memcpy(mine, regs, sizeof regs);
  mine[6] = c0, mine[7] = c1, mine[8] = c2, mine[9] = c3;
  yield(Wait::Warp);
  float A[16][16], B[16][8], C[16][8];
  auto half = [](unsigned r, int hi) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(hi ? r >> 16 : r & 0xffff))); };
  for (int l = 0; l < 32; l++) {
    const float* s = &mma_slots[(size_t)((current & ~31) + l) * 14];
    unsigned r[6];
    std::memcpy(r, s, sizeof r);
    int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; h++) {
      A[g][2 * t + h] = half(r[0], h);
      A[g + 8][2 * t + h] = half(r[1], h);
      A[g][2 * t + 8 + h] = half(r[2], h);
      A[g + 8][2 * t + 8 + h] = half(r[3], h);
      B[2 * t + h][g] = half(r[4], h);
      B[2 * t + 8 + h][g] = half(r[5], h);
      C[g][2 * t + h] = s[6 + h];
      C[g + 8][2 * t + h] = s[8 + h];
    }
  }
  yield(Wait::Warp);
  int g = lane() / 4, t = lane() % 4;
  auto dot = [&](int row, int col) {
    float acc = C[row][col];
    for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
    return acc;
  };
  d0 = dot(g, 2 * t), d1 = dot(g, 2 * t + 1), d2 = dot(g + 8, 2 * t), d3 = dot(g + 8, 2 * t + 1);
}

template <class T>
std::vector<T> read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

template <class T>
void write(const std::string& path, const std::vector<T>& values) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

}  // namespace vl3

#define threadIdx (vl3::fibers[vl3::current].thread)
#define blockIdx (vl3::block_index)
#define blockDim (vl3::block_dim)
#define gridDim (vl3::grid_dim)
inline void __syncthreads() { vl3::yield(vl3::Wait::Block); }
template <class T> T __shfl_xor_sync(unsigned, T v, unsigned mask) { return vl3::shuffle_from(v, vl3::lane() ^ (int)mask); }
template <class T> T __shfl_down_sync(unsigned, T v, unsigned delta) {
  int source = vl3::lane() + (int)delta;
  return vl3::shuffle_from(v, source < 32 ? source : vl3::lane());
}
template <class T> T __shfl_sync(unsigned, T v, int source) { return vl3::shuffle_from(v, source & 31); }
