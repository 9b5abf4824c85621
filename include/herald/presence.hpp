// herald/presence.hpp - emitter presence: components declare which event types they publish,
// and anyone can ask how many publishers and subscribers a type has, or wait for a publisher.
//
// What it is
//   The libp2p event bus RFC's emitter presence (FailIfNoEmitters, Stat), per bus. A component
//   that publishes a type declares it with declare_emitter() and keeps the returned `emitter`
//   handle for as long as it publishes; destroying the handle undeclares. A subscriber that
//   needs a publisher (a dashboard waiting for the health checker) asks presence() or waits
//   with wait_for_emitter(). Declarations are advisory: publishing needs none, and a declared
//   emitter is not obliged to publish. They are per bus, not per list.
//
// Matching
//   An emitter is declared for one family and a nonempty set of its subtypes; it counts for
//   a type of the same family whose subtypes intersect its own (an emitter of SERVER_DOWN
//   counts for SERVER, for SERVER_UP|SERVER_DOWN and for SERVER_DOWN, not for SERVER_UP).
//   Subscribers are counted the same way over the bus's live lists; wildcard subscriptions
//   (which receive every family) are counted apart.
//
// Lifetime and shutdown
//   An emitter handle keeps the bus's shared state alive: it may outlive the bus, and
//   destroying it afterwards is safe. Declarations made before the bus shut down stay
//   counted until their handles go; a declaration after it is refused (errc::shutting_down),
//   and shutdown wakes every wait_for_emitter() (which then returns false, unless a matching
//   emitter is declared).
//
// Memory ordering
//   Declarations live under one mutex per bus, which orders a declaration (and the
//   handle's destruction) before every presence() and wait_for_emitter() that sees it;
//   wait_for_emitter() waits on a condition variable of that mutex, notified by every
//   declaration and by shutdown.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "herald/bus.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"

namespace herald {

class emitter;

/// Declares that the caller publishes events of `type` on `b` (any list of it), until the
/// returned handle is destroyed or reset.
/// Thread safety: any thread. Handler context: allowed. Blocking: the bus's presence mutex,
/// briefly. Allocation: one entry in the bus's declarations. Ownership: the handle holds a
/// reference on the bus's shared state (not on the bus object). Errors: family_mismatch (an
/// empty type, a family nobody declared, or subtypes the family does not declare),
/// shutting_down (the bus shut down), no_memory. Ordering: every presence() and
/// wait_for_emitter() that starts after this returns sees the declaration; waiters are woken.
[[nodiscard]] result<emitter> declare_emitter(bus& b, event_type type) noexcept;

/// A declared emitter (see declare_emitter()): RAII, move-only. Destroying it (or reset())
/// undeclares. An empty handle (default-constructed, moved from, reset) declares nothing.
/// Thread safety: one handle object per thread at a time; distinct handles are independent.
class emitter {
 public:
  /// An empty handle. Thread safety: any thread. Allocation: none. Errors: none.
  emitter() noexcept = default;
  emitter(const emitter&) = delete;
  emitter& operator=(const emitter&) = delete;
  /// Takes over `o`'s declaration (`o` becomes empty). Blocking: never. Allocation: none.
  emitter(emitter&& o) noexcept
      : bus_(std::exchange(o.bus_, nullptr)),
        token_(std::exchange(o.token_, 0)),
        type_(std::exchange(o.type_, event_type())) {}
  /// Undeclares this handle's declaration, then takes over `o`'s. Blocking: as reset().
  emitter& operator=(emitter&& o) noexcept {
    if (this != &o) {
      reset();
      bus_ = std::exchange(o.bus_, nullptr);
      token_ = std::exchange(o.token_, 0);
      type_ = std::exchange(o.type_, event_type());
    }
    return *this;
  }
  /// reset().
  ~emitter() { reset(); }

  /// Undeclares (idempotent; the handle becomes empty) and drops the reference on the bus's
  /// shared state, possibly its last one (then that state is freed here).
  /// Thread safety: not concurrently with other uses of this handle object. Handler context:
  /// allowed. Blocking: the bus's presence mutex, briefly. Allocation: none. Errors: none.
  /// Ordering: presence() calls that start after it returns no longer count it.
  void reset() noexcept;

  /// True if the handle holds a declaration. Thread safety: as reset(). Blocking: never.
  /// Allocation: none. Errors: none.
  explicit operator bool() const noexcept { return bus_ != nullptr; }
  /// The declared type (the empty type for an empty handle). Thread safety: as reset().
  /// Blocking: never. Allocation: none. Errors: none.
  [[nodiscard]] event_type type() const noexcept { return type_; }

 private:
  friend result<emitter> declare_emitter(bus& b, event_type type) noexcept;
  emitter(detail::bus_core* b, std::uint64_t token, event_type type) noexcept
      : bus_(b), token_(token), type_(type) {}

  detail::bus_core* bus_ = nullptr;  // holds a reference (bus_core::refs)
  std::uint64_t token_ = 0;          // the declaration's key in the bus's table
  event_type type_;
};

/// What presence() counts for one type.
struct type_presence {
  /// Declared emitters of the same family whose subtypes intersect the type's.
  std::size_t emitters = 0;
  /// Subscriptions (paused ones included) of the same family whose subtypes intersect the
  /// type's, over every live list of the bus.
  std::size_t subscribers = 0;
  /// Wildcard subscriptions over every live list of the bus (they receive every type).
  std::size_t wildcard_subscribers = 0;
};

/// How many emitters and subscribers `type` has on `b` now (racy by nature: both may change
/// as soon as it returns). All zero for an empty type.
/// Thread safety: any thread. Handler context: allowed. Blocking: the presence mutex, then
/// the bus's list registry mutex, then each list's mutex in turn (never two at once), each
/// briefly. Allocation: a temporary vector of the bus's lists. Ownership: `b` is borrowed for
/// the call. Errors: std::bad_alloc. Ordering: as describe_lists() (herald/introspect.hpp).
[[nodiscard]] type_presence presence(bus& b, event_type type);

/// Waits until an emitter of a type intersecting `type` is declared on `b` (true; at once if
/// one already is), or until `timeout` passed or the bus shut down with none declared (false).
/// An empty type returns false at once. A zero or negative timeout only checks.
/// Thread safety: any thread. Handler context: allowed, but it blocks the publish (or the
/// worker) running the handler: pass a zero timeout there. Blocking: up to `timeout`.
/// Allocation: none. Ownership: `b` must be alive when the call starts; the call keeps the
/// bus's shared state alive, so a waiter woken by the bus's destruction (shutdown) returns
/// safely. Errors: none (false). Ordering: a true return happens after the declaration.
[[nodiscard]] bool wait_for_emitter(bus& b, event_type type,
                                    std::chrono::milliseconds timeout) noexcept;

}  // namespace herald
