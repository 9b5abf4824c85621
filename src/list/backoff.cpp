// Out-of-line back-off: the slow path of every contended mt_list operation. Kept out of the
// header so that retry loops stay small and the thread-local generator has one definition.
#include "herald/backoff.hpp"

#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace herald {
namespace {

// Xorshift32, one state per thread. Threads start from different seeds (the address of their
// own state) so that they do not draw the same waits in lock step.
std::uint32_t next_random() noexcept {
  thread_local std::uint32_t state = 0;
  std::uint32_t x = state;
  if (x == 0) {
    const auto seed = reinterpret_cast<std::uintptr_t>(&state);
    x = static_cast<std::uint32_t>(seed ^ (seed >> 32)) | 1u;
  }
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  state = x;
  return x;
}

}  // namespace

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("isb" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

// limit_ is always 2^k - 1, so the mask draws uniformly from [0, limit_].
std::uint32_t backoff::draw() const noexcept { return next_random() & limit_; }

void backoff::yield_cpu() noexcept { std::this_thread::yield(); }

void backoff::pause() noexcept {
  pause_until([] { return false; });
}

}  // namespace herald
