// herald/backoff.hpp - randomised exponential back-off for contended atomic loops.
//
// What it is
//   A small per-attempt object that a retry loop calls after every failed attempt to take a
//   contended pointer or flag. Each call waits a random number of CPU "pause" loops drawn
//   uniformly from [0, limit], then grows the limit geometrically (limit = limit * 8 + 7) up to
//   a cap. The randomness keeps competing threads from retrying in lock step (resonance); the
//   geometric growth keeps a crowd of waiters from saturating the cache line they fight for.
//
// The cap
//   `backoff::max_pause_loops` (2^20) bounds one wait. HAProxy's mt_list, on which this is
//   modelled, first let waits grow without bound and saw stalls of about 500 ms on 64-core
//   machines; it settled on a mask near 2^20 pause loops. One pause costs 10 to 140 cycles
//   depending on the CPU, so the longest single wait is roughly 1 to 50 ms.
//
// Ending a wait early
//   pause_until(ready) spins in chunks of `backoff::check_interval_loops` pauses and stops as
//   soon as ready() says the awaited pointer is free: a waiter whose random draw was long does
//   not keep spinning after the holder is done (a plain read between chunks keeps the cache
//   line shared, which costs the holder nothing until it writes).
//
// Oversubscription
//   HAProxy pins one thread per CPU. herald is a library and cannot assume that: when more
//   threads are runnable than there are cores, the thread that holds the contended pointer may
//   be descheduled, and spinning only burns the time slice it needs. Once the limit has grown
//   past `backoff::yield_after_loops`, the waiter also calls std::this_thread::yield() between
//   chunks. (Measured here: two threads walking one list on a loaded 2-core machine lost 10 to
//   1000x of their throughput to full-length spins before these two rules.)
//
// Memory ordering
//   None. Waiting publishes and observes nothing; the caller's atomics carry all ordering.
#pragma once

#include <cstdint>

namespace herald {

/// One CPU relaxation hint (x86 PAUSE, arm64 YIELD/ISB; a compiler barrier elsewhere).
/// Thread safety: any thread. Blocking: one instruction. Allocation: none.
void cpu_relax() noexcept;

/// Randomised exponential back-off for one contended operation (one retry loop).
///
/// Create one on the stack at the start of a retry loop and call pause() after each failed
/// attempt. It is cheap to construct (one word) and holds no resource.
class backoff {
 public:
  /// The largest number of pause loops one wait may take (the geometric growth stops here).
  static constexpr std::uint32_t max_pause_loops = std::uint32_t{1} << 20;
  /// Once the wait limit exceeds this many pause loops, each wait also yields the CPU.
  static constexpr std::uint32_t yield_after_loops = std::uint32_t{1} << 12;
  /// The limit of the first wait.
  static constexpr std::uint32_t initial_limit = 7;
  /// How many pause loops pause_until() spins between two checks of its condition.
  static constexpr std::uint32_t check_interval_loops = 64;

  constexpr backoff() noexcept = default;

  /// Waits a random number of pause loops in [0, limit], then grows the limit.
  /// Thread safety: the object is owned by one thread; calls on distinct objects are
  /// independent (the random generator is thread-local). Blocking: spins, never sleeps; may
  /// yield the CPU once the limit is large. Allocation: none. Errors: none (noexcept).
  void pause() noexcept;

  /// Like pause(), but ends the wait as soon as `ready()` returns true (checked every
  /// check_interval_loops pauses). `ready` must be cheap and must only read memory that stays
  /// valid for the whole wait. Same contract as pause().
  template <class Ready>
  void pause_until(Ready&& ready) noexcept {
    std::uint32_t loops = draw();
    const bool long_wait = limit_ > yield_after_loops;
    while (loops != 0) {
      std::uint32_t chunk = loops < check_interval_loops ? loops : check_interval_loops;
      loops -= chunk;
      for (; chunk != 0; --chunk) {
        cpu_relax();
      }
      if (ready()) {
        break;
      }
      if (long_wait) {
        yield_cpu();
      }
    }
    limit_ = next_limit(limit_);
  }

  /// The current limit in pause loops (for tests and diagnostics).
  /// Thread safety: owner thread only. Allocation: none.
  [[nodiscard]] constexpr std::uint32_t limit() const noexcept { return limit_; }

  /// Starts over from the initial limit (after a success, before a new contended operation).
  /// Thread safety: owner thread only. Allocation: none.
  constexpr void reset() noexcept { limit_ = initial_limit; }

  /// The limit that follows `limit` in the geometric sequence, capped at max_pause_loops - 1.
  /// Pure function, exposed so that tests can check the sequence and the cap.
  [[nodiscard]] static constexpr std::uint32_t next_limit(std::uint32_t limit) noexcept {
    const std::uint64_t grown = std::uint64_t{limit} * 8 + 7;
    return grown >= max_pause_loops ? max_pause_loops - 1 : static_cast<std::uint32_t>(grown);
  }

 private:
  // A random number of pause loops in [0, limit_] (thread-local generator).
  [[nodiscard]] std::uint32_t draw() const noexcept;
  static void yield_cpu() noexcept;

  std::uint32_t limit_ = initial_limit;
};


}  // namespace herald
