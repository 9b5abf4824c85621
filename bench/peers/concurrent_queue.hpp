// bench/peers/concurrent_queue.hpp - benchmark peer of herald's asynchronous delivery: one
// moodycamel::ConcurrentQueue per subscriber, drained by dispatcher threads.
//
// What it is
//   The fast hand-built answer to "deliver events to subscribers on other threads": a
//   lock-free MPMC queue (moodycamel ConcurrentQueue 1.0.3, Debian's libconcurrentqueue-dev)
//   per subscriber, holding std::shared_ptr<const Payload>. publish() copies the payload once
//   into a shared snapshot (one allocation: std::make_shared) and enqueues a copy of the
//   pointer into every subscriber's queue, so the payload is shared exactly as herald shares
//   one snapshot per publish. `consumers` dispatcher threads each own a fixed subset of the
//   subscribers (subscriber i belongs to dispatcher i % consumers) and loop over their queues:
//   try_dequeue_bulk (up to 64 at a time from each queue), call the handler for each event,
//   drop the pointer. Every event reaches every subscriber exactly once, in publish order per
//   subscriber when one thread publishes.
//
// Used as documented, without tokens
//   Enqueues go through the queue's implicit producer (no ProducerToken), because publish() may
//   be called from any thread, as herald's can: a token belongs to one thread, and a bus would
//   need one per (publishing thread, queue). A single fixed publisher with a token per queue
//   would be faster than what is measured here. The dispatcher is each queue's only consumer.
//
// Idle dispatchers (see async_common.hpp for the shared policy)
//   A dispatcher that found nothing polls for dispatcher_idle_spin, then parks: it exchanges
//   its wake word to `asleep`, polls once more, and if that found nothing (and no stop was
//   asked) blocks in std::atomic::wait (a futex on Linux) until the word changes. publish(),
//   after its enqueues, exchanges every dispatcher's word to `awake` and calls notify_one() only
//   if it read `asleep`. Both sides use a read-modify-write on the same word, so one of them
//   reads the other's: either the publisher sees `asleep` and wakes the dispatcher, or the
//   dispatcher's exchange synchronises with the publisher's and its last poll sees the event.
//   That costs the publisher one atomic exchange per dispatcher (on a line that stays in its
//   cache while the dispatcher is busy) and no system call unless the dispatcher sleeps. The
//   word is 32 bits wide so that libstdc++ waits on it with the futex directly instead of
//   through its proxy table.
//
// Lifetime
//   subscribe() before start(). stop() (and the destructor) delivers every event published
//   before it was called, then joins the dispatchers. The handler contexts are borrowed: they
//   must outlive stop(). Snapshots still queued when the bus is destroyed (none after stop())
//   are freed with the queues.
//
// Memory ordering
//   Event data: the queue's own (the enqueue releases, the dequeue acquires), and the snapshot's
//   reference count. Wake word: the exchanges to `awake` in publish() and stop() are release
//   and pair with the acquire exchange to `asleep` in park() and the acquire load in wait(); as
//   all are read-modify-writes of one word (except the dispatcher's own store of `awake`),
//   every exchange reads the one before it in the word's modification order. stopping_: the
//   release store in stop() pairs with the acquire load in run(), so the final drain sees every
//   event enqueued before stop().
#pragma once

#include <concurrentqueue.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "peers/async_common.hpp"

namespace herald::bench {

/// An async event bus built on one moodycamel::ConcurrentQueue per subscriber.
/// Thread safety: publish() from any number of threads at once; subscribe(), start() and
/// stop() from one controlling thread, never concurrently with publish(). Handler context: a
/// handler may publish(); it must not stop() (that joins its own thread). Blocking: publish()
/// never waits for a dispatcher (the queues are unbounded); stop() waits for the drain.
/// Allocation: publish() allocates the snapshot, and the queues allocate blocks as they grow.
/// Ownership: the handler contexts are borrowed until stop(). Errors: contract violations (no
/// dispatcher, subscribe after start) and a failed enqueue abort with a message; out of memory
/// in make_shared terminates. Ordering: per subscriber, the events of one publishing thread
/// arrive in publish order.
template <class Payload>
class concurrent_queue_bus {
 public:
  using handler_fn = async_handler_fn<Payload>;

  /// A bus with `consumers` (at least one) dispatcher threads, not started.
  explicit concurrent_queue_bus(std::size_t consumers) : dispatchers_(consumers) {
    if (consumers == 0) {
      violated("at least one dispatcher thread is needed");
    }
  }
  concurrent_queue_bus(const concurrent_queue_bus&) = delete;
  concurrent_queue_bus& operator=(const concurrent_queue_bus&) = delete;
  ~concurrent_queue_bus() { stop(); }

  /// Adds a subscriber: `fn(ctx, payload)` will run on its dispatcher thread for every event
  /// published after start(). Only before start().
  void subscribe(handler_fn fn, void* ctx) {
    if (started_) {
      violated("subscribe() after start()");
    }
    subscribers_.push_back(std::make_unique<subscriber>(fn, ctx));
    dispatchers_[(subscribers_.size() - 1) % dispatchers_.size()].owned.push_back(
        subscribers_.back().get());
  }

  /// Starts the dispatcher threads.
  void start() {
    if (started_) {
      violated("start() twice");
    }
    started_ = true;
    for (dispatcher& d : dispatchers_) {
      d.thread = std::thread([this, &d] { run(d); });
    }
  }

  /// Copies `payload` into one shared snapshot and queues it for every subscriber; wakes the
  /// dispatchers that sleep.
  void publish(const Payload& payload) noexcept {
    const std::shared_ptr<const Payload> snapshot = std::make_shared<const Payload>(payload);
    for (const std::unique_ptr<subscriber>& s : subscribers_) {
      if (!s->queue.enqueue(snapshot)) {
        violated("enqueue failed (out of memory)");
      }
    }
    for (dispatcher& d : dispatchers_) {
      wake(d);
    }
  }

  /// Delivers every event published before the call, then joins the dispatchers. Idempotent.
  void stop() noexcept {
    if (!started_ || stopped_) {
      return;
    }
    stopped_ = true;
    // release: pairs with the acquire load in run().
    stopping_.store(true, std::memory_order_release);
    // A dispatcher about to block sees stopping_ (its exchange in park() reads ours) or is
    // woken (ours reads its `asleep`).
    for (dispatcher& d : dispatchers_) {
      wake(d);
    }
    for (dispatcher& d : dispatchers_) {
      d.thread.join();
    }
  }

 private:
  static constexpr std::size_t batch = 64;  // most events taken from one queue per pass
  static constexpr std::uint32_t awake = 0;
  static constexpr std::uint32_t asleep = 1;
  using buffer = std::array<std::shared_ptr<const Payload>, batch>;

  struct subscriber {
    subscriber(handler_fn f, void* c) : fn(f), ctx(c) {}
    handler_fn fn;
    void* ctx;
    moodycamel::ConcurrentQueue<std::shared_ptr<const Payload>> queue;
  };

  struct dispatcher {
    // Written by the dispatcher (asleep, awake) and its wakers (awake); read by publish().
    alignas(64) std::atomic<std::uint32_t> wake_word{awake};
    // Its own cache line: the thread reads it on every poll, publish() writes wake_word.
    alignas(64) std::vector<subscriber*> owned;  // filled before start(), then read-only
    std::thread thread;
  };

  [[noreturn]] static void violated(const char* what) noexcept {
    std::fprintf(stderr, "concurrent_queue_bus: %s\n", what);
    std::abort();
  }

  static void wake(dispatcher& d) noexcept {
    // release: pairs with the acquire exchange in park() and the acquire load in its wait().
    if (d.wake_word.exchange(awake, std::memory_order_release) == asleep) {
      d.wake_word.notify_one();
    }
  }

  // One pass over the dispatcher's queues; true if it delivered anything.
  static bool poll(dispatcher& d, buffer& taken) noexcept {
    bool delivered = false;
    for (subscriber* s : d.owned) {
      const std::size_t n = s->queue.try_dequeue_bulk(taken.begin(), taken.size());
      for (std::size_t i = 0; i < n; ++i) {
        s->fn(s->ctx, *taken[i]);
        taken[i].reset();
      }
      delivered = delivered || n != 0;
    }
    return delivered;
  }

  // Blocks until a publisher or stop() wakes the dispatcher, unless a last poll finds work.
  void park(dispatcher& d, buffer& taken) noexcept {
    // acquire: pairs with the release exchange in wake(); see the header comment.
    d.wake_word.exchange(asleep, std::memory_order_acquire);
    if (poll(d, taken) || stopping_.load(std::memory_order_relaxed)) {
      d.wake_word.store(awake, std::memory_order_relaxed);
      return;
    }
    // acquire: pairs with the release exchange in wake().
    d.wake_word.wait(asleep, std::memory_order_acquire);
  }

  void run(dispatcher& d) noexcept {
    buffer taken;
    run_dispatcher([&] { return poll(d, taken); }, [&] { park(d, taken); },
                   // acquire: pairs with the release store in stop().
                   [this] { return stopping_.load(std::memory_order_acquire); });
  }

  std::vector<std::unique_ptr<subscriber>> subscribers_;  // fixed once started
  std::vector<dispatcher> dispatchers_;                   // fixed size
  std::atomic<bool> stopping_{false};
  bool started_ = false;  // controlling thread only
  bool stopped_ = false;  // controlling thread only
};

}  // namespace herald::bench
