// Async and queue delivery: the pooled event blocks, the publish side of deferred delivery,
// consumer notification, the drain task of async subscriptions and the pop of queue ones.
// See herald/detail/deferred.hpp for the block layout and herald/bus.hpp for the contracts.
#include "herald/detail/deferred.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <mutex>
#include <thread>

#include "core/internal.hpp"
#include "core/quiescence.hpp"
#include "herald/backoff.hpp"
#include "herald/bus.hpp"

namespace herald::detail {

// ---- The block pool --------------------------------------------------------------------------
//
// Blocks come in size classes of 128 B << k. Each thread keeps a small cache per class; a
// publisher thread allocates from its cache and a consumer thread frees into its own, and the
// caches trade chains of `batch` blocks through a global stack per class (a few instructions
// under a spin lock once per chain, so a warm publish neither calls malloc nor waits). Blocks larger
// than the largest class are allocated and freed directly. Cached blocks are never returned to
// the system; they stay reachable from the global lists (LeakSanitizer counts them as in use).

namespace {

constexpr std::size_t min_class_bytes = 128;
constexpr std::uint32_t class_count = 10;  // 128 B .. 64 KiB
constexpr std::uint32_t direct_class = class_count;
constexpr std::uint32_t batch = 32;
constexpr std::uint32_t cache_limit = 2 * batch;
constexpr std::align_val_t block_align{64};

struct free_block {
  free_block* next;        // within a chain
  free_block* next_chain;  // first block of a chain in the global stack: the next chain
  std::uint32_t count;     // first block of a chain in the global stack: its length
};

// The global part of one size class: a stack of chains (each moved in and out whole, so the
// lock covers a few pointer writes). A spin lock: the sections are a handful of instructions,
// and a sleeping lock's futex wake-ups cost more than the sections themselves.
struct global_class {
  std::atomic<bool> locked{false};
  free_block* chains = nullptr;  // guarded by `locked`

  void lock() noexcept {
    // acquire: pairs with unlock()'s release.
    while (locked.exchange(true, std::memory_order_acquire)) {
      while (locked.load(std::memory_order_relaxed)) {
        cpu_relax();
      }
    }
  }
  void unlock() noexcept { locked.store(false, std::memory_order_release); }
};
std::array<global_class, class_count> global_pool;

std::atomic<int> injected_failures{0};

struct thread_cache {
  std::array<free_block*, class_count> head{};
  std::array<std::uint32_t, class_count> count{};

  ~thread_cache() {
    for (std::uint32_t c = 0; c < class_count; ++c) {
      flush(c, count[c]);
    }
  }
  // Moves `n` cached blocks of class c to the global stack, as one chain.
  void flush(std::uint32_t c, std::uint32_t n) noexcept {
    if (n == 0) {
      return;
    }
    free_block* first = head[c];
    free_block* last = first;
    for (std::uint32_t i = 1; i < n; ++i) {
      last = last->next;
    }
    head[c] = last->next;
    count[c] -= n;
    last->next = nullptr;
    first->count = n;
    global_class& g = global_pool[c];
    g.lock();
    first->next_chain = g.chains;
    g.chains = first;
    g.unlock();
  }
  // Takes one chain of class c from the global stack (the cache is empty).
  void refill(std::uint32_t c) noexcept {
    global_class& g = global_pool[c];
    g.lock();
    free_block* chain = g.chains;
    if (chain != nullptr) {
      g.chains = chain->next_chain;
    }
    g.unlock();
    if (chain != nullptr) {
      head[c] = chain;
      count[c] = chain->count;
    }
  }
};
thread_local thread_cache tls_cache;

std::uint32_t class_of(std::size_t bytes) noexcept {
  if (bytes <= min_class_bytes) {
    return 0;
  }
  const auto k = static_cast<std::uint32_t>(std::bit_width(bytes - 1) - 7);  // 2^7 = 128
  return k < class_count ? k : direct_class;
}

std::size_t class_bytes(std::uint32_t c) noexcept { return min_class_bytes << c; }

void* allocate_block(std::size_t bytes, std::uint32_t* cls) noexcept {
  if (injected_failures.load(std::memory_order_relaxed) > 0 &&
      injected_failures.fetch_sub(1, std::memory_order_relaxed) > 0) {
    return nullptr;
  }
  const std::uint32_t c = class_of(bytes);
  *cls = c;
  if (c == direct_class) {
    return ::operator new(bytes, block_align, std::nothrow);
  }
  thread_cache& tc = tls_cache;
  if (tc.head[c] == nullptr) {
    tc.refill(c);
  }
  if (free_block* b = tc.head[c]) {
    tc.head[c] = b->next;
    --tc.count[c];
    return b;
  }
  return ::operator new(class_bytes(c), block_align, std::nothrow);
}

void free_block_memory(void* p, std::uint32_t c) noexcept {
  if (c == direct_class) {
    ::operator delete(p, block_align);
    return;
  }
  thread_cache& tc = tls_cache;
  auto* b = static_cast<free_block*>(p);
  b->next = tc.head[c];
  tc.head[c] = b;
  if (++tc.count[c] > cache_limit) {
    tc.flush(c, batch);
  }
}

constexpr std::size_t round_up(std::size_t n, std::size_t a) noexcept {
  return (n + a - 1) / a * a;
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void inject_allocation_failures(int count) noexcept {
  injected_failures.store(count, std::memory_order_relaxed);
}

void release_block(event_block* b) noexcept {
  // acq_rel: the last release sees every consumer's reads of the payload before destroying it.
  if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    return;
  }
  b->ops->destroy(const_cast<void*>(b->payload()));
  const std::uint32_t c = b->size_class;
  b->~event_block();
  free_block_memory(b, c);
}

// ---- Publish side ----------------------------------------------------------------------------

result<std::size_t> publish_deferred(const list_core& l, sub_core* const* items, std::uint32_t n,
                                     event_type type, const void* safe,
                                     const payload_ops& ops) noexcept {
  // One link per async or queue subscription of the array: whether each is callable is
  // decided once, in the loop that fills the links below (counting first and filling later
  // could let a subscription resumed in between take the link of an active one).
  bool any = false;
  for (std::uint32_t i = 0; i < n && !any; ++i) {
    any = sub_callable(*items[i]);
  }
  if (!any) {
    return std::size_t{0};  // no snapshot when nobody would receive it
  }
  const std::uint32_t k = n;
  const std::size_t payload_offset = round_up(sizeof(event_block), std::max<std::size_t>(ops.align, 16));
  const std::size_t nodes_offset = round_up(payload_offset + ops.size, alignof(event_node));
  const std::size_t bytes = nodes_offset + std::size_t{k} * sizeof(event_node);
  std::uint32_t cls = 0;
  void* mem = allocate_block(bytes, &cls);
  if (mem == nullptr) {
    return unexpected(errc::no_memory);
  }
  const std::int64_t when = now_ns();
  auto* b = ::new (mem) event_block;
  b->size_class = cls;
  b->payload_offset = static_cast<std::uint32_t>(payload_offset);
  b->ops = &ops;
  b->type = type;
  b->when_ns = when;
  if (!ops.copy(static_cast<unsigned char*>(mem) + payload_offset, safe)) {
    b->~event_block();
    free_block_memory(mem, cls);
    return unexpected(errc::no_memory);
  }
  // After the copy, so that a failed publish takes no number (no gap). relaxed: a counter; the
  // pushes below (release) publish the value with the block.
  b->sequence = const_cast<list_core&>(l).sequence.fetch_add(1, std::memory_order_relaxed) + 1;
  auto* nodes = reinterpret_cast<event_node*>(static_cast<unsigned char*>(mem) + nodes_offset);
  std::uint32_t used = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (sub_callable(*items[i])) {
      event_node* node = ::new (&nodes[used]) event_node;
      node->block = b;
      node->target = items[i];
      ++used;
    }
  }
  b->nodes = used;
  // One reference per node, plus the publisher's until the end of this function.
  b->refs.store(used + 1, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < used; ++i) {
    deferred_core& d = *nodes[i].target->deferred;
    d.queue.push(nodes[i]);
    notify_consumer(d);
  }
  release_block(b);
  return std::size_t{used};
}

void notify_consumer(deferred_core& d) noexcept {
  if (d.mode == deferred_mode::async) {
    d.notify();
    return;
  }
  // Edge-triggered: only the push that arms the queue notifies; the consumer disarms when it
  // finds the queue empty (queue_pop). seq_cst: pairs with the consumer's disarm and re-check.
  if (d.armed.load(std::memory_order_seq_cst) || d.armed.exchange(true, std::memory_order_seq_cst)) {
    return;
  }
  switch (d.notify_how) {
    case notify_kind::none:
      break;
    case notify_kind::tasklet:
      d.notify_tasklet.wake();
      break;
    case notify_kind::fd: {
      const std::uint64_t one = 1;
      ssize_t r;
      do {
        r = ::write(d.notify_fd, &one, sizeof one);
      } while (r < 0 && errno == EINTR);
      break;  // EAGAIN: the counter is saturated, so the fd is readable anyway
    }
    case notify_kind::callback:
      try {
        d.notify_callback();
      } catch (...) {
        // A notification callback must not throw; publish never throws.
      }
      break;
  }
}

// ---- Consumer side ---------------------------------------------------------------------------

namespace {

// Counts one on a counter only the consumer writes: a plain load and store, no RMW.
// relaxed: read by diagnostics only.
void bump(std::atomic<std::uint64_t>& c) noexcept {
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

bool should_discard(const deferred_core& d) noexcept {
  const sub_core& s = *d.sub;
  if (s.list->bus->discard_pending.load(std::memory_order_acquire)) {
    return true;
  }
  return d.discard_on_end && (s.flags.load(std::memory_order_acquire) & sub_ended) != 0;
}

// The async subscription reached END: every event queued before it was handled. Destroys the
// handler and drops the consumer's reference (which may free the subscription and this task).
void finish_async(deferred_core& d) noexcept {
  sub_core* s = d.sub;
  if (s->handler != nullptr) {
    s->destroy(s->handler);
    s->handler = nullptr;
  }
  d.end_reached.store(true, std::memory_order_release);
  sub_release(s);
}

// How long a drain task that ran dry polls its queue (see run_async).
constexpr auto dry_poll = std::chrono::microseconds(20);

// Polls `d`'s queue while the worker has nothing else to run, for at most dry_poll. True if
// an event (or END) arrived.
bool poll_for_more(const deferred_core& d) noexcept {
  if (!worker_queue_empty_approx()) {
    return false;
  }
  const auto until = std::chrono::steady_clock::now() + dry_poll;
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    if (d.queue.next_linked_approx()) {
      return true;
    }
    if (i % 32 == 0 &&
        (!worker_queue_empty_approx() || std::chrono::steady_clock::now() >= until)) {
      return false;
    }
  }
}

}  // namespace

bool run_async(task& t) noexcept {
  auto& d = static_cast<deferred_core&>(t);
  std::uint32_t budget = d.events_per_run;
  while (budget > 0) {
    mpsc_node* n = d.queue.pop();
    if (n == nullptr) {
      if (!d.queue.empty_approx()) {
        cpu_relax();  // a push is half done
        continue;
      }
      // Ran dry. On a herald worker with nothing else to run, poll a little for the next event
      // before going idle: a publisher that publishes back to back then finds the task running
      // and only queues (no wake-up, no run-queue round trip per event).
      if (!poll_for_more(d)) {
        return true;
      }
      continue;
    }
    auto& node = static_cast<event_node&>(*n);
    if (node.block == nullptr) {
      finish_async(d);
      return false;  // the task may be gone
    }
    // relaxed: counters read by diagnostics only.
    if (should_discard(d)) {
      bump(d.discarded);
    } else {
      d.deliver(*d.sub, *node.block);
      bump(d.delivered);
    }
    release_block(node.block);
    --budget;
  }
  // The budget is spent: run again after the tasks already queued on this worker, so that the
  // remaining events do not wait for the next publish (HAProxy's default handler let them).
  if (!d.queue.empty_approx()) {
    d.wake();
  }
  return true;
}

namespace {
// END may be handed out only once no notification of this queue can follow it: a consumer
// frees itself on END, and a later wake-up would run its tasklet on freed state (HAProxy's
// END-vs-wake-up use-after-free). So wait for END's own notification to return (a few
// instructions away, since END is pushed just before it; unless this thread *is* that
// notification, a callback that pops), then, for a tasklet, hand END to its last run: if a run
// is still pending, keep END for it.
event_node* hand_out_end(deferred_core& d, event_node* end) noexcept {
  if (d.end_notifier.load(std::memory_order_relaxed) != std::this_thread::get_id()) {
    for (unsigned spins = 0; !d.end_notified.load(std::memory_order_acquire); ++spins) {
      if (spins < 64) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // the notifying thread may have been preempted
      }
    }
  }
  if (d.notify_how == notify_kind::tasklet && d.notify_tasklet.wake_pending()) {
    d.held_end = end;  // the pending run pops it
    return nullptr;
  }
  d.held_end = nullptr;
  d.end_popped = true;
  return end;
}
}  // namespace

event_node* queue_pop(deferred_core& d) noexcept {
  if (d.end_popped) {
    return nullptr;
  }
  if (d.held_end != nullptr) {
    return hand_out_end(d, d.held_end);
  }
  for (;;) {
    if (mpsc_node* n = d.queue.pop()) {
      auto* node = static_cast<event_node*>(n);
      if (node->block == nullptr) {
        return hand_out_end(d, node);
      } else {
        if (should_discard(d)) {
          bump(d.discarded);
          release_block(node->block);
          continue;
        }
        bump(d.delivered);
      }
      return node;
    }
    if (!d.queue.empty_approx()) {
      cpu_relax();  // a push is half done
      continue;
    }
    // Empty: reset the fd, disarm, then look again. A push after the disarm re-arms and
    // notifies; one before it is seen by the second look.
    if (d.notify_how == notify_kind::fd) {
      std::uint64_t v;
      (void)::read(d.notify_fd, &v, sizeof v);
    }
    d.armed.store(false, std::memory_order_seq_cst);
    if (d.queue.empty_approx()) {
      return nullptr;
    }
  }
}

deferred_core::deferred_core(executor_ref ex, run_on where) noexcept
    : task(&run_async, ex, where) {}

deferred_core::~deferred_core() {
  // Nothing can push any more (the membership ended a grace period ago, or never began):
  // release what nobody consumed.
  while (mpsc_node* n = queue.pop()) {
    auto* node = static_cast<event_node*>(n);
    if (node->block != nullptr) {
      release_block(node->block);
    }
  }
  if (notify_fd >= 0) {
    ::close(notify_fd);
  }
}

int make_event_fd() noexcept { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

}  // namespace herald::detail
