// herald/detail/mpsc_queue.hpp - an intrusive multi-producer, single-consumer FIFO (Dmitry
// Vyukov's node-based design), used by the scheduler's run queues and by the event queue of
// every async and queue subscription. No stability promise.
//
// What it is
//   Producers link nodes they own into the queue with one exchange and one store: push never
//   blocks, never allocates and never fails. One consumer at a time pops. A node may be pushed
//   again once pop() returned it. The queue owns no node; a `stub` inside the queue keeps it
//   non-empty so that push never tests for emptiness.
//
// Hazard: the momentary gap
//   Between a producer's exchange and its store of `next`, the queue holds a node the consumer
//   cannot reach yet. pop() then returns nullptr although the queue is not empty;
//   empty_approx() returns false in that window, so a consumer that is about to sleep sees the
//   pending push (see the sleep protocol in src/sched/scheduler.cpp).
//
// Memory ordering
//   push: exchange(tail, seq_cst) orders the node's initialisation before it becomes the tail;
//         store(prev->next, release) pairs with pop's acquire load of `next`, so the consumer
//         sees everything the producer wrote into the node (and the object around it) before
//         the push.
//   empty_approx: a seq_cst load of the tail, for the consumer's Dekker-style sleep check
//         against producers' seq_cst exchange.
//   idle_approx: the same load, from any thread (the scheduler's end-of-stop check).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace herald::detail {

/// A queue link; derive from it (or embed it) to make an object queueable.
struct mpsc_node {
  std::atomic<mpsc_node*> next{nullptr};
};

class mpsc_queue {
 public:
  mpsc_queue() noexcept : tail_(&stub_), head_(&stub_) {}
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  /// Appends `n` (not in any queue). Thread safety: any thread. Blocking: never (wait-free).
  /// Allocation: none. Ordering: FIFO per producer; pushes of different producers are ordered
  /// by their exchange.
  void push(mpsc_node& n) noexcept {
    link(n);
    // relaxed: a gauge (size_approx); on the tail's cache line, which the push writes anyway.
    // After the link: the link's exchange has already drained the store buffer, so this
    // read-modify-write does not wait for the caller's earlier stores a second time.
    pushed_.fetch_add(1, std::memory_order_relaxed);
  }

  /// push() without counting the node in size_approx() (for users that count by themselves:
  /// one read-modify-write less per push).
  void push_uncounted(mpsc_node& n) noexcept { link(n); }

  /// Removes the oldest node, or returns nullptr if the queue is empty or a push is half done
  /// (empty_approx() tells them apart). Thread safety: one consumer at a time. Blocking: never.
  mpsc_node* pop() noexcept {
    mpsc_node* n = unlink();
    if (n != nullptr) {
      // relaxed: a gauge; only this consumer writes it.
      popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    return n;
  }

  /// True if a push after the consumer's position has completed its link. A cheap poll for a
  /// consumer that found the queue empty: it reads the line the next push writes anyway, not
  /// the tail (which would bounce between the consumer and every producer). A half-done push
  /// is not seen. Thread safety: the consumer only. Memory ordering: acquire (pairs with the
  /// link's release store).
  [[nodiscard]] bool next_linked_approx() const noexcept {
    return head_->next.load(std::memory_order_acquire) != nullptr;
  }

  /// The node the next pop() reads first (for a prefetch while the popped one is handled).
  /// Thread safety: the consumer only.
  [[nodiscard]] const mpsc_node* head_approx() const noexcept { return head_; }

  /// Nodes pushed and not popped yet: racy by nature. Thread safety: any thread.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::uint64_t popped = popped_.load(std::memory_order_relaxed);
    const std::uint64_t pushed = pushed_.load(std::memory_order_relaxed);
    return pushed > popped ? static_cast<std::size_t>(pushed - popped) : 0;
  }

 private:
  void link(mpsc_node& n) noexcept {
    n.next.store(nullptr, std::memory_order_relaxed);
    // seq_cst: the consumer's sleep check (empty_approx) must see this push or be seen by
    // the producer's later check of the consumer's idle flag (Dekker).
    mpsc_node* prev = tail_.exchange(&n, std::memory_order_seq_cst);
    // release: pairs with the acquire loads of `next` in pop().
    prev->next.store(&n, std::memory_order_release);
  }

  mpsc_node* unlink() noexcept {
    mpsc_node* head = head_;
    mpsc_node* next = head->next.load(std::memory_order_acquire);
    if (head == &stub_) {
      if (next == nullptr) {
        return nullptr;
      }
      head_ = next;
      head = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next != nullptr) {
      head_ = next;
      return head;
    }
    if (head != tail_.load(std::memory_order_acquire)) {
      return nullptr;  // a producer is between its exchange and its link
    }
    link(stub_);
    next = head->next.load(std::memory_order_acquire);
    if (next != nullptr) {
      head_ = next;
      return head;
    }
    return nullptr;
  }

 public:
  /// True if nothing was pushed that pop() has not returned (a half-done push counts as an
  /// item). Thread safety: the consumer only. Memory ordering: seq_cst (see the file comment).
  [[nodiscard]] bool empty_approx() const noexcept {
    return head_ == &stub_ && tail_.load(std::memory_order_seq_cst) == &stub_;
  }

  /// For a thread other than the consumer: true if nothing was pushed since the consumer last
  /// found the queue empty (empty_approx() true), provided the consumer has not called pop()
  /// since then. (Inside pop() the stub is briefly re-linked behind the last node, so the
  /// answer means nothing while the consumer pops; the scheduler asks only about consumers it
  /// knows to be parked.) Thread safety: any thread. Memory ordering: seq_cst, against the
  /// producers' seq_cst exchange in push().
  [[nodiscard]] bool idle_approx() const noexcept {
    return tail_.load(std::memory_order_seq_cst) == &stub_;
  }

 private:
  alignas(64) std::atomic<mpsc_node*> tail_;  // producers
  std::atomic<std::uint64_t> pushed_{0};      // producers (relaxed RMW)
  alignas(64) mpsc_node* head_;               // the consumer
  std::atomic<std::uint64_t> popped_{0};      // the consumer (relaxed store)
  mpsc_node stub_;
};

}  // namespace herald::detail
