// herald/bus.hpp - the bus, subscription lists, subscriptions and the three delivery modes.
//
// What it is
//   A `bus` owns the global subscription list and the error hook. A `sub_list` is a scope of
//   subscriptions (the bus's global one, or one per entity: per server, per connection).
//   Components subscribe a handler to an event type (one family and any subset of its
//   subtypes) and publish events (one family, exactly one subtype) to a list.
//
// Modes
//   sync: handlers run inline in the publishing thread, in subscription order, before
//   publish() returns, and may read both the safe part and the live unsafe part of the payload.
//   async: handlers run later on the bus's workers (or a given executor) with a shared,
//   immutable snapshot of the safe part (docs/async.md). queue: the snapshot goes to a queue
//   the user drains, ending with END. Async and queue subscriptions may be bounded
//   (herald/backpressure.hpp); stateful subtypes replay their last value to new subscriptions
//   (docs/last_value.md); wildcard subscriptions receive every family of a list.
//
// The publish path
//   Publishing takes no lock, writes no shared memory and allocates nothing. Each list keeps an
//   immutable snapshot indexed by family and subtype bit; a publish reads the snapshot and
//   calls exactly the matching subscriptions, so its cost grows with those alone. Writers
//   (subscribe, unsubscribe, resubscribe, destroy) take the list's mutex, build a new snapshot
//   and free the old one after a grace period: when every publish that might still read it has
//   returned (herald/detail/quiescence.hpp).
//
// Lifetimes and hazards
//   - A subscription's handler (with everything it captured) is destroyed exactly once, after
//     the subscription ended (by any path) and no publish can reach it any more.
//   - unsubscribe() called outside a handler returns only when the handler is not running on
//     any other thread and will not run again (it waits for running publishes). Called from
//     inside a handler it does not wait (it would wait for itself, or two handlers unsubscribing
//     each other would wait for each other): the handler will not be *started* again, but a call
//     already running on another thread may finish after it returns.
//   - A handler may publish, subscribe, unsubscribe, pause, resubscribe and destroy lists,
//     including its own list, without deadlock.
//   - A handler must not wait for another thread that is itself inside unsubscribe() or
//     destroy() outside a handler: that thread waits for the handler to return.
//   - Objects: a bus must outlive its lists' users only in the sense that its destructor ends
//     the global list; lists and subscriptions keep the shared state they need alive, so a
//     handle may outlive its list and its bus safely.
//
// Memory ordering
//   Snapshots are published with a release store and read with an acquire load; subscription
//   flags (ended, paused) are written under the list mutex with release stores and read by
//   publishers with acquire loads; the grace period orders a publisher's last read of a
//   snapshot or a handler before its reclamation.
#pragma once

#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <source_location>
#include <string_view>
#include <type_traits>
#include <utility>

#include "herald/backpressure.hpp"
#include "herald/detail/deferred.hpp"
#include "herald/detail/quiescence.hpp"
#include "herald/detail/sub_core.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"
#include "herald/scheduler.hpp"

namespace herald {

class bus;
class sub_list;
class subscription;

/// Publishes of family `f` counted so far, process-wide (every list of every bus, whatever the
/// outcome; counted per thread without a shared write, summed here), while counting was on
/// (set_family_counting). Racy by nature. Thread safety: any thread. Blocking: never.
/// Allocation: none.
[[nodiscard]] std::uint64_t family_published(family_id f) noexcept;
/// Turns the per-family publish counters on or off (process-wide; off by default: they cost
/// about 1 ns per publish, since back-to-back publishes then wait for each other's counter
/// update through memory). Thread safety: any thread; publishes running meanwhile may or may
/// not be counted. Blocking: never.
void set_family_counting(bool on) noexcept;

/// A 64-bit subscription id computed from (scope, name) with xxHash (XXH3). The scope and the
/// name are hashed with their lengths, so ("ab", "c") and ("a", "bc") give different ids. Never
/// returns 0 (0 means "no id"). Thread safety: any thread. Allocation: none. Errors: none.
[[nodiscard]] std::uint64_t make_id(std::string_view scope, std::string_view name) noexcept;

/// What happens to the events still queued to an async or queue subscription when it ends.
enum class pending_on_end : std::uint8_t {
  deliver,  ///< delivered before END (the default)
  discard,  ///< dropped (counted as discarded); END follows at once
};

/// The stateful subtypes of family F (last-value events, docs/last_value.md): every subtype
/// if F declares `static constexpr bool stateful = true;`, those listed if it declares
/// `static constexpr std::array<subtype, N> stateful_subtypes{...};`, else none.
template <family_declaration F>
inline constexpr subtype_mask stateful_mask_v = [] {
  if constexpr (requires { F::stateful; }) {
    if constexpr (F::stateful) {
      return F::subtype_names.size() >= max_subtypes
                 ? ~subtype_mask{0}
                 : (subtype_mask{1} << F::subtype_names.size()) - 1;
    } else {
      return subtype_mask{0};
    }
  } else if constexpr (requires { F::stateful_subtypes; }) {
    subtype_mask m = 0;
    for (auto sub : F::stateful_subtypes) {
      m |= subtype_mask{1} << static_cast<unsigned>(sub);
    }
    return m;
  } else {
    return subtype_mask{0};
  }
}();

/// Options of the subscribe functions.
struct subscribe_options {
  std::uint64_t id = 0;        ///< 0: anonymous; else unique within the list (make_id)
  std::string_view name = {};  ///< for diagnostics (copied)
  // Async and queue subscriptions only:
  /// Async: events handled per run of the drain task before it yields its worker to other
  /// tasks (and runs again at once, behind them). 1..10000; 0: the bus's default.
  unsigned events_per_run = 0;
  pending_on_end on_end = pending_on_end::deliver;
  /// Async: where the handler runs. Empty: the bus's own workers (started on first use).
  executor_ref executor = {};
  /// Async: the placement of the drain task (thread, group or any) on its executor.
  run_on where = run_on::any();
  /// Async and queue: queue bound and overflow policy (default: unbounded).
  backpressure_options backpressure = {};
};

/// What bus shutdown does with the events still queued to async and queue subscriptions.
enum class shutdown_mode : std::uint8_t {
  drain,    ///< deliver them, then END (shutdown waits for the bus's workers to finish them)
  discard,  ///< drop them (counted as discarded), then END
};

/// Options of a bus.
struct bus_options {
  unsigned threads = 0;  ///< the bus's workers (0: hardware concurrency); started on first use
  unsigned groups = 1;   ///< thread groups among them
  /// Default events handled per run of an async subscription (1..10000).
  unsigned events_per_run = 100;
  shutdown_mode on_shutdown = shutdown_mode::drain;
};

/// What the error hook receives when a handler throws.
struct handler_error {
  std::uint64_t subscription_id = 0;
  std::string_view subscription_name;
  const char* file = "";  ///< where the subscription was made
  std::uint32_t line = 0;
  event_type type;          ///< the event being delivered
  std::string_view what;    ///< the exception's what(), or "unknown exception"
};

/// Called each time a handler throws: for a sync handler in the publishing thread, inside the
/// publish; for an async handler (or its on_end) on the thread that runs it. It must not throw
/// (what it throws is swallowed). The bus's destructor removes it: lists and handlers that
/// outlive the bus report nothing.
using error_hook = std::function<void(const handler_error&)>;

/// A counted reference to a subscription (HAProxy's event_hdl_sub pointer with take/drop).
/// Copying takes a reference, destroying drops it; dropping the last handle does not end the
/// subscription (unsubscribe() does). A handle stays valid after the subscription ended by any
/// path: operations then report errc::not_found (or do nothing, for unsubscribe).
/// Thread safety: distinct handle objects may be used from any threads concurrently.
class subscription {
 public:
  subscription() noexcept = default;
  subscription(const subscription& o) noexcept;
  subscription(subscription&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  subscription& operator=(subscription o) noexcept {
    std::swap(core_, o.core_);
    return *this;
  }
  ~subscription() { drop(); }

  /// A new reference to the same subscription (same as copying).
  [[nodiscard]] subscription take() const noexcept { return *this; }
  /// Drops this reference (the handle becomes empty). Never ends the subscription.
  void drop() noexcept;
  explicit operator bool() const noexcept { return core_ != nullptr; }

  /// Ends the subscription; idempotent; safe after it ended by any other path.
  /// Handler context: allowed. Inside a sync handler (a publish) it does not wait (see the file
  /// comment); inside an async handler, which runs outside any publish, it waits like any
  /// other caller for the publishes running on other threads (never for itself).
  /// Blocking: outside a publish, waits until no publish is still running or queueing to the
  /// subscription. Allocation: none. Ownership: a sync handler is destroyed before this
  /// returns (called inside a publish: after the current publishes end, at the next
  /// reclamation); an async handler is destroyed later, on its executor, once it has reached
  /// END (after the events still queued, see pending_on_end); a queue gets END. Errors: none.
  void unsubscribe() noexcept;
  /// Stops delivery until resume(). Errors: not_found if the subscription ended.
  /// Thread safety: any thread. Handler context: allowed. Blocking: the list mutex, briefly.
  result<void> pause() noexcept;
  /// Resumes delivery. Errors: not_found if the subscription ended.
  result<void> resume() noexcept;
  /// Changes the subscribed subtypes within the same family. Errors: family_mismatch for a
  /// type of another family (or an empty one), not_found if ended, no_memory.
  /// Ordering: the subscription keeps its place in the subscription order.
  result<void> resubscribe(event_type type) noexcept;

  // Accessors. Thread safety: any thread. Handler context: allowed. Blocking: never.
  // Allocation: none. Errors: none; calling one on an empty handle is misuse (aborts).

  /// The subscribed type (the latest resubscribe's).
  [[nodiscard]] event_type type() const noexcept;
  /// The id given at subscribe time (0: anonymous).
  [[nodiscard]] std::uint64_t id() const noexcept;
  /// The name given at subscribe time (may be empty); valid while this handle exists.
  [[nodiscard]] std::string_view name() const noexcept;
  /// Where the subscription was made (file and line of the subscribe call).
  [[nodiscard]] const char* origin_file() const noexcept;
  [[nodiscard]] std::uint32_t origin_line() const noexcept;
  /// Not ended (false for an empty handle). A racy snapshot when other threads may end it.
  [[nodiscard]] bool is_active() const noexcept;
  /// Paused (false for an empty handle). Racy in the same way.
  [[nodiscard]] bool is_paused() const noexcept;
  /// How many times the handler threw.
  [[nodiscard]] std::uint64_t exceptions() const noexcept;
  /// The subscription's counters (herald/backpressure.hpp; all 0 for a sync subscription).
  /// Racy while events flow; exact once the subscription is quiet.
  [[nodiscard]] subscription_stats stats() const noexcept;

  /// Wraps a core, taking over one reference (internal).
  explicit subscription(detail::sub_core* adopted) noexcept : core_(adopted) {}

 private:
  detail::sub_core* core_ = nullptr;
};

/// The subscription a handler is running for, as seen from inside the handler.
/// Thread safety: only inside the handler call that received it.
class subscription_self {
 public:
  explicit subscription_self(detail::sub_core& core) noexcept : core_(&core) {}
  /// The subscribed type. Blocking: never. Allocation: none.
  [[nodiscard]] event_type type() const noexcept;
  /// Ends this subscription: no later event is delivered to it. Blocking: the list mutex,
  /// briefly; never waits for publishes. Allocation: none. Ownership: the handler (the object
  /// running now) is destroyed after this call and every other running call of it returned.
  /// Errors: none; idempotent.
  void unsubscribe() noexcept;
  /// Changes the subtypes within the family. Blocking: the list mutex, briefly. Allocation: a
  /// new snapshot of the family. Errors: family_mismatch, not_found (ended), no_memory.
  /// Ordering: applies to publishes that start after it returns.
  result<void> resubscribe(event_type type) noexcept;
  /// A counted handle to this subscription, to keep after the call. Allocation: none.
  [[nodiscard]] subscription take() const noexcept;

 private:
  detail::sub_core* core_;
};

/// What a sync handler receives: the published type, the safe part, the unsafe part (live
/// references, valid only during this call), and its own subscription.
template <family_declaration F>
class sync_event {
 public:
  sync_event(const detail::raw_event& ev, detail::sub_core& core) noexcept
      : ev_(ev), self_(core) {}

  // Accessors. Thread safety: only inside the handler call that received the event.
  // Blocking: never. Allocation: none. Ownership: every reference is borrowed for the call.

  /// The published type (one subtype).
  [[nodiscard]] event_type type() const noexcept { return ev_.type; }
  /// The published subtype.
  [[nodiscard]] typename F::subtype subtype() const noexcept {
    return static_cast<typename F::subtype>(std::countr_zero(ev_.type.subtypes()));
  }
  [[nodiscard]] const typename F::safe_part& safe() const noexcept {
    return *static_cast<const typename F::safe_part*>(ev_.safe);
  }
  /// The unsafe part, or nullptr if the publisher gave none. Valid only during the call.
  template <class G = F>
    requires has_unsafe_part_v<G>
  [[nodiscard]] typename G::unsafe_part* unsafe() const noexcept {
    return static_cast<typename G::unsafe_part*>(ev_.unsafe);
  }
  /// This handler's own subscription.
  [[nodiscard]] subscription_self& self() noexcept { return self_; }

 private:
  detail::raw_event ev_;
  subscription_self self_;
};

/// What an async handler receives: the published type, an immutable snapshot of the safe part
/// (shared with every other async and queue subscriber of that publish), the publish time, the
/// list's sequence number of the publish, and its own subscription. The unsafe part is not
/// reachable (it was only valid during the publish).
template <family_declaration F>
class async_event {
 public:
  async_event(const detail::event_block& b, std::uint64_t sub_sequence,
              detail::sub_core& core) noexcept
      : block_(b), sub_sequence_(sub_sequence), self_(core) {}

  // Accessors. Thread safety: only inside the handler call that received the event.
  // Blocking: never. Allocation: none. Ownership: borrowed for the call.

  [[nodiscard]] event_type type() const noexcept { return block_.type; }
  [[nodiscard]] typename F::subtype subtype() const noexcept {
    return static_cast<typename F::subtype>(std::countr_zero(block_.type.subtypes()));
  }
  [[nodiscard]] const typename F::safe_part& safe() const noexcept {
    return *static_cast<const typename F::safe_part*>(block_.payload());
  }
  /// The publish's sequence number in its list (1, 2, ...; see docs/async.md on ordering).
  [[nodiscard]] std::uint64_t sequence() const noexcept { return block_.sequence; }
  /// This event's number among the events published to this subscription (1, 2, ...): a gap
  /// is an event the overflow policy dropped (or one discarded at the end).
  [[nodiscard]] std::uint64_t sub_sequence() const noexcept { return sub_sequence_; }
  /// When publish() was called (steady clock).
  [[nodiscard]] std::chrono::steady_clock::time_point when() const noexcept {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(block_.when_ns));
  }
  /// This handler's own subscription (unsubscribe, resubscribe, take a handle).
  [[nodiscard]] subscription_self& self() noexcept { return self_; }

 private:
  const detail::event_block& block_;
  std::uint64_t sub_sequence_;
  subscription_self self_;
};

/// One item popped from an event_queue: an event (with the same accessors as async_event), or
/// END, the last item of every queue subscription. Move-only; holds a reference on the shared
/// snapshot until destroyed. Thread safety: one thread at a time.
template <family_declaration F>
class queued_event {
 public:
  // The node is read once, here: END's node lives in the subscription, which the consumer may
  // free (by destroying its queue) while it still holds the END item.
  queued_event(detail::event_node* n, herald::end_reason why) noexcept
      : block_(n->block), sub_sequence_(n->sub_sequence), reason_(why) {}
  queued_event(queued_event&& o) noexcept
      : block_(std::exchange(o.block_, nullptr)), sub_sequence_(o.sub_sequence_),
        reason_(o.reason_) {}
  queued_event& operator=(queued_event&& o) noexcept {
    std::swap(block_, o.block_);
    std::swap(sub_sequence_, o.sub_sequence_);
    std::swap(reason_, o.reason_);
    return *this;
  }
  ~queued_event() {
    if (block_ != nullptr) {
      detail::release_block(block_);
    }
  }

  /// True for END: the subscription ended; nothing follows. The accessors below are misuse on
  /// END (they abort).
  [[nodiscard]] bool is_end() const noexcept { return block_ == nullptr; }
  [[nodiscard]] event_type type() const noexcept { return block().type; }
  [[nodiscard]] typename F::subtype subtype() const noexcept {
    return static_cast<typename F::subtype>(std::countr_zero(block().type.subtypes()));
  }
  [[nodiscard]] const typename F::safe_part& safe() const noexcept {
    return *static_cast<const typename F::safe_part*>(block().payload());
  }
  [[nodiscard]] std::uint64_t sequence() const noexcept { return block().sequence; }
  /// As async_event::sub_sequence(). Misuse on END.
  [[nodiscard]] std::uint64_t sub_sequence() const noexcept {
    (void)block();
    return sub_sequence_;
  }
  [[nodiscard]] std::chrono::steady_clock::time_point when() const noexcept {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(block().when_ns));
  }
  /// END only: why the subscription ended. Misuse on an event (aborts).
  [[nodiscard]] herald::end_reason end_reason() const noexcept {
    HERALD_ASSERT(block_ == nullptr, "end_reason() called on an event (not END)");
    return reason_;
  }

 private:
  const detail::event_block& block() const noexcept {
    HERALD_ASSERT(block_ != nullptr, "event accessor called on the END item");
    return *block_;
  }
  detail::event_block* block_;  // nullptr: END (and a moved-from item)
  std::uint64_t sub_sequence_ = 0;
  herald::end_reason reason_ = herald::end_reason::unsubscribed;
};

/// How a queue subscription tells its consumer that items wait. Notifications are
/// edge-triggered: one per transition from "consumer found the queue empty" to "not empty", so
/// a consumer pops until pop() returns nothing before it waits again.
class queue_notify {
 public:
  /// No notification: the consumer polls.
  [[nodiscard]] static queue_notify none() noexcept { return queue_notify(detail::notify_kind::none); }
  /// Wakes `t` (a herald tasklet). herald keeps a reference to it until the subscription's
  /// END has been notified, so the consumer may drop its own handles when it pops END.
  [[nodiscard]] static queue_notify wake(tasklet t) noexcept {
    queue_notify n(detail::notify_kind::tasklet);
    n.tasklet_ = std::move(t);
    return n;
  }
  /// Signals an eventfd, event_queue::fd(), for poll/epoll/libuv loops: it is readable when
  /// items wait.
  [[nodiscard]] static queue_notify fd() noexcept { return queue_notify(detail::notify_kind::fd); }
  /// Calls `fn` in the publishing thread, inside the publish (keep it short; it must not
  /// throw or block; what it throws is dropped).
  [[nodiscard]] static queue_notify call(std::function<void()> fn) noexcept {
    queue_notify n(detail::notify_kind::callback);
    n.callback_ = std::move(fn);
    return n;
  }

 private:
  friend class sub_list;
  explicit queue_notify(detail::notify_kind k) noexcept : kind_(k) {}
  detail::notify_kind kind_;
  tasklet tasklet_;
  std::function<void()> callback_;
};

template <family_declaration F>
class event_queue;

namespace detail {
struct bus_core;
// Ends a queue subscription and drops the consumer's reference (event_queue's destructor).
void release_queue(sub_core* s) noexcept;
// Sets up s->deferred for an async subscription (false: out of memory).
bool attach_async(list_core& l, sub_core* s, const subscribe_options& opt,
                  void (*deliver)(sub_core&, const event_block&, std::uint64_t)) noexcept;
// errc::invalid_argument for inconsistent backpressure options.
result<void> check_backpressure(const subscribe_options& opt) noexcept;
// Sets up s->deferred for a queue subscription (false: out of memory, or no eventfd).
bool attach_queue(list_core& l, sub_core* s, const subscribe_options& opt, notify_kind how,
                  tasklet&& t, std::function<void()>&& fn) noexcept;
int queue_fd(const sub_core& s) noexcept;
// True once the bus of `l` began its shutdown (acquire).
bool is_shutting_down(const list_core& l) noexcept;
std::size_t queue_size_approx(const sub_core& s) noexcept;
void report_handler_exception(sub_core& s, event_type type) noexcept;
// Takes ownership of `s` (its handler, invoke and destroy set): subscribes it, or destroys the
// handler and frees `s` on failure.
result<subscription> subscribe_core(list_core& l, event_type type, sub_core* s,
                                    const subscribe_options& opt,
                                    const herald::source_location& where) noexcept;

// The list state publishers read (the rest lives in src/core).
struct list_core {
  std::atomic<const directory*> dir;  // acquire loads / release stores (writers, list mutex)
  std::atomic<bool> destroyed{false};
  std::atomic<std::uint32_t> refs{1};
  bus_core* bus = nullptr;
  void* state = nullptr;  // writer-side state (src/core/sub_list.cpp)
  // Publishes that reached an async or queue subscriber take a number here (relaxed RMW: a
  // counter). On its own line: publishers of every thread write it.
  alignas(64) std::atomic<std::uint64_t> sequence{0};
};

template <family_declaration F, class H>
inline void call_sync(H& handler, sub_core& s, event_type type, const void* safe,
                      void* unsafe) {
  sync_event<F> e(raw_event{type, safe, unsafe}, s);
  try {
    handler(e);
  } catch (...) {
    report_handler_exception(s, type);
  }
}

// A handler stored in s.inline_handler: its address is known without a load.
template <family_declaration F, class H>
void invoke_sync_inline(sub_core& s, event_type type, const void* safe, void* unsafe) {
  call_sync<F>(*std::launder(reinterpret_cast<H*>(s.inline_handler)), s, type, safe, unsafe);
}
template <family_declaration F, class H>
void invoke_sync_heap(sub_core& s, event_type type, const void* safe, void* unsafe) {
  call_sync<F>(*static_cast<H*>(s.handler), s, type, safe, unsafe);
}

template <family_declaration F, class H, bool Inline>
void deliver_async(sub_core& s, const event_block& b, std::uint64_t sub_sequence) {
  H& handler = Inline ? *std::launder(reinterpret_cast<H*>(s.inline_handler))
                      : *static_cast<H*>(s.handler);
  async_event<F> e(b, sub_sequence, s);
  try {
    handler(e);
  } catch (...) {
    report_handler_exception(s, b.type);
  }
}

// An async handler that has a member on_end(herald::end_reason) hears END through it.
template <class H>
concept has_on_end = requires(H& h, end_reason why) { h.on_end(why); };

template <class H, bool Inline>
void deliver_end(sub_core& s, end_reason why) noexcept {
  H& handler = Inline ? *std::launder(reinterpret_cast<H*>(s.inline_handler))
                      : *static_cast<H*>(s.handler);
  try {
    handler.on_end(why);
  } catch (...) {
    report_handler_exception(s, unpack_type(s.type.load(std::memory_order_relaxed)));
  }
}

// The invoke function of subscriptions that are never called inline (async and queue).
inline void invoke_never(sub_core&, event_type, const void*, void*) {
  HERALD_ASSERT(false, "an async or queue subscription was called as a sync one");
}
inline void destroy_nothing(void*) noexcept {}

template <class H>
void destroy_inline_handler(void* h) noexcept {
  static_cast<H*>(h)->~H();
}
template <class H>
void destroy_heap_handler(void* h) noexcept {
  delete static_cast<H*>(h);
}

// A new subscription record holding `handler` (inline when it fits), or nullptr when out of
// memory. Exceptions: what H's constructor throws (then nothing is left allocated).
template <class H, class Fwd>
sub_core* new_sub_with_handler(Fwd&& handler) {
  sub_core* s = allocate_sub();
  if (s == nullptr) {
    return nullptr;
  }
  try {
    if constexpr (handler_fits_inline<H>) {
      s->handler = ::new (static_cast<void*>(s->inline_handler)) H(std::forward<Fwd>(handler));
      s->destroy = &destroy_inline_handler<H>;
    } else {
      s->handler = new H(std::forward<Fwd>(handler));
      s->destroy = &destroy_heap_handler<H>;
    }
  } catch (const std::bad_alloc&) {
    free_sub(s);
    return nullptr;
  } catch (...) {
    free_sub(s);
    throw;
  }
  return s;
}

// The part of a publish after the family's sync handlers: the wildcard sync handlers, then one
// block queued to the family's and the wildcard's async and queue subscriptions. Returns how
// many got the event.
result<std::size_t> publish_rest(const list_core& l, const sub_array* family,
                                 const sub_array* wildcard, event_type type, const void* safe,
                                 const payload_ops& ops, bool outermost) noexcept;

// Calls the sync subscriptions of `d` that match (family, subtype bit `bit`) and queues the
// event to the matching async and queue ones; inside a read section. Returns how many got it.
// `outermost`: not inside a handler (overflow_policy::block may wait).
inline result<std::size_t> call_matching(const list_core& l, const directory* d, event_type type,
                                         unsigned bit, const void* safe, void* unsafe,
                                         const payload_ops& ops, bool outermost) noexcept {
  // Never null: a family or subtype nobody subscribes to has a sentinel of size 0.
  const sub_array* arr = d->slots()[type.family()]->by_bit[bit];
  std::size_t called = 0;
  sub_core* const* items = arr->items();
  const std::uint32_t sync_count = arr->sync_count;
  // Async and queue subscriptions, and wildcard ones, are served out of line after the loop;
  // whether there are any is decided here, from lines already loaded (the directory's header
  // and the array's), so that nothing more is read after the handlers ran.
  for (std::uint32_t i = 0; i < sync_count; ++i) {
    sub_core& s = *items[i];
    if (sub_callable(s)) [[likely]] {
      s.invoke(s, type, safe, unsafe);
      ++called;
    }
  }
  if ((arr->size != sync_count) | ((d->flags & dir_has_wildcard) != 0)) {
    auto rest = publish_rest(l, arr, d->wildcard, type, safe, ops, outermost);
    if (!rest) {
      return unexpected(rest.error());
    }
    called += *rest;
  }
  return called;
}

// Publishes from a nested read section (a handler that publishes) or from a thread's first
// publish (which registers the thread). Out of line: it keeps the fast path short.
result<std::size_t> publish_nested(const list_core& l, event_type type, unsigned bit,
                                   const void* safe, void* unsafe,
                                   const payload_ops& ops) noexcept;

// Publishes an event of a stateful subtype (see stateful_mask_v): stores it as the list's last
// value of that subtype and delivers it, serialised with the list's other stateful publishes
// and with subscribes (which replay the last values).
result<std::size_t> publish_stateful(const list_core& l, event_type type, unsigned bit,
                                     const void* safe, void* unsafe,
                                     const payload_ops& ops) noexcept;

// A publish of a family beyond the snapshot's index: the list is no longer live (an error), or
// nobody subscribed to the family (only wildcard subscriptions can get the event).
result<std::size_t> publish_unindexed(const list_core& l, const directory* d, event_type type,
                                      const void* safe, const payload_ops& ops,
                                      bool outermost) noexcept;

// The publish fast path: a registered thread outside any read section. `bit` is the index of
// the published subtype in `type`. The event travels in registers, and the read section's
// entry and exit store values that do not depend on the record's previous contents, so
// back-to-back publishes do not chain through memory.
inline result<std::size_t> publish_raw(const list_core& l, event_type type, unsigned bit,
                                       const void* safe, void* unsafe,
                                       const payload_ops& ops) noexcept {
  reader_record* r = outermost_record();
  if (r == nullptr) [[unlikely]] {
    return publish_nested(l, type, bit, safe, unsafe, ops);
  }
  enter_section(*r);
  count_publish(*r, type.family());
  const directory* d = l.dir.load(std::memory_order_acquire);
  if (type.family() >= d->families) [[unlikely]] {
    if (d->flags == 0) {
      leave_section(*r);
      return std::size_t{0};  // a live list where nobody ever subscribed to this family
    }
    auto called = publish_unindexed(l, d, type, safe, ops, /*outermost=*/true);
    leave_section(*r);
    return called;
  }
  auto called = call_matching(l, d, type, bit, safe, unsafe, ops, /*outermost=*/true);
  leave_section(*r);
  return called;
}
}  // namespace detail

namespace detail {
/// What every queue (typed or wildcard) does besides pop(): the binding to its subscription,
/// reset, and the accessors. Move-only. See event_queue for the contracts.
class queue_base {
 public:
  queue_base() noexcept = default;
  queue_base(const queue_base&) = delete;
  queue_base& operator=(const queue_base&) = delete;
  queue_base(queue_base&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  queue_base& operator=(queue_base&& o) noexcept {
    if (this != &o) {
      reset();
      core_ = std::exchange(o.core_, nullptr);
    }
    return *this;
  }
  ~queue_base() { reset(); }

  /// Ends the subscription (if still active) and unbinds the queue. Idempotent. Blocking:
  /// waits for running publishes (as subscription::unsubscribe()).
  void reset() noexcept {
    if (core_ != nullptr) {
      release_queue(std::exchange(core_, nullptr));
    }
  }
  /// Subscribed and END not popped yet.
  [[nodiscard]] bool is_open() const noexcept {
    return core_ != nullptr && !core_->deferred->end_popped;
  }
  /// The eventfd of a subscription made with queue_notify::fd(), else -1. Owned by herald.
  [[nodiscard]] int fd() const noexcept { return core_ == nullptr ? -1 : queue_fd(*core_); }
  /// Items waiting (END not counted); racy by nature. Thread safety: any thread.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    return core_ == nullptr ? 0 : queue_size_approx(*core_);
  }
  /// Events popped so far / dropped (pending_on_end::discard, or a discarding shutdown).
  [[nodiscard]] std::uint64_t delivered() const noexcept {
    return core_ == nullptr ? 0 : core_->deferred->delivered.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t discarded() const noexcept {
    return core_ == nullptr ? 0 : core_->deferred->discarded.load(std::memory_order_relaxed);
  }
  /// The subscription's counters (herald/backpressure.hpp); zeros when not subscribed.
  /// Thread safety: any thread; racy while events flow.
  [[nodiscard]] subscription_stats stats() const noexcept {
    return core_ == nullptr ? subscription_stats{} : core_->deferred->stats();
  }

 protected:
  // The next node (event or END) and, for END, the reason; nullptr if nothing waits.
  event_node* pop_node(end_reason* why) noexcept {
    if (core_ == nullptr) {
      return nullptr;
    }
    event_node* n = queue_pop(*core_->deferred);
    if (n != nullptr && n->block == nullptr) {
      *why = end_reason_of(*core_->deferred);
    }
    return n;
  }

 private:
  friend class herald::sub_list;
  sub_core* core_ = nullptr;
};
}  // namespace detail

/// The consumer side of a queue subscription (HAProxy's event_hdl_async_equeue), owned by the
/// user. Subscribe it with sub_list::subscribe_queue(), then pop until END.
///
/// Lifetime: destroying the queue (or reset()) ends the subscription and releases whatever it
/// still held; herald keeps what it needs (the notification target included) alive by
/// itself, so a consumer may destroy its queue, and itself, as soon as it popped END.
/// Thread safety: pop() and the consumer-side accessors from one thread at a time; the
/// `_approx` accessors and stats() from any thread.
template <family_declaration F>
class event_queue : public detail::queue_base {
 public:
  /// The next item: an event, END (once, last), or nothing (empty, or END already popped).
  /// Blocking: never. Allocation: none. Ownership: the item holds the snapshot until destroyed.
  /// Errors: none. Ordering: FIFO; events of one publishing thread in publish order.
  [[nodiscard]] std::optional<queued_event<F>> pop() noexcept {
    end_reason why = end_reason::unsubscribed;
    detail::event_node* n = pop_node(&why);
    if (n == nullptr) {
      return std::nullopt;
    }
    return queued_event<F>(n, why);
  }
};

/// A read-only, type-erased view of one event, as wildcard subscribers see it: the type and
/// its names, the numbers and time of the publish, the safe part (as F::safe_part if you know
/// F, else serialised by the family's codec). Valid while the object that gave it is.
/// Thread safety: like the object that gave it. Blocking: never.
class event_view {
 public:
  event_view(event_type t, const void* safe, const detail::payload_ops& ops, std::uint64_t seq,
             std::uint64_t sub_seq, std::int64_t when_ns) noexcept
      : type_(t), safe_(safe), ops_(&ops), sequence_(seq), sub_sequence_(sub_seq),
        when_ns_(when_ns) {}

  /// The published type (one subtype). Allocation: none.
  [[nodiscard]] event_type type() const noexcept { return type_; }
  [[nodiscard]] family_id family() const noexcept { return type_.family(); }
  /// "SERVER". Allocation: none.
  [[nodiscard]] std::string_view family_name() const noexcept {
    auto n = herald::family_name(type_.family());
    return n ? *n : std::string_view{};
  }
  /// "SERVER_DOWN". Allocation: the string.
  [[nodiscard]] std::string type_name() const { return herald::type_name(type_); }
  /// The list's sequence number of the publish; 0 for a sync delivery (sync publishes are not
  /// numbered: numbering would add a shared write to every publish).
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }
  /// The event's number for this subscription (async and queue; 0 for sync).
  [[nodiscard]] std::uint64_t sub_sequence() const noexcept { return sub_sequence_; }
  /// When it was published (async and queue); for a sync delivery, now.
  [[nodiscard]] std::chrono::steady_clock::time_point when() const noexcept {
    if (when_ns_ == 0) {
      return std::chrono::steady_clock::now();
    }
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(when_ns_));
  }
  /// The safe part as F's, or nullptr if the event is of another family.
  template <family_declaration F>
  [[nodiscard]] const typename F::safe_part* safe_as() const noexcept {
    return type_.family() == family_id_of<F>() ? static_cast<const typename F::safe_part*>(safe_)
                                               : nullptr;
  }
  /// The safe part, untyped.
  [[nodiscard]] const void* safe_data() const noexcept { return safe_; }
  /// True if the family declared a codec (`struct codec { static std::string
  /// encode(const safe_part&); };` in the family).
  [[nodiscard]] bool has_codec() const noexcept { return ops_->encode != nullptr; }
  /// The safe part serialised by the family's codec. Errors: no_codec, no_memory (or the codec
  /// threw). Allocation: the string.
  [[nodiscard]] result<std::string> encode() const noexcept {
    if (ops_->encode == nullptr) {
      return unexpected(errc::no_codec);
    }
    std::string out;
    if (!ops_->encode(safe_, out)) {
      return unexpected(errc::no_memory);
    }
    return out;
  }

 private:
  event_type type_;
  const void* safe_;
  const detail::payload_ops* ops_;
  std::uint64_t sequence_;
  std::uint64_t sub_sequence_;
  std::int64_t when_ns_;
};

/// What a wildcard handler (sync or async) receives: the event's view and its own
/// subscription. Thread safety: only inside the handler call that received it.
class wildcard_event : public event_view {
 public:
  wildcard_event(const event_view& v, detail::sub_core& core) noexcept
      : event_view(v), self_(core) {}
  /// This handler's own subscription.
  [[nodiscard]] subscription_self& self() noexcept { return self_; }

 private:
  subscription_self self_;
};

/// One item popped from a wildcard_queue: an event or END. Move-only; holds the shared snapshot
/// until destroyed. Thread safety: one thread at a time.
class queued_wildcard {
 public:
  queued_wildcard(detail::event_node* n, herald::end_reason why) noexcept
      : block_(n->block), sub_sequence_(n->sub_sequence), reason_(why) {}
  queued_wildcard(queued_wildcard&& o) noexcept
      : block_(std::exchange(o.block_, nullptr)), sub_sequence_(o.sub_sequence_),
        reason_(o.reason_) {}
  queued_wildcard& operator=(queued_wildcard&& o) noexcept {
    std::swap(block_, o.block_);
    std::swap(sub_sequence_, o.sub_sequence_);
    std::swap(reason_, o.reason_);
    return *this;
  }
  ~queued_wildcard() {
    if (block_ != nullptr) {
      detail::release_block(block_);
    }
  }
  /// True for END (the last item). view() is misuse on END (aborts).
  [[nodiscard]] bool is_end() const noexcept { return block_ == nullptr; }
  /// The event; valid while this item lives.
  [[nodiscard]] event_view view() const noexcept {
    HERALD_ASSERT(block_ != nullptr, "view() called on the END item");
    return event_view(block_->type, block_->payload(), *block_->ops, block_->sequence,
                      sub_sequence_, block_->when_ns);
  }
  /// END only: why the subscription ended. Misuse on an event (aborts).
  [[nodiscard]] herald::end_reason end_reason() const noexcept {
    HERALD_ASSERT(block_ == nullptr, "end_reason() called on an event (not END)");
    return reason_;
  }

 private:
  detail::event_block* block_;
  std::uint64_t sub_sequence_ = 0;
  herald::end_reason reason_ = herald::end_reason::unsubscribed;
};

/// The consumer side of a wildcard queue subscription (every family of a list); otherwise as
/// event_queue.
class wildcard_queue : public detail::queue_base {
 public:
  /// As event_queue::pop().
  [[nodiscard]] std::optional<queued_wildcard> pop() noexcept {
    end_reason why = end_reason::unsubscribed;
    detail::event_node* n = pop_node(&why);
    if (n == nullptr) {
      return std::nullopt;
    }
    return queued_wildcard(n, why);
  }
};

namespace detail {
inline event_type wildcard_type() noexcept { return event_type(wildcard_family, ~subtype_mask{0}); }

template <class H, bool Inline>
H& handler_of(sub_core& s) noexcept {
  return Inline ? *std::launder(reinterpret_cast<H*>(s.inline_handler))
                : *static_cast<H*>(s.handler);
}

template <class H, bool Inline>
void invoke_wildcard(sub_core& s, event_type type, const void* safe, const payload_ops& ops) {
  wildcard_event e(event_view(type, safe, ops, 0, 0, 0), s);
  try {
    handler_of<H, Inline>(s)(e);
  } catch (...) {
    report_handler_exception(s, type);
  }
}

template <class H, bool Inline>
void deliver_wildcard(sub_core& s, const event_block& b, std::uint64_t sub_sequence) {
  wildcard_event e(event_view(b.type, b.payload(), *b.ops, b.sequence, sub_sequence, b.when_ns),
                   s);
  try {
    handler_of<H, Inline>(s)(e);
  } catch (...) {
    report_handler_exception(s, b.type);
  }
}
}  // namespace detail

/// A subscription list: the global list of a bus, or a user list (one per server...).
///
/// Lifetime: destroy() (or the destructor) ends every subscription in it; later subscribes
/// fail with errc::list_destroyed and publishes report it. The destructor must not run while
/// another thread publishes to or subscribes on this object; destroy() has no such limit and
/// may be called from inside a handler of this very list. Not copyable, not movable.
class sub_list {
 public:
  /// A new, empty list of `b` (reporting handler errors to its error hook), named `name` for
  /// introspection and metrics (e.g. "server/web1"; may be empty).
  /// Thread safety: constructing is not concurrent with anything on this object.
  /// Allocation: the list state. Errors: aborts if out of memory (construction).
  explicit sub_list(bus& b, std::string_view name = {});
  sub_list(const sub_list&) = delete;
  sub_list& operator=(const sub_list&) = delete;
  /// destroy(), then releases the list state (kept alive while handles need it).
  /// Thread safety: not concurrent with other uses of this object. Blocking: as destroy().
  ~sub_list();

  /// Ends every subscription of the list and refuses new ones (errc::list_destroyed).
  /// Idempotent. Thread safety: any thread. Handler context: allowed, also from a handler of
  /// this list (does not wait then). Blocking: outside a handler, waits for running publishes.
  /// Ownership: handlers are destroyed before it returns (outside a handler) or at the next
  /// reclamation. Errors: none.
  void destroy() noexcept;
  /// The name given at construction ("global" for a bus's own list). Thread safety: any
  /// thread. Allocation: none. Valid while this object lives.
  [[nodiscard]] std::string_view name() const noexcept;
  /// True once destroy() has begun. Thread safety: any thread. Memory ordering: acquire.
  [[nodiscard]] bool is_destroyed() const noexcept;

  /// Is any active or paused subscription listening for any subtype of `type` (a wildcard
  /// subscription listens to every type)? Cheap (a few loads); racy by nature. Thread safety: any thread. Allocation: none.
  [[nodiscard]] bool has_subscribers(event_type type) const noexcept;

  /// Subscribes `handler` (callable as `void(herald::sync_event<F>&)`) to `type` (a non-empty
  /// subset of F's subtypes; type_of<F>() for the whole family) in sync mode.
  /// Thread safety: any thread, concurrently with publishes and other subscribes. Handler
  /// context: allowed. Blocking: the list mutex; outside a handler it may also wait for
  /// running publishes to reclaim old snapshots. Allocation: the subscription and a new
  /// snapshot of F's part of the list. Ownership: the handler is moved in and destroyed
  /// exactly once, after the subscription ended and no publish can reach it. Errors:
  /// duplicate_id, list_destroyed, family_mismatch (type not of family F or empty),
  /// no_memory. Exceptions: only what moving/copying `handler` throws (then nothing changed).
  /// Ordering: runs after the subscriptions made before it.
  template <family_declaration F, class H>
  result<subscription> subscribe_sync(
      event_type type, H&& handler, const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    using handler_t = std::decay_t<H>;
    static_assert(std::is_invocable_v<handler_t&, sync_event<F>&>,
                  "a sync handler is callable as void(herald::sync_event<F>&)");
    if (type.family() != family_id_of<F>() || type.subtypes() == 0) {
      return unexpected(errc::family_mismatch);
    }
    detail::sub_core* s = detail::new_sub_with_handler<handler_t>(std::forward<H>(handler));
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    if constexpr (detail::handler_fits_inline<handler_t>) {
      s->invoke = &detail::invoke_sync_inline<F, handler_t>;
    } else {
      s->invoke = &detail::invoke_sync_heap<F, handler_t>;
    }
    return detail::subscribe_core(*core_, type, s, opt, where);
  }

  /// Subscribes `handler` (callable as `void(herald::async_event<F>&)`) to `type` in async
  /// mode: each matching publish queues one shared snapshot of the safe part to this
  /// subscription, and the handler runs later on a worker of the bus (or `opt.executor`),
  /// one event at a time, in order.
  /// Thread safety: any thread. Handler context: allowed. Blocking: as subscribe_sync(); the
  /// first async subscription of a bus without `opt.executor` starts the bus's workers.
  /// Allocation: the subscription, its queue and task, a new snapshot of F's part of the list.
  /// Ownership: the handler is moved in and destroyed exactly once, on its executor, after the
  /// last event it will see (when the subscription's END is reached; see pending_on_end).
  /// Errors: as subscribe_sync(), plus invalid_argument (events_per_run above 10000) and
  /// shutting_down. Ordering: events published by one thread reach the handler in publish
  /// order; each carries the list's sequence number.
  template <family_declaration F, class H>
  result<subscription> subscribe_async(
      event_type type, H&& handler, const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    using handler_t = std::decay_t<H>;
    static_assert(std::is_invocable_v<handler_t&, async_event<F>&>,
                  "an async handler is callable as void(herald::async_event<F>&)");
    if (type.family() != family_id_of<F>() || type.subtypes() == 0) {
      return unexpected(errc::family_mismatch);
    }
    if (opt.events_per_run > 10000) {
      return unexpected(errc::invalid_argument);
    }
    if (auto ok = detail::check_backpressure(opt); !ok) {
      return unexpected(ok.error());
    }
    if (detail::is_shutting_down(*core_)) {
      return unexpected(errc::shutting_down);  // before the workers could be started again
    }
    detail::sub_core* s = detail::new_sub_with_handler<handler_t>(std::forward<H>(handler));
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    s->invoke = &detail::invoke_never;
    if (!detail::attach_async(
            *core_, s, opt,
            &detail::deliver_async<F, handler_t, detail::handler_fits_inline<handler_t>>)) {
      s->destroy(s->handler);
      detail::free_sub(s);
      return unexpected(errc::no_memory);
    }
    if constexpr (detail::has_on_end<handler_t>) {
      s->deferred->deliver_end =
          &detail::deliver_end<handler_t, detail::handler_fits_inline<handler_t>>;
    }
    return detail::subscribe_core(*core_, type, s, opt, where);
  }

  /// Subscribes the queue `q` (not subscribed yet) to `type` in queue mode: each matching
  /// publish pushes one shared snapshot of the safe part into `q`, and `notify` tells the
  /// consumer. The consumer pops with q.pop(); the last item is END, exactly once, after the
  /// subscription ended by any path; nothing follows it.
  /// Thread safety: any thread; `q` itself is used by one consumer thread at a time.
  /// Handler context: allowed. Blocking: as subscribe_sync(). Allocation: the subscription and
  /// its queue; an eventfd with queue_notify::fd(). Ownership: `q` holds a reference to the
  /// subscription; destroying `q` (or q.reset()) ends it. Errors: as subscribe_sync(), plus
  /// shutting_down, and no_memory if no eventfd could be created.
  template <family_declaration F>
  result<subscription> subscribe_queue(
      event_type type, event_queue<F>& q, queue_notify notify = queue_notify::none(),
      const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    if (type.family() != family_id_of<F>() || type.subtypes() == 0) {
      return unexpected(errc::family_mismatch);
    }
    return subscribe_queue_core(q, type, std::move(notify), opt, where);
  }

 private:
  result<subscription> subscribe_queue_core(detail::queue_base& qb, event_type type,
                                            queue_notify notify, const subscribe_options& opt,
                                            const herald::source_location& where) {
    HERALD_ASSERT(qb.core_ == nullptr, "subscribe_queue() with a queue already subscribed");
    if (auto ok = detail::check_backpressure(opt); !ok) {
      return unexpected(ok.error());
    }
    detail::sub_core* s = detail::allocate_sub();
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    s->invoke = &detail::invoke_never;
    s->destroy = &detail::destroy_nothing;
    if (!detail::attach_queue(*core_, s, opt, notify.kind_, std::move(notify.tasklet_),
                              std::move(notify.callback_))) {
      detail::free_sub(s);
      return unexpected(errc::no_memory);
    }
    // Bound before the subscription becomes visible: a publish may notify the consumer before
    // subscribe_core() returns, and its pop() must find the queue. The consumer's reference
    // is counted by subscribe_core, which drops it on failure: then unbind.
    qb.core_ = s;
    auto sub = detail::subscribe_core(*core_, type, s, opt, where);
    if (!sub) {
      qb.core_ = nullptr;
    }
    return sub;
  }

 public:
  /// Wildcard subscriptions: every event published to this list, of every family, in sync
  /// mode; the handler (callable as `void(herald::wildcard_event&)`) sees a type-erased view of
  /// the safe part (the unsafe part is not available). Runs after the family's own sync
  /// subscriptions. Not resubscribable (family_mismatch). Otherwise as subscribe_sync(); last
  /// values of every stateful subtype of the list are replayed inside this call.
  template <class H>
  result<subscription> subscribe_wildcard_sync(
      H&& handler, const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    using handler_t = std::decay_t<H>;
    static_assert(std::is_invocable_v<handler_t&, wildcard_event&>,
                  "a wildcard handler is callable as void(herald::wildcard_event&)");
    detail::sub_core* s = detail::new_sub_with_handler<handler_t>(std::forward<H>(handler));
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    s->invoke = &detail::invoke_never;
    s->invoke_any = &detail::invoke_wildcard<handler_t, detail::handler_fits_inline<handler_t>>;
    return detail::subscribe_core(*core_, detail::wildcard_type(), s, opt, where);
  }

  /// Wildcard subscription in async mode: as subscribe_async(), for every family of the list;
  /// the handler is callable as `void(herald::wildcard_event&)`.
  template <class H>
  result<subscription> subscribe_wildcard_async(
      H&& handler, const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    using handler_t = std::decay_t<H>;
    static_assert(std::is_invocable_v<handler_t&, wildcard_event&>,
                  "a wildcard handler is callable as void(herald::wildcard_event&)");
    if (opt.events_per_run > 10000) {
      return unexpected(errc::invalid_argument);
    }
    if (auto ok = detail::check_backpressure(opt); !ok) {
      return unexpected(ok.error());
    }
    if (detail::is_shutting_down(*core_)) {
      return unexpected(errc::shutting_down);
    }
    detail::sub_core* s = detail::new_sub_with_handler<handler_t>(std::forward<H>(handler));
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    s->invoke = &detail::invoke_never;
    if (!detail::attach_async(
            *core_, s, opt,
            &detail::deliver_wildcard<handler_t, detail::handler_fits_inline<handler_t>>)) {
      s->destroy(s->handler);
      detail::free_sub(s);
      return unexpected(errc::no_memory);
    }
    if constexpr (detail::has_on_end<handler_t>) {
      s->deferred->deliver_end =
          &detail::deliver_end<handler_t, detail::handler_fits_inline<handler_t>>;
    }
    return detail::subscribe_core(*core_, detail::wildcard_type(), s, opt, where);
  }

  /// Wildcard subscription in queue mode: as subscribe_queue(), for every family of the list.
  result<subscription> subscribe_wildcard_queue(
      wildcard_queue& q, queue_notify notify = queue_notify::none(),
      const subscribe_options& opt = {},
      const herald::source_location& where = herald::source_location::current()) {
    return subscribe_queue_core(q, detail::wildcard_type(), std::move(notify), opt, where);
  }

  /// Publishes one event of family F and subtype `sub` to this list: every active sync
  /// subscription to that subtype runs now, in subscription order, and sees `safe` (and
  /// `unsafe`, if given); every active async and queue subscription to it gets the event
  /// queued. Returns how many subscriptions got it (handlers run plus events queued; an event
  /// an overflow policy dropped is not counted).
  /// Thread safety: any thread. Handler context: allowed (nested publishes). Blocking: none
  /// besides the handlers, and a bounded subscription with overflow_policy::block, which may
  /// hold an outermost publish up to its block_timeout (herald/backpressure.hpp). Allocation:
  /// none after the thread's first publish (a snapshot block from the thread's pool when an
  /// async or queue subscription matches). Ownership:
  /// `safe` and `unsafe` are borrowed for the call. Errors: list_destroyed (no handler ran).
  /// Handler exceptions are caught, counted and reported to the error hook; publish never
  /// throws. Ordering: handlers run in subscription order; see docs for subscriptions made or
  /// ended during the publish.
  ///
  /// Stateful subtypes (stateful_mask_v<F>): the event also becomes the list's last value of
  /// its subtype, replayed to later subscriptions (docs/last_value.md). Such publishes are
  /// serialised per list with each other and with subscribes, and out of memory nobody gets
  /// the event (no_memory) and the last value stays.
  template <family_declaration F>
  result<std::size_t> publish(typename F::subtype sub,
                              const typename F::safe_part& safe) const noexcept {
    return publish_erased<F>(sub, &safe, nullptr);
  }
  template <family_declaration F>
    requires has_unsafe_part_v<F>
  result<std::size_t> publish(typename F::subtype sub, const typename F::safe_part& safe,
                              typename F::unsafe_part& unsafe) const noexcept {
    return publish_erased<F>(sub, &safe, &unsafe);
  }

  /// By-id operations (HAProxy's event_hdl_lookup_*). Errors: not_found (no active
  /// subscription with this id in this list); resubscribe also family_mismatch, no_memory.
  /// Thread safety and blocking as the handle operations of the same name.
  result<void> lookup_unsubscribe(std::uint64_t id) noexcept;
  result<void> lookup_pause(std::uint64_t id) noexcept;
  result<void> lookup_resume(std::uint64_t id) noexcept;
  result<void> lookup_resubscribe(std::uint64_t id, event_type type) noexcept;
  result<subscription> lookup_take(std::uint64_t id) noexcept;

  /// Number of subscriptions not ended: a racy snapshot. Thread safety: any thread. Handler
  /// context: allowed. Blocking: the list mutex, briefly. Allocation: none.
  [[nodiscard]] std::size_t size_approx() const noexcept;

  /// Internal (introspection, bridges).
  [[nodiscard]] detail::list_core& core() const noexcept { return *core_; }

 private:
  template <family_declaration F>
  result<std::size_t> publish_erased(typename F::subtype sub, const void* safe,
                                     void* unsafe) const noexcept {
    const auto bit = static_cast<unsigned>(sub);
    if constexpr (stateful_mask_v<F> != 0) {
      if (((stateful_mask_v<F> >> bit) & 1U) != 0) {
        return detail::publish_stateful(*core_, type_of<F>(sub), bit, safe, unsafe,
                                        detail::payload_ops_of<F>);
      }
    }
    return detail::publish_raw(*core_, type_of<F>(sub), bit, safe, unsafe,
                               detail::payload_ops_of<F>);
  }

  detail::list_core* core_;
};

/// The bus: the global subscription list, the error hook, the workers of async delivery, and
/// shutdown.
///
/// Lifetime: the destructor shuts the bus down (see shutdown()) and must not run while another
/// thread uses the bus. Lists made with this bus keep the shared error state alive, so they
/// may outlive it (their handler errors then go unreported, and they refuse subscriptions).
class bus {
 public:
  /// Thread safety: constructing is not concurrent with anything on this object. Errors:
  /// aborts on an invalid option (events_per_run outside 1..10000, groups > threads).
  explicit bus(bus_options opt = {});
  bus(const bus&) = delete;
  bus& operator=(const bus&) = delete;
  /// shutdown(), then releases the bus's state (kept alive while lists or handles need it).
  ~bus();

  /// Shuts the bus down: refuses new subscriptions (errc::shutting_down) on every list of the
  /// bus, ends every list (their publishes then report shutting_down), queues END behind the
  /// pending events of every async and queue subscription, delivers or discards those events
  /// (bus_options::on_shutdown), and joins the bus's workers once they have finished.
  /// Idempotent. Thread safety: any thread except one of the bus's workers. Handler context:
  /// not from a handler (aborts: it would wait for itself). Blocking: yes, until every async
  /// subscription on the bus's workers has run its END (handlers on a user's executor finish
  /// when that executor runs them; queue consumers pop END when they like). Errors: none.
  void shutdown() noexcept;
  /// True once shutdown() has begun. Thread safety: any thread.
  [[nodiscard]] bool is_shut_down() const noexcept;

  /// The bus's workers, started on the first call (or the first async subscription without an
  /// executor). Thread safety: any thread. Ownership: owned by the bus; stopped by shutdown().
  [[nodiscard]] scheduler& workers();

  /// The bus's own list (HAProxy's global list). Thread safety: any thread. Allocation: none.
  /// Ownership: owned by the bus; valid until the bus is destroyed.
  [[nodiscard]] sub_list& global() noexcept { return *global_; }

  /// Replaces the error hook (empty: none). Thread safety: any thread; a publish already
  /// reporting may still call the previous hook. Handler context: allowed. Allocation: yes.
  void set_error_hook(error_hook hook);

  /// Replaces the diagnostic hook (empty: none): slow consumers and subscriptions ended on
  /// overflow (herald/backpressure.hpp). Called in the publishing thread; must not throw or
  /// block. Thread safety: any thread. Handler context: allowed. Allocation: yes.
  void set_diagnostic_hook(diagnostic_hook hook);

  /// Handler exceptions caught on lists of this bus, in total. Thread safety: any thread.
  /// Memory ordering: relaxed (a counter, not a synchronisation point).
  [[nodiscard]] std::uint64_t handler_exceptions() const noexcept;

  /// Frees what ended subscriptions and replaced snapshots left behind, after waiting for
  /// running publishes. Only needed by programs that end subscriptions from inside handlers
  /// and never call a waiting operation afterwards. Handler context: does nothing.
  void reclaim() noexcept;

  /// Internal.
  [[nodiscard]] detail::bus_core& core() noexcept { return *core_; }

 private:
  detail::bus_core* core_;
  std::unique_ptr<sub_list> global_;
};

}  // namespace herald
