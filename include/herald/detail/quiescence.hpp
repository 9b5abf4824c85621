// herald/detail/quiescence.hpp - the read side of herald's grace-period (RCU-style) domain.
//
// What it is
//   Publishing walks immutable snapshots of a subscription list without taking a lock or
//   touching a shared counter. Writers (subscribe, unsubscribe, destroy) replace a snapshot and
//   must know when no publisher can still be reading the old one, or still be calling a handler
//   that was just unsubscribed. This file is the reader's half: each thread owns one record
//   that holds 0 outside a read section (a publish) and, inside one, the grace-period phase it
//   read on entry. A writer's grace period (src/core/quiescence.cpp) advances the phase and
//   waits until every record holds 0 or the new phase.
//
// Cost on the read side
//   Entering the outermost section loads the shared phase (a read-mostly line) and stores it
//   in the thread's own record; leaving stores 0. Neither value is computed from the record's
//   previous contents, so back-to-back publishes form no dependency chain through memory (an
//   odd/even counter incremented on entry and exit did, and cost a publish ~1.5 ns). A nested
//   section (a handler that publishes) sees its record non-zero and does nothing. The store that
//   enters must be ordered before the loads of the snapshot (store -> load). On Linux the writer
//   runs membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which orders every running thread, so
//   the reader needs only a compiler barrier. Where membarrier is unavailable (old kernels,
//   some sandboxes) and under ThreadSanitizer (which cannot see membarrier), the reader uses a
//   sequentially consistent exchange instead.
//
// Memory ordering
//   phase: the reader's acquire load pairs with the writer's seq_cst increment, so a reader
//          that saw the new phase also sees everything unlinked before it.
//   enter: exchange(phase, seq_cst) or store(phase, relaxed) + signal fence; pairs with the
//          writer's heavy barrier (membarrier or seq_cst fence) before it reads the records.
//   leave: store(0, release); pairs with the writer's acquire load of the record, so
//          everything the section read happens before the writer frees it.
//   The record is written only by its own thread, so its relaxed loads by that thread see
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
  std::atomic<std::uint64_t> counter{0};  // 0: outside; else the phase read on entry
  // asymmetric_fences, copied here at registration: read on the line the entry touches anyway.
  bool asymmetric = false;
  std::atomic<bool> in_use{false};
  reader_record* next_record = nullptr;   // registry chain, immutable once published
  // Publishes made by the threads that held this record, per family id (max_families
  // counters, allocated with the record, never freed). Written by the owning thread only (a
  // relaxed load and store, no read-modify-write); summed by family_published().
  std::atomic<std::uint64_t>* published = nullptr;
};

/// Whether publishes are counted per family (off by default: a counter incremented by every
/// publish makes back-to-back publishes wait for each other through memory, about 1 ns each).
/// Read-mostly: publishers only load it.
extern std::atomic<bool> family_counting;

/// Counts one publish of family `f` on the calling thread's record `r`, if counting is on.
/// Blocking: never.
inline void count_publish(reader_record& r, std::uint16_t f) noexcept {
  // relaxed: a switch for statistics; a publish racing with the switch may go either way.
  if (family_counting.load(std::memory_order_relaxed)) [[unlikely]] {
    std::atomic<std::uint64_t>& c = r.published[f];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
}

/// The publishes of family `f` counted on every record so far (a racy sum).
std::uint64_t published_total(std::uint16_t f) noexcept;

/// The calling thread's record (nullptr until its first read section).
struct reader_tls {
  reader_record* record = nullptr;
};
// constinit: no lazy-initialisation check on each access (it would also force the compiler to
// spill the publish arguments around a possible call).
extern constinit thread_local reader_tls tls_reader;

/// The grace-period phase: never 0, advanced by every grace period (seq_cst increments). On a
/// cache line of its own: publishers on every thread read it.
struct alignas(64) phase_word {
  std::atomic<std::uint64_t> value{1};
};
extern phase_word grace_phase;

/// Registers the calling thread's record (first read section of a thread). Cold path.
reader_record* register_reader() noexcept;

/// True if the calling thread is inside a read section (a publish, or a handler it runs).
inline bool in_read_section() noexcept {
  const reader_record* r = tls_reader.record;
  return r != nullptr && r->counter.load(std::memory_order_relaxed) != 0;
}

/// The calling thread's record if it is registered and outside every read section (the
/// common case of a publish), else nullptr.
inline reader_record* outermost_record() noexcept {
  reader_record* r = tls_reader.record;
  return r != nullptr && r->counter.load(std::memory_order_relaxed) == 0 ? r : nullptr;
}

/// Enters the outermost read section on the calling thread's record `r`.
inline void enter_section(reader_record& r) noexcept {
  // acquire: pairs with the writer's seq_cst increment of the phase.
  const std::uint64_t phase = grace_phase.value.load(std::memory_order_acquire);
#if defined(__SANITIZE_THREAD__)
  r.counter.exchange(phase, std::memory_order_seq_cst);
#else
  if (r.asymmetric) [[likely]] {
    r.counter.store(phase, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    r.counter.exchange(phase, std::memory_order_seq_cst);
  }
#endif
}

/// Leaves the outermost read section. Memory ordering: release; pairs with the writer's
/// acquire load of the record.
inline void leave_section(reader_record& r) noexcept {
  r.counter.store(0, std::memory_order_release);
}

/// A read section (RAII, nestable): while one exists on a thread, nothing the thread can reach
/// through a published snapshot is reclaimed. A nested section (a handler that publishes) sees
/// its own record set and does nothing; the outermost one leaves with a single store.
/// Thread safety: the calling thread's own state only. Blocking: never. Allocation: only the
/// first time a thread enters (its record).
class read_guard {
 public:
  read_guard() noexcept {
    reader_record* r = tls_reader.record;
    if (r == nullptr) [[unlikely]] {
      r = register_reader();
    }
    if (r->counter.load(std::memory_order_relaxed) != 0) {
      return;  // nested
    }
    record_ = r;
    enter_section(*r);
  }
  read_guard(const read_guard&) = delete;
  read_guard& operator=(const read_guard&) = delete;
  ~read_guard() {
    if (record_ != nullptr) {
      leave_section(*record_);
    }
  }

 private:
  reader_record* record_ = nullptr;
};

}  // namespace herald::detail
