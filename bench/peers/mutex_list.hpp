// bench/peers/mutex_list.hpp - benchmark peer of herald::mt_list: std::list<T*> under one
// std::mutex.
//
// What it is
//   What a careful user writes instead of mt_list: one std::mutex guarding one std::list of
//   element pointers. Every operation holds the mutex for its whole length; a walk holds it for
//   the whole walk, so walkers exclude each other as well as writers.
//
// Allocation-free by splicing
//   Each element carries a hook that owns a one-element std::list<T*> (its "slot") and the
//   iterator of that entry. Adding an element splices the entry from the slot into the shared
//   list; removing or popping it splices it back. Splicing one entry is O(1), allocates nothing
//   and keeps the iterator valid, so remove() by direct access is O(1) as well. The hook
//   allocates its entry once, when it is constructed. The benchmark therefore measures the lock
//   and the list, not malloc: a std::list that allocates on push and frees on erase is slower.
//
// Lifetime
//   The list does not own its elements. An element must be detached when it is destroyed;
//   destroying the list detaches every element still in it.
//
// Memory ordering
//   The mutex orders everything: the hook fields of a listed element are read and written only
//   under the mutex of the list that holds it; those of a detached element only by its owner.
#pragma once

#include <cstddef>
#include <list>
#include <mutex>
#include <type_traits>

namespace herald::bench {

template <class T>
class mutex_list;

/// Base class that makes T an element of mutex_list<T> (CRTP: `struct n : mutex_list_hook<n>`).
/// Allocation: one std::list entry, at construction.
template <class T>
class mutex_list_hook {
 public:
  mutex_list_hook() : slot_(1, nullptr), pos_(slot_.begin()) {}
  mutex_list_hook(const mutex_list_hook&) = delete;
  mutex_list_hook& operator=(const mutex_list_hook&) = delete;
  ~mutex_list_hook() = default;

 private:
  friend class mutex_list<T>;
  std::list<T*> slot_;                    // holds the entry while the element is detached
  typename std::list<T*>::iterator pos_;  // the entry: in slot_, or in the list that holds it
};

/// One std::mutex, one std::list<T*>. Thread safety: every member may be called from any thread
/// concurrently with any other, except the destructor. Blocking: waits for the mutex.
/// Allocation: none. Errors: none.
template <class T>
class mutex_list {
  using hook = mutex_list_hook<T>;

 public:
  mutex_list() noexcept {
    static_assert(std::is_base_of_v<hook, T>, "T must derive from mutex_list_hook<T>");
  }
  mutex_list(const mutex_list&) = delete;
  mutex_list& operator=(const mutex_list&) = delete;
  ~mutex_list() { clear(); }

  /// Adds the detached element `el` at the back. `el` must not be touched by other threads.
  void append(T& el) noexcept { add(el, false); }
  /// Adds the detached element `el` at the front. `el` must not be touched by other threads.
  void insert(T& el) noexcept { add(el, true); }

  /// Removes `el` if it is in this list (true); false if it is detached. `el` must not be in
  /// another mutex_list.
  bool remove(T& el) noexcept {
    hook& h = el;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (!h.slot_.empty()) {
      return false;
    }
    h.slot_.splice(h.slot_.end(), items_, h.pos_);
    return true;
  }

  /// Takes the first element out, detached; nullptr if the list is empty.
  [[nodiscard]] T* pop() noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    return pop_held();
  }

  /// Pops every element; returns how many.
  std::size_t clear() noexcept {
    const std::lock_guard<std::mutex> lock(mutex_);
    std::size_t n = 0;
    while (pop_held() != nullptr) {
      ++n;
    }
    return n;
  }

  /// Calls f(T&) on every element, front to back, with the mutex held throughout. f must not
  /// call back into this list.
  template <class F>
  void for_each(F&& f) {
    const std::lock_guard<std::mutex> lock(mutex_);
    for (T* el : items_) {
      f(*el);
    }
  }

 private:
  void add(T& el, bool front) noexcept {
    hook& h = el;
    *h.pos_ = &el;  // the element is detached: only its owner touches the entry
    const std::lock_guard<std::mutex> lock(mutex_);
    items_.splice(front ? items_.begin() : items_.end(), h.slot_, h.pos_);
  }

  // Precondition: mutex_ is held.
  T* pop_held() noexcept {
    if (items_.empty()) {
      return nullptr;
    }
    T* el = items_.front();
    hook& h = *el;
    h.slot_.splice(h.slot_.end(), items_, items_.begin());
    return el;
  }

  std::mutex mutex_;
  std::list<T*> items_;  // guarded by mutex_
};

}  // namespace herald::bench
