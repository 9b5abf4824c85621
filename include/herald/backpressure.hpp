// herald/backpressure.hpp - what a bounded async or queue subscription does when its queue is
// full, why a subscription ended, and the counters every subscription keeps.
//
// What it is
//   Values only (no behaviour): the options given at subscribe time (subscribe_options::
//   backpressure in herald/bus.hpp) and the statistics read back (subscription::stats()).
//   The semantics are in docs/backpressure.md; the short form:
//   - bound 0 (the default) is unbounded: every event is queued.
//   - A bounded queue holds at most `bound` events. An event that finds it full is handled by
//     the policy; each policy counts what it dropped under its own counter, so that for every
//     subscription  published = delivered + dropped() + discarded + queued.
//   - A publisher blocks (overflow_policy::block) only outside handlers and off the bus's
//     worker threads, and never longer than block_timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "herald/event_type.hpp"

namespace herald {

/// What a bounded async or queue subscription does with an event that finds its queue full
/// (docs/backpressure.md).
enum class overflow_policy : std::uint8_t {
  /// The publisher waits (up to backpressure_options::block_timeout) for the consumer to make
  /// room, then applies backpressure_options::after_timeout. Inside a handler, or on a thread
  /// of the bus's workers, a publisher never waits: after_timeout applies at once.
  block,
  drop_newest,       ///< the new event is dropped (counted as dropped_newest)
  /// The oldest queued event is dropped to make room (dropped_oldest). If none can be taken
  /// (the consumer holds them all, or keeps winning the freed place), the new event is dropped
  /// instead (dropped_newest).
  drop_oldest,
  /// The subscription ends: the new event is dropped (dropped_ended), the events already
  /// queued are delivered, then END, whose reason is end_reason::overflow.
  end_subscription,
  /// backpressure_options::on_overflow is called in the publishing thread, then the new event
  /// is dropped (dropped_notify).
  notify,
};

/// Why a subscription ended (the reason END carries).
enum class end_reason : std::uint8_t {
  unsubscribed,    ///< by a handle, an id lookup, its own handler, or its queue's reset()
  list_destroyed,  ///< its list was destroyed
  shutdown,        ///< the bus shut down
  overflow,        ///< overflow_policy::end_subscription
};

/// What the overflow hook and the slow-consumer diagnostic receive.
struct overflow_info {
  std::uint64_t subscription_id = 0;
  std::string_view subscription_name;
  event_type type;           ///< the event that found the queue full
  std::size_t queued = 0;    ///< the queue's length then (approximate)
  std::size_t bound = 0;
};
/// Called in the publishing thread; must not throw (what it throws is dropped) nor block.
using overflow_hook = std::function<void(const overflow_info&)>;

/// Backpressure of one async or queue subscription (ignored by sync subscriptions).
struct backpressure_options {
  /// The most events queued to this subscription at once; 0: unbounded (the default).
  std::size_t bound = 0;
  overflow_policy policy = overflow_policy::drop_newest;
  /// overflow_policy::block: how long a publisher waits for room.
  std::chrono::microseconds block_timeout{1000};
  /// overflow_policy::block: what happens after the timeout (any policy but block).
  overflow_policy after_timeout = overflow_policy::drop_newest;
  /// overflow_policy::notify (also as after_timeout): the hook.
  overflow_hook on_overflow;
  /// Slow-consumer diagnostic: when the queue stays at or above `slow_threshold` events for
  /// `slow_after`, the bus's diagnostic hook is called once for that episode (an episode ends
  /// when the queue drops below the threshold). 0: off.
  std::size_t slow_threshold = 0;
  std::chrono::milliseconds slow_after{100};
};

/// What the bus's diagnostic hook reports (bus::set_diagnostic_hook).
enum class diagnostic_kind : std::uint8_t {
  /// A queue stayed at or above its slow_threshold for slow_after (once per episode).
  slow_consumer,
  /// overflow_policy::end_subscription ended a subscription.
  ended_on_overflow,
};
struct diagnostic {
  diagnostic_kind kind = diagnostic_kind::slow_consumer;
  overflow_info info;
  std::chrono::nanoseconds duration{0};  ///< slow_consumer: how long the queue has been above
};
/// Called in the publishing thread; must not throw (what it throws is dropped) nor block.
using diagnostic_hook = std::function<void(const diagnostic&)>;

/// The counters of one subscription. For async and queue subscriptions:
///   published = delivered + dropped() + discarded + queued
/// (each read is racy while events flow; the identity is exact once the subscription is
/// quiet, e.g. after END). Sync subscriptions keep none of these (all 0): counting every inline
/// call would add a shared write to the publish fast path; count in the handler if needed.
struct subscription_stats {
  std::uint64_t published = 0;       ///< events that matched it while it was active
  std::uint64_t delivered = 0;       ///< handler calls / items popped (END not counted)
  std::uint64_t dropped_newest = 0;  ///< by overflow_policy::drop_newest
  std::uint64_t dropped_oldest = 0;  ///< by overflow_policy::drop_oldest
  std::uint64_t dropped_ended = 0;   ///< by overflow_policy::end_subscription
  std::uint64_t dropped_notify = 0;  ///< by overflow_policy::notify
  std::uint64_t discarded = 0;       ///< pending at END and discarded (pending_on_end, shutdown)
  std::uint64_t queued = 0;          ///< waiting now
  std::uint64_t high_water = 0;      ///< the longest the queue was (approximate)
  [[nodiscard]] std::uint64_t dropped() const noexcept {
    return dropped_newest + dropped_oldest + dropped_ended + dropped_notify;
  }
};

}  // namespace herald
