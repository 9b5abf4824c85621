// bench/peers/mutex_deque.hpp - benchmark peer of herald's asynchronous delivery: per subscriber
// a std::deque under a std::mutex, drained by dispatcher threads woken through a
// std::condition_variable.
//
// What it is
//   The async bus most code bases write with the standard library alone. Per subscriber a
//   std::mutex and a std::deque<std::shared_ptr<const Payload>>. publish() copies the payload
//   once into a shared snapshot (one allocation: std::make_shared) and, for every subscriber,
//   locks its mutex and appends a copy of the pointer, so the payload is shared exactly as
//   herald shares one snapshot per publish. `consumers` dispatcher threads each own a fixed
//   subset of the subscribers (subscriber i belongs to dispatcher i % consumers) and loop over
//   them: lock, swap the deque with an empty one of their own, unlock, call the handler for
//   each event taken, clear. Every event reaches every subscriber exactly once, in publish
//   order per subscriber (the mutex orders the appends).
//
// Idle dispatchers (see async_common.hpp for the shared policy)
//   A dispatcher that found nothing polls for dispatcher_idle_spin, then parks: it exchanges
//   its `sleeping` flag to true, polls once more, and if that found nothing (and no stop was
//   asked) waits on its condition variable until the flag is false. publish(), after its
//   appends, exchanges every dispatcher's flag to false and, only if it read true, locks and
//   unlocks the dispatcher's wake mutex and calls notify_one(). Both sides use a
//   read-modify-write on the same flag, so one of them reads the other's: either the publisher
//   sees true and wakes the dispatcher, or the dispatcher's exchange synchronises with the
//   publisher's and its last poll sees the event. The empty critical section closes the gap
//   between the wait's predicate check and its sleep. So, like the ConcurrentQueue peer, a
//   publish to a busy dispatcher costs one atomic exchange per dispatcher beyond the
//   subscribers' mutexes, and no system call.
//
// Lifetime
//   subscribe() before start(). stop() (and the destructor) delivers every event published
//   before it was called, then joins the dispatchers. The handler contexts are borrowed: they
//   must outlive stop(). Snapshots still queued when the bus is destroyed (none after stop())
//   are freed with the deques.
//
// Memory ordering
//   Event data: each subscriber's mutex (its deque is only touched under it; the swapped-out
//   deque belongs to the dispatcher). `sleeping`: the exchanges to false in publish() and
//   stop() are release and pair with the acquire exchange to true in park(); the wait's
//   predicate reads it (and stopping_) under the wake mutex, which the wakers lock after their
//   exchange. stopping_: the release store in stop() pairs with the acquire load in run(), so
//   the final drain sees every event appended before stop().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "peers/async_common.hpp"

namespace herald::bench {

/// An async event bus built on one std::mutex + std::deque per subscriber.
/// Thread safety: publish() from any number of threads at once; subscribe(), start() and
/// stop() from one controlling thread, never concurrently with publish(). Handler context: a
/// handler may publish() (no lock is held while it runs); it must not stop() (that joins its
/// own thread). Blocking: publish() takes each subscriber's mutex in turn (and a sleeping
/// dispatcher's wake mutex), never waits for a delivery (the deques are unbounded); stop()
/// waits for the drain. Allocation: publish() allocates the snapshot, and the deques allocate
/// blocks as they grow. Ownership: the handler contexts are borrowed until stop(). Errors:
/// contract violations (no dispatcher, subscribe after start) abort with a message; out of
/// memory in publish() terminates. Ordering: per subscriber, events arrive in the order their
/// publishes took its mutex (publish order for one publishing thread).
template <class Payload>
class mutex_deque_bus {
 public:
  using handler_fn = async_handler_fn<Payload>;

  /// A bus with `consumers` (at least one) dispatcher threads, not started.
  explicit mutex_deque_bus(std::size_t consumers) : dispatchers_(consumers) {
    if (consumers == 0) {
      violated("at least one dispatcher thread is needed");
    }
  }
  mutex_deque_bus(const mutex_deque_bus&) = delete;
  mutex_deque_bus& operator=(const mutex_deque_bus&) = delete;
  ~mutex_deque_bus() { stop(); }

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

  /// Copies `payload` into one shared snapshot and appends it for every subscriber; wakes the
  /// dispatchers that sleep.
  void publish(const Payload& payload) noexcept {
    const std::shared_ptr<const Payload> snapshot = std::make_shared<const Payload>(payload);
    for (const std::unique_ptr<subscriber>& s : subscribers_) {
      const std::lock_guard lock(s->mutex);
      s->queue.push_back(snapshot);
    }
    for (dispatcher& d : dispatchers_) {
      // release: pairs with the acquire exchange in park().
      if (d.sleeping.exchange(false, std::memory_order_release)) {
        wake(d);
      }
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
    // A dispatcher about to block sees stopping_ (its exchange in park() reads ours, or its
    // predicate reads stopping_ under the wake mutex) or is woken.
    for (dispatcher& d : dispatchers_) {
      // release: pairs with the acquire exchange in park().
      d.sleeping.exchange(false, std::memory_order_release);
      wake(d);
    }
    for (dispatcher& d : dispatchers_) {
      d.thread.join();
    }
  }

 private:
  using snapshot_deque = std::deque<std::shared_ptr<const Payload>>;

  struct subscriber {
    subscriber(handler_fn f, void* c) : fn(f), ctx(c) {}
    handler_fn fn;
    void* ctx;
    snapshot_deque taken;  // the dispatcher's only: what the last swap took out
    alignas(64) std::mutex mutex;
    snapshot_deque queue;  // protected by mutex
  };

  struct dispatcher {
    // Set by the dispatcher; cleared by it and its wakers (always by exchange, but for the
    // dispatcher's own clear).
    alignas(64) std::atomic<bool> sleeping{false};
    std::mutex wake_mutex;
    std::condition_variable wake_cv;
    // Its own cache line: the thread reads it on every poll, publish() writes sleeping.
    alignas(64) std::vector<subscriber*> owned;  // filled before start(), then read-only
    std::thread thread;
  };

  [[noreturn]] static void violated(const char* what) noexcept {
    std::fprintf(stderr, "mutex_deque_bus: %s\n", what);
    std::abort();
  }

  // After `sleeping` was cleared: a dispatcher that read it true under the mutex is in wait().
  static void wake(dispatcher& d) noexcept {
    { const std::lock_guard lock(d.wake_mutex); }
    d.wake_cv.notify_one();
  }

  // One pass over the dispatcher's subscribers; true if it delivered anything.
  static bool poll(dispatcher& d) noexcept {
    bool delivered = false;
    for (subscriber* s : d.owned) {
      {
        const std::lock_guard lock(s->mutex);
        s->queue.swap(s->taken);
      }
      if (s->taken.empty()) {
        continue;
      }
      for (const std::shared_ptr<const Payload>& p : s->taken) {
        s->fn(s->ctx, *p);
      }
      s->taken.clear();
      delivered = true;
    }
    return delivered;
  }

  // Blocks until a publisher or stop() wakes the dispatcher, unless a last poll finds work.
  void park(dispatcher& d) noexcept {
    // acquire: pairs with the release exchanges in publish() and stop(); see the header comment.
    d.sleeping.exchange(true, std::memory_order_acquire);
    if (poll(d) || stopping_.load(std::memory_order_relaxed)) {
      d.sleeping.store(false, std::memory_order_relaxed);
      return;
    }
    std::unique_lock lock(d.wake_mutex);
    d.wake_cv.wait(lock, [this, &d] {
      return !d.sleeping.load(std::memory_order_relaxed) ||
             stopping_.load(std::memory_order_relaxed);
    });
  }

  void run(dispatcher& d) noexcept {
    run_dispatcher([&] { return poll(d); }, [&] { park(d); },
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
