// parallel_for: at::parallel_for, run on the OpenMP runtime that torch itself runs.
//
// at::parallel_for is a header template: its `#pragma omp parallel` is compiled into this library,
// by this library's compiler. GCC lowers it to libgomp, the runtime of torch's Linux builds, so
// din_ops' parallel regions share torch's threads: torch.set_num_threads sizes them,
// at::get_thread_num() stays below at::get_num_threads() (per-thread buffers rely on it), and MKL,
// called inside them, sees an active region and stays on one thread. clang can only lower it to
// its own runtime, libomp. Loaded beside torch's libgomp, that is a second runtime: its teams keep
// OpenMP's default size whatever torch.set_num_threads says, MKL starts more threads inside each of
// them, and its idle threads spin beside torch's. (Measured on a 2-core EPYC, clang 14, the paper's
// network at 512 px: torch's own convolutions 1.6-2.1x slower, the 1x1 DIN 2.4x; with
// OMP_NUM_THREADS=4 and torch.set_num_threads(2), wrong weight gradients.)
//
// So where the compiler is not GCC and torch runs libgomp, the build (setup.py, CMakeLists.txt)
// compiles without -fopenmp, links torch's libgomp and defines DIN_OPS_PARALLEL_GOMP, and
// parallel_for below calls libgomp's GOMP_parallel (the entry point GCC emits for `#pragma omp
// parallel`) itself, splitting the range exactly as at::parallel_for does: the same chunks, thread
// ids and results as a GCC build.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/ParallelGuard.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#if defined(DIN_OPS_PARALLEL_GOMP)
extern "C" {
// libgomp's ABI (GOMP_4.0, OMP_1.0): runs fn(data) on a team of the default size (num_threads 0).
void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);
int omp_get_num_threads();
int omp_get_thread_num();
}
#endif

namespace din_ops::cpu {

#if defined(DIN_OPS_PARALLEL_GOMP)
namespace detail {

template <class F>
struct GompRange {
  const F* f;
  int64_t begin, end, grain;
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
};

// One team member's share of [begin, end), as at::internal::invoke_parallel computes it.
template <class F>
void gomp_share(void* data) {
  auto& r = *static_cast<GompRange<F>*>(data);
  int64_t threads = omp_get_num_threads();
  if (r.grain > 0) threads = std::min(threads, at::divup(r.end - r.begin, r.grain));
  const int64_t tid = omp_get_thread_num(), chunk = at::divup(r.end - r.begin, threads);
  const int64_t b = r.begin + tid * chunk;
  if (b >= r.end) return;
  try {
    at::internal::ThreadIdGuard tid_guard(static_cast<int>(tid));
    c10::ParallelGuard guard(true);
    (*r.f)(b, std::min(r.end, b + chunk));
  } catch (...) {
    if (!r.failed.test_and_set()) r.error = std::current_exception();
  }
}

}  // namespace detail
#endif

// at::parallel_for(begin, end, grain, f): f(b, e) on consecutive chunks of [begin, end), one per
// thread of torch's team, or inline when the range is at most `grain` long, torch runs one thread or
// the caller is already inside a parallel region.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
#if defined(DIN_OPS_PARALLEL_GOMP)
  if (begin >= end) return;
  at::internal::lazy_init_num_threads();
  const int64_t n = end - begin;
  if (n <= grain || n == 1 || at::in_parallel_region() || at::get_num_threads() <= 1) {
    at::internal::ThreadIdGuard tid_guard(0);
    c10::ParallelGuard guard(true);
    f(begin, end);
    return;
  }
  detail::GompRange<F> range{&f, begin, end, grain};
  GOMP_parallel(&detail::gomp_share<F>, &range, 0, 0);
  if (range.error) std::rethrow_exception(range.error);
#else
  at::parallel_for(begin, end, grain, f);
#endif
}

}  // namespace din_ops::cpu
