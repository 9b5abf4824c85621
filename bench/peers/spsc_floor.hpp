// bench/peers/spsc_floor.hpp - not a peer a user would pick but a yardstick: the cheapest
// hand-off of an event from one publishing thread to a handler on another thread that this
// machine allows, measured by the same driver as herald's async mode.
//
// What it is
//   One single-producer, single-consumer ring per subscriber (8192 slots, so the driver's
//   4096-event backlog never fills it), each slot one cache line holding a copy of the payload
//   and a sequence word. publish() copies the payload into the next slot of every ring and
//   publishes the slot with a release store: no allocation, no shared snapshot, no
//   read-modify-write. One dispatcher thread loops over the rings and spins when they are
//   empty (it never sleeps, so the publisher never checks whether to wake it).
//
// What it leaves out, on purpose
//   Everything a bus must do and a yardstick need not: several publishing threads (one thread
//   only, or the rings break), subscribing while running, ending subscriptions, an idle
//   dispatcher that sleeps, sequence numbers. The variant with `Rmw` = true adds one atomic
//   read-modify-write per publish on a counter only the publisher touches: the price of the
//   one shared counter (herald's per-list sequence number, any multi-producer queue's tail)
//   that a bus open to several publishing threads cannot do without.
//
// Lifetime
//   subscribe() before start(). stop() waits until every published event was handled, then
//   joins the dispatcher. Handler contexts are borrowed until stop().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "peers/async_common.hpp"

namespace herald::bench {

/// The hand-off floor (see the file comment). Thread safety: publish() from ONE thread only;
/// subscribe(), start() and stop() from the controlling thread, never concurrently with
/// publish(). Blocking: publish() spins if a ring is full (the driver never lets it fill).
/// Allocation: the rings, at subscribe(). Ordering: per subscriber, publish order.
template <class Payload, bool Rmw>
class spsc_floor_bus {
  static_assert(std::is_trivially_copyable_v<Payload> && sizeof(Payload) <= 48,
                "a slot is one cache line: the payload and its sequence word");

 public:
  using handler_fn = async_handler_fn<Payload>;

  explicit spsc_floor_bus(std::size_t consumers) {
    if (consumers != 1) {
      violated("exactly one dispatcher thread");
    }
  }
  spsc_floor_bus(const spsc_floor_bus&) = delete;
  spsc_floor_bus& operator=(const spsc_floor_bus&) = delete;
  ~spsc_floor_bus() { stop(); }

  void subscribe(handler_fn fn, void* ctx) {
    if (started_) {
      violated("subscribe() after start()");
    }
    rings_.push_back(std::make_unique<ring>(fn, ctx));
  }

  void start() {
    started_ = true;
    dispatcher_ = std::thread([this] { run(); });
  }

  /// Copies `payload` into the next slot of every subscriber's ring.
  void publish(const Payload& payload) noexcept {
    if constexpr (Rmw) {
      // relaxed: a counter nobody else reads; what it costs is the locked instruction itself,
      // which waits for the stores before it (the previous publish's slots) to complete.
      (void)counter_.fetch_add(1, std::memory_order_relaxed);
    }
    for (const std::unique_ptr<ring>& r : rings_) {
      const std::uint64_t pos = r->tail++;  // publisher-only
      slot& s = r->slots[pos % ring_size];
      // acquire: pairs with the consumer's release when it freed this slot (seq == pos): its
      // reads of the previous event in the slot happen before this write.
      while (s.seq.load(std::memory_order_acquire) != pos) {
        async_pause();
      }
      s.payload = payload;
      // release: pairs with the consumer's acquire load; the payload is visible with it.
      s.seq.store(pos + 1, std::memory_order_release);
    }
  }

  /// Waits until every published event was handled, then joins the dispatcher. Idempotent.
  void stop() noexcept {
    if (!started_ || stopped_) {
      return;
    }
    stopped_ = true;
    // release: pairs with the acquire load in run(); the drain sees every slot published.
    stopping_.store(true, std::memory_order_release);
    dispatcher_.join();
  }

 private:
  static constexpr std::size_t ring_size = 8192;

  struct alignas(64) slot {
    std::atomic<std::uint64_t> seq{0};  // pos + 1: full for pos; pos + ring_size: free again
    Payload payload{};
  };

  struct ring {
    ring(handler_fn f, void* c) : fn(f), ctx(c), slots(new slot[ring_size]) {
      for (std::size_t i = 0; i < ring_size; ++i) {
        slots[i].seq.store(i, std::memory_order_relaxed);
      }
    }
    handler_fn fn;
    void* ctx;
    std::unique_ptr<slot[]> slots;
    alignas(64) std::uint64_t tail = 0;  // the publisher's
    alignas(64) std::uint64_t head = 0;  // the dispatcher's
  };

  [[noreturn]] static void violated(const char* what) noexcept {
    std::fprintf(stderr, "spsc_floor_bus: %s\n", what);
    std::abort();
  }

  // One pass over the rings, each drained up to 64 events; true if it handled anything.
  bool poll() noexcept {
    bool handled = false;
    for (const std::unique_ptr<ring>& r : rings_) {
      for (int n = 0; n < 64; ++n) {
        slot& s = r->slots[r->head % ring_size];
        // acquire: pairs with the release store in publish().
        if (s.seq.load(std::memory_order_acquire) != r->head + 1) {
          break;
        }
        r->fn(r->ctx, s.payload);
        // release: the publisher reuses the slot only after this handler's reads.
        s.seq.store(r->head + ring_size, std::memory_order_release);
        ++r->head;
        handled = true;
      }
    }
    return handled;
  }

  void run() noexcept {
    for (;;) {
      if (poll()) {
        continue;
      }
      // acquire: pairs with the release store in stop().
      if (stopping_.load(std::memory_order_acquire)) {
        while (poll()) {
        }
        return;
      }
      async_pause();
    }
  }

  std::vector<std::unique_ptr<ring>> rings_;  // fixed once started
  alignas(64) std::atomic<std::uint64_t> counter_{0};
  std::thread dispatcher_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace herald::bench
