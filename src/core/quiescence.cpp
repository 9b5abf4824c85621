// The writer side of herald's grace-period domain (see herald/detail/quiescence.hpp): reader
// registration, grace periods, and deferred reclamation.
#include "core/quiescence.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <utility>
#include <thread>

#include "herald/backoff.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"

namespace herald::detail {

constinit thread_local reader_tls tls_reader;
phase_word grace_phase;

namespace {

// Registry of reader records: a push-only chain. Records are never freed, so a writer can read
// any record without coordinating with the thread that owns it; LeakSanitizer sees them as
// reachable from `records_head`.
std::atomic<reader_record*> records_head{nullptr};

bool init_fences() noexcept {
#if defined(__SANITIZE_THREAD__)
  return false;  // readers always use the seq_cst exchange under TSan
#else
  const long mask = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (mask < 0 || (mask & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
    return false;
  }
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
    return false;
  }
  return true;
#endif
}

// Decided once, before the first reader section and the first grace period of the process.
bool fences_ready() noexcept {
  static const bool asymmetric = init_fences();
  return asymmetric;
}

#if defined(__SANITIZE_THREAD__)
// GCC's ThreadSanitizer rejects standalone fences; a seq_cst read-modify-write orders the same
// way here (readers also use seq_cst exchanges under TSan) and TSan understands it.
std::atomic<std::uint64_t> barrier_word{0};
#endif

void heavy_barrier() noexcept {
#if defined(__SANITIZE_THREAD__)
  barrier_word.fetch_add(1, std::memory_order_seq_cst);
  return;
#endif
  if (fences_ready()) {
    // Orders every running thread of the process: pairs with the readers' signal fence.
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
      return;
    }
    HERALD_ASSERT(false, "membarrier(PRIVATE_EXPEDITED) failed after registration");
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// Returns the thread's record to the pool when the thread exits.
struct record_releaser {
  ~record_releaser() {
    if (tls_reader.record != nullptr) {
      // The record holds 0: a thread cannot exit inside a section.
      tls_reader.record->in_use.store(false, std::memory_order_release);
      tls_reader.record = nullptr;
    }
  }
};
thread_local record_releaser tls_releaser;

std::mutex grace_mutex;           // one grace period at a time
// Held by a collector from taking its batch until that batch is reclaimed, so that a later
// collector cannot return while an earlier one still reclaims what the later one retired.
// Recursive: a reclaimed handler's destructor may itself unsubscribe (and collect).
std::recursive_mutex reclaim_mutex;
std::mutex retire_mutex;          // protects retire_head
retire_node* retire_head = nullptr;

}  // namespace

void run_batch(retire_node* batch) noexcept;

reader_record* register_reader() noexcept {
  (void)fences_ready();
  (void)&tls_releaser;  // odr-use: constructs the releaser for this thread
  reader_record* r = nullptr;
  for (reader_record* it = records_head.load(std::memory_order_acquire); it != nullptr;
       it = it->next_record) {
    bool expected = false;
    if (!it->in_use.load(std::memory_order_relaxed) &&
        it->in_use.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      r = it;
      break;
    }
  }
  if (r == nullptr) {
    r = new (std::nothrow) reader_record;
    HERALD_ASSERT(r != nullptr, "out of memory registering a publishing thread");
    r->published = new (std::nothrow) std::atomic<std::uint64_t>[max_families]{};
    HERALD_ASSERT(r->published != nullptr, "out of memory registering a publishing thread");
    r->in_use.store(true, std::memory_order_relaxed);
    reader_record* head = records_head.load(std::memory_order_relaxed);
    do {
      r->next_record = head;
      // release: publishes the record's fields to writers that walk the chain (acquire).
    } while (!records_head.compare_exchange_weak(head, r, std::memory_order_release,
                                                 std::memory_order_relaxed));
  }
  r->asymmetric = fences_ready();
  tls_reader.record = r;
  return r;
}

std::atomic<bool> family_counting{false};

std::uint64_t published_total(std::uint16_t f) noexcept {
  std::uint64_t sum = 0;
  // acquire: pairs with the release that published each record.
  for (const reader_record* it = records_head.load(std::memory_order_acquire); it != nullptr;
       it = it->next_record) {
    sum += it->published[f].load(std::memory_order_relaxed);
  }
  return sum;
}

namespace {
// Starts a grace period (grace_mutex held): advances the phase, then orders every thread.
// Returns the new phase. A record holding 0 or the new phase is quiescent for this period: its
// thread is outside a section, or entered one after the increment and so cannot reach anything
// unlinked before it.
std::uint64_t begin_grace_period() noexcept {
  const std::uint64_t phase = grace_phase.value.fetch_add(1, std::memory_order_seq_cst) + 1;
  heavy_barrier();
  return phase;
}

bool quiescent(std::uint64_t seen, std::uint64_t phase) noexcept {
  return seen == 0 || seen == phase;
}
}  // namespace

void synchronize() noexcept {
  HERALD_ASSERT(!in_read_section(),
                "a grace period was requested from inside a publish (it would wait for itself)");
  (void)fences_ready();
  std::lock_guard lock(grace_mutex);
  const std::uint64_t phase = begin_grace_period();
  for (reader_record* r = records_head.load(std::memory_order_acquire); r != nullptr;
       r = r->next_record) {
    // acquire: pairs with the release store of ~read_guard.
    // Publishers are short: spin a little, then give the CPU to the thread we wait for.
    for (unsigned spins = 0; !quiescent(r->counter.load(std::memory_order_acquire), phase);
         ++spins) {
      if (spins < 64) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
}

void retire(retire_node& node) noexcept {
  std::lock_guard lock(retire_mutex);
  node.next = retire_head;
  retire_head = &node;
}

bool collect(bool always_wait) noexcept {
  if (in_read_section()) {
    return false;
  }
  std::lock_guard reclaiming(reclaim_mutex);
  retire_node* batch = nullptr;
  {
    std::lock_guard lock(retire_mutex);
    batch = retire_head;
    retire_head = nullptr;
  }
  if (batch == nullptr && !always_wait) {
    return true;
  }
  synchronize();
  run_batch(batch);
  return true;
}

void run_batch(retire_node* batch) noexcept {
  // Run in the order retired (reverse the chain).
  retire_node* ordered = nullptr;
  while (batch != nullptr) {
    retire_node* next = batch->next;
    batch->next = ordered;
    ordered = batch;
    batch = next;
  }
  while (ordered != nullptr) {
    retire_node* next = ordered->next;
    ordered->reclaim(ordered);
    ordered = next;
  }
}

bool try_collect() noexcept {
  if (in_read_section()) {
    return false;
  }
  std::unique_lock reclaiming(reclaim_mutex, std::try_to_lock);
  if (!reclaiming.owns_lock()) {
    return false;  // another thread is reclaiming; what we retired waits for a later collect
  }
  retire_node* batch = nullptr;
  {
    std::lock_guard lock(retire_mutex);
    batch = std::exchange(retire_head, nullptr);
  }
  if (batch == nullptr) {
    return true;
  }
  bool quiet = true;
  {
    (void)fences_ready();
    std::lock_guard lock(grace_mutex);
    // Everything in `batch` was unlinked before the phase advanced. A reader that may still
    // hold one of those pointers entered its section before that and shows an older phase.
    const std::uint64_t phase = begin_grace_period();
    for (reader_record* r = records_head.load(std::memory_order_acquire); r != nullptr;
         r = r->next_record) {
      if (!quiescent(r->counter.load(std::memory_order_acquire), phase)) {
        quiet = false;
        break;
      }
    }
  }
  if (!quiet) {
    // Someone is publishing: put the batch back for a later (or a waiting) collect.
    retire_node* tail = batch;
    while (tail->next != nullptr) {
      tail = tail->next;
    }
    std::lock_guard lock(retire_mutex);
    tail->next = retire_head;
    retire_head = batch;
    return false;
  }
  run_batch(batch);
  return true;
}

bool asymmetric_fences_in_use() noexcept { return fences_ready(); }

}  // namespace herald::detail
