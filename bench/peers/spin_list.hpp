// bench/peers/spin_list.hpp - benchmark peer of herald::mt_list: an intrusive doubly linked list
// under one test-and-test-and-set spinlock.
//
// What it is
//   The other classic answer: one lock word for the whole list, taken by spinning rather than by
//   sleeping, around a plain intrusive circular list (a head plus prev/next pointers in each
//   element, self-looped when detached, as in mt_list). Like mt_list it never sleeps and never
//   allocates; unlike mt_list every operation and every walk excludes every other.
//
// The lock
//   Test-and-test-and-set: one exchange to try; on failure, spin on plain loads (which stay in
//   the local cache until the holder releases the line) with a CPU pause hint per spin, then
//   try again. No back-off and no yield: when threads outnumber cores, a waiter can burn its
//   whole time slice while the holder is descheduled. That is part of what the benchmark shows.
//
// Lifetime
//   The list does not own its elements. An element must be detached when it is destroyed;
//   destroying the list detaches every element still in it.
//
// Memory ordering
//   lock: exchange(true, acquire), pairs with the release store of the previous unlock();
//   the waiting loads are relaxed (they only decide when to retry the exchange).
//   unlock: store(false, release), pairs with the acquire exchange of the next lock().
//   The links of a listed element are accessed only under the lock of its list.
#pragma once

#include <atomic>
#include <cstddef>
#include <type_traits>

namespace herald::bench {

/// One CPU relaxation hint. Thread safety: any thread. Blocking: one instruction.
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// A test-and-test-and-set spinlock (BasicLockable). Thread safety: any thread.
/// Blocking: spins until the lock is free; never sleeps or yields. Allocation: none.
class spin_lock {
 public:
  void lock() noexcept {
    // acquire: pairs with the release store in unlock().
    while (locked_.exchange(true, std::memory_order_acquire)) {
      // relaxed: only a hint of when to retry; the exchange above does the synchronising.
      while (locked_.load(std::memory_order_relaxed)) {
        spin_pause();
      }
    }
  }
  // release: pairs with the acquire exchange in lock().
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

template <class T>
class spin_list;

/// Base class that makes T an element of spin_list<T>. A new hook is detached (self-looped).
class spin_list_hook {
 public:
  spin_list_hook() noexcept : prev_(this), next_(this) {}
  spin_list_hook(const spin_list_hook&) = delete;
  spin_list_hook& operator=(const spin_list_hook&) = delete;
  ~spin_list_hook() = default;

 private:
  template <class T>
  friend class spin_list;
  spin_list_hook* prev_;  // guarded by the lock of the list that holds the element
  spin_list_hook* next_;  // idem
};

/// One spin_lock, one intrusive circular list. Thread safety: every member may be called from
/// any thread concurrently with any other, except the destructor. Blocking: spins for the lock.
/// Allocation: none. Errors: none.
template <class T>
class spin_list {
 public:
  spin_list() noexcept {
    static_assert(std::is_base_of_v<spin_list_hook, T>, "T must derive from spin_list_hook");
  }
  spin_list(const spin_list&) = delete;
  spin_list& operator=(const spin_list&) = delete;
  ~spin_list() { clear(); }

  /// Adds the detached element `el` at the back. `el` must not be touched by other threads.
  void append(T& el) noexcept {
    lock_.lock();
    link_between(el, *head_.prev_, head_);
    lock_.unlock();
  }
  /// Adds the detached element `el` at the front. `el` must not be touched by other threads.
  void insert(T& el) noexcept {
    lock_.lock();
    link_between(el, head_, *head_.next_);
    lock_.unlock();
  }

  /// Removes `el` if it is in this list (true); false if it is detached. `el` must not be in
  /// another spin_list.
  bool remove(T& el) noexcept {
    spin_list_hook& h = el;
    lock_.lock();
    const bool listed = h.next_ != &h;
    if (listed) {
      unlink(h);
    }
    lock_.unlock();
    return listed;
  }

  /// Takes the first element out, detached; nullptr if the list is empty.
  [[nodiscard]] T* pop() noexcept {
    lock_.lock();
    T* el = pop_held();
    lock_.unlock();
    return el;
  }

  /// Pops every element; returns how many.
  std::size_t clear() noexcept {
    lock_.lock();
    std::size_t n = 0;
    while (pop_held() != nullptr) {
      ++n;
    }
    lock_.unlock();
    return n;
  }

  /// Calls f(T&) on every element, front to back, with the lock held throughout. f must not
  /// call back into this list, and must not throw (the lock would stay taken).
  template <class F>
  void for_each(F&& f) noexcept {
    lock_.lock();
    for (spin_list_hook* h = head_.next_; h != &head_; h = h->next_) {
      f(static_cast<T&>(*h));
    }
    lock_.unlock();
  }

 private:
  // Precondition for the three helpers: lock_ is held.
  static void link_between(spin_list_hook& el, spin_list_hook& prev,
                           spin_list_hook& next) noexcept {
    el.prev_ = &prev;
    el.next_ = &next;
    prev.next_ = &el;
    next.prev_ = &el;
  }
  static void unlink(spin_list_hook& el) noexcept {
    el.prev_->next_ = el.next_;
    el.next_->prev_ = el.prev_;
    el.prev_ = &el;
    el.next_ = &el;
  }
  T* pop_held() noexcept {
    spin_list_hook* first = head_.next_;
    if (first == &head_) {
      return nullptr;
    }
    unlink(*first);
    return static_cast<T*>(first);
  }

  spin_lock lock_;
  spin_list_hook head_;  // guarded by lock_
};

}  // namespace herald::bench
