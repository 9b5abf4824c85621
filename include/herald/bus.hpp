// herald/bus.hpp - the bus, subscription lists, subscriptions and synchronous delivery.
//
// What it is
//   A `bus` owns the global subscription list and the error hook. A `sub_list` is a scope of
//   subscriptions (the bus's global one, or one per entity: per server, per connection).
//   Components subscribe a handler to an event type (one family and any subset of its
//   subtypes) and publish events (one family, exactly one subtype) to a list.
//
// Modes
//   This header provides sync delivery: handlers run inline in the publishing thread, in
//   subscription order, before publish() returns, and may read both the safe part and the
//   live unsafe part of the payload. (Async and queue modes arrive with the scheduler.)
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
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <source_location>
#include <string_view>
#include <type_traits>
#include <utility>

#include "herald/detail/quiescence.hpp"
#include "herald/detail/sub_core.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"

namespace herald {

class bus;
class sub_list;
class subscription;

/// A 64-bit subscription id computed from (scope, name) with xxHash (XXH3). The scope and the
/// name are hashed with their lengths, so ("ab", "c") and ("a", "bc") give different ids. Never
/// returns 0 (0 means "no id"). Thread safety: any thread. Allocation: none. Errors: none.
[[nodiscard]] std::uint64_t make_id(std::string_view scope, std::string_view name) noexcept;

/// Options of subscribe_sync().
struct subscribe_options {
  std::uint64_t id = 0;        ///< 0: anonymous; else unique within the list (make_id)
  std::string_view name = {};  ///< for diagnostics (copied)
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

/// Called in the publishing thread, inside the publish, each time a handler throws. It must not
/// throw (what it throws is swallowed).
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
  /// Handler context: allowed (does not wait then, see the file comment). Blocking: outside a
  /// handler, waits until no publish is still running the handler. Allocation: none.
  /// Ownership: the handler is destroyed before this returns, unless called inside a handler
  /// (then after the current publishes end, at the next reclamation). Errors: none.
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

namespace detail {
struct bus_core;
void report_handler_exception(sub_core& s, event_type type) noexcept;
// Takes ownership of `s` (its handler, invoke and destroy set): subscribes it, or destroys the
// handler and frees `s` on failure.
result<subscription> subscribe_core(list_core& l, event_type type, sub_core* s,
                                    const subscribe_options& opt,
                                    const std::source_location& where) noexcept;

// The list state publishers read (the rest lives in src/core).
struct list_core {
  std::atomic<const directory*> dir;  // acquire loads / release stores (writers, list mutex)
  std::atomic<bool> destroyed{false};
  std::atomic<std::uint32_t> refs{1};
  bus_core* bus = nullptr;
  void* state = nullptr;  // writer-side state (src/core/sub_list.cpp)
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

template <class H>
void destroy_inline_handler(void* h) noexcept {
  static_cast<H*>(h)->~H();
}
template <class H>
void destroy_heap_handler(void* h) noexcept {
  delete static_cast<H*>(h);
}

// Calls the subscriptions of `d` that match (family f, subtype bit `bit`); inside a read
// section. Returns how many ran.
inline std::size_t call_matching(const directory* d, event_type type, unsigned bit,
                                 const void* safe, void* unsafe) noexcept {
  // Never null: a family or subtype nobody subscribes to has a sentinel of size 0.
  const sub_array* arr = d->slots()[type.family()]->by_bit[bit];
  std::size_t called = 0;
  sub_core* const* items = arr->items();
  for (std::uint32_t i = 0, n = arr->size; i < n; ++i) {
    sub_core& s = *items[i];
    if (sub_callable(s)) [[likely]] {
      s.invoke(s, type, safe, unsafe);
      ++called;
    }
  }
  return called;
}

// Publishes from a nested read section (a handler that publishes) or from a thread's first
// publish (which registers the thread). Out of line: it keeps the fast path short.
result<std::size_t> publish_nested(const list_core& l, event_type type, unsigned bit,
                                   const void* safe, void* unsafe) noexcept;

// The publish fast path: a registered thread outside any read section. `bit` is the index of
// the published subtype in `type`. The event travels in registers, and the read section's
// entry and exit store values that do not depend on the record's previous contents, so
// back-to-back publishes do not chain through memory.
inline result<std::size_t> publish_raw(const list_core& l, event_type type, unsigned bit,
                                       const void* safe, void* unsafe) noexcept {
  reader_record* r = outermost_record();
  if (r == nullptr) [[unlikely]] {
    return publish_nested(l, type, bit, safe, unsafe);
  }
  enter_section(*r);
  const directory* d = l.dir.load(std::memory_order_acquire);
  if (type.family() >= d->families) [[unlikely]] {
    leave_section(*r);
    if (d == &destroyed_directory) {
      return unexpected(errc::list_destroyed);
    }
    return std::size_t{0};
  }
  const std::size_t called = call_matching(d, type, bit, safe, unsafe);
  leave_section(*r);
  return called;
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
  /// A new, empty list reporting handler errors to `b`'s error hook.
  /// Thread safety: constructing is not concurrent with anything on this object.
  /// Allocation: the list state. Errors: aborts if out of memory (construction).
  explicit sub_list(bus& b);
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
  /// True once destroy() has begun. Thread safety: any thread. Memory ordering: acquire.
  [[nodiscard]] bool is_destroyed() const noexcept;

  /// Is any active or paused subscription listening for any subtype of `type`? Cheap (three
  /// loads); racy by nature. Thread safety: any thread. Allocation: none.
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
      const std::source_location& where = std::source_location::current()) {
    using handler_t = std::decay_t<H>;
    static_assert(std::is_invocable_v<handler_t&, sync_event<F>&>,
                  "a sync handler is callable as void(herald::sync_event<F>&)");
    if (type.family() != family_id_of<F>() || type.subtypes() == 0) {
      return unexpected(errc::family_mismatch);
    }
    detail::sub_core* s = detail::allocate_sub();
    if (s == nullptr) {
      return unexpected(errc::no_memory);
    }
    if constexpr (detail::handler_fits_inline<handler_t>) {
      try {
        s->handler = ::new (static_cast<void*>(s->inline_handler)) handler_t(std::forward<H>(handler));
      } catch (...) {
        detail::free_sub(s);
        throw;
      }
      s->invoke = &detail::invoke_sync_inline<F, handler_t>;
      s->destroy = &detail::destroy_inline_handler<handler_t>;
    } else {
      try {
        s->handler = new handler_t(std::forward<H>(handler));
      } catch (const std::bad_alloc&) {
        detail::free_sub(s);
        return unexpected(errc::no_memory);
      } catch (...) {
        detail::free_sub(s);
        throw;
      }
      s->invoke = &detail::invoke_sync_heap<F, handler_t>;
      s->destroy = &detail::destroy_heap_handler<handler_t>;
    }
    return detail::subscribe_core(*core_, type, s, opt, where);
  }

  /// Publishes one event of family F and subtype `sub` to this list: every active sync
  /// subscription to that subtype runs now, in subscription order, and sees `safe` (and
  /// `unsafe`, if given). Returns how many handlers ran.
  /// Thread safety: any thread. Handler context: allowed (nested publishes). Blocking: none
  /// besides the handlers. Allocation: none (after the thread's first publish). Ownership:
  /// `safe` and `unsafe` are borrowed for the call. Errors: list_destroyed (no handler ran).
  /// Handler exceptions are caught, counted and reported to the error hook; publish never
  /// throws. Ordering: handlers run in subscription order; see docs for subscriptions made or
  /// ended during the publish.
  template <family_declaration F>
  result<std::size_t> publish(typename F::subtype sub,
                              const typename F::safe_part& safe) const noexcept {
    return publish_erased(type_of<F>(sub), static_cast<unsigned>(sub), &safe, nullptr);
  }
  template <family_declaration F>
    requires has_unsafe_part_v<F>
  result<std::size_t> publish(typename F::subtype sub, const typename F::safe_part& safe,
                              typename F::unsafe_part& unsafe) const noexcept {
    return publish_erased(type_of<F>(sub), static_cast<unsigned>(sub), &safe, &unsafe);
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

 private:
  result<std::size_t> publish_erased(event_type type, unsigned bit, const void* safe,
                                     void* unsafe) const noexcept {
    return detail::publish_raw(*core_, type, bit, safe, unsafe);
  }

  detail::list_core* core_;
};

/// The bus: the global subscription list and the error hook.
///
/// Lifetime: the destructor destroys the global list and reclaims everything retired; it must
/// not run while another thread uses the bus. Lists made with this bus keep the shared error
/// state alive, so they may outlive it (their handler errors then go unreported).
class bus {
 public:
  /// Thread safety: constructing is not concurrent with anything on this object.
  bus();
  bus(const bus&) = delete;
  bus& operator=(const bus&) = delete;
  ~bus();

  /// The bus's own list (HAProxy's global list). Thread safety: any thread. Allocation: none.
  /// Ownership: owned by the bus; valid until the bus is destroyed.
  [[nodiscard]] sub_list& global() noexcept { return *global_; }

  /// Replaces the error hook (empty: none). Thread safety: any thread; a publish already
  /// reporting may still call the previous hook. Handler context: allowed. Allocation: yes.
  void set_error_hook(error_hook hook);

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
