// Emitter presence (herald/presence.hpp). The declarations of a bus are a table in its
// bus_core (token -> declared type) under presence_mutex; wait_for_emitter() waits on
// presence_cv, which declare_emitter() and bus::shutdown() (through wake_emitter_waiters())
// notify under that mutex, so that a waiter that checked its condition cannot miss the
// notification that changes it.
#include "herald/presence.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <utility>

#include "core/internal.hpp"

namespace herald {

namespace detail {

// Defined in src/core/introspect.cpp: the subscriptions of b's live lists of type's family
// whose subtypes intersect it, and the wildcard ones.
std::pair<std::size_t, std::size_t> count_subscribers(bus_core& b, event_type type);

namespace {

// A nonempty set of declared subtypes of a declared family.
bool declared_type(event_type t) noexcept {
  const auto n = subtype_count(t.family());
  if (!n || t.subtypes() == 0) {
    return false;
  }
  return (t.subtypes() & ~first_subtypes(*n)) == 0;
}

bool intersects(event_type declared, event_type wanted) noexcept {
  return declared.family() == wanted.family() && (declared.subtypes() & wanted.subtypes()) != 0;
}

// presence_mutex held.
std::size_t count_emitters(const bus_core& b, event_type type) noexcept {
  std::size_t n = 0;
  for (const auto& [token, declared] : b.emitters) {
    if (intersects(declared, type)) {
      ++n;
    }
  }
  return n;
}

}  // namespace

void wake_emitter_waiters(bus_core& b) noexcept {
  std::lock_guard lock(b.presence_mutex);
  b.presence_cv.notify_all();
}

}  // namespace detail

result<emitter> declare_emitter(bus& b, event_type type) noexcept {
  if (!detail::declared_type(type)) {
    return unexpected(errc::family_mismatch);
  }
  detail::bus_core& core = b.core();
  std::uint64_t token = 0;
  {
    std::lock_guard lock(core.presence_mutex);
    // acquire: pairs with shutdown's release store (made before it wakes the waiters).
    if (core.shutting_down.load(std::memory_order_acquire)) {
      return unexpected(errc::shutting_down);
    }
    token = core.next_emitter++;
    try {
      core.emitters.emplace(token, type);
    } catch (const std::bad_alloc&) {
      return unexpected(errc::no_memory);
    }
    core.presence_cv.notify_all();
  }
  // relaxed: taking a reference from the bus's own, which the caller's bus& keeps alive.
  core.refs.fetch_add(1, std::memory_order_relaxed);
  return emitter(&core, token, type);
}

void emitter::reset() noexcept {
  if (bus_ == nullptr) {
    return;
  }
  detail::bus_core* b = std::exchange(bus_, nullptr);
  {
    std::lock_guard lock(b->presence_mutex);
    b->emitters.erase(std::exchange(token_, 0));
  }
  type_ = event_type();
  detail::bus_release(b);
}

type_presence presence(bus& b, event_type type) {
  type_presence p;
  if (type.is_empty()) {
    return p;
  }
  detail::bus_core& core = b.core();
  {
    std::lock_guard lock(core.presence_mutex);
    p.emitters = detail::count_emitters(core, type);
  }
  const auto [matching, wildcard] = detail::count_subscribers(core, type);
  p.subscribers = matching;
  p.wildcard_subscribers = wildcard;
  return p;
}

bool wait_for_emitter(bus& b, event_type type, std::chrono::milliseconds timeout) noexcept {
  if (type.is_empty()) {
    return false;
  }
  detail::bus_core& core = b.core();
  // Kept alive for the wait: the bus may be destroyed (after its shutdown woke us) before
  // this thread gets the mutex back. relaxed: taking a reference from the bus's own, which
  // the caller's bus& keeps alive; bus_release()'s acq_rel decrement orders the last use.
  core.refs.fetch_add(1, std::memory_order_relaxed);
  bool found = false;
  {
    std::unique_lock lock(core.presence_mutex);
    const auto done = [&] {
      found = detail::count_emitters(core, type) != 0;
      // acquire: pairs with shutdown's release store, made before its notification.
      return found || core.shutting_down.load(std::memory_order_acquire);
    };
    using clock = std::chrono::steady_clock;
    const clock::time_point now = clock::now();
    if (timeout <= std::chrono::milliseconds::zero()) {
      (void)done();
    } else if (timeout >= std::chrono::duration_cast<std::chrono::milliseconds>(
                              clock::time_point::max() - now)) {
      core.presence_cv.wait(lock, done);  // no representable deadline: wait without one
    } else {
      (void)core.presence_cv.wait_until(lock, now + timeout, done);
    }
  }
  detail::bus_release(&core);
  return found;
}

}  // namespace herald
