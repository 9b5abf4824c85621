// Async and queue delivery: the pooled event blocks, the publish side of deferred delivery,
// consumer notification, the drain task of async subscriptions and the pop of queue ones.
// See herald/detail/deferred.hpp for the block layout and herald/bus.hpp for the contracts.
#include "herald/detail/deferred.hpp"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

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

// Async handlers running on this thread (on a worker or a user's executor): a publish from one
// never blocks on a full queue.
thread_local unsigned tls_async_handlers = 0;

std::uint32_t class_of(std::size_t bytes) noexcept {
  if (bytes <= min_class_bytes) {
    return 0;
  }
  const auto k = static_cast<std::uint32_t>(std::bit_width(bytes - 1) - 7);  // 2^7 = 128
  return k < class_count ? k : direct_class;
}

std::size_t class_bytes(std::uint32_t c) noexcept { return min_class_bytes << c; }

// Asks for the lines of the block that the next allocation of this class will return, in
// exclusive state. Blocks come back from the consumers that freed them, so their lines sit in
// those consumers' caches: fetched now, they arrive while this publish goes on, and the next
// publish writes them without waiting (its read-modify-writes would otherwise wait for every
// pending store to such a line). `bytes`: this allocation's size, the best guess for the next.
#if defined(__x86_64__)
// PREFETCHW (CPUID 0x80000001 ECX bit 8): without it a prefetch brings the line in shared
// state, and the write that follows still waits for the other cache to let it go.
const bool has_prefetchw = [] {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(0x80000001U, &a, &b, &c, &d) != 0 && (c & (1U << 8)) != 0;
}();
#endif

void prefetch_for_write(const void* p, std::size_t bytes) noexcept {
  constexpr std::size_t max_lines = 64;  // 4 KiB: a block for about 120 subscribers
  const auto* line = static_cast<const char*>(p);
  const std::size_t lines = std::min(max_lines, (bytes + 63) / 64);
  for (std::size_t i = 0; i < lines; ++i, line += 64) {
#if defined(__x86_64__)
    if (has_prefetchw) {
      asm volatile("prefetchw %0" : : "m"(*line));
      continue;
    }
#endif
    __builtin_prefetch(line, 1, 3);
  }
}

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
    free_block* next = b->next;
    tc.head[c] = next;
    --tc.count[c];
    if (next != nullptr) {
      prefetch_for_write(next, bytes);
    }
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

namespace {

// Raises `hw` to `depth` if it is higher (relaxed: a statistic).
void raise_high_water(std::atomic<std::uint64_t>& hw, std::uint64_t depth) noexcept {
  std::uint64_t cur = hw.load(std::memory_order_relaxed);
  while (depth > cur && !hw.compare_exchange_weak(cur, depth, std::memory_order_relaxed)) {
  }
}

overflow_info info_of(const sub_core& s, event_type type, std::size_t depth) noexcept {
  overflow_info i;
  i.subscription_id = s.id;
  i.subscription_name = s.name;
  i.type = type;
  i.queued = depth;
  i.bound = s.deferred->bp.bound;
  return i;
}

// Slow-consumer episodes: the first publisher that finds the depth at or above the threshold
// opens one; the first that finds it still open after slow_after reports it (once); the first
// that finds the depth below the threshold closes it.
void watch_slow(sub_core& s, event_type type, std::uint64_t depth) noexcept {
  deferred_core& d = *s.deferred;
  const std::size_t threshold = d.bp.slow_threshold;
  if (threshold == 0) {
    return;
  }
  // relaxed: an advisory state machine; the diagnostic is best-effort by nature.
  if (depth < threshold) {
    if (d.slow_since.load(std::memory_order_relaxed) != 0) {
      d.slow_since.store(0, std::memory_order_relaxed);
      d.slow_reported.store(false, std::memory_order_relaxed);
    }
    return;
  }
  const std::int64_t now = now_ns();
  std::int64_t since = d.slow_since.load(std::memory_order_relaxed);
  if (since == 0) {
    d.slow_since.compare_exchange_strong(since, now, std::memory_order_relaxed);
    return;
  }
  const auto above = std::chrono::nanoseconds(now - since);
  if (above >= d.bp.slow_after && !d.slow_reported.load(std::memory_order_relaxed) &&
      !d.slow_reported.exchange(true, std::memory_order_relaxed)) {
    diagnostic diag;
    diag.kind = diagnostic_kind::slow_consumer;
    diag.info = info_of(s, type, depth);
    diag.duration = above;
    report_diagnostic(*s.list->bus, diag);
  }
}

// drop_oldest: removes the oldest queued event. False if none could be taken (the consumer
// holds them all, or a push is half done).
bool drop_one_oldest(deferred_core& d) noexcept {
  d.lock();
  mpsc_node* n = d.queue.pop();
  if (n == nullptr) {
    d.unlock();
    return false;
  }
  auto* node = static_cast<event_node*>(n);
  // Under the lock, like the consumer's counts of the same counters.
  // release: pairs with admit()'s acquire read of `removed`.
  d.removed.store(d.removed.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  d.dropped_oldest.store(d.dropped_oldest.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
  d.unlock();
  release_block(node->block);  // never END: END is queued after every publisher left
  return true;
}

// A blocked publisher: spins briefly, then sleeps on d.room until the consumer pops (or the
// deadline). Returns false once the deadline has passed.
bool wait_for_room(deferred_core& d, unsigned round, std::int64_t deadline) noexcept {
  if (round < 64) {
    cpu_relax();
    return true;
  }
  const std::int64_t now = now_ns();
  // An ended subscription will not make room any more (its consumer may be gone): stop
  // waiting (end_locked wakes sleepers).
  if (now >= deadline || (d.sub->flags.load(std::memory_order_acquire) & sub_ended) != 0) {
    return false;
  }
  // seq_cst (Dekker with consumer_pop): either the consumer sees this waiter after its pop and
  // bumps `room`, or this re-check sees the pop.
  d.room_waiters.fetch_add(1, std::memory_order_seq_cst);
  const std::uint32_t seen = d.room.load(std::memory_order_seq_cst);
  if (d.accepted.load(std::memory_order_seq_cst) - d.removed.load(std::memory_order_seq_cst) <
      d.bp.bound) {
    d.room_waiters.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }
  if ((d.sub->flags.load(std::memory_order_seq_cst) & sub_ended) != 0) {
    d.room_waiters.fetch_sub(1, std::memory_order_relaxed);
    return false;  // ended since the check above (see wake_blocked_publishers)
  }
  const std::int64_t left = deadline - now;
  timespec ts{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&d.room), FUTEX_WAIT_PRIVATE, seen,
                  &ts, nullptr, 0);
  d.room_waiters.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

// Admission of one event to the watched (bounded or slow-watched) subscription `s`. True: queue
// it. False: it was dropped, and counted, by the overflow policy.
bool admit(sub_core& s, event_type type, bool may_block) noexcept {
  deferred_core& d = *s.deferred;
  const std::size_t bound = d.bp.bound;
  if (bound == 0) {  // unbounded, watched for slowness only
    // relaxed: counters; the depth is an estimate.
    const std::uint64_t a = d.accepted.fetch_add(1, std::memory_order_relaxed) + 1;
    const std::uint64_t r = d.removed.load(std::memory_order_relaxed);
    const std::uint64_t depth = a > r ? a - r : 0;
    raise_high_water(d.high_water, depth);
    watch_slow(s, type, depth);
    return true;
  }
  overflow_policy policy = d.bp.policy;
  std::int64_t deadline = 0;
  unsigned oldest_retries = 0;
  for (unsigned round = 0;; ++round) {
    // Reserve a place: `accepted - removed` never exceeds the bound. The CAS on `accepted`
    // orders reservations among publishers. `removed` is read first, with acquire: every event
    // it counts was reserved before (reservation, push, pop, count, each ordered before the
    // next), so the `accepted` read after it is at least `r` and `a - r` cannot wrap around.
    // Read the other way round, a stale `a` under a fresh `r` wrapped to a huge depth and
    // dropped an event from a queue that had room.
    const std::uint64_t r = d.removed.load(std::memory_order_acquire);
    std::uint64_t a = d.accepted.load(std::memory_order_relaxed);
    if (a - r < bound) {
      if (!d.accepted.compare_exchange_weak(a, a + 1, std::memory_order_relaxed)) {
        continue;
      }
      const std::uint64_t depth = a + 1 - r;
      raise_high_water(d.high_water, depth);
      watch_slow(s, type, depth);
      return true;
    }
    // Full, if nothing was removed while `a` was read: then the depth was exactly `a - r`
    // (the bound) at that moment. Otherwise `a - r` overstates it: look again.
    if (d.removed.load(std::memory_order_acquire) != r) {
      continue;
    }
    watch_slow(s, type, a - r);
    switch (policy) {
      case overflow_policy::block:
        if (!may_block || tls_async_handlers != 0 || on_scheduler_worker()) {
          policy = d.bp.after_timeout;  // a handler or a worker never waits
          continue;
        }
        if (deadline == 0) {
          deadline = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    d.bp.block_timeout).count();
        }
        if (!wait_for_room(d, round, deadline)) {
          policy = d.bp.after_timeout;
        }
        continue;
      case overflow_policy::drop_oldest:
        // Nothing to take means the consumer emptied the queue since the reservation failed:
        // try again (a few times: a consumer racing for every slot must not stall publishers).
        if (drop_one_oldest(d) || ++oldest_retries <= 8) {
          continue;
        }
        d.dropped_newest.fetch_add(1, std::memory_order_relaxed);
        return false;
      case overflow_policy::drop_newest:
        d.dropped_newest.fetch_add(1, std::memory_order_relaxed);
        return false;
      case overflow_policy::notify:
        if (d.bp.on_overflow) {
          try {
            d.bp.on_overflow(info_of(s, type, a - r));
          } catch (...) {
            // The hook must not throw; publish never throws.
          }
        }
        d.dropped_notify.fetch_add(1, std::memory_order_relaxed);
        return false;
      case overflow_policy::end_subscription: {
        d.dropped_ended.fetch_add(1, std::memory_order_relaxed);
        std::uint8_t none = 0;
        if (d.reason.compare_exchange_strong(
                none, static_cast<std::uint8_t>(end_reason::overflow) + 1,
                std::memory_order_relaxed)) {
          diagnostic diag;
          diag.kind = diagnostic_kind::ended_on_overflow;
          diag.info = info_of(s, type, a - r);
          report_diagnostic(*s.list->bus, diag);
          unsubscribe_core(&s);  // inside this publish's read section: never waits
        }
        return false;
      }
    }
  }
}

}  // namespace

event_block* make_block(const list_core& l, std::uint32_t nodes, event_type type, const void* safe,
                        const payload_ops& ops, const event_block* replayed) noexcept {
  const std::size_t payload_offset =
      round_up(sizeof(event_block), std::max<std::size_t>(ops.align, 16));
  const std::size_t nodes_offset = round_up(payload_offset + ops.size, alignof(event_node));
  const std::size_t bytes = nodes_offset + std::size_t{nodes} * sizeof(event_node);
  std::uint32_t cls = 0;
  void* mem = allocate_block(bytes, &cls);
  if (mem == nullptr) {
    return nullptr;
  }
  auto* b = ::new (mem) event_block;
  b->size_class = cls;
  b->payload_offset = static_cast<std::uint32_t>(payload_offset);
  b->nodes_offset = static_cast<std::uint32_t>(nodes_offset);
  b->ops = &ops;
  b->type = type;
  b->when_ns = now_ns();
  if (!ops.copy(static_cast<unsigned char*>(mem) + payload_offset, safe)) {
    b->~event_block();
    free_block_memory(mem, cls);
    return nullptr;
  }
  if (replayed != nullptr) {
    // A last-value replay keeps the number and time of the publish it repeats.
    b->sequence = replayed->sequence;
    b->when_ns = replayed->when_ns;
  } else {
    // After the copy, so that a failed publish takes no number (no gap). relaxed: a counter;
    // the pushes (release) publish the value with the block.
    b->sequence = const_cast<list_core&>(l).sequence.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  b->refs.store(1, std::memory_order_relaxed);  // the caller's
  return b;
}

namespace {

// Queues node `i` of `b` (its target set) unless the overflow policy drops it. The node holds a
// reference on `b`; a dropped node gives it back at once (which may free `b`, if the caller
// handed its own reference over). True if queued.
bool offer_node(event_block* b, event_node& node, event_type type, bool may_block) noexcept {
  sub_core& s = *node.target;
  deferred_core& d = *s.deferred;
  // relaxed: a counter; the push (release) carries the number to the consumer.
  node.sub_sequence = d.published.fetch_add(1, std::memory_order_relaxed) + 1;
  if (d.watch_depth && !admit(s, type, may_block)) [[unlikely]] {
    release_block(b);
    return false;
  }
  d.queue.push_uncounted(node);  // stats() counts events, not the queue
  notify_consumer(d);
  return true;
}

}  // namespace

std::size_t offer_block(event_block* b, std::span<sub_core* const> first,
                        std::span<sub_core* const> second, bool may_block,
                        caller_ref ref) noexcept {
  auto* nodes = reinterpret_cast<event_node*>(reinterpret_cast<unsigned char*>(b) +
                                              b->nodes_offset);
  // One link per callable subscription: whether each is callable is decided once, here
  // (counting first and filling later could let a subscription resumed in between take the
  // link of an active one).
  std::uint32_t used = 0;
  for (const auto range : {first, second}) {
    for (sub_core* s : range) {
      if (sub_callable(*s)) {
        event_node* node = ::new (&nodes[used]) event_node;
        node->block = b;
        node->target = s;
        ++used;
      }
    }
  }
  b->nodes = used;
  // One reference per node (a node the overflow policy drops gives its back at once).
  if (ref == caller_ref::keep) {
    b->refs.fetch_add(used, std::memory_order_relaxed);
  } else if (used == 0) {
    release_block(b);
    return 0;
  } else {
    // The caller's only reference becomes the nodes' `used`: nobody else can see `b` before
    // the first push (release) publishes it, so a plain store will do. This spares the
    // publisher two read-modify-writes on a line that the consumer is about to read and write.
    b->refs.store(used, std::memory_order_relaxed);
  }
  // Once the last node is queued, `b` may be gone: read nothing from it after that.
  const event_type type = b->type;
  std::size_t queued = 0;
  for (std::uint32_t i = 0; i < used; ++i) {
    if (offer_node(b, nodes[i], type, may_block)) {
      ++queued;
    }
  }
  return queued;
}

result<std::size_t> publish_deferred(const list_core& l, std::span<sub_core* const> family,
                                     std::span<sub_core* const> wildcard, event_type type,
                                     const void* safe, const payload_ops& ops,
                                     bool may_block) noexcept {
  const auto callable = [](sub_core* s) { return sub_callable(*s); };
  if (std::none_of(family.begin(), family.end(), callable) &&
      std::none_of(wildcard.begin(), wildcard.end(), callable)) {
    return std::size_t{0};  // no snapshot when nobody would receive it
  }
  const auto n = static_cast<std::uint32_t>(family.size() + wildcard.size());
  event_block* b = make_block(l, n, type, safe, ops, nullptr);
  if (b == nullptr) {
    return unexpected(errc::no_memory);
  }
  return offer_block(b, family, wildcard, may_block, caller_ref::hand_over);
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
    if (d.deliver_end != nullptr) {
      ++tls_async_handlers;  // a handler too: its publishes never block
      d.deliver_end(*s, end_reason_of(d));
      --tls_async_handlers;
    }
    s->destroy(s->handler);
    s->handler = nullptr;
  }
  d.end_reached.store(true, std::memory_order_release);
  sub_release(s);
}

// How long a drain task that ran dry polls its queue (see run_async).
constexpr auto dry_poll = std::chrono::microseconds(20);
// How many runs in a row a drain task that ran dry on a busy worker stays queued (see run_async).
constexpr std::uint32_t linger_runs = 8;

// Polls `d`'s queue while the worker has nothing else to run, for at most dry_poll. True if
// an event (or END) arrived.
bool poll_for_more(const deferred_core& d) noexcept {
  // With drop_oldest a publisher may pop, so the consumer reads the queue only under the lock.
  if (d.lock_pops || !worker_queue_empty_approx()) {
    return false;
  }
  // Looks every 8 pauses, not at every one: the line it reads is the one the next publish
  // writes, and each look takes it away from the publisher again (measured: a look at every
  // pause cost a back-to-back publisher with one subscriber about a third of its rate; every 8
  // pauses moved the median latency of an isolated event by 30 to 90 ns in BM_AsyncLatency).
  const auto until = std::chrono::steady_clock::now() + dry_poll;
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    if (i % 8 == 0 && d.queue.next_linked_approx()) {
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
    mpsc_node* n = d.consumer_pop();
    if (n == nullptr) {
      if (d.linger < linger_runs && !d.lock_pops && on_scheduler_worker() &&
          !worker_queue_empty_approx()) {
        // Ran dry on a herald worker that has other tasks to run (other subscriptions' drain
        // tasks, typically): stay queued behind them and look again after them, a few times,
        // rather than going idle. Going idle would make the next publish wake this task (a
        // read-modify-write on its state and a push on the worker's run queue, both on lines
        // this worker owns) for every subscription and every event; queued, the publish only
        // reads the state. The worker then makes rounds over the busy subscriptions, the way
        // a dispatcher loop would. (Measured with 256 subscribers: without it the run fell
        // now and then into a wake-up per event and took 2 to 4 times as long.)
        ++d.linger;
        d.wake();
        return true;
      }
      if (!d.consumer_empty()) {
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
    d.linger = 0;
    auto& node = static_cast<event_node&>(*n);
    if (node.block == nullptr) {
      finish_async(d);
      return false;  // the task may be gone
    }
    // relaxed: counters read by diagnostics only.
    if (should_discard(d)) {
      bump(d.discarded);
    } else {
      ++tls_async_handlers;
      d.deliver(*d.sub, *node.block, node.sub_sequence);
      --tls_async_handlers;
      bump(d.delivered);
    }
    release_block(node.block);
    --budget;
  }
  // The budget is spent: run again after the tasks already queued on this worker, so that the
  // remaining events do not wait for the next publish (HAProxy's default handler let them).
  if (!d.consumer_empty()) {
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
    if (mpsc_node* n = d.consumer_pop()) {
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
    if (!d.consumer_empty()) {
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
    if (d.consumer_empty()) {
      return nullptr;
    }
  }
}

deferred_core::deferred_core(executor_ref ex, run_on where) noexcept
    : task(&run_async, ex, where) {}

void deferred_core::lock() noexcept {
  // acquire: pairs with unlock()'s release; the sections are a few instructions.
  while (pop_lock.exchange(true, std::memory_order_acquire)) {
    while (pop_lock.load(std::memory_order_relaxed)) {
      cpu_relax();
    }
  }
}

void deferred_core::unlock() noexcept { pop_lock.store(false, std::memory_order_release); }

mpsc_node* deferred_core::consumer_pop() noexcept {
  if (lock_pops) {
    lock();
  }
  mpsc_node* n = queue.pop();
  if (n != nullptr) {
    // The next pop reads the next node's line, written by a publisher on another core: ask
    // for it now, while this event is handled.
    __builtin_prefetch(queue.head_approx());
  }
  if (n != nullptr && static_cast<event_node*>(n)->block != nullptr) {
    // One writer at a time (the consumer, or under the lock): a plain increment.
    const std::uint64_t r = removed.load(std::memory_order_relaxed) + 1;
    if (!blocking) {
      removed.store(r, std::memory_order_release);  // pairs with admit()'s acquire read
    } else {
      // seq_cst exchange, then seq_cst load (Dekker with wait_for_room): the pop is visible
      // before the check for sleeping publishers. Wake them once half the bound is free, not
      // at every pop: each wake-up then lets them queue a batch instead of one event per
      // context switch.
      (void)removed.exchange(r, std::memory_order_seq_cst);
      if (room_waiters.load(std::memory_order_seq_cst) != 0) {
        const std::uint64_t a = accepted.load(std::memory_order_relaxed);
        if (a < r || a - r <= bp.bound / 2) {  // `a < r`: a stale read of an emptied queue
          room.fetch_add(1, std::memory_order_seq_cst);
          (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&room), FUTEX_WAKE_PRIVATE,
                          INT32_MAX, nullptr, nullptr, 0);
        }
      }
    }
    if (!watch_depth && r % 64 == 1) {
      // Unwatched queues: sample the depth now and then, here rather than in every publish.
      const std::uint64_t p = published.load(std::memory_order_relaxed);
      raise_high_water(high_water, p >= r ? p - r + 1 : 1);
    }
  }
  if (lock_pops) {
    unlock();
  }
  return n;
}

bool deferred_core::consumer_empty() noexcept {
  if (!lock_pops) {
    return queue.empty_approx();
  }
  lock();
  const bool empty = queue.empty_approx();
  unlock();
  return empty;
}

subscription_stats deferred_core::stats() const noexcept {
  // relaxed: statistics. Consumer counters first: an event counted as removed was published
  // before, so reading `published` last keeps `queued` from going negative.
  subscription_stats st;
  st.delivered = delivered.load(std::memory_order_relaxed);
  st.discarded = discarded.load(std::memory_order_relaxed);
  st.dropped_oldest = dropped_oldest.load(std::memory_order_relaxed);
  st.dropped_newest = dropped_newest.load(std::memory_order_relaxed);
  st.dropped_ended = dropped_ended.load(std::memory_order_relaxed);
  st.dropped_notify = dropped_notify.load(std::memory_order_relaxed);
  st.published = published.load(std::memory_order_relaxed);
  const std::uint64_t gone = st.delivered + st.discarded + st.dropped();
  st.queued = st.published > gone ? st.published - gone : 0;
  st.high_water = std::max(high_water.load(std::memory_order_relaxed), st.queued);
  return st;
}

void wake_blocked_publishers(deferred_core& d) noexcept {
  // A read-modify-write, not a load: it is ordered with the sleepers' fetch_add, so either it
  // sees a sleeper, or that sleeper's re-check (after its fetch_add, which then reads from this
  // one) sees the ended flag stored before this call.
  if (!d.blocking || d.room_waiters.fetch_add(0, std::memory_order_seq_cst) == 0) {
    return;
  }
  d.room.fetch_add(1, std::memory_order_seq_cst);
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&d.room), FUTEX_WAKE_PRIVATE,
                  INT32_MAX, nullptr, nullptr, 0);
}

void set_end_reason(deferred_core& d, end_reason why) noexcept {
  std::uint8_t none = 0;
  // relaxed: read by the consumer after END, which the queue's release/acquire orders.
  d.reason.compare_exchange_strong(none, static_cast<std::uint8_t>(why) + 1,
                                   std::memory_order_relaxed);
}

end_reason end_reason_of(const deferred_core& d) noexcept {
  const std::uint8_t r = d.reason.load(std::memory_order_relaxed);
  return r == 0 ? end_reason::unsubscribed : static_cast<end_reason>(r - 1);
}

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
