// herald/mt_list.hpp - an intrusive doubly linked list that many threads may change at once.
//
// What it is
//   A circular doubly linked list of `mt_link`s (a head plus elements) in which the link
//   pointers themselves are the locks. To work on a link, a thread atomically swaps a "busy"
//   marker into the pointer it needs; whoever reads the marker knows the link is being changed,
//   puts back whatever it had taken, backs off (herald/backoff.hpp) and retries. There is no
//   lock word: threads that work on distinct parts of the list never touch the same cache line,
//   and an operation holds at most four pointers (the links on either side of one element).
//   The design follows HAProxy's mt_list; the C++ shape is ours.
//
// Two levels
//   - `mt_list<T, Tag>`: the typed list. T derives from `mt_list_hook<Tag>` (one hook per list
//     that T may be in at the same time, told apart by Tag). It converts between T and its hook
//     with static_cast only: no offsetof, no pointer arithmetic.
//   - `mt_link` and its static functions: the raw element and the fine-grained lock API
//     (lock_next, lock_prev, lock_elem, lock_full, unlock_*, cut_around, reconnect), for code
//     that needs several steps under one lock, such as a pool that grows or shrinks an element.
//
// States of an element
//   detached      next == prev == self. What a new hook, a removed or popped element is.
//   listed        next and prev point at the neighbours.
//   locked        next and prev hold the busy marker: some thread owns the element. Nothing
//                 else can link, unlink or test it until that thread unlocks it.
//   A removed element is always returned detached, never left locked: HAProxy's QUIC hang came
//   from elements deleted inside an iterator and left busy, so that a later try_append spun.
//
// Iteration
//   `for_each_locked()` and `for_each_unlocked()` are ranges for range-for. Each step locks the
//   links on both sides of the current element, so other threads can keep working on the rest
//   of the list while the loop body runs. In the body, `cursor.erase()` removes the current
//   element and returns it detached, at once, ready to be reused or freed; `break`, `return`
//   and exceptions are all fine (the range's destructor reconnects the list). The two differ
//   in the state the current element shows to other threads during the body:
//   - locked: its own pointers are busy; any other thread that touches it waits for the step
//     to end. Use it when the body needs the element to stay put.
//   - unlocked: its own pointers show its neighbours, as for any listed element; a concurrent
//     try_append of it fails at once (it is listed) and a concurrent remove waits for the step
//     to end, exactly as with the locked walk. It costs two more atomic exchanges per step.
//   In neither body may the current element be passed to remove(), lock_*() or pop() of its
//   own list by the iterating thread (it would wait for itself); use cursor.erase().
//
// Memory ordering (every operation below uses only these accesses)
//   take  = exchange(busy, acquire) on a link pointer. Pairs with the release `put` that stored
//           the value taken, so that the element behind that pointer (its links and whatever
//           the publisher wrote to it before linking it) is visible to the taker.
//   put   = store(value, release) on a link pointer: unlocks it or restores it after a failed
//           attempt. Pairs with the next `take` of the same pointer.
//   hint  = load(relaxed) in is_empty_approx() and mt_link::is_linked_approx(): a racy read
//           that synchronises with nothing.
//   A thread that appends an element after writing its fields, and a thread that pops it and
//   reads them, are therefore ordered (put of the predecessor's next -> take in pop).
//
// Contracts common to every operation
//   Thread safety: any thread, concurrently with any other operation on the same or another
//   list, except where a function says otherwise. Blocking: spins with randomised exponential
//   back-off while a pointer it needs is busy; never sleeps, never allocates, never throws.
//   Ownership: the list never owns its elements; an element must outlive its membership.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "herald/backoff.hpp"
#include "herald/error.hpp"

namespace herald {

class mt_link;

/// The two ends of a cut link, as returned by the lock functions: `prev` and `next` are the
/// elements whose pointers were taken. A plain value; it owns nothing.
struct mt_ends {
  mt_link* prev = nullptr;
  mt_link* next = nullptr;
};

/// The raw list element and list head (HAProxy's `struct mt_list`), with the raw operations.
///
/// A default-constructed link is detached (self-looped); a head is a link that nobody removes.
/// Links are neither copyable nor movable: neighbours hold their address.
class mt_link {
 public:
  /// A detached link (next == prev == this). Allocation: none.
  mt_link() noexcept : next_(this), prev_(this) {}
  mt_link(const mt_link&) = delete;
  mt_link& operator=(const mt_link&) = delete;
  ~mt_link() = default;

  /// True if the link looked listed (or locked) at the time of the read: a hint, since another
  /// thread may change it at once. Thread safety: any thread. Memory ordering: relaxed.
  [[nodiscard]] bool is_linked_approx() const noexcept {
    return next_.load(std::memory_order_relaxed) != this;
  }

  // ---- Whole operations -------------------------------------------------------------------

  /// Inserts the detached element `el` right after `at` (at the front if `at` is a head).
  /// `el` must be detached and not touched by any other thread (use try_insert otherwise).
  static void insert(mt_link& at, mt_link& el) noexcept;

  /// Inserts the detached element `el` right before `at` (at the back if `at` is a head).
  /// `el` must be detached and not touched by any other thread (use try_append otherwise).
  static void append(mt_link& at, mt_link& el) noexcept;

  /// Like insert(), but only if `el` is detached; returns false (and changes nothing) if it is
  /// listed. `el` is locked before it is tested, so when several threads race to add the same
  /// element, exactly one succeeds.
  [[nodiscard]] static bool try_insert(mt_link& at, mt_link& el) noexcept;

  /// Like append(), but only if `el` is detached; returns false if it is listed. Exactly one of
  /// several racing callers succeeds.
  [[nodiscard]] static bool try_append(mt_link& at, mt_link& el) noexcept;

  /// Unlinks `el` from whatever list holds it and leaves it detached. Returns true if it was
  /// listed, false if it was already detached (safe to call on a detached element; nothing is
  /// unlocked twice). When several threads remove the same element, exactly one gets true.
  static bool remove(mt_link& el) noexcept;

  /// Unlinks and returns the first element after `head`, detached; nullptr if the list is
  /// empty.
  [[nodiscard]] static mt_link* pop(mt_link& head) noexcept;

  /// Like pop(), but the element comes out locked (both pointers busy), so that no other
  /// thread can link it until the caller calls unlock_self() on it. nullptr if empty.
  [[nodiscard]] static mt_link* pop_locked(mt_link& head) noexcept;

  // ---- Fine-grained lock API --------------------------------------------------------------
  // Each lock function returns the ends it cut; the caller must end the operation with exactly
  // one of the unlock functions named in its comment, from the same thread, without blocking
  // in between on anything another list operation could be waiting for.

  /// Locks the link between `el` and its next element. Returns {el, next}. End with
  /// unlock_link(ends) (cancel) or unlock_full(new_el, ends) (inserts new_el after `el`).
  [[nodiscard]] static mt_ends lock_next(mt_link& el) noexcept;

  /// Locks the link between `el` and its previous element. Returns {prev, el}. End with
  /// unlock_link(ends) or unlock_full(new_el, ends) (inserts new_el before `el`).
  [[nodiscard]] static mt_ends lock_prev(mt_link& el) noexcept;

  /// Locks the element's own two pointers without touching its neighbours (they keep pointing
  /// at it). Returns its previous pointers. End with unlock_elem(el, ends). Use it to inspect
  /// or freeze an element's state; a detached element comes back as {el, el}.
  [[nodiscard]] static mt_ends lock_elem(mt_link& el) noexcept;

  /// Restores the pointers saved by lock_elem(). Never blocks.
  static void unlock_elem(mt_link& el, mt_ends saved) noexcept;

  /// Locks `el` and both links around it, isolating it. Returns {prev, next} ({el, el} if it
  /// was detached). End with unlock_full(el, ends) to put it back, or unlock_link(ends) to close
  /// the list without it followed by unlock_self(el) (that pair is remove()).
  [[nodiscard]] static mt_ends lock_full(mt_link& el) noexcept;

  /// Resets `el` to detached, whatever it held. Only for an element the caller has locked and
  /// isolated (after lock_full + unlock_link, pop_locked, or a cursor). Never blocks.
  static void unlock_self(mt_link& el) noexcept;

  /// Connects ends.prev and ends.next to each other, releasing a link locked by lock_next,
  /// lock_prev, lock_full or cut_around (and dropping the element that was between them, which
  /// stays locked). Never blocks.
  static void unlock_link(mt_ends ends) noexcept;

  /// Links `el` between ends.prev and ends.next and unlocks everything: reinstates an element
  /// locked by lock_full/cut_around, or inserts a new element into a link locked by
  /// lock_next/lock_prev. `el`'s previous contents are overwritten. Never blocks.
  static void unlock_full(mt_link& el, mt_ends ends) noexcept;

  /// Cuts both links around `el` (the same operation as lock_full, under the name HAProxy's
  /// older API used). End with reconnect(el, ends) or unlock_link(ends) + unlock_self(el).
  [[nodiscard]] static mt_ends cut_around(mt_link& el) noexcept { return lock_full(el); }

  /// Puts back an element cut by cut_around (the same operation as unlock_full).
  static void reconnect(mt_link& el, mt_ends ends) noexcept { unlock_full(el, ends); }

 private:
  template <class T, class Tag, bool>
  friend class mt_cursor;

  // The busy marker: never a valid element address (objects are at least 2-byte aligned).
  static mt_link* busy() noexcept { return reinterpret_cast<mt_link*>(std::uintptr_t{1}); }
  // take/put: see "Memory ordering" at the top of this file.
  static mt_link* take(std::atomic<mt_link*>& p) noexcept {
    return p.exchange(busy(), std::memory_order_acquire);
  }
  static void put(std::atomic<mt_link*>& p, mt_link* v) noexcept {
    p.store(v, std::memory_order_release);
  }
  // Iterator helpers: lock el->next and (unless el loops onto itself) its partner's prev;
  // returns the next element.
  static mt_link* lock_next_link(mt_link& el) noexcept;
  // Backs off after finding `p` busy, ending the wait early once `p` is seen free again. Only
  // for pointers of elements the caller keeps alive (the head, the element it operates on);
  // a neighbour may be freed as soon as the link to it is released.
  static void wait_until_free(backoff& bo, const std::atomic<mt_link*>& p) noexcept {
    bo.pause_until([&p] { return p.load(std::memory_order_relaxed) != busy(); });
  }
  // Takes both of el's own pointers (which currently hold real values), waiting while another
  // thread holds one of them.
  static void take_self(mt_link& el) noexcept;

  std::atomic<mt_link*> next_;
  std::atomic<mt_link*> prev_;
};

/// Base class that makes T an element of `mt_list<T, Tag>`. Derive once per list that T may
/// be in at the same time, with a distinct Tag each: `struct job : mt_list_hook<>, ...`.
template <class Tag = void>
class mt_list_hook : public mt_link {
 public:
  mt_list_hook() noexcept = default;
};

template <class T, class Tag>
class mt_list;

/// An element taken out of a list still locked (by mt_list::pop_locked or
/// cursor::erase_locked): no other thread can link it while this object holds it. Unlocks it
/// (leaves it detached) when destroyed or on unlock(). Move-only.
/// Thread safety: the object belongs to one thread. Allocation: none.
template <class T, class Tag = void>
class mt_locked {
 public:
  mt_locked() noexcept = default;
  explicit mt_locked(T* el) noexcept : el_(el) {}
  mt_locked(mt_locked&& o) noexcept : el_(std::exchange(o.el_, nullptr)) {}
  mt_locked& operator=(mt_locked&& o) noexcept {
    if (this != &o) {
      unlock();
      el_ = std::exchange(o.el_, nullptr);
    }
    return *this;
  }
  mt_locked(const mt_locked&) = delete;
  mt_locked& operator=(const mt_locked&) = delete;
  ~mt_locked() { unlock(); }

  [[nodiscard]] T* get() const noexcept { return el_; }
  T& operator*() const noexcept { return *el_; }
  T* operator->() const noexcept { return el_; }
  explicit operator bool() const noexcept { return el_ != nullptr; }

  /// Leaves the element detached and unlocked, gives up ownership and returns it (nullptr if
  /// empty). Never blocks.
  T* unlock() noexcept {
    T* el = std::exchange(el_, nullptr);
    if (el != nullptr) {
      mt_link::unlock_self(static_cast<mt_list_hook<Tag>&>(*el));
    }
    return el;
  }

 private:
  T* el_ = nullptr;
};

/// The loop variable of a walk (see mt_list::for_each_locked): the current element, plus
/// erase(). It lives inside the walk; do not keep a reference to it past the loop.
/// Thread safety: belongs to the iterating thread. Allocation: none.
template <class T, class Tag, bool PresentUnlocked>
class mt_cursor {
 public:
  T& operator*() const noexcept { return get(); }
  T* operator->() const noexcept { return &get(); }

  /// The current element. Aborts if called after erase() in the same step.
  [[nodiscard]] T& get() const noexcept {
    HERALD_ASSERT(!deleted_, "mt_list cursor used after erase() in the same step");
    return static_cast<T&>(static_cast<mt_list_hook<Tag>&>(*cur_));
  }

  /// Removes the current element from the list and returns it detached and unlocked, ready
  /// for reuse (another list, a pool, delete). The walk goes on with the next element. At most
  /// once per step. Never blocks for long: the walk already holds the links around it.
  T& erase() noexcept {
    T& el = get();
    if constexpr (PresentUnlocked) {
      mt_link::take_self(*cur_);
    }
    mt_link::unlock_self(*cur_);
    deleted_ = true;
    return el;
  }

  /// Like erase(), but the element stays locked until the returned object lets it go, so that
  /// no other thread can link it meanwhile (HAProxy's "the caller must unlock it", made safe:
  /// the object unlocks it when destroyed).
  [[nodiscard]] mt_locked<T, Tag> erase_locked() noexcept {
    T& el = get();
    if constexpr (PresentUnlocked) {
      mt_link::take_self(*cur_);
    }
    deleted_ = true;
    return mt_locked<T, Tag>(&el);
  }

 protected:
  explicit mt_cursor(mt_link& head) noexcept : head_(&head) {}
  ~mt_cursor() = default;

  void start() noexcept {
    HERALD_ASSERT(!started_, "an mt_list walk may be iterated only once");
    started_ = true;
    cur_ = head_;
    next_ = mt_link::lock_next_link(*head_);
    step_to_next();
  }

  // Leaves the current element, re-linking it unless it was erased, and moves on.
  void step() noexcept {
    if (exposed()) {
      mt_link::take_self(*cur_);
    }
    step_to_next();
  }

  // Ends the walk early (break, return, exception): reconnects what the walk holds.
  void stop() noexcept {
    if (started_ && !finished_) {
      if (exposed()) {
        mt_link::take_self(*cur_);
      }
      release_all();
    }
  }

  [[nodiscard]] bool finished() const noexcept { return finished_; }

 private:
  bool exposed() const noexcept { return PresentUnlocked && !deleted_ && cur_ != head_; }

  // Releases the link between prev_ and the kept current element (none at the first step).
  void relink_behind() noexcept {
    if (prev_ != nullptr) {
      mt_link::put(cur_->prev_, prev_);
      mt_link::put(prev_->next_, cur_);
    }
  }

  // Precondition: cur_'s own pointers are busy, or cur_ is the head (first step), or cur_ was
  // erased.
  void step_to_next() noexcept {
    if (next_ == head_) {
      release_all();
      return;
    }
    mt_link* const el = next_;
    // Lock the link after `el` before releasing the one before it: the walk always holds a
    // link, so nobody can remove `el` under it.
    next_ = mt_link::lock_next_link(*el);
    if (!deleted_) {
      relink_behind();
      prev_ = cur_;
    }
    cur_ = el;
    deleted_ = false;
    if constexpr (PresentUnlocked) {
      // Show the element as listed; its neighbours' pointers to it stay busy (held).
      mt_link::put(cur_->prev_, prev_);
      mt_link::put(cur_->next_, next_);
    }
  }

  void release_all() noexcept {
    finished_ = true;
    if (!deleted_) {
      relink_behind();
      mt_link::put(cur_->next_, next_);
      if (next_ != cur_) {
        mt_link::put(next_->prev_, cur_);
      }
    } else {
      mt_link::unlock_link(mt_ends{prev_, next_});
    }
  }

  mt_link* head_;
  mt_link* prev_ = nullptr;  // element before cur_; its next_ is busy (held), or nullptr
  mt_link* cur_ = nullptr;   // current element; its own pointers are held (busy or exposed)
  mt_link* next_ = nullptr;  // element after cur_; its prev_ is busy (held)
  bool deleted_ = false;
  bool started_ = false;
  bool finished_ = false;
};

/// One walk over a list: what for_each_locked()/for_each_unlocked() return. Use it only as the
/// range of a range-for; its destructor ends the walk early if the loop was left by break,
/// return or an exception. Not copyable, not movable.
template <class T, class Tag, bool PresentUnlocked>
class mt_walk : private mt_cursor<T, Tag, PresentUnlocked> {
  using base = mt_cursor<T, Tag, PresentUnlocked>;

 public:
  using cursor = base;

  class iterator {
   public:
    explicit iterator(mt_walk* w) noexcept : w_(w) {}
    cursor& operator*() const noexcept { return static_cast<cursor&>(*w_); }
    iterator& operator++() noexcept {
      w_->step();
      return *this;
    }
    bool operator==(const iterator&) const noexcept { return w_->finished(); }
    bool operator!=(const iterator& o) const noexcept { return !(*this == o); }

   private:
    mt_walk* w_;
  };

  explicit mt_walk(mt_link& head) noexcept : base(head) {}
  mt_walk(const mt_walk&) = delete;
  mt_walk& operator=(const mt_walk&) = delete;
  ~mt_walk() { base::stop(); }

  /// Starts the walk at the first element (call once; range-for does).
  iterator begin() noexcept {
    base::start();
    return iterator(this);
  }
  iterator end() noexcept { return iterator(this); }
};

/// The typed, intrusive, thread-safe list of T (T derives from mt_list_hook<Tag>).
///
/// Lifetime: the list does not own its elements. Destroying the list detaches every element
/// still in it (no element is left pointing at a dead head); it must not race with other
/// operations on the list. Not copyable, not movable (elements point at the head).
template <class T, class Tag = void>
class mt_list {
 public:
  using hook_type = mt_list_hook<Tag>;
  using locked_walk = mt_walk<T, Tag, false>;
  using unlocked_walk = mt_walk<T, Tag, true>;

  mt_list() noexcept {
    static_assert(std::is_base_of_v<hook_type, T>,
                  "T must derive from herald::mt_list_hook<Tag> to be an element of mt_list<T, Tag>");
  }
  mt_list(const mt_list&) = delete;
  mt_list& operator=(const mt_list&) = delete;
  ~mt_list() { clear(); }

  /// Adds `el` at the back. `el` must be detached and not touched by other threads.
  void append(T& el) noexcept { mt_link::append(head_, link(el)); }
  /// Adds `el` at the front. `el` must be detached and not touched by other threads.
  void insert(T& el) noexcept { mt_link::insert(head_, link(el)); }
  /// Adds `el` at the back if it is detached; false if it is in a list (this or another).
  /// Exactly one of several racing callers succeeds.
  [[nodiscard]] bool try_append(T& el) noexcept { return mt_link::try_append(head_, link(el)); }
  /// Adds `el` at the front if it is detached; false if it is in a list.
  [[nodiscard]] bool try_insert(T& el) noexcept { return mt_link::try_insert(head_, link(el)); }
  /// Removes `el` from the list that holds it (lists of the same Tag); true if it was listed,
  /// false if it was already detached. `el` comes out detached either way.
  static bool remove(T& el) noexcept { return mt_link::remove(link(el)); }
  /// Takes the first element out, detached; nullptr if the list is empty.
  [[nodiscard]] T* pop() noexcept { return elem(mt_link::pop(head_)); }
  /// Takes the first element out still locked (see mt_locked); empty if the list is empty.
  [[nodiscard]] mt_locked<T, Tag> pop_locked() noexcept {
    return mt_locked<T, Tag>(elem(mt_link::pop_locked(head_)));
  }
  /// True if the list looked empty at the time of the read (a hint: another thread may add or
  /// remove at once). Never blocks. Memory ordering: relaxed.
  [[nodiscard]] bool is_empty_approx() const noexcept { return !head_.is_linked_approx(); }
  /// Pops every element (each comes out detached); returns how many.
  std::size_t clear() noexcept {
    std::size_t n = 0;
    while (mt_link::pop(head_) != nullptr) {
      ++n;
    }
    return n;
  }

  /// A walk that presents each element locked (see the file comment). Use as
  /// `for (auto& cur : list.for_each_locked()) { use(*cur); if (done) cur.erase(); }`.
  [[nodiscard]] locked_walk for_each_locked() noexcept { return locked_walk(head_); }
  /// A walk that presents each element unlocked (see the file comment).
  [[nodiscard]] unlocked_walk for_each_unlocked() noexcept { return unlocked_walk(head_); }

  /// The raw head, for the fine-grained lock API of mt_link.
  [[nodiscard]] mt_link& head() noexcept { return head_; }
  /// The raw link of an element / the element of a raw link (which must not be the head).
  static mt_link& link(T& el) noexcept { return static_cast<hook_type&>(el); }
  static T* elem(mt_link* l) noexcept {
    return l == nullptr ? nullptr : &static_cast<T&>(static_cast<hook_type&>(*l));
  }

 private:
  mt_link head_;
};

// ---- Raw operations (inline: they are the hot path of every user) ---------------------------

inline void mt_link::insert(mt_link& at, mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(at.next_);
    if (n == busy()) {
      wait_until_free(bo, at.next_);
      continue;
    }
    mt_link* p = take(n->prev_);  // == &at; n == &at when the list is empty
    if (p == busy()) {
      put(at.next_, n);
      bo.pause();
      continue;
    }
    put(el.next_, n);
    put(el.prev_, p);
    put(n->prev_, &el);
    put(p->next_, &el);
    return;
  }
}

inline void mt_link::append(mt_link& at, mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* p = take(at.prev_);
    if (p == busy()) {
      wait_until_free(bo, at.prev_);
      continue;
    }
    mt_link* n = take(p->next_);  // == &at
    if (n == busy()) {
      put(at.prev_, p);
      bo.pause();
      continue;
    }
    put(el.next_, n);
    put(el.prev_, p);
    put(p->next_, &el);
    put(n->prev_, &el);
    return;
  }
}

inline bool mt_link::try_insert(mt_link& at, mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(at.next_);
    if (n == busy()) {
      wait_until_free(bo, at.next_);
      continue;
    }
    mt_link* p = take(n->prev_);
    if (p == busy()) {
      put(at.next_, n);
      bo.pause();
      continue;
    }
    // Lock the element before testing it: a detached element is self-looped.
    mt_link* en = take(el.next_);
    if (en != &el) {
      if (en != busy()) {
        put(el.next_, en);
      }
      put(n->prev_, p);
      put(at.next_, n);
      if (en == busy()) {
        bo.pause();  // someone else holds it: it may be on its way out; look again
        continue;
      }
      return false;
    }
    mt_link* ep = take(el.prev_);
    if (ep != &el) {
      if (ep != busy()) {
        put(el.prev_, ep);
      }
      put(el.next_, &el);
      put(n->prev_, p);
      put(at.next_, n);
      if (ep == busy()) {
        bo.pause();
        continue;
      }
      return false;
    }
    put(el.next_, n);
    put(el.prev_, p);
    put(n->prev_, &el);
    put(p->next_, &el);
    return true;
  }
}

inline bool mt_link::try_append(mt_link& at, mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* p = take(at.prev_);
    if (p == busy()) {
      wait_until_free(bo, at.prev_);
      continue;
    }
    mt_link* n = take(p->next_);
    if (n == busy()) {
      put(at.prev_, p);
      bo.pause();
      continue;
    }
    mt_link* ep = take(el.prev_);
    if (ep != &el) {
      if (ep != busy()) {
        put(el.prev_, ep);
      }
      put(p->next_, n);
      put(at.prev_, p);
      if (ep == busy()) {
        bo.pause();
        continue;
      }
      return false;
    }
    mt_link* en = take(el.next_);
    if (en != &el) {
      if (en != busy()) {
        put(el.next_, en);
      }
      put(el.prev_, &el);
      put(p->next_, n);
      put(at.prev_, p);
      if (en == busy()) {
        bo.pause();
        continue;
      }
      return false;
    }
    put(el.next_, n);
    put(el.prev_, p);
    put(p->next_, &el);
    put(n->prev_, &el);
    return true;
  }
}

inline mt_ends mt_link::lock_full(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(el.next_);
    if (n == busy()) {
      wait_until_free(bo, el.next_);
      continue;
    }
    mt_link* p = take(el.prev_);
    if (p == busy()) {
      put(el.next_, n);
      bo.pause();
      continue;
    }
    if (p != &el) {
      mt_link* pn = take(p->next_);  // == &el
      if (pn == busy()) {
        put(el.prev_, p);
        put(el.next_, n);
        bo.pause();
        continue;
      }
      if (n != &el) {
        mt_link* np = take(n->prev_);  // == &el
        if (np == busy()) {
          put(p->next_, pn);
          put(el.prev_, p);
          put(el.next_, n);
          bo.pause();
          continue;
        }
      }
    }
    return mt_ends{p, n};
  }
}

inline bool mt_link::remove(mt_link& el) noexcept {
  const mt_ends ends = lock_full(el);
  const bool was_listed = ends.prev != &el;
  if (was_listed) {
    unlock_link(ends);
  }
  unlock_self(el);
  return was_listed;
}

inline mt_link* mt_link::pop_locked(mt_link& head) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(head.next_);
    if (n == busy()) {
      wait_until_free(bo, head.next_);
      continue;
    }
    if (n == &head) {
      put(head.next_, &head);
      return nullptr;
    }
    mt_link* p = take(n->prev_);  // == &head
    if (p == busy()) {
      put(head.next_, n);
      bo.pause();
      continue;
    }
    mt_link* nn = take(n->next_);
    if (nn == busy()) {
      put(n->prev_, p);
      put(head.next_, n);
      bo.pause();
      continue;
    }
    mt_link* nnp = take(nn->prev_);  // == n
    if (nnp == busy()) {
      put(n->next_, nn);
      put(n->prev_, p);
      put(head.next_, n);
      bo.pause();
      continue;
    }
    put(nn->prev_, &head);
    put(head.next_, nn);
    return n;  // both of n's pointers are still busy
  }
}

inline mt_link* mt_link::pop(mt_link& head) noexcept {
  mt_link* n = pop_locked(head);
  if (n != nullptr) {
    unlock_self(*n);
  }
  return n;
}

inline mt_ends mt_link::lock_next(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(el.next_);
    if (n == busy()) {
      wait_until_free(bo, el.next_);
      continue;
    }
    mt_link* p = take(n->prev_);  // == &el
    if (p == busy()) {
      put(el.next_, n);
      bo.pause();
      continue;
    }
    return mt_ends{p, n};
  }
}

inline mt_ends mt_link::lock_prev(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* p = take(el.prev_);
    if (p == busy()) {
      wait_until_free(bo, el.prev_);
      continue;
    }
    mt_link* n = take(p->next_);  // == &el
    if (n == busy()) {
      put(el.prev_, p);
      bo.pause();
      continue;
    }
    return mt_ends{p, n};
  }
}

inline mt_ends mt_link::lock_elem(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(el.next_);
    if (n == busy()) {
      wait_until_free(bo, el.next_);
      continue;
    }
    mt_link* p = take(el.prev_);
    if (p == busy()) {
      put(el.next_, n);
      bo.pause();
      continue;
    }
    return mt_ends{p, n};
  }
}

inline void mt_link::unlock_elem(mt_link& el, mt_ends saved) noexcept {
  put(el.prev_, saved.prev);
  put(el.next_, saved.next);
}

inline void mt_link::unlock_self(mt_link& el) noexcept {
  put(el.prev_, &el);
  put(el.next_, &el);
}

inline void mt_link::unlock_link(mt_ends ends) noexcept {
  put(ends.next->prev_, ends.prev);
  put(ends.prev->next_, ends.next);
}

inline void mt_link::unlock_full(mt_link& el, mt_ends ends) noexcept {
  put(el.prev_, ends.prev);
  put(el.next_, ends.next);
  if (ends.next != &el) {
    put(ends.next->prev_, &el);
  }
  if (ends.prev != &el) {
    put(ends.prev->next_, &el);
  }
}

inline mt_link* mt_link::lock_next_link(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(el.next_);
    if (n == busy()) {
      wait_until_free(bo, el.next_);
      continue;
    }
    if (n != &el) {
      mt_link* np = take(n->prev_);
      if (np == busy()) {
        put(el.next_, n);
        bo.pause();
        continue;
      }
    }
    return n;
  }
}

inline void mt_link::take_self(mt_link& el) noexcept {
  for (backoff bo;;) {
    mt_link* n = take(el.next_);
    if (n == busy()) {
      wait_until_free(bo, el.next_);
      continue;
    }
    mt_link* p = take(el.prev_);
    if (p == busy()) {
      put(el.next_, n);
      bo.pause();
      continue;
    }
    return;
  }
}

}  // namespace herald
