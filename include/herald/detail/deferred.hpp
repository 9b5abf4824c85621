// herald/detail/deferred.hpp - the machinery of async and queue delivery: the shared event
// snapshot (one per publish, whatever the number of subscribers), the per-subscription event
// queue, and the task that drains it. Needed by the public templates; no stability promise.
//
// One publish with k matching async/queue subscriptions makes one pooled allocation:
//
//   event_block | safe part copy | event_node[k]
//
// Node i is linked into subscriber i's queue (an intrusive MPSC queue, so the push allocates
// nothing). The block is refcounted: one reference per node pushed. A plain publish hands its
// own reference over to the nodes before the first push (so the publisher writes no counter on
// the block once the consumers can see it); a stateful publish keeps one for the list's last
// value. The last release runs the safe part's destructor (the cleanup hook) and returns the
// block to its pool.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <new>
#include <thread>

#include "herald/backpressure.hpp"
#include "herald/detail/mpsc_queue.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"
#include "herald/scheduler.hpp"

namespace herald::detail {

struct sub_core;
struct list_core;
struct event_block;

/// How to copy and destroy one family's safe part (one constant per family).
struct payload_ops {
  std::size_t size;
  std::size_t align;
  // Copies *src into raw storage `dst`. Returns false if the copy threw.
  bool (*copy)(void* dst, const void* src) noexcept;
  void (*destroy)(void* p) noexcept;
  // The family's codec (F::codec::encode), or nullptr: for wildcard subscribers and bridges.
  // Returns false if encoding threw.
  bool (*encode)(const void* p, std::string& out) noexcept;
};

/// A family declares a codec with a nested `codec` type whose static encode(const safe_part&)
/// returns the serialised form (anything convertible to std::string).
template <class F>
concept has_codec = requires(const typename F::safe_part& p) {
  { F::codec::encode(p) } -> std::convertible_to<std::string>;
};

template <class F>
inline constexpr payload_ops payload_ops_of{
    sizeof(typename F::safe_part), alignof(typename F::safe_part),
    [](void* dst, const void* src) noexcept -> bool {
      using T = typename F::safe_part;
      try {
        ::new (dst) T(*static_cast<const T*>(src));
        return true;
      } catch (...) {
        return false;
      }
    },
    [](void* p) noexcept {
      using T = typename F::safe_part;
      static_cast<T*>(p)->~T();
    },
    [] {
      if constexpr (has_codec<F>) {
        return +[](const void* p, std::string& out) noexcept -> bool {
          try {
            out = F::codec::encode(*static_cast<const typename F::safe_part*>(p));
            return true;
          } catch (...) {
            return false;
          }
        };
      } else {
        return static_cast<bool (*)(const void*, std::string&) noexcept>(nullptr);
      }
    }()};

/// A queue link inside an event block (or a subscription's END node: block == nullptr).
struct event_node : mpsc_node {
  event_block* block = nullptr;
  sub_core* target = nullptr;  // while the publisher fills the block
  std::uint64_t sub_sequence = 0;  // 1, 2, ... per subscription (gaps: dropped events)
};

/// The shared snapshot of one publish.
struct alignas(16) event_block {
  std::atomic<std::uint32_t> refs{0};
  std::uint32_t nodes = 0;
  std::uint32_t size_class = 0;  // the pool it returns to
  std::uint32_t payload_offset = 0;
  std::uint32_t nodes_offset = 0;
  const payload_ops* ops = nullptr;
  event_type type;
  std::uint64_t sequence = 0;     // per list, from 1
  std::int64_t when_ns = 0;       // steady_clock, at publish
  const void* payload() const noexcept {
    return reinterpret_cast<const unsigned char*>(this) + payload_offset;
  }
};

/// Drops one reference on `b`; the last one destroys the payload and frees the block.
/// Thread safety: any thread. Memory ordering: acq_rel (the last dropper sees every use).
void release_block(event_block* b) noexcept;

/// Delivery mode of a deferred subscription.
enum class deferred_mode : std::uint8_t { async, queue };

/// How a queue subscription tells its consumer that items are waiting.
enum class notify_kind : std::uint8_t { none, tasklet, fd, callback };

/// The deferred part of a subscription (sub_core::deferred). For async subscriptions the task
/// runs the handler on the executor; for queue subscriptions the user pops.
struct deferred_core : task {
  deferred_core(executor_ref ex, run_on where) noexcept;
  deferred_core(const deferred_core&) = delete;
  deferred_core& operator=(const deferred_core&) = delete;
  /// Releases the events nobody consumed. Only once nothing can push any more.
  ~deferred_core();

  mpsc_queue queue;
  event_node end_node;  // pushed once, after the subscription ended and a grace period
  sub_core* sub = nullptr;
  deferred_mode mode = deferred_mode::async;
  bool discard_on_end = false;
  std::uint32_t events_per_run = 100;
  // async: calls the handler with one event (type-erased per family and handler type)
  void (*deliver)(sub_core& s, const event_block& b, std::uint64_t sub_sequence) = nullptr;

  // queue: notification of the consumer (edge-triggered through `armed`)
  notify_kind notify_how = notify_kind::none;
  std::atomic<bool> armed{false};
  tasklet notify_tasklet;
  std::function<void()> notify_callback;
  int notify_fd = -1;
  bool end_popped = false;  // consumer side
  std::uint32_t linger = 0;  // async, consumer side: runs in a row that found the queue dry
  std::atomic<bool> end_reached{false};  // async: END processed, handler destroyed
  std::atomic<bool> end_queued{false};   // END pushed (relaxed: for size_approx only)
  // Queue mode: END's notification returned (release in reclaim_sub, acquire in queue_pop),
  // and the thread giving it while it runs (a notification callback may pop in it).
  std::atomic<bool> end_notified{false};
  std::atomic<std::thread::id> end_notifier{};
  event_node* held_end = nullptr;  // consumer side: END popped, handed out later

  // async: the handler's on_end(end_reason) member, if it has one; called once, before the
  // handler is destroyed.
  void (*deliver_end)(sub_core& s, end_reason why) = nullptr;
  // Why the subscription ended (end_reason + 1; 0 while active): the first path wins.
  std::atomic<std::uint8_t> reason{0};

  // Backpressure: immutable after subscribe.
  backpressure_options bp;
  // drop_oldest (as the policy or after a block): publishers pop too, so every pop, by the
  // consumer or a publisher, holds pop_lock.
  bool lock_pops = false;
  bool watch_depth = false;  // bounded or slow-consumer detection: publishers compute the depth
  bool blocking = false;     // overflow_policy::block: publishers may sleep on `room`
  std::atomic<bool> pop_lock{false};

  // Publisher side (any publisher; relaxed RMWs). On a line of its own.
  alignas(64) std::atomic<std::uint64_t> published{0};  // also the source of sub_sequence
  std::atomic<std::uint64_t> accepted{0};               // bounded: events let into the queue
  std::atomic<std::uint64_t> dropped_newest{0};
  std::atomic<std::uint64_t> dropped_ended{0};
  std::atomic<std::uint64_t> dropped_notify{0};
  std::atomic<std::uint64_t> high_water{0};
  std::atomic<std::int64_t> slow_since{0};  // steady ns when the depth reached the threshold
  std::atomic<bool> slow_reported{false};

  // Consumer side: written by the single consumer (relaxed), or under pop_lock, read by anyone.
  alignas(64) std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> discarded{0};
  std::atomic<std::uint64_t> dropped_oldest{0};
  std::atomic<std::uint64_t> removed{0};  // events popped (END not counted), by anyone
  // overflow_policy::block: publishers sleeping for room (a futex word bumped by the consumer
  // after a pop when someone sleeps).
  std::atomic<std::uint32_t> room{0};
  std::atomic<std::uint32_t> room_waiters{0};

  void lock() noexcept;
  void unlock() noexcept;
  /// Pops (under pop_lock when publishers may pop too) and counts the event removed.
  /// Consumer only.
  mpsc_node* consumer_pop() noexcept;
  /// queue.empty_approx(), under pop_lock when publishers may pop too. Consumer only.
  bool consumer_empty() noexcept;
  /// The counters as one consistent-enough snapshot (racy while events flow).
  subscription_stats stats() const noexcept;
};

/// Wakes the publishers sleeping for room in `d` (overflow_policy::block), e.g. because the
/// subscription ended (they then stop waiting). Thread safety: any thread.
void wake_blocked_publishers(deferred_core& d) noexcept;
/// Records why `s` ended, unless an earlier path already did. Thread safety: any thread.
void set_end_reason(deferred_core& d, end_reason why) noexcept;
/// The reason recorded (unsubscribed if none was).
end_reason end_reason_of(const deferred_core& d) noexcept;

/// The out-of-line part of a publish: copies the safe part once into a pooled block and queues
/// it to every callable deferred subscription in items[0..n). Returns how many got it, or
/// no_memory (then none of them did).
/// The deferred subscriptions of a family's array plus the wildcard ones share one block: this
/// queues it to the callable ones of both ranges. `may_block`: the publish is outermost (not
/// inside a handler), so overflow_policy::block may wait.
result<std::size_t> publish_deferred(const list_core& l, std::span<sub_core* const> family,
                                     std::span<sub_core* const> wildcard, event_type type,
                                     const void* safe, const payload_ops& ops,
                                     bool may_block) noexcept;

/// A block with room for `nodes` links, holding a copy of `safe` and the list's next sequence
/// number (or, for a replay, the number and time of `replayed`), with one reference (the
/// caller's). nullptr when out of memory (or the copy threw).
event_block* make_block(const list_core& l, std::uint32_t nodes, event_type type, const void* safe,
                        const payload_ops& ops, const event_block* replayed) noexcept;
/// What offer_block does with the caller's reference on the block.
enum class caller_ref : std::uint8_t {
  keep,       ///< the caller keeps it (and releases it later)
  hand_over,  ///< the block is new, nobody else holds it: it becomes the queued nodes' (the
              ///< caller must not touch the block after the call)
};

/// Queues `b` to every callable subscription of both ranges (together no more than the block's
/// room), applying each one's overflow policy. Returns how many queued it.
std::size_t offer_block(event_block* b, std::span<sub_core* const> first,
                        std::span<sub_core* const> second, bool may_block,
                        caller_ref ref) noexcept;

/// Wakes the consumer of `d` after a push (async: its task; queue: the user's notification).
void notify_consumer(deferred_core& d) noexcept;

/// Queue subscriptions: the next item (an event node, or the END node once), or nullptr if
/// none is waiting (or END was already returned). Thread safety: one consumer at a time.
event_node* queue_pop(deferred_core& d) noexcept;

/// An eventfd for queue notification (non-blocking, close-on-exec), or -1.
int make_event_fd() noexcept;

/// Tests only: the next `count` block allocations fail (then publish reports no_memory).
void inject_allocation_failures(int count) noexcept;

}  // namespace herald::detail
