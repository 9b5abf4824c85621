// bench/peers/mutex_vector.hpp - benchmark peer of herald's sync publish: a std::vector of
// std::function under one std::mutex, held while the handlers run.
//
// What it is
//   The simple thread-safe observer list most code bases start with: connect() appends under
//   the mutex, emit() takes the same mutex and calls every std::function in order while
//   holding it. Emitters on different threads therefore run one at a time, and a handler that
//   connects or emits on the same object deadlocks (std::mutex is not recursive): herald allows
//   both. That simplicity is the point of the comparison.
//
// Lifetime
//   The std::function objects (and what they captured) live until clear() or destruction.
//
// Memory ordering
//   The mutex orders everything: the vector is read and written only while it is held.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace herald::bench {

/// std::mutex + std::vector<std::function<void(const Payload&)>>, the lock held for the whole
/// emit. Thread safety: every member may be called from any thread concurrently with any other,
/// except the destructor; never from inside a handler of the same object (deadlock).
/// Blocking: waits for the mutex. Allocation: connect() (the vector, the std::function);
/// emit() never. Errors: none (connect() may throw std::bad_alloc).
template <class Payload>
class mutex_vector {
 public:
  using handler = std::function<void(const Payload&)>;

  /// Appends `h`; later emits call it after the handlers connected before it.
  void connect(handler h) {
    std::lock_guard lock(mutex_);
    handlers_.push_back(std::move(h));
  }

  /// Calls every handler, in connection order, with the mutex held.
  void emit(const Payload& payload) const {
    std::lock_guard lock(mutex_);
    for (const handler& h : handlers_) {
      h(payload);
    }
  }

  /// Disconnects (and destroys) every handler.
  void clear() noexcept {
    std::lock_guard lock(mutex_);
    handlers_.clear();
  }

  [[nodiscard]] std::size_t size() const noexcept {
    std::lock_guard lock(mutex_);
    return handlers_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<handler> handlers_;  // protected by mutex_
};

}  // namespace herald::bench
