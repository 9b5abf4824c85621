// herald/detail/quiescence.hpp - the read side of herald's grace-period (RCU-style) domain.
//
// What it is
//   Publishing walks immutable snapshots of a subscription list without taking a lock or
//   touching a shared counter. Writers (subscribe, unsubscribe, destroy) replace a snapshot and
//   must know when no publisher can still be reading the old one, or still be calling a handler
//   that was just unsubscribed. This file is the reader's half: each thread owns one record
//   whose counter is odd while the thread is inside a read section (a publish). A writer's
//   grace period (src/core/quiescence.cpp) waits until every record that was odd has changed.
//
// Cost on the read side
//   Entering and leaving the outermost section store to the thread's own cache line; a nested
//   section (a handler that publishes) sees its counter already odd and does nothing. The store that enters
//   must be ordered before the loads of the snapshot (store -> load). On Linux the writer runs
//   membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which orders every running thread, so the
//   reader needs only a compiler barrier. Where membarrier is unavailable (old kernels, some
//   sandboxes) and under ThreadSanitizer (which cannot see membarrier), the reader uses a
//   sequentially consistent exchange instead.
//
// Memory ordering
//   enter: exchange(odd, seq_cst) or store(odd, relaxed) + signal fence; pairs with the
//          writer's heavy barrier (membarrier or seq_cst fence) before it reads the records.
//   leave: store(even, release); pairs with the writer's acquire load of the record, so
//          everything the section read happens before the writer frees it.
//   The counter is written only by its own thread, so its relaxed loads by that thread see
//   its last store.
#pragma once

#include <atomic>
#include <cstdint>

namespace herald::detail {

/// A node embedded (as first member) in every object that is reclaimed after a grace period,
/// so that retiring never allocates and unsubscribe/destroy can never fail.
struct retire_node {
  retire_node* next = nullptr;
  void (*reclaim)(retire_node*) noexcept = nullptr;
  void* owner = nullptr;  // the object to reclaim
};

/// One thread's read-side record. Records are pooled and never freed (a thread that exits
/// returns its record to the pool), so a writer may read any record at any time.
struct alignas(64) reader_record {
  std::atomic<std::uint64_t> counter{0};  // odd: inside a read section
  std::atomic<bool> in_use{false};
  reader_record* next_record = nullptr;   // registry chain, immutable once published
};

/// The calling thread's record (nullptr until its first read section).
struct reader_tls {
  reader_record* record = nullptr;
};
// constinit: no lazy-initialisation check on each access (it would also force the compiler to
// spill the publish arguments around a possible call).
extern constinit thread_local reader_tls tls_reader;

/// True when readers may rely on the writer's membarrier (set once, before any reader runs a
/// section that depends on it; see quiescence.cpp).
extern std::atomic<bool> asymmetric_fences;

/// Registers the calling thread's record (first read section of a thread). Cold path.
reader_record* register_reader() noexcept;

/// True if the calling thread is inside a read section (a publish, or a handler it runs).
inline bool in_read_section() noexcept {
  const reader_record* r = tls_reader.record;
  return r != nullptr && (r->counter.load(std::memory_order_relaxed) & 1) != 0;
}

/// A read section (RAII, nestable): while one exists on a thread, nothing the thread can reach
/// through a published snapshot is reclaimed. A nested section (a handler that publishes) sees
/// its own odd counter and does nothing; the outermost one leaves with a single store.
/// Thread safety: the calling thread's own state only. Blocking: never. Allocation: only the
/// first time a thread enters (its record).
class read_guard {
 public:
  read_guard() noexcept {
    reader_record* r = tls_reader.record;
    if (r == nullptr) [[unlikely]] {
      r = register_reader();
    }
    const std::uint64_t c = r->counter.load(std::memory_order_relaxed);
    if ((c & 1) != 0) {
      return;  // nested
    }
    record_ = r;
    leave_value_ = c + 2;
#if defined(__SANITIZE_THREAD__)
    r->counter.exchange(c + 1, std::memory_order_seq_cst);
#else
    if (asymmetric_fences.load(std::memory_order_relaxed)) [[likely]] {
      r->counter.store(c + 1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      r->counter.exchange(c + 1, std::memory_order_seq_cst);
    }
#endif
  }
  read_guard(const read_guard&) = delete;
  read_guard& operator=(const read_guard&) = delete;
  ~read_guard() {
    if (record_ != nullptr) {
      record_->counter.store(leave_value_, std::memory_order_release);
    }
  }

 private:
  reader_record* record_ = nullptr;
  std::uint64_t leave_value_ = 0;
};

}  // namespace herald::detail
