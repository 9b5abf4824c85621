// bench/peers/raw_loop.hpp - benchmark peer of herald's sync publish: a vector of plain function
// pointers with a context pointer each, walked without any synchronisation.
//
// What it is
//   The floor: what a publish costs when nothing can change while it runs. Connecting appends a
//   (function, context) pair; emitting calls each pair in connection order through one
//   indirect call. There is no lock, no snapshot, no flag check and no exception handling, so
//   the list must not change while any thread emits: the benchmark fills it before the timed
//   loop and empties it after.
//
// Lifetime
//   The signal does not own the contexts; they must outlive every emit that may reach them.
//
// Memory ordering
//   None. connect() and clear() must be ordered before and after every emit by the caller (the
//   benchmark relies on Google Benchmark's start and end barriers for that); concurrent emits
//   only read.
#pragma once

#include <cstddef>
#include <vector>

namespace herald::bench {

/// A vector of (function pointer, context) pairs, called in order by emit().
/// Thread safety: emit() may run on any number of threads at once; connect() and clear() must
/// not run concurrently with anything. Allocation: connect() may grow the vector; emit() never
/// allocates. Errors: none (connect() may throw std::bad_alloc).
template <class Payload>
class raw_loop {
 public:
  using handler_fn = void (*)(void* ctx, const Payload& payload) noexcept;

  /// Appends `fn`, which emit() will call with `ctx`.
  void connect(handler_fn fn, void* ctx) { slots_.push_back(slot{fn, ctx}); }

  /// Calls every connected function, in connection order.
  void emit(const Payload& payload) const noexcept {
    for (const slot& s : slots_) {
      s.fn(s.ctx, payload);
    }
  }

  /// Disconnects everything.
  void clear() noexcept { slots_.clear(); }

  [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }

 private:
  struct slot {
    handler_fn fn;
    void* ctx;
  };
  std::vector<slot> slots_;
};

}  // namespace herald::bench
