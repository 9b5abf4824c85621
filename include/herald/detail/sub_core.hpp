// herald/detail/sub_core.hpp - the shared state of one subscription, and the immutable
// snapshot ("directory") that publishers walk. Needed by the inline publish path; no stability
// promise.
//
// Snapshot layout (immutable once published; writers replace pieces copy-on-write and retire
// the old ones, which are freed after a grace period):
//   directory    one slot per family id (nullptr: nobody in this list subscribes to it)
//   family_slot  one array per subtype bit (nullptr: nobody subscribes to that subtype)
//   sub_array    the subscriptions that match, in subscription order
// A publish of (family f, subtype bit b) reads three pointers and walks exactly the matching
// subscriptions: its cost does not depend on other families' or subtypes' subscriptions.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "herald/detail/quiescence.hpp"
#include "herald/event_type.hpp"
#include "herald/source_location.hpp"

namespace herald::detail {

struct sub_core;
struct list_core;
struct deferred_core;

struct sub_array {
  retire_node retire;  // first member: reclaimed after a grace period
  std::uint32_t size = 0;
  // items[0, sync_count) are sync subscriptions, items[sync_count, size) async and queue ones;
  // each part in subscription order.
  std::uint32_t sync_count = 0;
  // `size` pointers follow the header in the same allocation (see items()).
  sub_core* const* items() const noexcept {
    return reinterpret_cast<sub_core* const*>(this + 1);
  }
  sub_core** items() noexcept { return reinterpret_cast<sub_core**>(this + 1); }
};

/// The array of a subtype nobody subscribes to (size 0). Never retired.
extern constinit const sub_array empty_array;

struct family_slot {
  retire_node retire;
  subtype_mask subscribed = 0;  // bits that have a non-empty array
  const sub_array* by_bit[max_subtypes];  // never nullptr: &empty_array when nobody subscribes

  constexpr family_slot() noexcept {
    for (const sub_array*& a : by_bit) {
      a = &empty_array;
    }
  }
};

/// The slot of a family nobody subscribes to (every bit: empty_array). Never retired. The
/// sentinels let a publish go directory -> slot -> array without a null test.
extern constinit const family_slot empty_slot;

/// Flags of a directory (directory::flags), read by every publish on the line it reads anyway.
inline constexpr std::uint32_t dir_ended = 1;         // destroyed or shut down: an error
inline constexpr std::uint32_t dir_has_wildcard = 2;  // `wildcard` is not empty

struct directory {
  retire_node retire;
  std::uint32_t families = 0;  // `families` slot pointers (never nullptr) follow the header
  std::uint32_t flags = 0;     // dir_ended | dir_has_wildcard
  // Wildcard subscriptions (every family), sync first; &empty_array when there are none.
  const sub_array* wildcard = &empty_array;
  const family_slot* const* slots() const noexcept {
    return reinterpret_cast<const family_slot* const*>(this + 1);
  }
  const family_slot** slots() noexcept { return reinterpret_cast<const family_slot**>(this + 1); }
};

/// The snapshot of a destroyed list: no family, and publishes to it report list_destroyed.
/// (The snapshot of a live empty list is another object, so that one load tells both apart.)
extern constinit directory destroyed_directory;
/// The snapshot of a list ended by the bus's shutdown: publishes report shutting_down.
extern constinit directory shutdown_directory;

/// Flags of a subscription (sub_core::flags).
inline constexpr std::uint32_t sub_ended = 1;
inline constexpr std::uint32_t sub_paused = 2;

/// The `type` of a wildcard subscription: no real family has this id (max_families is smaller).
inline constexpr family_id wildcard_family = 0xFFFF;

struct payload_ops;

/// Calls a sync wildcard handler (it also needs the family's payload operations: the codec).
using invoke_any_fn = void (*)(sub_core&, event_type, const void* safe, const payload_ops& ops);

/// The event as a handler sees it, type-erased.
struct raw_event {
  event_type type;
  const void* safe;  // F::safe_part
  void* unsafe;      // F::unsafe_part, or nullptr
};

/// Calls a sync handler. The event goes in registers (a raw_event, at 24 bytes, would be
/// passed through memory).
using invoke_fn = void (*)(sub_core&, event_type, const void* safe, void* unsafe);
using destroy_fn = void (*)(void*) noexcept;

/// Packs an event_type into one word so that it can be read atomically.
inline std::uint64_t pack_type(event_type t) noexcept {
  return (std::uint64_t{t.family()} << 32) | t.subtypes();
}
inline event_type unpack_type(std::uint64_t v) noexcept {
  return event_type(static_cast<family_id>(v >> 32), static_cast<subtype_mask>(v));
}

/// One subscription. Lifetime: refcounted (`refs`): one reference for the list membership
/// (dropped after the grace period that follows its end), one per handle, and for async and
/// queue subscriptions one for the consumer (the drain task, or the user's event_queue). A sync
/// handler is destroyed when the membership reference is dropped: exactly once, after no
/// publisher can reach it. An async handler is destroyed by its drain task when it reaches the
/// END node, which is queued once the membership ends (so after every event). The record
/// itself is freed when the last reference goes.
struct alignas(64) sub_core {
  // Hot: what every publish reads, kept on one cache line.
  std::atomic<std::uint32_t> flags{0}; // sub_ended | sub_paused; written under the list mutex
  invoke_fn invoke = nullptr;
  void* handler = nullptr;             // the user's callable (owned): inline_handler or heap
  // Small handlers (most lambdas) live here, on the same cache line, and their invoke function
  // uses this address directly: no pointer to chase and no allocation of their own.
  static constexpr std::size_t inline_size = 40;
  alignas(8) unsigned char inline_handler[inline_size];
  // Cold: writers, handles, diagnostics.
  retire_node retire;                  // reclaimed after a grace period (owner == this)
  std::atomic<std::uint32_t> refs{1};  // acq_rel decrements; the last one frees
  std::atomic<std::uint64_t> type;     // pack_type(); written under the list mutex
  std::atomic<std::uint64_t> exceptions{0};
  std::uint64_t id = 0;                // 0: anonymous
  std::uint64_t seq = 0;               // subscription order within the list
  list_core* list = nullptr;           // holds a reference on the list core
  destroy_fn destroy = nullptr;
  sub_core* stale_next = nullptr;      // chain of ended-but-still-referenced subscriptions
  deferred_core* deferred = nullptr;   // async and queue subscriptions (owned); sync: nullptr
  invoke_any_fn invoke_any = nullptr;  // sync wildcard subscriptions (invoke is then unused)
  std::string name;                    // optional, for diagnostics
  const char* file = "";               // origin
  std::uint32_t line = 0;
};

/// Whether a handler of type H is stored inside its sub_core.
template <class H>
inline constexpr bool handler_fits_inline = sizeof(H) <= sub_core::inline_size &&
                                            alignof(H) <= 8 &&
                                            std::is_nothrow_destructible_v<H>;

/// Allocates a blank sub_core (nullptr when out of memory) / frees one that was never
/// subscribed. Thread safety: any thread. Allocation: one object.
sub_core* allocate_sub() noexcept;
void free_sub(sub_core* s) noexcept;

/// True if `s` may be called now (not ended, not paused).
/// Memory ordering: acquire; pairs with the release store of the flags by the writer.
inline bool sub_callable(const sub_core& s) noexcept {
  return (s.flags.load(std::memory_order_acquire) & (sub_ended | sub_paused)) == 0;
}

}  // namespace herald::detail
