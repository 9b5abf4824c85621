// Multi-threaded stress tests of async and queue delivery (herald/bus.hpp, herald/detail/
// deferred.hpp): publishers, subscription churn, every ending path and bus shutdown raced
// against each other. They run under ThreadSanitizer and AddressSanitizer.
//
// What is checked
//   - Census: publishers publish (in the optimised build) over a million events to a few lists
//     while other threads subscribe, pause, resume and end async and queue subscriptions (both
//     pending_on_end modes), destroy and recreate the lists and end subscriptions by id, async
//     handlers end their own subscription, and the bus shuts down while publishers still run.
//     Per subscription: every event arrives at most once, and the events of one publisher in
//     publish order; every event published while the subscription was certainly active and
//     not paused reaches it (pending_on_end::deliver); no event published while it was
//     certainly paused, or after it certainly ended, reaches it; a queue pops END exactly once
//     and last, and its delivered() and discarded() match what its consumer popped (nothing
//     discarded in deliver mode); an async handler is destroyed exactly once, after its last
//     call. Over all: every event pushed to a subscription (the sum of the publish results) was
//     delivered or discarded by the end.
//   - One shared snapshot per publish: 64 async subscribers (and two queues) share each
//     publish's copy of a safe part holding a heap string; each copy is made once and destroyed
//     once, after every consumer saw it.
//   - END exactly once when handle unsubscribe, lookup unsubscribe, list destroy and bus
//     shutdown race each other on the same subscriptions while a publisher publishes.
//   - A queue consumer that frees itself (its event_queue and its tasklet handle) when it pops
//     END, notified through queue_notify::wake(tasklet), while publishers publish and other
//     threads end its subscription: its tasklet never runs again once it freed itself.
//   - Three deterministic scenarios around queue consumers (suite QueueConsumer; see there).
//
// How the checks know what "certainly" means
//   Each publisher keeps, per (list slot, family), the counter of the publish it started and of
//   the last one that returned; the payload carries (publisher, slot, counter). A thread that
//   changes a subscription snapshots the "done" counters just before the call (those publishes
//   completed before it) and the "started" counters just after it returned (those publishes
//   began after it: both sides then do a read-modify-write of one word per (slot, family), so
//   either the publisher's later loads of the list see the change, or the snapshot saw the
//   publish start; no fence, which GCC's ThreadSanitizer does not support). Windows (subscribe or
//   resume returned .. pause or end called) must be received in full; silences (pause returned ..
//   resume called; end returned .. forever) must not be received at all.
//
// How the threads meet
//   Nothing sleeps and nothing is timed: threads wait on counters and flags (atomic wait, or
//   spin then yield), and the subscription churn follows the publishers' progress.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies the work. The base counts are
//   sized for sanitizer builds; the optimised build does more (the census publishes 1.2 M
//   events there).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/bus.hpp"
#include "herald/scheduler.hpp"

#include "stress_support.hpp"

namespace {

using herald::pending_on_end;
using herald::queue_notify;
using herald::run_on;
using herald::sub_list;
using herald::subscription;
using herald::tasklet;
using herald::type_of;
using herald::test::optimised_build;
using herald::test::spin_until;
using herald::test::stress_scale;

// ---- Families (declared at static initialisation; names of this file only) -------------------

struct census_payload {
  std::uint32_t pub = 0;
  std::uint32_t slot = 0;
  std::uint64_t count = 0;  // per (publisher, slot, family), from 1
};

// Async subscriptions that deliver, and queue subscriptions of both modes.
struct tacensus_event {
  static constexpr std::string_view family_name = "TACENSUS";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  using safe_part = census_payload;
};
// Async subscriptions with pending_on_end::discard. Their discards are not observable through
// the API, so they have a family of their own and the exact accounting covers the other one.
struct tacensusd_event {
  static constexpr std::string_view family_name = "TACENSUSD";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  using safe_part = census_payload;
};

struct share_record;
// A safe part with a heap string (longer than any small-string buffer) that reports the life of
// its copies (the snapshots) to the record of its publish.
struct share_payload {
  share_payload(share_record* r, std::size_t i);
  share_payload(const share_payload& o);
  share_payload& operator=(const share_payload&) = delete;
  ~share_payload();

  share_record* rec;
  std::size_t index;
  std::string text;
  bool is_copy = false;
};
struct tashare_event {
  static constexpr std::string_view family_name = "TASHARE";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = share_payload;
};

struct simple_payload {
  std::uint32_t pub = 0;
  std::uint64_t count = 0;
};
struct taend_event {
  static constexpr std::string_view family_name = "TAEND";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = simple_payload;
};
struct tafree_event {
  static constexpr std::string_view family_name = "TAFREE";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = simple_payload;
};
struct tahazard_event {
  static constexpr std::string_view family_name = "TAHAZARD";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = simple_payload;
};

// A safe part whose copy (the snapshot a publish makes) calls a hook: user code running inside
// a publish, between the point where the publish chose its receivers and the point where it
// queues the event to them.
struct hook_payload {
  explicit hook_payload(std::uint64_t v, std::function<void()>* hook = nullptr)
      : n(v), on_copy(hook) {}
  hook_payload(const hook_payload& o) : n(o.n), on_copy(o.on_copy) {
    if (on_copy != nullptr && *on_copy) {
      std::exchange(*on_copy, nullptr)();  // once
    }
  }
  hook_payload& operator=(const hook_payload&) = delete;
  ~hook_payload() = default;

  std::uint64_t n;
  std::function<void()>* on_copy;
};
struct tahook_event {
  static constexpr std::string_view family_name = "TAHOOK";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = hook_payload;
};

[[maybe_unused]] const bool families_declared =
    (static_cast<void>(herald::family_id_of<tacensus_event>()),
     static_cast<void>(herald::family_id_of<tacensusd_event>()),
     static_cast<void>(herald::family_id_of<tashare_event>()),
     static_cast<void>(herald::family_id_of<taend_event>()),
     static_cast<void>(herald::family_id_of<tafree_event>()),
     static_cast<void>(herald::family_id_of<tahazard_event>()),
     static_cast<void>(herald::family_id_of<tahook_event>()), true);

// ---- Scale and waiting -------------------------------------------------------------------------

// `sanitized` in sanitizer (and unoptimised) builds, `optimised` in the optimised build, both
// times HERALD_STRESS_SCALE.
std::size_t scaled(std::size_t sanitized, std::size_t optimised, double scale) {
  const double n = static_cast<double>(optimised_build ? optimised : sanitized) * scale;
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

template <class T>
void wait_at_least(const std::atomic<T>& a, T want) {
  for (T v = a.load(std::memory_order_acquire); v < want; v = a.load(std::memory_order_acquire)) {
    a.wait(v, std::memory_order_acquire);
  }
}

// Waits for two runs, one after the other, of a marker tasklet placed on worker `thread`:
// everything woken on that worker before the call has run by then, including a task re-posted
// because it was woken while running (it is re-posted before the worker takes its next task,
// so it is ahead of the second marker).
void quiesce_worker(herald::scheduler& w, unsigned thread) {
  for (int k = 0; k < 2; ++k) {
    auto ran = std::make_shared<std::atomic<bool>>(false);
    tasklet m = w.make_tasklet(
        [ran] {
          ran->store(true, std::memory_order_release);
          ran->notify_all();
        },
        run_on::thread(thread));
    m.wake();
    while (!ran->load(std::memory_order_acquire)) {
      ran->wait(false, std::memory_order_acquire);
    }
  }
}

// A bounded spin, so that racers meet in varying orders (a count of spins, never a time).
void stagger(std::size_t units) {
  for (std::size_t i = 0; i < units * 32; ++i) {
    herald::cpu_relax();
  }
}

// The life of a handler object: live instances made and destroyed (a moved-from one counts for
// nothing), and calls that found the object already destroyed.
struct life_record {
  std::atomic<int> made{0};
  std::atomic<int> destroyed{0};
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> calls_after_destruction{0};
};

constexpr std::uint32_t alive_magic = 0xA11FE;
constexpr std::uint32_t dead_magic = 0xDEAD;

class life_probe {
 public:
  explicit life_probe(life_record& r) noexcept : rec_(&r) {
    r.made.fetch_add(1, std::memory_order_relaxed);
  }
  life_probe(life_probe&& o) noexcept : rec_(std::exchange(o.rec_, nullptr)) {}
  life_probe(const life_probe&) = delete;
  life_probe& operator=(const life_probe&) = delete;
  life_probe& operator=(life_probe&&) = delete;
  ~life_probe() {
    magic_ = dead_magic;
    if (rec_ != nullptr) {
      rec_->destroyed.fetch_add(1, std::memory_order_acq_rel);
    }
  }
  // Counts a call; false (and counted) if this object was already destroyed.
  bool called() const noexcept {
    rec_->calls.fetch_add(1, std::memory_order_relaxed);
    if (magic_ != alive_magic) {
      rec_->calls_after_destruction.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

 private:
  life_record* rec_;
  std::uint32_t magic_ = alive_magic;  // plain on purpose: a call racing destruction shows
};

// =============================================================================================
// Census
// =============================================================================================

constexpr std::size_t census_publishers = 3;
constexpr std::size_t census_slots = 3;
constexpr std::size_t census_families = 2;  // 0: TACENSUS, 1: TACENSUSD
constexpr std::size_t census_owners = 2;
constexpr std::size_t census_max_owned = 8;      // active subscriptions per owner
constexpr std::int64_t census_backlog = 20'000;  // pushed but not consumed (TACENSUS)

using snap = std::array<std::uint64_t, census_publishers>;

void min_into(snap& a, const snap& b) {
  for (std::size_t p = 0; p < census_publishers; ++p) {
    a[p] = std::min(a[p], b[p]);
  }
}

enum class census_kind : std::uint8_t {
  async_deliver,
  async_discard,
  queue_deliver,
  queue_discard
};

bool delivers(census_kind k) {
  return k == census_kind::async_deliver || k == census_kind::queue_deliver;
}
bool is_queue(census_kind k) {
  return k == census_kind::queue_deliver || k == census_kind::queue_discard;
}

// One generation of a list slot: the list, and what its destroyer knew.
struct census_gen {
  std::unique_ptr<sub_list> list;
  // Written by the janitor around destroy(); read after every thread joined.
  bool destroyed = false;
  std::array<snap, census_families> cap{};   // "done", before destroy()
  std::array<snap, census_families> post{};  // "started", after destroy() returned
};

struct census_window {
  snap lo{};
  snap hi{};
  bool open = true;
};

// What the checks know about one subscription.
struct census_record {
  census_kind kind = census_kind::async_deliver;
  std::size_t slot = 0;
  std::size_t fam = 0;
  census_gen* gen = nullptr;
  std::uint64_t id = 0;
  bool subscribed = false;  // owner, once subscribe succeeded; read after the joins

  // Written by the owner, by the async handler (self unsubscribe) and by the sniper.
  std::mutex mutex;
  std::vector<census_window> windows;         // guarded by mutex
  std::vector<snap> caps;                     // "done" before a foreign end call; guarded
  std::vector<snap> end_silences;             // "started" after an end call returned; guarded
  std::vector<std::pair<snap, snap>> pauses;  // (pause returned, resume called]; guarded

  // Consumer side: one consumer at a time (the drain task, or the owner popping the queue).
  std::array<std::vector<std::pair<std::uint64_t, std::uint64_t>>, census_publishers> ranges;
  std::uint64_t received = 0;
  std::uint64_t out_of_order = 0;  // duplicates included
  std::uint64_t wrong_event = 0;
  // Queue subscriptions (the owner).
  int ends = 0;
  std::uint64_t items_after_end = 0;
  bool open_after_end = false;
  std::uint64_t q_delivered = 0;
  std::uint64_t q_discarded = 0;
  // Async handlers.
  life_record life;

  void note(const census_payload& pl) {
    if (pl.pub >= census_publishers || pl.slot != slot || pl.count == 0) {
      ++wrong_event;
      return;
    }
    auto& rg = ranges[pl.pub];
    if (!rg.empty() && pl.count <= rg.back().second) {
      ++out_of_order;
    } else if (!rg.empty() && pl.count == rg.back().second + 1) {
      rg.back().second = pl.count;
    } else {
      rg.emplace_back(pl.count, pl.count);
    }
    ++received;
  }
  void open_window(const snap& lo) {
    std::lock_guard lock(mutex);
    windows.push_back(census_window{lo, {}, true});
  }
  void close_window(const snap& hi) {
    std::lock_guard lock(mutex);
    if (!windows.empty() && windows.back().open) {
      windows.back().hi = hi;
      windows.back().open = false;
    }
  }
  void add_cap(const snap& s) {
    std::lock_guard lock(mutex);
    caps.push_back(s);
  }
  void add_end_silence(const snap& s) {
    std::lock_guard lock(mutex);
    end_silences.push_back(s);
  }
  void add_pause(const snap& from, const snap& to) {
    std::lock_guard lock(mutex);
    pauses.emplace_back(from, to);
  }
};

struct alignas(64) census_progress {
  // [slot][family]: the counter of the publish started / of the last one that returned.
  std::array<std::array<std::atomic<std::uint64_t>, census_families>, census_slots> started{};
  std::array<std::array<std::atomic<std::uint64_t>, census_families>, census_slots> done{};
};

struct census_stats {
  std::atomic<std::uint64_t> subscribes{0};
  std::atomic<std::uint64_t> subscribe_failures{0};
  std::array<std::atomic<std::uint64_t>, 16> failures_by_code{};
  std::atomic<std::uint64_t> pauses{0};
  std::atomic<std::uint64_t> resumes{0};
  std::atomic<std::uint64_t> unsubscribes{0};
  std::atomic<std::uint64_t> self_unsubscribes{0};
  std::atomic<std::uint64_t> snipes{0};
  std::atomic<std::uint64_t> recreations{0};
};

class census {
 public:
  explicit census(double scale)
      : total_events_(scaled(300'000, 1'200'000, scale)),
        shutdown_at_(total_events_ * 97 / 100),
        bus_(herald::bus_options{.threads = 2, .events_per_run = 64}) {
    for (auto& slot : slots_) {
      slot.store(new_gen(), std::memory_order_release);
    }
    // Subscription churn and list recreations follow the publishers' progress.
    op_every_ = std::max<std::uint64_t>(1, total_events_ / 5000);
    recreate_every_ = std::max<std::uint64_t>(1, total_events_ / 120);
    snipe_every_ = std::max<std::uint64_t>(1, total_events_ / 1500);
  }

  void run();

 private:
  // The handler of async subscriptions (both families).
  template <class F>
  struct handler {
    life_probe probe;
    census_record* rec;
    census* c;
    std::uint64_t unsub_after;  // 0: never

    void operator()(herald::async_event<F>& e) {
      const std::uint64_t calls = rec->life.calls.load(std::memory_order_relaxed) + 1;
      (void)probe.called();
      rec->note(e.safe());
      if constexpr (std::is_same_v<F, tacensus_event>) {
        c->consumed_.fetch_add(1, std::memory_order_relaxed);
      }
      if (unsub_after != 0 && calls == unsub_after) {
        rec->add_cap(c->snap_done(rec->slot, rec->fam));
        e.self().unsubscribe();
        rec->add_end_silence(c->snap_started(rec->slot, rec->fam));
        c->stats_.self_unsubscribes.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };

  // A subscription as its owner sees it.
  struct owned {
    census_record* rec = nullptr;
    subscription handle;
    std::unique_ptr<herald::event_queue<tacensus_event>> queue;  // queue subscriptions
    bool active = true;                                          // as far as the owner knows
    bool paused = false;
    bool end_popped = false;
    snap pause_from{};
    std::uint64_t discarded_seen = 0;
  };

  snap snap_started(std::size_t j, std::size_t f) const {
    // acq_rel RMW: pairs with the publisher's RMW of the same word between its `started`
    // store and its loads of the list (see the file comment).
    sync_[j][f].word.fetch_add(1, std::memory_order_acq_rel);
    snap s{};
    for (std::size_t p = 0; p < census_publishers; ++p) {
      s[p] = progress_[p].started[j][f].load(std::memory_order_relaxed);
    }
    return s;
  }
  snap snap_done(std::size_t j, std::size_t f) const {
    snap s{};
    for (std::size_t p = 0; p < census_publishers; ++p) {
      // acquire: pairs with the publisher's release store after its publish returned.
      s[p] = progress_[p].done[j][f].load(std::memory_order_acquire);
    }
    return s;
  }

  census_gen* new_gen() {
    auto g = std::make_unique<census_gen>();
    g->list = std::make_unique<sub_list>(bus_);
    std::lock_guard lock(gens_mutex_);
    gens_.push_back(std::move(g));
    return gens_.back().get();
  }

  census_record* new_record(census_kind kind, std::size_t slot, census_gen* gen, std::uint64_t id) {
    auto r = std::make_unique<census_record>();
    r->kind = kind;
    r->slot = slot;
    r->fam = kind == census_kind::async_discard ? 1 : 0;
    r->gen = gen;
    r->id = id;
    std::lock_guard lock(records_mutex_);
    records_.push_back(std::move(r));
    return records_.back().get();
  }

  std::uint64_t churn_clock() const {
    std::uint64_t c = janitor_clock_.load(std::memory_order_relaxed);
    for (const auto& o : owner_clock_) {
      c = std::min(c, o.load(std::memory_order_relaxed));
    }
    return c;
  }

  void publisher(std::size_t p);
  void owner(std::size_t o);
  void janitor();
  void subscribe_one(std::mt19937_64& rng, std::vector<std::unique_ptr<owned>>& mine);
  void change_one(std::mt19937_64& rng, owned& x);
  bool poll(owned& x);
  void check();

  const std::size_t total_events_;
  const std::uint64_t shutdown_at_;
  std::uint64_t op_every_ = 1;
  std::uint64_t recreate_every_ = 1;
  std::uint64_t snipe_every_ = 1;

  herald::bus bus_;
  std::array<std::atomic<census_gen*>, census_slots> slots_{};
  std::array<census_progress, census_publishers> progress_{};
  struct alignas(64) sync_word {
    std::atomic<std::uint64_t> word{0};
  };
  mutable std::array<std::array<sync_word, census_families>, census_slots> sync_{};

  std::mutex gens_mutex_;
  std::vector<std::unique_ptr<census_gen>> gens_;  // guarded by gens_mutex_ (until the checks)

  std::mutex records_mutex_;
  std::deque<std::unique_ptr<census_record>> records_;  // guarded by records_mutex_
  std::vector<census_record*> with_id_;                 // guarded by records_mutex_
  std::atomic<std::uint64_t> next_id_{1};

  // The exact accounting of TACENSUS: what the publishes pushed, what the consumers took.
  std::atomic<std::int64_t> pushed_{0};
  std::atomic<std::int64_t> consumed_{0};
  std::atomic<std::uint64_t> published_{0};
  std::atomic<bool> shutdown_point_{false};  // set by the publisher that reaches shutdown_at_
  std::atomic<std::size_t> publishers_done_{0};
  std::atomic<bool> stop_{false};  // owners: stop changing things, drain to END, leave
  // The churn follows the publishers, and the publishers wait for the churn: the events count
  // at which each owner (and the janitor) does its next operation.
  std::array<std::atomic<std::uint64_t>, census_owners> owner_clock_{};
  std::atomic<std::uint64_t> janitor_clock_{0};

  // Written by the main thread around shutdown(), read after the joins.
  std::array<std::array<snap, census_families>, census_slots> shutdown_cap_{};
  std::array<std::array<snap, census_families>, census_slots> shutdown_post_{};
  std::array<std::array<snap, census_families>, census_slots> final_done_{};

  census_stats stats_;
};

void census::publisher(std::size_t p) {
  std::mt19937_64 rng(0x5EED0000u + p);
  std::array<std::array<std::uint64_t, census_families>, census_slots> counters{};
  census_progress& me = progress_[p];
  const std::size_t quota = total_events_ / census_publishers + 1;
  for (std::size_t i = 0; i < quota; ++i) {
    const std::size_t j = static_cast<std::size_t>(rng() % census_slots);
    const std::size_t f = rng() % 4 == 0 ? 1 : 0;
    const bool up = (rng() & 1) != 0;
    const std::uint64_t c = ++counters[j][f];
    me.started[j][f].store(c, std::memory_order_relaxed);
    // acq_rel RMW: pairs with the one of snap_started() (see the file comment).
    sync_[j][f].word.fetch_add(1, std::memory_order_acq_rel);
    census_gen* g = slots_[j].load(std::memory_order_acquire);
    const census_payload pl{static_cast<std::uint32_t>(p), static_cast<std::uint32_t>(j), c};
    const herald::result<std::size_t> r =
        f == 0 ? g->list->publish<tacensus_event>(
                     up ? tacensus_event::subtype::up : tacensus_event::subtype::down, pl)
               : g->list->publish<tacensusd_event>(
                     up ? tacensusd_event::subtype::up : tacensusd_event::subtype::down, pl);
    me.done[j][f].store(c, std::memory_order_release);
    if (r && f == 0) {
      pushed_.fetch_add(static_cast<std::int64_t>(*r), std::memory_order_relaxed);
    }
    if (published_.fetch_add(1, std::memory_order_relaxed) + 1 == shutdown_at_) {
      shutdown_point_.store(true, std::memory_order_release);
      shutdown_point_.notify_all();
    }
    // Keep the backlog bounded (the consumers, the bus's workers and the owners, share the
    // CPU), and let the churn keep up with the events.
    if (i % 16 == 15) {
      while (pushed_.load(std::memory_order_relaxed) - consumed_.load(std::memory_order_relaxed) >
                 census_backlog ||
             published_.load(std::memory_order_relaxed) > churn_clock() + 4 * op_every_) {
        std::this_thread::yield();
      }
    }
  }
  if (publishers_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == census_publishers) {
    shutdown_point_.store(true, std::memory_order_release);  // (reached before, normally)
    shutdown_point_.notify_all();
  }
}

void census::subscribe_one(std::mt19937_64& rng, std::vector<std::unique_ptr<owned>>& mine) {
  const std::size_t j = static_cast<std::size_t>(rng() % census_slots);
  census_gen* g = slots_[j].load(std::memory_order_acquire);
  const auto kind = static_cast<census_kind>(rng() % 4);
  const std::uint64_t id =
      rng() % 2 == 0
          ? herald::make_id("census",
                            std::to_string(next_id_.fetch_add(1, std::memory_order_relaxed)))
          : 0;
  census_record* rec = new_record(kind, j, g, id);
  herald::subscribe_options opt;
  opt.id = id;
  opt.name = "census";
  opt.on_end = kind == census_kind::async_discard || kind == census_kind::queue_discard
                   ? pending_on_end::discard
                   : pending_on_end::deliver;
  opt.events_per_run = 1 + static_cast<unsigned>(rng() % 64);
  auto x = std::make_unique<owned>();
  x->rec = rec;
  herald::result<subscription> r = herald::unexpected(herald::errc::invalid_argument);
  switch (kind) {
    case census_kind::async_deliver: {
      const std::uint64_t unsub_after = rng() % 4 == 0 ? 1 + rng() % 2000 : 0;
      r = g->list->subscribe_async<tacensus_event>(
          type_of<tacensus_event>(),
          handler<tacensus_event>{life_probe(rec->life), rec, this, unsub_after}, opt);
      break;
    }
    case census_kind::async_discard: {
      const std::uint64_t unsub_after = rng() % 4 == 0 ? 1 + rng() % 500 : 0;
      r = g->list->subscribe_async<tacensusd_event>(
          type_of<tacensusd_event>(),
          handler<tacensusd_event>{life_probe(rec->life), rec, this, unsub_after}, opt);
      break;
    }
    case census_kind::queue_deliver:
    case census_kind::queue_discard: {
      x->queue = std::make_unique<herald::event_queue<tacensus_event>>();
      queue_notify notify = queue_notify::none();
      switch (rng() % 3) {
        case 0:
          notify = queue_notify::fd();
          break;
        case 1:
          notify = queue_notify::call([rec] { (void)rec->slot; });
          break;
        default:
          break;
      }
      r = g->list->subscribe_queue<tacensus_event>(type_of<tacensus_event>(), *x->queue,
                                                   std::move(notify), opt);
      break;
    }
  }
  if (!r) {
    stats_.subscribe_failures.fetch_add(1, std::memory_order_relaxed);
    stats_.failures_by_code[static_cast<std::size_t>(r.error()) % 16].fetch_add(
        1, std::memory_order_relaxed);
    return;  // the record stays: its handler must still have been destroyed once
  }
  rec->subscribed = true;
  rec->open_window(snap_started(j, rec->fam));
  x->handle = std::move(*r);
  if (id != 0) {
    std::lock_guard lock(records_mutex_);
    with_id_.push_back(rec);
  }
  mine.push_back(std::move(x));
  stats_.subscribes.fetch_add(1, std::memory_order_relaxed);
}

void census::change_one(std::mt19937_64& rng, owned& x) {
  census_record& rec = *x.rec;
  sub_list& l = *rec.gen->list;
  const bool by_id = rec.id != 0 && rng() % 2 == 0;
  if (rng() % 3 != 0) {
    if (!x.paused) {
      rec.close_window(snap_done(rec.slot, rec.fam));
      const herald::result<void> r = by_id ? l.lookup_pause(rec.id) : x.handle.pause();
      if (r) {
        x.paused = true;
        x.pause_from = snap_started(rec.slot, rec.fam);
        stats_.pauses.fetch_add(1, std::memory_order_relaxed);
      } else {
        x.active = false;  // ended by another path
      }
    } else {
      const snap to = snap_done(rec.slot, rec.fam);
      const herald::result<void> r = by_id ? l.lookup_resume(rec.id) : x.handle.resume();
      rec.add_pause(x.pause_from, to);
      x.paused = false;
      if (r) {
        rec.open_window(snap_started(rec.slot, rec.fam));
        stats_.resumes.fetch_add(1, std::memory_order_relaxed);
      } else {
        x.active = false;
      }
    }
    return;
  }
  rec.close_window(snap_done(rec.slot, rec.fam));
  if (by_id) {
    (void)l.lookup_unsubscribe(rec.id);  // not_found: another path ended it first
  } else {
    x.handle.unsubscribe();
  }
  rec.add_end_silence(snap_started(rec.slot, rec.fam));
  x.active = false;
  stats_.unsubscribes.fetch_add(1, std::memory_order_relaxed);
}

bool census::poll(owned& x) {
  census_record& rec = *x.rec;
  herald::event_queue<tacensus_event>& q = *x.queue;
  bool any = false;
  for (int n = 0; n < 64 && !x.end_popped; ++n) {
    std::optional<herald::queued_event<tacensus_event>> item = q.pop();
    if (!item) {
      break;
    }
    any = true;
    if (item->is_end()) {
      ++rec.ends;
      item.reset();
      for (int k = 0; k < 2; ++k) {
        if (q.pop().has_value()) {
          ++rec.items_after_end;
        }
      }
      rec.open_after_end = q.is_open();
      rec.q_delivered = q.delivered();
      rec.q_discarded = q.discarded();
      x.end_popped = true;
      break;
    }
    rec.note(item->safe());
    consumed_.fetch_add(1, std::memory_order_relaxed);
  }
  const std::uint64_t d = q.discarded();
  consumed_.fetch_add(static_cast<std::int64_t>(d - x.discarded_seen), std::memory_order_relaxed);
  x.discarded_seen = d;
  return any;
}

void census::owner(std::size_t o) {
  std::mt19937_64 rng(0x0DD5EED0u + o);
  std::vector<std::unique_ptr<owned>> mine;
  std::uint64_t next_op = op_every_ * (o + 1);
  owner_clock_[o].store(next_op, std::memory_order_relaxed);
  auto sweep = [&] {
    bool any = false;
    for (auto& x : mine) {
      if (x->queue) {
        any = poll(*x) || any;
      }
    }
    // Queues leave once their END was popped (destroying the queue then is allowed); async
    // subscriptions once their owner knows they ended.
    std::erase_if(mine, [](const std::unique_ptr<owned>& x) {
      return x->queue ? x->end_popped : !x->active;
    });
    return any;
  };
  while (!stop_.load(std::memory_order_acquire)) {
    bool busy = sweep();
    if (published_.load(std::memory_order_relaxed) >= next_op) {
      next_op += op_every_;
      busy = true;
      owner_clock_[o].store(next_op, std::memory_order_relaxed);
      std::vector<owned*> active;
      for (auto& x : mine) {
        if (x->active) {
          active.push_back(x.get());
        }
      }
      if (active.size() < census_max_owned && (active.empty() || rng() % 3 == 0)) {
        subscribe_one(rng, mine);
      } else if (!active.empty()) {
        change_one(rng, *active[static_cast<std::size_t>(rng() % active.size())]);
      }
    }
    if (!busy) {
      std::this_thread::yield();
    }
  }
  // The bus is shut down: every subscription has ended and its END is queued.
  while (!mine.empty()) {
    if (!sweep()) {
      std::this_thread::yield();
    }
  }
}

void census::janitor() {
  std::mt19937_64 rng(0x7A417042u);
  std::uint64_t next_recreate = recreate_every_;
  std::uint64_t next_snipe = snipe_every_;
  janitor_clock_.store(std::min(next_recreate, next_snipe), std::memory_order_relaxed);
  while (publishers_done_.load(std::memory_order_acquire) < census_publishers) {
    const std::uint64_t published = published_.load(std::memory_order_relaxed);
    bool did = false;
    if (published >= next_recreate) {
      next_recreate += recreate_every_;
      did = true;
      const std::size_t j = static_cast<std::size_t>(rng() % census_slots);
      census_gen* g = slots_[j].load(std::memory_order_acquire);
      for (std::size_t f = 0; f < census_families; ++f) {
        g->cap[f] = snap_done(j, f);
      }
      g->destroyed = true;
      g->list->destroy();
      for (std::size_t f = 0; f < census_families; ++f) {
        g->post[f] = snap_started(j, f);
      }
      slots_[j].store(new_gen(), std::memory_order_release);
      stats_.recreations.fetch_add(1, std::memory_order_relaxed);
    }
    if (published >= next_snipe) {
      next_snipe += snipe_every_;
      did = true;
      census_record* r = nullptr;
      {
        std::lock_guard lock(records_mutex_);
        if (!with_id_.empty()) {
          // One of the latest: the older ones have mostly ended already.
          const std::size_t n = std::min<std::size_t>(with_id_.size(), 16);
          r = with_id_[with_id_.size() - 1 - static_cast<std::size_t>(rng() % n)];
        }
      }
      if (r != nullptr) {
        r->add_cap(snap_done(r->slot, r->fam));
        (void)r->gen->list->lookup_unsubscribe(r->id);
        r->add_end_silence(snap_started(r->slot, r->fam));
        stats_.snipes.fetch_add(1, std::memory_order_relaxed);
      }
    }
    janitor_clock_.store(std::min(next_recreate, next_snipe), std::memory_order_relaxed);
    if (!did) {
      std::this_thread::yield();
    }
  }
}

void census::run() {
  std::vector<std::thread> owners;
  for (std::size_t o = 0; o < census_owners; ++o) {
    owners.emplace_back([this, o] { owner(o); });
  }
  std::thread jan([this] { janitor(); });
  std::vector<std::thread> pubs;
  for (std::size_t p = 0; p < census_publishers; ++p) {
    pubs.emplace_back([this, p] { publisher(p); });
  }
  // Shut the bus down while the publishers publish their last events.
  while (!shutdown_point_.load(std::memory_order_acquire)) {
    shutdown_point_.wait(false, std::memory_order_acquire);
  }
  for (std::size_t j = 0; j < census_slots; ++j) {
    for (std::size_t f = 0; f < census_families; ++f) {
      shutdown_cap_[j][f] = snap_done(j, f);
    }
  }
  bus_.shutdown();
  for (std::size_t j = 0; j < census_slots; ++j) {
    for (std::size_t f = 0; f < census_families; ++f) {
      shutdown_post_[j][f] = snap_started(j, f);
    }
  }
  for (std::thread& t : pubs) {
    t.join();
  }
  jan.join();
  for (std::size_t j = 0; j < census_slots; ++j) {
    for (std::size_t f = 0; f < census_families; ++f) {
      final_done_[j][f] = snap_done(j, f);
    }
  }
  stop_.store(true, std::memory_order_release);
  for (std::thread& t : owners) {
    t.join();
  }
  check();
}

// The number of counters of [first, last] that no range of `rg` (sorted, disjoint) covers.
std::uint64_t uncovered(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& rg,
                        std::uint64_t first, std::uint64_t last) {
  std::uint64_t covered = 0;
  for (const auto& [a, b] : rg) {
    const std::uint64_t lo = std::max(a, first);
    const std::uint64_t hi = std::min(b, last);
    if (lo <= hi) {
      covered += hi - lo + 1;
    }
  }
  return (last - first + 1) - covered;
}

void census::check() {
  std::uint64_t handler_not_once = 0;
  std::uint64_t calls_after_destruction = 0;
  std::uint64_t out_of_order = 0;
  std::uint64_t wrong_event = 0;
  std::uint64_t received_while_failed = 0;
  std::uint64_t end_not_once = 0;
  std::uint64_t items_after_end = 0;
  std::uint64_t open_after_end = 0;
  std::uint64_t delivered_mismatch = 0;
  std::uint64_t deliver_mode_discards = 0;
  std::uint64_t after_end_silence = 0;
  std::uint64_t during_pause = 0;
  std::uint64_t windows_checked = 0;
  std::uint64_t windows_short = 0;
  std::uint64_t events_in_windows = 0;
  std::uint64_t events_missing = 0;
  std::uint64_t received_total = 0;
  std::string first_problem;
  auto note_problem = [&](const census_record& r, const char* what) {
    if (first_problem.empty()) {
      first_problem = std::string(what) + " (kind " + std::to_string(static_cast<int>(r.kind)) +
                      ", slot " + std::to_string(r.slot) + ", id " + std::to_string(r.id) + ")";
    }
  };

  for (const auto& up : records_) {
    census_record& r = *up;
    if (!is_queue(r.kind)) {
      if (r.life.made.load() != 1 || r.life.destroyed.load() != 1) {
        ++handler_not_once;
        note_problem(r, "async handler not made and destroyed exactly once");
      }
      calls_after_destruction += r.life.calls_after_destruction.load();
    }
    received_total += r.received;
    out_of_order += r.out_of_order;
    wrong_event += r.wrong_event;
    if (r.out_of_order != 0) {
      note_problem(r, "event out of order or twice");
    }
    if (!r.subscribed) {
      received_while_failed += r.received;
      continue;
    }
    if (is_queue(r.kind)) {
      if (r.ends != 1) {
        ++end_not_once;
        note_problem(r, "END not popped exactly once");
      }
      items_after_end += r.items_after_end;
      open_after_end += r.open_after_end ? 1 : 0;
      if (r.q_delivered != r.received) {
        ++delivered_mismatch;
        note_problem(r, "event_queue::delivered() differs from the events popped");
      }
      if (delivers(r.kind) && r.q_discarded != 0) {
        ++deliver_mode_discards;
        note_problem(r, "a pending_on_end::deliver queue discarded events");
      }
    }
    // Silences: nothing published after an end returned, or while paused.
    snap silence = shutdown_post_[r.slot][r.fam];
    for (const snap& s : r.end_silences) {
      min_into(silence, s);
    }
    if (r.gen->destroyed) {
      min_into(silence, r.gen->post[r.fam]);
    }
    for (std::size_t p = 0; p < census_publishers; ++p) {
      if (!r.ranges[p].empty() && r.ranges[p].back().second > silence[p]) {
        ++after_end_silence;
        note_problem(r, "received an event published after its subscription ended");
      }
      for (const auto& [from, to] : r.pauses) {
        for (const auto& [a, b] : r.ranges[p]) {
          if (from[p] < to[p] && a <= to[p] && b > from[p]) {
            ++during_pause;
            note_problem(r, "received an event published while paused");
          }
        }
      }
    }
    // Windows: everything published while certainly active and not paused (deliver mode).
    if (!delivers(r.kind)) {
      continue;
    }
    snap cap = shutdown_cap_[r.slot][r.fam];
    for (const snap& s : r.caps) {
      min_into(cap, s);
    }
    if (r.gen->destroyed) {
      min_into(cap, r.gen->cap[r.fam]);
    }
    for (const census_window& w : r.windows) {
      snap hi = w.open ? final_done_[r.slot][r.fam] : w.hi;
      min_into(hi, cap);
      for (std::size_t p = 0; p < census_publishers; ++p) {
        if (w.lo[p] >= hi[p]) {
          continue;
        }
        ++windows_checked;
        events_in_windows += hi[p] - w.lo[p];
        const std::uint64_t missing = uncovered(r.ranges[p], w.lo[p] + 1, hi[p]);
        if (missing != 0) {
          ++windows_short;
          events_missing += missing;
          if (first_problem.empty()) {
            std::string ranges;
            for (const auto& [x, y] : r.ranges[p]) {
              ranges += " [" + std::to_string(x) + "," + std::to_string(y) + "]";
            }
            first_problem =
                "missed " + std::to_string(missing) + " events of publisher " + std::to_string(p) +
                " in window (" + std::to_string(w.lo[p]) + ", " + std::to_string(hi[p]) +
                "] (kind " + std::to_string(static_cast<int>(r.kind)) + ", slot " +
                std::to_string(r.slot) + ", id " + std::to_string(r.id) + "); received:" + ranges;
          }
        }
      }
    }
  }

  const std::uint64_t published = published_.load();
  std::printf(
      "census: %llu published, %llu received; %llu subscribes (%llu refused), %llu pauses, "
      "%llu resumes, %llu unsubscribes, %llu self-unsubscribes, %llu by-id ends, %llu list "
      "recreations; %llu windows checked holding %llu events\n",
      static_cast<unsigned long long>(published), static_cast<unsigned long long>(received_total),
      static_cast<unsigned long long>(stats_.subscribes.load()),
      static_cast<unsigned long long>(stats_.subscribe_failures.load()),
      static_cast<unsigned long long>(stats_.pauses.load()),
      static_cast<unsigned long long>(stats_.resumes.load()),
      static_cast<unsigned long long>(stats_.unsubscribes.load()),
      static_cast<unsigned long long>(stats_.self_unsubscribes.load()),
      static_cast<unsigned long long>(stats_.snipes.load()),
      static_cast<unsigned long long>(stats_.recreations.load()),
      static_cast<unsigned long long>(windows_checked),
      static_cast<unsigned long long>(events_in_windows));
  for (std::size_t e = 0; e < stats_.failures_by_code.size(); ++e) {
    if (const std::uint64_t n = stats_.failures_by_code[e].load(); n != 0) {
      std::printf("census: %llu subscribes refused with %.*s\n", static_cast<unsigned long long>(n),
                  static_cast<int>(herald::to_string(static_cast<herald::errc>(e)).size()),
                  herald::to_string(static_cast<herald::errc>(e)).data());
    }
  }
  ::testing::Test::RecordProperty("published", std::to_string(published));
  ::testing::Test::RecordProperty("events_in_windows", std::to_string(events_in_windows));

  EXPECT_TRUE(first_problem.empty()) << "first problem: " << first_problem;
  EXPECT_EQ(handler_not_once, 0u) << "async handlers not destroyed exactly once";
  EXPECT_EQ(calls_after_destruction, 0u) << "async handler calls after its destruction";
  EXPECT_EQ(out_of_order, 0u) << "events delivered twice or out of publish order";
  EXPECT_EQ(wrong_event, 0u) << "events of another list slot, or corrupted";
  EXPECT_EQ(received_while_failed, 0u) << "events received by a refused subscription";
  EXPECT_EQ(end_not_once, 0u) << "queues whose END was not popped exactly once";
  EXPECT_EQ(items_after_end, 0u) << "items popped after END";
  EXPECT_EQ(open_after_end, 0u) << "queues still open after END";
  EXPECT_EQ(delivered_mismatch, 0u) << "event_queue::delivered() != events popped";
  EXPECT_EQ(deliver_mode_discards, 0u) << "discards by pending_on_end::deliver queues";
  EXPECT_EQ(after_end_silence, 0u) << "events published after the end was delivered";
  EXPECT_EQ(during_pause, 0u) << "events published while paused were delivered";
  EXPECT_EQ(windows_short, 0u) << events_missing << " events published while certainly active "
                               << "were not delivered";
  EXPECT_EQ(pushed_.load(), consumed_.load())
      << "pushed to subscriptions (sum of publish results) != delivered + discarded";
  EXPECT_GT(windows_checked, 0u);
  EXPECT_GT(events_in_windows, published / 10) << "the windows checked too little";
  EXPECT_GE(published, total_events_);
  if (optimised_build && stress_scale() >= 1.0) {
    EXPECT_GE(published, 1'000'000u);
  }
}

TEST(AsyncStress, CensusEveryEventDeliveredOnceInOrderAcrossChurnAndShutdown) {
  census c(stress_scale());
  c.run();
}

// =============================================================================================
// One shared snapshot per publish
// =============================================================================================

struct share_record {
  std::atomic<int> copies{0};
  std::atomic<int> destroyed{0};
  std::atomic<int> seen{0};
  std::atomic<int> seen_at_destroy{-1};
  std::atomic<int> bad_text{0};
  int result = -1;  // the publish result; written by the publisher after publish returned
};

std::atomic<std::uint64_t> g_share_destroyed{0};

constexpr std::size_t share_text_size = 48;
char share_char(std::size_t index) { return static_cast<char>('a' + index % 26); }

share_payload::share_payload(share_record* r, std::size_t i)
    : rec(r), index(i), text(share_text_size, share_char(i)) {}
share_payload::share_payload(const share_payload& o)
    : rec(o.rec), index(o.index), text(o.text), is_copy(true) {
  rec->copies.fetch_add(1, std::memory_order_relaxed);
}
share_payload::~share_payload() {
  if (is_copy) {
    // Every consumer's `seen` increment happened before it released the snapshot.
    rec->seen_at_destroy.store(rec->seen.load(std::memory_order_acquire),
                               std::memory_order_relaxed);
    rec->destroyed.fetch_add(1, std::memory_order_acq_rel);
    g_share_destroyed.fetch_add(1, std::memory_order_release);
  }
}

// A consumer's view of one snapshot: the text must be intact.
void consume_share(const share_payload& s) {
  bool ok = s.text.size() == share_text_size;
  for (std::size_t i = 0; ok && i < s.text.size(); ++i) {
    ok = s.text[i] == share_char(s.index);
  }
  if (!ok) {
    s.rec->bad_text.fetch_add(1, std::memory_order_relaxed);
  }
  s.rec->seen.fetch_add(1, std::memory_order_acq_rel);
}

TEST(AsyncStress, SharedSnapshotIsCopiedOnceAndDestroyedOnceAfterEveryConsumer) {
  constexpr std::size_t async_subs = 64;
  constexpr std::size_t queue_subs = 2;
  constexpr std::size_t publishers = 2;
  constexpr std::uint64_t in_flight_limit = 256;
  const std::size_t events = scaled(25'000, 200'000, stress_scale());
  auto records = std::make_unique<share_record[]>(events);
  g_share_destroyed.store(0);

  herald::bus b(herald::bus_options{.threads = 2, .events_per_run = 16});
  sub_list l(b);
  const herald::event_type type = type_of<tashare_event>();
  auto async_handler = [](herald::async_event<tashare_event>& e) { consume_share(e.safe()); };
  std::vector<subscription> subs;
  for (std::size_t k = 0; k < async_subs; ++k) {
    herald::subscribe_options opt;
    opt.events_per_run = k % 3 == 0 ? 1 : (k % 3 == 1 ? 7 : 0);
    opt.where = k % 4 == 3 ? run_on::any() : run_on::thread(static_cast<unsigned>(k % 2));
    auto s = l.subscribe_async<tashare_event>(type, async_handler, opt);
    ASSERT_TRUE(s.has_value());
    subs.push_back(std::move(*s));
  }
  std::array<herald::event_queue<tashare_event>, queue_subs> queues;
  for (auto& q : queues) {
    ASSERT_TRUE(l.subscribe_queue<tashare_event>(type, q).has_value());
  }

  std::atomic<std::uint64_t> started{0};
  std::atomic<std::size_t> publishers_done{0};
  std::vector<std::thread> threads;
  for (std::size_t p = 0; p < publishers; ++p) {
    threads.emplace_back([&, p] {
      for (std::size_t i = p; i < events; i += publishers) {
        share_record& rec = records[i];
        const share_payload payload(&rec, i);
        started.fetch_add(1, std::memory_order_relaxed);
        auto r = l.publish<tashare_event>(tashare_event::subtype::only, payload);
        rec.result = r ? static_cast<int>(*r) : -2;
        while (started.load(std::memory_order_relaxed) -
                   g_share_destroyed.load(std::memory_order_acquire) >
               in_flight_limit) {
          std::this_thread::yield();
        }
      }
      publishers_done.fetch_add(1, std::memory_order_release);
    });
  }
  // Queue consumer: releases its snapshots on a thread that is neither publisher nor worker.
  std::thread consumer([&] {
    std::array<bool, queue_subs> ended{};
    std::size_t open = queue_subs;
    while (open > 0) {
      bool any = false;
      for (std::size_t k = 0; k < queue_subs; ++k) {
        for (int n = 0; n < 64 && !ended[k]; ++n) {
          auto item = queues[k].pop();
          if (!item) {
            break;
          }
          any = true;
          if (item->is_end()) {
            ended[k] = true;
            --open;
            break;
          }
          consume_share(item->safe());
        }
      }
      if (!any) {
        std::this_thread::yield();
      }
    }
  });
  // Churn: end a quarter of the async subscriptions and add new ones while events flow, so
  // that the number of references per snapshot varies.
  std::thread churn([&] {
    std::mt19937_64 rng(77);
    std::vector<subscription> added;
    for (std::size_t k = 0; k < async_subs / 4; ++k) {
      const std::uint64_t at = events * (k + 1) / (async_subs / 4 + 2);
      spin_until([&] {
        return started.load(std::memory_order_relaxed) >= at ||
               publishers_done.load(std::memory_order_acquire) == publishers;
      });
      subs[static_cast<std::size_t>(rng() % async_subs)].unsubscribe();
      auto s = l.subscribe_async<tashare_event>(type, async_handler);
      if (s) {
        added.push_back(std::move(*s));
      }
    }
  });
  for (std::thread& t : threads) {
    t.join();
  }
  churn.join();
  b.shutdown();  // drains every async subscription and queues END to both queues
  consumer.join();

  std::uint64_t not_copied_once = 0;
  std::uint64_t not_destroyed_once = 0;
  std::uint64_t seen_mismatch = 0;
  std::uint64_t destroyed_early = 0;
  std::uint64_t bad_text = 0;
  std::uint64_t failed = 0;
  std::uint64_t deliveries = 0;
  for (std::size_t i = 0; i < events; ++i) {
    const share_record& rec = records[i];
    if (rec.result < 0) {
      ++failed;
      continue;
    }
    deliveries += static_cast<std::uint64_t>(rec.result);
    const int want = rec.result > 0 ? 1 : 0;
    not_copied_once += rec.copies.load() != want ? 1u : 0u;
    not_destroyed_once += rec.destroyed.load() != want ? 1u : 0u;
    seen_mismatch += rec.seen.load() != rec.result ? 1u : 0u;
    if (want == 1 && rec.seen_at_destroy.load() != rec.result) {
      ++destroyed_early;
    }
    bad_text += static_cast<std::uint64_t>(rec.bad_text.load());
  }
  ::testing::Test::RecordProperty("deliveries", std::to_string(deliveries));
  EXPECT_EQ(failed, 0u) << "publishes that failed";
  EXPECT_EQ(not_copied_once, 0u) << "publishes whose safe part was not copied exactly once";
  EXPECT_EQ(not_destroyed_once, 0u) << "snapshots not destroyed exactly once";
  EXPECT_EQ(seen_mismatch, 0u) << "snapshots not seen by as many consumers as publish reported";
  EXPECT_EQ(destroyed_early, 0u) << "snapshots destroyed before their last consumer was done";
  EXPECT_EQ(bad_text, 0u) << "consumers that read a corrupted snapshot";
  EXPECT_GE(deliveries, static_cast<std::uint64_t>(events) * async_subs / 2);
}

// =============================================================================================
// END exactly once across racing ending paths
// =============================================================================================

TEST(AsyncStress, EndExactlyOnceWhenUnsubscribeLookupDestroyAndShutdownRace) {
  constexpr std::size_t async_subs = 3;
  constexpr std::size_t queue_subs = 3;
  constexpr std::size_t subs_per_round = async_subs + queue_subs;
  const std::size_t rounds = scaled(300, 1500, stress_scale());

  struct queue_result {
    int ends = 0;
    std::uint64_t popped = 0;
    std::uint64_t after_end = 0;
    bool open_after_end = false;
    std::uint64_t delivered = 0;
    std::uint64_t out_of_order = 0;
  };
  struct round_state {
    std::unique_ptr<herald::bus> bus;
    std::unique_ptr<sub_list> list;
    std::array<life_record, async_subs> lives;
    std::array<herald::event_queue<taend_event>, queue_subs> queues;
    std::array<queue_result, queue_subs> results;
    std::vector<subscription> handles;
    std::vector<std::uint64_t> ids;
    std::uint64_t published = 0;
  };
  std::unique_ptr<round_state> st;
  const herald::event_type type = type_of<taend_event>();

  std::uint64_t bad_handlers = 0;
  std::uint64_t late_calls = 0;
  std::uint64_t bad_ends = 0;
  std::uint64_t after_end = 0;
  std::uint64_t open_after_end = 0;
  std::uint64_t delivered_mismatch = 0;
  std::uint64_t out_of_order = 0;

  // The racers, released together every round; `r` varies their order.
  constexpr std::size_t racer_count = 6;
  std::atomic<std::size_t> go{0};
  std::atomic<std::size_t> arrived{0};
  std::atomic<std::size_t> finished{0};
  auto racer = [&](std::size_t who, std::size_t r) {
    round_state& s = *st;
    stagger((r * (who + 3) * 7) % 17);
    switch (who) {
      case 0:  // a publisher, until the list reports its end
        for (std::uint64_t c = 1; c <= 64; ++c) {
          auto res = s.list->publish<taend_event>(taend_event::subtype::only, {0, c});
          if (!res) {
            break;
          }
          s.published = c;
        }
        break;
      case 1:  // every handle, in a rotating order
        for (std::size_t k = 0; k < subs_per_round; ++k) {
          s.handles[(k + r) % subs_per_round].unsubscribe();
        }
        break;
      case 2:  // every id, in the other direction
        for (std::size_t k = subs_per_round; k > 0; --k) {
          (void)s.list->lookup_unsubscribe(s.ids[(k + r) % subs_per_round]);
        }
        break;
      case 3:
        s.list->destroy();
        break;
      case 4:
        s.bus->shutdown();
        break;
      default: {  // the queues' consumer, until every END
        std::array<std::uint64_t, queue_subs> last{};
        std::size_t open = queue_subs;
        while (open > 0) {
          bool any = false;
          for (std::size_t k = 0; k < queue_subs; ++k) {
            queue_result& qr = s.results[k];
            if (qr.ends != 0) {
              continue;
            }
            while (auto item = s.queues[k].pop()) {
              any = true;
              if (item->is_end()) {
                ++qr.ends;
                --open;
                break;
              }
              if (item->safe().count <= last[k]) {
                ++qr.out_of_order;
              }
              last[k] = item->safe().count;
              ++qr.popped;
            }
          }
          if (!any) {
            std::this_thread::yield();
          }
        }
        for (std::size_t k = 0; k < queue_subs; ++k) {
          queue_result& qr = s.results[k];
          for (int n = 0; n < 2; ++n) {
            if (s.queues[k].pop().has_value()) {
              ++qr.after_end;
            }
          }
          qr.open_after_end = s.queues[k].is_open();
          qr.delivered = s.queues[k].delivered();
        }
        break;
      }
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t who = 0; who < racer_count; ++who) {
    threads.emplace_back([&, who] {
      for (std::size_t r = 1; r <= rounds; ++r) {
        spin_until([&] { return go.load(std::memory_order_acquire) >= r; });
        arrived.fetch_add(1, std::memory_order_acq_rel);
        spin_until([&] { return arrived.load(std::memory_order_acquire) >= r * racer_count; });
        racer(who, r - 1);
        finished.fetch_add(1, std::memory_order_acq_rel);
      }
    });
  }
  for (std::size_t r = 1; r <= rounds; ++r) {
    st = std::make_unique<round_state>();
    st->bus = std::make_unique<herald::bus>(herald::bus_options{.threads = 2});
    st->list = std::make_unique<sub_list>(*st->bus);
    for (std::size_t k = 0; k < subs_per_round; ++k) {
      herald::subscribe_options opt;
      opt.id = herald::make_id("end-once", std::to_string(k));
      opt.on_end = (k + r) % 2 == 0 ? pending_on_end::deliver : pending_on_end::discard;
      opt.events_per_run = static_cast<unsigned>(1 + (k + r) % 4);
      herald::result<subscription> s = herald::unexpected(herald::errc::invalid_argument);
      if (k < async_subs) {
        s = st->list->subscribe_async<taend_event>(
            type,
            [p = life_probe(st->lives[k])](herald::async_event<taend_event>&) { (void)p.called(); },
            opt);
      } else {
        s = st->list->subscribe_queue<taend_event>(type, st->queues[k - async_subs],
                                                   queue_notify::none(), opt);
      }
      ASSERT_TRUE(s.has_value());
      st->handles.push_back(std::move(*s));
      st->ids.push_back(opt.id);
    }
    go.store(r, std::memory_order_release);
    spin_until([&] { return finished.load(std::memory_order_acquire) >= r * racer_count; });
    // The shutdown racer returned: every async subscription on the bus's workers reached END.
    for (const life_record& life : st->lives) {
      bad_handlers += life.made.load() != 1 || life.destroyed.load() != 1 ? 1u : 0u;
      late_calls += life.calls_after_destruction.load();
    }
    for (std::size_t k = 0; k < queue_subs; ++k) {
      const queue_result& qr = st->results[k];
      bad_ends += qr.ends != 1 ? 1 : 0;
      after_end += qr.after_end;
      open_after_end += qr.open_after_end ? 1 : 0;
      delivered_mismatch += qr.delivered != qr.popped ? 1 : 0;
      out_of_order += qr.out_of_order;
    }
    st.reset();
  }
  for (std::thread& t : threads) {
    t.join();
  }
  EXPECT_EQ(bad_handlers, 0u) << "async handlers not destroyed exactly once by the shutdown";
  EXPECT_EQ(late_calls, 0u) << "async handler calls after destruction";
  EXPECT_EQ(bad_ends, 0u) << "queues that did not pop END exactly once";
  EXPECT_EQ(after_end, 0u) << "items popped after END";
  EXPECT_EQ(open_after_end, 0u) << "queues open after END";
  EXPECT_EQ(delivered_mismatch, 0u) << "event_queue::delivered() != events popped";
  EXPECT_EQ(out_of_order, 0u) << "events out of publish order";
}

// =============================================================================================
// Queue consumers that free themselves on END
// =============================================================================================

constexpr std::size_t free_publishers = 2;

struct free_stats {
  std::atomic<std::uint64_t> late_runs{0};    // the tasklet ran after its consumer was freed
  std::atomic<std::uint64_t> early_wakes{0};  // woken before subscribe_queue returned
  std::atomic<std::uint64_t> ends{0};
  std::atomic<std::uint64_t> events{0};
  std::atomic<std::uint64_t> discarded{0};
  std::atomic<std::uint64_t> after_end{0};
  std::atomic<std::uint64_t> open_after_end{0};
  std::atomic<std::uint64_t> delivered_mismatch{0};
  std::atomic<std::uint64_t> out_of_order{0};
  std::atomic<std::int64_t> consumed{0};  // events popped or discarded, for flow control
  std::atomic<std::uint64_t> finished{0};
};

// Shared by the consumer and its tasklet's callable: the callable may outlive the consumer.
struct free_guard {
  std::atomic<bool> bound{false};  // subscribe_queue returned: the queue may be used
  std::atomic<bool> alive{true};
};

// A heap consumer, HAProxy style: its tasklet pops; on END it deletes itself (its queue and its
// tasklet handle with it).
class self_freeing_consumer {
 public:
  explicit self_freeing_consumer(free_stats& st)
      : stats_(&st), guard_(std::make_shared<free_guard>()) {}

  // Creates the tasklet (on `w`) and subscribes. Returns the subscription handle, or an error.
  static herald::result<subscription> start(herald::scheduler& w, sub_list& l, free_stats& st,
                                            const herald::subscribe_options& opt) {
    auto* c = new self_freeing_consumer(st);
    std::shared_ptr<free_guard> g = c->guard_;
    c->tasklet_ = w.make_tasklet([c, g, stats = &st] {
      if (!g->alive.load(std::memory_order_acquire)) {
        stats->late_runs.fetch_add(1, std::memory_order_relaxed);
        return;  // must not touch c: it is gone
      }
      if (!g->bound.load(std::memory_order_acquire)) {
        // Woken by a publish that saw the subscription before subscribe_queue() bound the
        // queue (see QueueConsumer.TaskletWokenBeforeSubscribeQueueReturnedSeesItsEvents):
        // wait for the binding rather than race on the queue. Short: it is the next thing
        // the subscribing thread does.
        stats->early_wakes.fetch_add(1, std::memory_order_relaxed);
        spin_until([&] { return g->bound.load(std::memory_order_acquire); });
      }
      c->run();
    });
    auto s = l.subscribe_queue<tafree_event>(type_of<tafree_event>(), c->queue_,
                                             queue_notify::wake(c->tasklet_), opt);
    if (!s) {
      // Never subscribed: nothing will wake the tasklet.
      g->alive.store(false, std::memory_order_release);
      delete c;
      return s;
    }
    g->bound.store(true, std::memory_order_release);
    return s;
  }

 private:
  void run() {
    while (auto item = queue_.pop()) {
      if (item->is_end()) {
        // Destroy the END item before the queue: it points into the subscription (see
        // QueueConsumer.EndItemMayBeDestroyedAfterItsQueue).
        item.reset();
        finish();
        return;
      }
      const simple_payload& pl = item->safe();
      if (pl.pub >= free_publishers || pl.count <= last_[pl.pub]) {
        stats_->out_of_order.fetch_add(1, std::memory_order_relaxed);
      } else {
        last_[pl.pub] = pl.count;
      }
      ++popped_;
      stats_->consumed.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void finish() {
    free_stats& st = *stats_;
    if (queue_.pop().has_value()) {
      st.after_end.fetch_add(1, std::memory_order_relaxed);
    }
    if (queue_.is_open()) {
      st.open_after_end.fetch_add(1, std::memory_order_relaxed);
    }
    if (queue_.delivered() != popped_) {
      st.delivered_mismatch.fetch_add(1, std::memory_order_relaxed);
    }
    st.events.fetch_add(popped_, std::memory_order_relaxed);
    st.discarded.fetch_add(queue_.discarded(), std::memory_order_relaxed);
    st.consumed.fetch_add(static_cast<std::int64_t>(queue_.discarded()), std::memory_order_relaxed);
    st.ends.fetch_add(1, std::memory_order_relaxed);
    guard_->alive.store(false, std::memory_order_release);
    delete this;  // the queue (its subscription has ended) and the tasklet handle
    st.finished.fetch_add(1, std::memory_order_release);
    st.finished.notify_all();
  }

  free_stats* stats_;
  std::shared_ptr<free_guard> guard_;
  herald::event_queue<tafree_event> queue_;
  tasklet tasklet_;
  std::array<std::uint64_t, free_publishers> last_{};
  std::uint64_t popped_ = 0;
};

TEST(AsyncStress, QueueConsumerFreesItselfOnEndWhilePublishersPublishAndOthersEndIt) {
  const std::size_t consumers = scaled(3000, 10000, stress_scale());
  constexpr std::uint64_t max_live = 8;
  constexpr std::size_t killers = 2;
  constexpr std::int64_t backlog = 4096;
  free_stats st;
  std::atomic<std::int64_t> pushed{0};
  {
    herald::bus b(herald::bus_options{.threads = 2});
    sub_list l(b);
    herald::scheduler& w = b.workers();
    std::atomic<bool> stop{false};

    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < free_publishers; ++p) {
      threads.emplace_back([&, p] {
        for (std::uint64_t c = 1; !stop.load(std::memory_order_acquire); ++c) {
          auto r = l.publish<tafree_event>(tafree_event::subtype::only,
                                           {static_cast<std::uint32_t>(p), c});
          if (r) {
            pushed.fetch_add(static_cast<std::int64_t>(*r), std::memory_order_relaxed);
          }
          if (c % 8 == 0) {
            std::this_thread::yield();
          }
          while (pushed.load(std::memory_order_relaxed) -
                         st.consumed.load(std::memory_order_relaxed) >
                     backlog &&
                 !stop.load(std::memory_order_acquire)) {
            std::this_thread::yield();
          }
        }
      });
    }
    // Killers end the subscriptions they are handed, by handle or by id, once some events
    // were pushed after the handover; some subscriptions are handed to both killers, so that
    // the two paths race.
    struct victim {
      subscription handle;
      std::uint64_t id;
      std::int64_t kill_at;  // a count of pushed events
    };
    std::mutex victims_mutex;
    std::deque<victim> victims;  // guarded by victims_mutex
    for (std::size_t k = 0; k < killers; ++k) {
      threads.emplace_back([&, k] {
        std::mt19937_64 rng(k + 1);
        while (true) {
          std::optional<victim> v;
          {
            std::lock_guard lock(victims_mutex);
            if (!victims.empty()) {
              v = std::move(victims.front());
              victims.pop_front();
            }
          }
          if (!v) {
            if (stop.load(std::memory_order_acquire)) {
              return;
            }
            std::this_thread::yield();
            continue;
          }
          spin_until([&] {
            return pushed.load(std::memory_order_relaxed) >= v->kill_at ||
                   stop.load(std::memory_order_acquire);
          });
          stagger(static_cast<std::size_t>(rng() % 8));
          if (rng() % 2 == 0) {
            v->handle.unsubscribe();
          } else {
            (void)l.lookup_unsubscribe(v->id);
          }
        }
      });
    }

    std::mt19937_64 rng(99);
    std::uint64_t started = 0;
    for (std::size_t i = 0; i < consumers; ++i) {
      // At most max_live consumers at a time.
      for (std::uint64_t f = st.finished.load(std::memory_order_acquire); started - f >= max_live;
           f = st.finished.load(std::memory_order_acquire)) {
        st.finished.wait(f, std::memory_order_acquire);
      }
      herald::subscribe_options opt;
      opt.id = herald::make_id("self-free", std::to_string(i));
      opt.on_end = i % 2 == 0 ? pending_on_end::deliver : pending_on_end::discard;
      auto s = self_freeing_consumer::start(w, l, st, opt);
      ASSERT_TRUE(s.has_value()) << herald::to_string(s.error());
      ++started;
      {
        const std::int64_t kill_at =
            pushed.load(std::memory_order_relaxed) + static_cast<std::int64_t>(rng() % 400);
        std::lock_guard lock(victims_mutex);
        if (rng() % 4 == 0) {
          victims.push_back(victim{*s, opt.id, kill_at});  // both killers may get it
        }
        victims.push_back(victim{std::move(*s), opt.id, kill_at});
      }
    }
    wait_at_least<std::uint64_t>(st.finished, started);
    stop.store(true, std::memory_order_release);
    for (std::thread& t : threads) {
      t.join();
    }
    b.shutdown();
  }
  std::printf(
      "self-freeing consumers: %llu ended, %llu events, %llu discarded, %llu woken before "
      "subscribe_queue returned\n",
      static_cast<unsigned long long>(st.ends.load()),
      static_cast<unsigned long long>(st.events.load()),
      static_cast<unsigned long long>(st.discarded.load()),
      static_cast<unsigned long long>(st.early_wakes.load()));
  EXPECT_EQ(st.late_runs.load(), 0u)
      << "a consumer's tasklet ran after the consumer freed itself on END";
  EXPECT_EQ(st.ends.load(), consumers);
  EXPECT_EQ(st.after_end.load(), 0u) << "items popped after END";
  EXPECT_EQ(st.open_after_end.load(), 0u) << "queues open after END";
  EXPECT_EQ(st.delivered_mismatch.load(), 0u) << "event_queue::delivered() != events popped";
  EXPECT_EQ(st.out_of_order.load(), 0u) << "events out of publish order";
  EXPECT_EQ(pushed.load(), st.consumed.load()) << "pushed != delivered + discarded";
}

// =============================================================================================
// Deterministic scenarios around queue consumers
// =============================================================================================

// A subscription becomes visible to publishers inside subscribe_queue(), before the queue is
// bound to it (event_queue's pointer to the subscription is set after subscribe_core()
// returns). A publish in between notifies the consumer, whose pop() then finds an unbound queue
// and returns nothing without disarming the edge-triggered notification: the consumer is never
// notified again, although its events wait in the queue.
//
// The scenario is made deterministic with the reclamation that subscribe_queue() runs before it
// returns (a try_collect after publishing the new snapshot): a sync handler that ended its own
// subscription is destroyed there, in this thread; its destructor publishes to the new queue
// and waits until the consumer's tasklet has run.
TEST(QueueConsumer, TaskletWokenBeforeSubscribeQueueReturnedSeesItsEvents) {
  herald::bus b(herald::bus_options{.threads = 2});
  sub_list l(b);
  sub_list other(b);
  herald::scheduler& w = b.workers();
  struct consumer {
    herald::event_queue<tahazard_event> q;
    std::atomic<int> runs{0};
    std::atomic<int> popped{0};
  };
  auto c = std::make_unique<consumer>();
  tasklet t = w.make_tasklet(
      [cp = c.get()] {
        while (auto item = cp->q.pop()) {
          if (!item->is_end()) {
            cp->popped.fetch_add(1, std::memory_order_relaxed);
          }
        }
        cp->runs.fetch_add(1, std::memory_order_release);
        cp->runs.notify_all();
      },
      run_on::thread(0));

  // Destroyed (once, when reclaimed): publishes to `l` and, if that reached the consumer's
  // queue, waits for the consumer's tasklet to run.
  struct publish_when_destroyed {
    const sub_list* target;
    consumer* c;
    std::atomic<bool>* reclaimed;
    bool live = true;
    publish_when_destroyed(const sub_list* l, consumer* cp, std::atomic<bool>* r)
        : target(l), c(cp), reclaimed(r) {}
    publish_when_destroyed(publish_when_destroyed&& o) noexcept
        : target(o.target), c(o.c), reclaimed(o.reclaimed), live(std::exchange(o.live, false)) {}
    publish_when_destroyed(const publish_when_destroyed&) = delete;
    publish_when_destroyed& operator=(const publish_when_destroyed&) = delete;
    publish_when_destroyed& operator=(publish_when_destroyed&&) = delete;
    ~publish_when_destroyed() {
      if (!live) {
        return;
      }
      reclaimed->store(true, std::memory_order_relaxed);
      auto r = target->publish<tahazard_event>(tahazard_event::subtype::only, {0, 1});
      if (r && *r == 1) {
        wait_at_least(c->runs, 1);
      }
    }
    void operator()(herald::sync_event<tahazard_event>& e) { e.self().unsubscribe(); }
  };
  std::atomic<bool> reclaimed{false};
  auto z = other.subscribe_sync<tahazard_event>(type_of<tahazard_event>(),
                                                publish_when_destroyed(&l, c.get(), &reclaimed));
  ASSERT_TRUE(z.has_value());
  ASSERT_EQ(other.publish<tahazard_event>(tahazard_event::subtype::only, {0, 0}).value_or(0u),
            1u);  // the handler ends its subscription from inside: reclaimed later
  ASSERT_FALSE(reclaimed.load());

  auto s =
      l.subscribe_queue<tahazard_event>(type_of<tahazard_event>(), c->q, queue_notify::wake(t));
  ASSERT_TRUE(s.has_value());
  if (!reclaimed.load()) {
    GTEST_SKIP() << "the ended subscription was not reclaimed inside subscribe_queue()";
  }
  // The consumer was woken for event 1 while subscribe_queue() ran. Publish event 2 and let
  // worker 0 (where the consumer's tasklet runs) go idle.
  EXPECT_EQ(c->runs.load(), 1);
  ASSERT_EQ(l.publish<tahazard_event>(tahazard_event::subtype::only, {0, 2}).value_or(0u), 1u);
  quiesce_worker(w, 0);
  EXPECT_EQ(c->popped.load(), 2)
      << "the consumer was woken while subscribe_queue() ran, found no queue bound yet, and was "
         "never woken again: "
      << c->q.size_approx() << " events wait in its queue";
  s->unsubscribe();
  quiesce_worker(w, 0);
  while (c->q.pop()) {
  }
}

// A tasklet-notified consumer pops until pop() returns nothing (the queue disarms its
// notification), then, still in the same run, pops again after its subscription ended: END.
// The END notification found the queue disarmed and woke the tasklet while it was running, so
// the tasklet runs once more after the consumer freed itself on END, although queue_notify::
// wake() says the consumer may free itself as soon as it popped END. (The stress test above
// exercises the same window without the help of a second pop: a push that lands between the
// disarm and the re-check of queue_pop().)
TEST(QueueConsumer, TaskletIsNotWokenAgainAfterItsConsumerPoppedEnd) {
  herald::bus b(herald::bus_options{.threads = 2});
  sub_list l(b);
  herald::scheduler& w = b.workers();
  struct flags {
    std::atomic<bool> alive{true};
    std::atomic<int> stage{0};
    std::atomic<int> late_runs{0};
    std::atomic<int> events{0};
    std::atomic<bool> end_popped{false};
  };
  struct consumer {
    herald::event_queue<tahazard_event> q;
    tasklet t;
  };
  auto f = std::make_shared<flags>();
  auto* c = new consumer;
  c->t = w.make_tasklet(
      [c, f] {
        if (!f->alive.load(std::memory_order_acquire)) {
          f->late_runs.fetch_add(1, std::memory_order_relaxed);
          return;  // c is gone
        }
        // Pops until nothing; on END, frees the consumer (allowed once END was popped).
        auto drain = [&] {
          while (auto item = c->q.pop()) {
            if (item->is_end()) {
              item.reset();
              f->alive.store(false, std::memory_order_release);
              f->end_popped.store(true, std::memory_order_release);
              delete c;
              return true;
            }
            f->events.fetch_add(1, std::memory_order_relaxed);
          }
          return false;
        };
        if (drain() || f->stage.load(std::memory_order_acquire) != 0) {
          return;
        }
        // The queue is disarmed now. Let the test end the subscription, then pop again.
        f->stage.store(1, std::memory_order_release);
        f->stage.notify_all();
        wait_at_least(f->stage, 2);
        (void)drain();
      },
      run_on::thread(0));
  auto s =
      l.subscribe_queue<tahazard_event>(type_of<tahazard_event>(), c->q, queue_notify::wake(c->t));
  ASSERT_TRUE(s.has_value());
  ASSERT_EQ(l.publish<tahazard_event>(tahazard_event::subtype::only, {0, 1}).value_or(0u), 1u);
  wait_at_least(f->stage, 1);
  s->unsubscribe();  // END is queued and notified while the consumer's run is still going
  f->stage.store(2, std::memory_order_release);
  f->stage.notify_all();
  spin_until([&] { return f->end_popped.load(std::memory_order_acquire); });
  quiesce_worker(w, 0);
  EXPECT_EQ(f->events.load(), 1);
  EXPECT_EQ(f->late_runs.load(), 0)
      << "the tasklet ran again after its consumer popped END and freed itself";
}

// An END item popped from a queue, destroyed after the queue (the consumer frees its queue
// first, then leaves the scope that holds the item). queued_event's destructor reads the END
// node, which lives in the subscription: when the queue held the last reference, that memory
// is already freed (AddressSanitizer reports a heap-use-after-free; other builds pass).
TEST(QueueConsumer, EndItemMayBeDestroyedAfterItsQueue) {
  herald::bus b(herald::bus_options{.threads = 1});
  sub_list l(b);
  auto q = std::make_unique<herald::event_queue<tahazard_event>>();
  {
    auto s = l.subscribe_queue<tahazard_event>(type_of<tahazard_event>(), *q);
    ASSERT_TRUE(s.has_value());
    s->unsubscribe();  // END queued; the membership reference is gone
  }                    // the handle's reference is gone: the queue holds the last one
  auto item = q->pop();
  ASSERT_TRUE(item.has_value());
  ASSERT_TRUE(item->is_end());
  q.reset();     // the consumer frees its queue, as allowed once END was popped
  item.reset();  // then the END item goes
  SUCCEED();
}

// =============================================================================================
// A deterministic scenario of the census's "missed an event published while certainly active"
// =============================================================================================

// Two queue subscriptions on one list, A (paused, subscribed first) and B (active). A publish
// counts the receivers that may be called (B: one), makes the snapshot for that many, then
// walks the list again and queues the event to the first ones that may be called *now*. When
// A is resumed in between, A takes the only slot and B, active all along, never gets the event
// (and publish reports 1). In the census another thread resumes; here the copy of the safe part
// (user code running between the two walks) does, to make the interleaving certain.
TEST(AsyncDelivery, ResumeDuringPublishDoesNotTakeTheEventOfAnActiveSubscriber) {
  herald::bus b(herald::bus_options{.threads = 1});
  sub_list l(b);
  herald::event_queue<tahook_event> qa;
  herald::event_queue<tahook_event> qb;
  auto a = l.subscribe_queue<tahook_event>(type_of<tahook_event>(), qa);
  auto bsub = l.subscribe_queue<tahook_event>(type_of<tahook_event>(), qb);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(bsub.has_value());
  ASSERT_TRUE(a->pause().has_value());

  std::function<void()> hook = [&] { ASSERT_TRUE(a->resume().has_value()); };
  const hook_payload payload(1, &hook);
  auto r = l.publish<tahook_event>(tahook_event::subtype::only, payload);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(static_cast<bool>(hook)) << "the snapshot was not copied";

  std::uint64_t got_b = 0;
  while (auto item = qb.pop()) {
    got_b += item->is_end() ? 0u : 1u;
  }
  std::uint64_t got_a = 0;
  while (auto item = qa.pop()) {
    got_a += item->is_end() ? 0u : 1u;
  }
  EXPECT_EQ(got_b, 1u) << "B was active during the whole publish but did not get the event (A, "
                          "resumed during the publish, got "
                       << got_a << "; publish reported " << *r << ")";
}

}  // namespace
