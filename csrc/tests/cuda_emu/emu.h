// Host emulation of the small part of the CUDA runtime and device API that csrc/cuda/*.cu use, so
// the kernels can be compiled by the host compiler (as C++) and run on the CPU in tests
// (csrc/tests/test_cuda_emulated.cpp, built by .ci/cuda_emulate.sh).
//
// Every CUDA thread of a block is one std::thread; the blocks of a grid run one after another on
// the same threads.
// __syncthreads is a block-wide std::barrier, __shfl_xor_sync a warp-wide exchange through a
// buffer between two warp barriers. The emulation also checks what the hardware would not report:
// - the launch configuration (block size, grid limits, shared memory);
// - that every thread of a block executes the same number of __syncthreads (a barrier in
//   divergent code), and that a warp shuffle with a full mask runs on a full warp with all lanes;
// What it cannot show: data races on shared memory (it has no race detector, and its threads do
// not run in lockstep), the register / occupancy limits of a real GPU (see nvcc -Xptxas -v), and
// timing. Blocks run one after another, so inter-block races do not show either.
// The kernels' `<<<grid, block, smem, stream>>>` launches are rewritten to emu::launch(...) calls
// by .ci/cuda_emulate.sh before compiling.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using cudaStream_t = struct emu_stream*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    default:
      return "unspecified launch failure";
  }
}

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// ---- half / bfloat16 (storage types with round-to-nearest-even conversions) ------------------
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float v) {
  const _Float16 f = static_cast<_Float16>(v);
  __half h;
  std::memcpy(&h.bits, &f, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  __nv_bfloat16 b;
  if (std::isnan(v)) {
    b.bits = 0x7fc0;
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    b.bits = static_cast<uint16_t>(u >> 16);
  }
  return b;
}

namespace emu {

// Per-block state shared by its threads.
struct Block {
  explicit Block(unsigned threads)
      : threads(threads), sync(threads), shuffle(threads, 0), syncs(threads, 0),
        shuffles(threads, 0) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
      const unsigned lanes = std::min(32u, threads - 32 * w);
      warp.push_back(std::make_unique<std::barrier<>>(lanes));
    }
  }
  unsigned threads;
  std::barrier<> sync;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<uint64_t> shuffle;  // one 8-byte slot per thread
  std::vector<int64_t> syncs, shuffles;
};

inline thread_local dim3 tl_threadIdx, tl_blockIdx, tl_blockDim, tl_gridDim;
inline thread_local Block* tl_block = nullptr;

inline std::mutex& error_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<std::string>& errors() {
  static std::vector<std::string> e;
  return e;
}
inline void report(const std::string& what) {
  std::lock_guard<std::mutex> lock(error_mutex());
  errors().push_back(what);
}
// The problems found since the last call (cleared).
inline std::vector<std::string> take_errors() {
  std::lock_guard<std::mutex> lock(error_mutex());
  auto e = errors();
  errors().clear();
  return e;
}

inline cudaError_t& last_error() {
  static cudaError_t e = cudaSuccess;
  return e;
}

inline int64_t& launches() {
  static int64_t n = 0;
  return n;
}

// Runs body() as the kernel for every thread of every block of the grid.
inline void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, const std::function<void()>& body) {
  ++launches();
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 ||
      block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
      smem > 48 * 1024) {
    last_error() = cudaErrorInvalidConfiguration;
    report("invalid launch configuration: grid (" + std::to_string(grid.x) + ", " +
           std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
           std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
           std::to_string(block.z) + ")");
    return;
  }
  // One std::thread per CUDA thread of a block, reused for every block of the grid (the blocks run
  // one after another; `phase` separates them).
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  std::unique_ptr<Block> cur;
  std::barrier<> phase(static_cast<std::ptrdiff_t>(threads));
  auto check_block = [&](const Block& b, uint64_t bi) {
    for (unsigned t = 1; t < threads; ++t) {
      if (b.syncs[t] != b.syncs[0]) {
        report("__syncthreads in divergent code: thread " + std::to_string(t) + " of block " +
               std::to_string(bi) + " passed " + std::to_string(b.syncs[t]) +
               " barriers, thread 0 passed " + std::to_string(b.syncs[0]));
        break;
      }
    }
    for (unsigned t = 0; t < threads; ++t) {
      if (b.shuffles[t] != b.shuffles[t - t % 32]) {
        report("warp shuffle in divergent code (thread " + std::to_string(t) + ")");
        break;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (uint64_t bi = 0; bi < blocks; ++bi) {
        if (t == 0) {
          if (cur) check_block(*cur, bi - 1);
          cur = std::make_unique<Block>(static_cast<unsigned>(threads));
        }
        phase.arrive_and_wait();
        Block& b = *cur;
        tl_block = &b;
        tl_blockIdx = dim3(static_cast<unsigned>(bi % grid.x),
                           static_cast<unsigned>((bi / grid.x) % grid.y),
                           static_cast<unsigned>(bi / (uint64_t(grid.x) * grid.y)));
        tl_gridDim = grid;
        tl_blockDim = block;
        tl_threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
        body();
        // An exited thread no longer takes part in the barriers (so the others do not hang; the
        // mismatch is reported by check_block).
        b.sync.arrive_and_drop();
        b.warp[t / 32]->arrive_and_drop();
        phase.arrive_and_wait();
      }
      if (t == 0 && cur) check_block(*cur, blocks - 1);
    });
  }
  for (auto& th : pool) th.join();
}

inline unsigned linear_tid() {
  return tl_threadIdx.x + tl_blockDim.x * (tl_threadIdx.y + tl_blockDim.y * tl_threadIdx.z);
}

inline void syncthreads() {
  Block& b = *tl_block;
  ++b.syncs[linear_tid()];
  b.sync.arrive_and_wait();
}

template <typename T>
T shfl_xor(unsigned mask, T v, int offset) {
  static_assert(sizeof(T) <= 8, "emulated shuffles move at most 8 bytes");
  Block& b = *tl_block;
  const unsigned tid = linear_tid(), lane = tid % 32, base = tid - lane;
  ++b.shuffles[tid];
  if (mask != 0xffffffffu || base + 32 > b.threads) {
    report("__shfl_xor_sync with a full mask on a partial warp or with mask != 0xffffffff");
  }
  uint64_t slot = 0;
  std::memcpy(&slot, &v, sizeof(T));
  b.shuffle[tid] = slot;
  b.warp[tid / 32]->arrive_and_wait();
  const unsigned src = base + (lane ^ unsigned(offset));
  T out = v;
  if (src < b.threads) std::memcpy(&out, &b.shuffle[src], sizeof(T));
  b.warp[tid / 32]->arrive_and_wait();
  return out;
}

}  // namespace emu

#define threadIdx (::emu::tl_threadIdx)
#define blockIdx (::emu::tl_blockIdx)
#define blockDim (::emu::tl_blockDim)
#define gridDim (::emu::tl_gridDim)
#define __syncthreads() ::emu::syncthreads()

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int offset) {
  return ::emu::shfl_xor(mask, v, offset);
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error();
  emu::last_error() = cudaSuccess;
  return e;
}

// atomicAdd on int (the per-pixel entry counters of the deformable backward): an atomic fetch-add
// that returns the old value, as on the device. Blocks run one after another, so only the threads
// of one block race here.
inline int atomicAdd(int* address, int value) {
  return std::atomic_ref<int>(*address).fetch_add(value);
}
