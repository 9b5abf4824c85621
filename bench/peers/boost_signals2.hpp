// bench/peers/boost_signals2.hpp - benchmark peer of herald's sync publish: Boost.Signals2.
//
// What it is
//   boost::signals2::signal<void(const Payload&)>, the thread-safe signal/slot library most
//   often suggested for in-process events in C++, with its default mutex (boost::signals2::
//   mutex, a pthread mutex) and its default combiner (optional_last_value<void>). Used exactly
//   as documented: connect() a callable per slot, emit by calling the signal.
//
// What an emit does (Boost 1.74)
//   Locks the signal's mutex to copy a shared_ptr to the current slot list (an atomic
//   reference count increment, and a decrement at the end), then walks the list; for each slot
//   it locks that slot's own mutex to check that it is still connected and to lock its tracked
//   objects, and calls it through a boost::function. So every emit takes 1 + N mutexes and two
//   atomic read-modify-writes on a shared count, even with a single thread running.
//
// Lifetime
//   The signal owns copies of the connected callables; clear() disconnects them all (Boost may
//   free a disconnected slot later, when an emit or connect next cleans the list up).
//
// Memory ordering
//   Boost.Signals2's own: its mutexes and shared_ptr reference counts.
#pragma once

#include <boost/signals2/signal.hpp>
#include <cstddef>
#include <utility>

namespace herald::bench {

/// A thin adapter over boost::signals2::signal<void(const Payload&)>.
/// Thread safety: every member may be called from any thread concurrently with any other,
/// except the destructor (Boost.Signals2's guarantee). Blocking: the signal's and each slot's
/// mutex. Allocation: connect(); emit() may allocate when it cleans up disconnected slots.
/// Errors: connect() may throw std::bad_alloc; a throwing slot propagates out of emit().
template <class Payload>
class boost_signal {
 public:
  /// Connects `f` (callable as void(const Payload&)) at the back.
  template <class F>
  void connect(F&& f) {
    signal_.connect(std::forward<F>(f));
  }

  /// Calls every connected slot, in connection order.
  void emit(const Payload& payload) const { signal_(payload); }

  /// Disconnects every slot.
  void clear() { signal_.disconnect_all_slots(); }

  [[nodiscard]] std::size_t size() const { return signal_.num_slots(); }

 private:
  // signal::operator() is const in Boost 1.74, but keep the adapter correct for versions that
  // only offer the non-const call.
  mutable boost::signals2::signal<void(const Payload&)> signal_;
};

}  // namespace herald::bench
