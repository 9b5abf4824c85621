// bench/peers/async_common.hpp - what the asynchronous-delivery peers (concurrent_queue.hpp,
// mutex_deque.hpp) share: the handler type, the CPU pause hint and the idle policy of a
// dispatcher thread.
//
// The idle policy
//   A dispatcher whose queues are all empty keeps polling them, with a pause hint between two
//   passes, for `dispatcher_idle_spin` (50 us); then it announces that it sleeps and blocks
//   (each peer with its own primitive). A publisher wakes a dispatcher only if it announced
//   that it sleeps, so a publish to a busy or spinning dispatcher makes no system call. Both
//   peers use the same policy so that they differ only in their queues and their blocking
//   primitive; herald's async mode is measured against it, not forced to follow it.
#pragma once

#include <atomic>
#include <chrono>

namespace herald::bench {

/// What an async peer calls for each delivery, on a dispatcher thread: `ctx` is the pointer
/// given to subscribe(). Must not throw (the type says so).
template <class Payload>
using async_handler_fn = void (*)(void* ctx, const Payload& payload) noexcept;

/// How long an idle dispatcher polls before it blocks.
inline constexpr std::chrono::microseconds dispatcher_idle_spin{50};

/// One CPU relaxation hint. Thread safety: any thread. Blocking: one instruction.
inline void async_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// The loop of a dispatcher thread under the idle policy above, shared by the peers so that
/// they differ only in their queues: `poll()` delivers what waits (true if anything),
/// `park()` blocks until woken (after a last poll of its own), `stopping()` is the stop flag
/// (an acquire load). On stop, drains what is left and returns.
template <class Poll, class Park, class Stopping>
void run_dispatcher(Poll poll, Park park, Stopping stopping) noexcept {
  using clock = std::chrono::steady_clock;
  bool idle = false;
  clock::time_point idle_since;
  for (;;) {
    if (poll()) {
      idle = false;
      continue;
    }
    if (stopping()) {  // the drain sees every event published before stop()
      while (poll()) {
      }
      return;
    }
    const clock::time_point now = clock::now();
    if (!idle) {
      idle = true;
      idle_since = now;
    }
    if (now - idle_since < dispatcher_idle_spin) {
      async_pause();
      continue;
    }
    park();
    idle = false;
  }
}

}  // namespace herald::bench
