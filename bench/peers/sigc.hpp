// bench/peers/sigc.hpp - benchmark peer of herald's sync publish: libsigc++ 3.
//
// What it is
//   sigc::signal<void(const Payload&)>, the signal/slot library of GTK's C++ bindings (gtkmm),
//   used as documented: connect() a callable per slot, emit() in connection order. libsigc++ is
//   not thread-safe: a signal and its slots belong to one thread, so the benchmark runs it on
//   one thread only. It is the single-threaded reference for a full-featured signal library.
//
// What an emit does (libsigc++ 3.4)
//   Copies the std::shared_ptr to the signal's implementation (an atomic reference count once
//   the process has a second thread) and bumps its plain execution counter, so that a slot may
//   disconnect slots safely; appends a placeholder slot to the std::list of slots (one
//   allocation, freed at the end: slots connected during the emit are not called); walks the
//   list up to the placeholder, skipping empty or blocked slots, and calls each through its
//   type-erased representation (an indirect call to a thunk that calls the functor).
//
// Lifetime
//   The signal owns copies of the connected callables; clear() disconnects and destroys them.
//
// Memory ordering
//   None: libsigc++ objects must only be used by one thread.
#pragma once

#include <sigc++/signal.h>

#include <cstddef>
#include <utility>

namespace herald::bench {

/// A thin adapter over sigc::signal<void(const Payload&)>.
/// Thread safety: none; one thread at a time (libsigc++'s rule). Allocation: connect();
/// emit() allocates and frees one std::list node (the placeholder). Errors: connect() may throw
/// std::bad_alloc; a throwing slot propagates out of emit().
template <class Payload>
class sigc_signal {
 public:
  /// Connects `f` (callable as void(const Payload&)) at the back.
  template <class F>
  void connect(F&& f) {
    signal_.connect(std::forward<F>(f));
  }

  /// Calls every connected slot, in connection order.
  void emit(const Payload& payload) const { signal_.emit(payload); }

  /// Disconnects every slot.
  void clear() { signal_.clear(); }

  [[nodiscard]] std::size_t size() const noexcept { return signal_.size(); }

 private:
  sigc::signal<void(const Payload&)> signal_;
};

}  // namespace herald::bench
