// Unit tests of backpressure (herald/backpressure.hpp, subscribe_options::backpressure): bounded
// queue and async subscriptions under each overflow policy with exact counters, the fallback of
// overflow_policy::block after its timeout and in the contexts where it must not wait (inside a
// sync handler, on the bus's workers, inside an async handler or its on_end on a user's
// executor), the per-subscription sequence (sub_sequence) and its gaps, subscription_stats and
// its identity
//   published = delivered + dropped() + discarded + queued,
// the shared snapshot's references given back by dropped events, wildcard subscriptions under
// the same policies, END reasons (queued_event::end_reason, an async handler's on_end), the
// slow-consumer and ended-on-overflow diagnostics, and the refusal of inconsistent options.
//
// Determinism: queue subscriptions fill because nobody pops until the test does; async ones
// because their executor is the test's own (manual_executor: tasks run only when the test runs
// them) or because their handler waits on a gate. Waiting: wait_for polls a condition with a
// generous deadline and fails the test instead of hanging. Nothing asserts on time: the block
// timeouts and the slow-consumer delay are either tiny (and only the outcome is checked) or huge
// (and a publisher that waits although it must not is detected by a deadline, then released by
// making room, so that the test fails instead of hanging).
#include "herald/backpressure.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "herald/scheduler.hpp"

#include "test_support.hpp"

namespace {

using herald_test::wait_for;
using herald_test::gate;
using herald_test::manual_executor;

struct tbp_event {
  static constexpr std::string_view family_name = "TBPEVENT";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  struct safe_part {
    int id = 0;
  };
};

// The family whose handlers publish tbp_event (nested publishes).
struct tbp_trigger {
  static constexpr std::string_view family_name = "TBPTRIGGER";
  enum class subtype : std::uint8_t { go };
  static constexpr std::array<std::string_view, 1> subtype_names{"GO"};
  struct safe_part {
    int n = 0;
  };
};

// Counts the copies of its safe part alive (the snapshots).
struct tbp_counted {
  static constexpr std::string_view family_name = "TBPCOUNTED";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  struct safe_part {
    static inline std::atomic<int> alive{0};  // copies made and not destroyed yet
    int id = 0;
    bool copy = false;
    explicit safe_part(int i) noexcept : id(i) {}
    safe_part(const safe_part& o) noexcept : id(o.id), copy(true) { alive.fetch_add(1); }
    safe_part& operator=(const safe_part&) = delete;
    ~safe_part() {
      if (copy) {
        alive.fetch_sub(1);
      }
    }
  };
};

[[maybe_unused]] const bool families_declared =
    herald::family_id_of<tbp_event>() != herald::family_id_of<tbp_trigger>() &&
    herald::family_id_of<tbp_counted>() != herald::family_id_of<tbp_trigger>();

using herald::async_event;
using herald::end_reason;
using herald::overflow_policy;
using herald::subscription_stats;
using herald::type_of;
using sub = tbp_event::subtype;
using namespace std::chrono_literals;

// ---- Helpers ---------------------------------------------------------------------------------

// Waits for `done`. A publisher that must not block but does waits for a block_timeout of an
// hour: after a deadline the test fails, and `rescue` (which makes room in the full queue) is
// called until `done`, so that the test ends instead of hanging.
template <class Done, class Rescue>
void wait_or_rescue(Done done, Rescue rescue) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "a publish that must not block was still blocked after 10 s";
      while (!done()) {
        rescue();
        std::this_thread::yield();
      }
      return;
    }
    std::this_thread::yield();
  }
}

// Lets at least `d` pass on the steady clock (the slow-consumer diagnostic measures time).
void let_pass(std::chrono::steady_clock::duration d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
}

tbp_event::safe_part payload(int id) { return tbp_event::safe_part{id}; }

std::string show(const subscription_stats& st) {
  std::ostringstream o;
  o << " {published " << st.published << ", delivered " << st.delivered << ", dropped_newest "
    << st.dropped_newest << ", dropped_oldest " << st.dropped_oldest << ", dropped_ended "
    << st.dropped_ended << ", dropped_notify " << st.dropped_notify << ", discarded "
    << st.discarded << ", queued " << st.queued << ", high_water " << st.high_water << "}";
  return o.str();
}

// The identity, without the clamp that stats() applies to `queued` hiding an over-count.
void expect_identity(const subscription_stats& st) {
  EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded + st.queued) << show(st);
}

// What the counters must be (the fields not given: 0; high_water is checked separately).
struct counts {
  std::uint64_t published = 0;
  std::uint64_t delivered = 0;
  std::uint64_t dropped_newest = 0;
  std::uint64_t dropped_oldest = 0;
  std::uint64_t dropped_ended = 0;
  std::uint64_t dropped_notify = 0;
  std::uint64_t discarded = 0;
  std::uint64_t queued = 0;
};
void expect_counts(const subscription_stats& st, const counts& want) {
  EXPECT_EQ(st.published, want.published) << show(st);
  EXPECT_EQ(st.delivered, want.delivered) << show(st);
  EXPECT_EQ(st.dropped_newest, want.dropped_newest) << show(st);
  EXPECT_EQ(st.dropped_oldest, want.dropped_oldest) << show(st);
  EXPECT_EQ(st.dropped_ended, want.dropped_ended) << show(st);
  EXPECT_EQ(st.dropped_notify, want.dropped_notify) << show(st);
  EXPECT_EQ(st.discarded, want.discarded) << show(st);
  EXPECT_EQ(st.queued, want.queued) << show(st);
  expect_identity(st);
}

// One popped event (or one handler call).
struct item {
  int id = 0;
  std::uint64_t sub_seq = 0;
};

// What a queue gave: its events, its END (count, reason), and whether anything followed END.
struct drained {
  std::vector<item> events;
  int ends = 0;
  std::optional<end_reason> reason;
  bool after_end = false;
};

void pop_into(herald::event_queue<tbp_event>& q, drained& d) {
  while (auto e = q.pop()) {
    if (e->is_end()) {
      ++d.ends;
      d.reason = e->end_reason();
    } else {
      d.after_end = d.after_end || d.ends > 0;
      d.events.push_back({e->safe().id, e->sub_sequence()});
    }
  }
}
drained pop_all(herald::event_queue<tbp_event>& q) {
  drained d;
  pop_into(q, d);
  return d;
}
// Pops until END (which an overflow or an end inside a publish queues a little later, from the
// bus's workers).
drained pop_until_end(herald::event_queue<tbp_event>& q) {
  drained d;
  wait_for([&] {
    pop_into(q, d);
    return d.ends > 0;
  });
  return d;
}

std::vector<int> ids_of(const std::vector<item>& v) {
  std::vector<int> r;
  for (const item& i : v) {
    r.push_back(i.id);
  }
  return r;
}
std::vector<std::uint64_t> seqs_of(const std::vector<item>& v) {
  std::vector<std::uint64_t> r;
  for (const item& i : v) {
    r.push_back(i.sub_seq);
  }
  return r;
}
std::vector<int> id_range(int first, int last) {
  std::vector<int> r;
  for (int i = first; i <= last; ++i) {
    r.push_back(i);
  }
  return r;
}
std::vector<std::uint64_t> seq_range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> r;
  for (std::uint64_t i = first; i <= last; ++i) {
    r.push_back(i);
  }
  return r;
}

herald::subscribe_options bounded(std::size_t bound, overflow_policy policy) {
  herald::subscribe_options o;
  o.backpressure.bound = bound;
  o.backpressure.policy = policy;
  return o;
}

// What the overflow hook and the diagnostic hook saw (copied: the name is borrowed).
struct seen_info {
  std::uint64_t id = 0;
  std::string name;
  herald::event_type type;
  std::size_t queued = 0;
  std::size_t bound = 0;
};
seen_info copy_info(const herald::overflow_info& i) {
  return seen_info{i.subscription_id, std::string(i.subscription_name), i.type, i.queued, i.bound};
}
struct seen_diag {
  herald::diagnostic_kind kind;
  seen_info info;
  std::chrono::nanoseconds duration;
};
// Records the bus's diagnostics (called in publishing threads).
struct diag_log {
  std::mutex m;
  std::vector<seen_diag> items;
  void attach(herald::bus& b) {
    b.set_diagnostic_hook([this](const herald::diagnostic& d) {
      std::lock_guard lock(m);
      items.push_back(seen_diag{d.kind, copy_info(d.info), d.duration});
    });
  }
  std::vector<seen_diag> snapshot() {
    std::lock_guard lock(m);
    return items;
  }
};

// Records an async handler's calls, its on_end and its destruction.
struct end_log {
  std::mutex m;
  std::vector<item> events;         // guarded by m
  std::vector<end_reason> reasons;  // guarded by m
  std::atomic<int> calls{0};
  std::atomic<int> end_calls{0};
  std::atomic<int> destroyed{0};
  std::atomic<int> events_after_end{0};
  std::atomic<int> destroyed_before_end{0};
  int unsubscribe_at = 0;  // the handler unsubscribes itself at this id (0: never)
  gate* hold = nullptr;    // the first call waits here (nullptr: no wait)
};

// An async handler with on_end(end_reason), small enough to be stored inline.
struct ending_handler {
  end_log* log;
  bool armed = true;
  explicit ending_handler(end_log* l) noexcept : log(l) {}
  ending_handler(const ending_handler& o) noexcept : log(o.log), armed(o.armed) {}
  ending_handler(ending_handler&& o) noexcept : log(o.log), armed(o.armed) { o.armed = false; }
  ending_handler& operator=(const ending_handler&) = delete;
  ~ending_handler() {
    if (armed) {
      if (log->end_calls.load() == 0) {
        log->destroyed_before_end.fetch_add(1);
      }
      log->destroyed.fetch_add(1);
    }
  }
  void operator()(async_event<tbp_event>& e) {
    if (log->end_calls.load() != 0) {
      log->events_after_end.fetch_add(1);
    }
    {
      std::lock_guard lock(log->m);
      log->events.push_back({e.safe().id, e.sub_sequence()});
    }
    if (log->calls.fetch_add(1) == 0 && log->hold != nullptr) {
      log->hold->wait();
    }
    if (e.safe().id == log->unsubscribe_at) {
      e.self().unsubscribe();
    }
  }
  void on_end(end_reason why) {
    {
      std::lock_guard lock(log->m);
      log->reasons.push_back(why);
    }
    log->end_calls.fetch_add(1);
  }
};
// The same, too large to be stored inline (the handler lives on the heap).
struct big_ending_handler : ending_handler {
  std::array<char, 96> pad{};
  using ending_handler::ending_handler;
};
static_assert(!herald::detail::handler_fits_inline<big_ending_handler>);
static_assert(herald::detail::handler_fits_inline<ending_handler>);

std::vector<item> events_of(end_log& log) {
  std::lock_guard lock(log.m);
  return log.events;
}
std::vector<end_reason> reasons_of(end_log& log) {
  std::lock_guard lock(log.m);
  return log.reasons;
}

// ---- Queue mode: each policy, nobody popping until the test does -----------------------------

TEST(BoundedQueue, DropNewestKeepsTheFirstEventsAndCountsTheRest) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                           bounded(4, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 4 ? 1u : 0u) << "event " << i;
  }
  auto st = q.stats();
  expect_counts(st, {.published = 10, .dropped_newest = 6, .queued = 4});
  EXPECT_EQ(st.high_water, 4u) << show(st);
  EXPECT_EQ(q.size_approx(), 4u);
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), id_range(1, 4));
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 4));
  EXPECT_EQ(d.ends, 0);
  st = s->stats();  // the handle sees the same counters
  expect_counts(st, {.published = 10, .delivered = 4, .dropped_newest = 6});
  EXPECT_GT(st.high_water, 0u);
  EXPECT_LE(st.high_water, 4u);
}

TEST(BoundedQueue, DropOldestKeepsTheLastEventsAndCountsTheRest) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                           bounded(4, overflow_policy::drop_oldest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 1u) << "event " << i;  // the new event is always queued
  }
  auto st = q.stats();
  expect_counts(st, {.published = 10, .dropped_oldest = 6, .queued = 4});
  EXPECT_EQ(st.high_water, 4u) << show(st);
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), id_range(7, 10));
  EXPECT_EQ(seqs_of(d.events), seq_range(7, 10));
  st = q.stats();
  expect_counts(st, {.published = 10, .delivered = 4, .dropped_oldest = 6});
  EXPECT_LE(st.high_water, 4u);
}

TEST(BoundedQueue, DropOldestWithBoundOneAlwaysKeepsTheNewest) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                           bounded(1, overflow_policy::drop_oldest));
  ASSERT_TRUE(s);
  for (int round = 0; round < 3; ++round) {
    const int base = round * 5;
    for (int i = 1; i <= 5; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(base + i)));
    }
    const drained d = pop_all(q);
    ASSERT_EQ(d.events.size(), 1u) << "round " << round;
    EXPECT_EQ(d.events[0].id, base + 5);
    EXPECT_EQ(d.events[0].sub_seq, static_cast<std::uint64_t>(base + 5));
  }
  expect_counts(q.stats(), {.published = 15, .delivered = 3, .dropped_oldest = 12});
}

TEST(BoundedQueue, RoomMadeByPoppingIsUsedAgain) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                           bounded(2, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 3; ++i) {  // 3 dropped
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  auto first = q.pop();
  ASSERT_TRUE(first && !first->is_end());
  EXPECT_EQ(first->safe().id, 1);
  for (int i = 4; i <= 6; ++i) {  // 4 queued, 5 and 6 dropped
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), (std::vector<int>{2, 4}));
  EXPECT_EQ(seqs_of(d.events), (std::vector<std::uint64_t>{2, 4}));
  expect_counts(q.stats(), {.published = 6, .delivered = 3, .dropped_newest = 3});
}

TEST(BoundedQueue, NotifyCallsTheHookOncePerDroppedEventWithItsInfo) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  std::vector<seen_info> hooked;  // the hook runs in this (the publishing) thread
  auto opt = bounded(4, overflow_policy::notify);
  opt.id = herald::make_id("bp", "notify");
  opt.name = "bp-notify";
  opt.backpressure.on_overflow = [&](const herald::overflow_info& i) {
    hooked.push_back(copy_info(i));
  };
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  auto subtype_of = [](int i) { return i % 2 == 0 ? sub::down : sub::up; };
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_event>(subtype_of(i), payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 4 ? 1u : 0u) << "event " << i;
  }
  ASSERT_EQ(hooked.size(), 6u);
  for (std::size_t k = 0; k < hooked.size(); ++k) {
    const int id = static_cast<int>(k) + 5;
    EXPECT_EQ(hooked[k].id, herald::make_id("bp", "notify"));
    EXPECT_EQ(hooked[k].name, "bp-notify");
    EXPECT_EQ(hooked[k].type, type_of<tbp_event>(subtype_of(id))) << "event " << id;
    EXPECT_EQ(hooked[k].queued, 4u);
    EXPECT_EQ(hooked[k].bound, 4u);
  }
  expect_counts(q.stats(), {.published = 10, .dropped_notify = 6, .queued = 4});
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), id_range(1, 4));
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 4));
  expect_counts(q.stats(), {.published = 10, .delivered = 4, .dropped_notify = 6});
}

TEST(BoundedQueue, EndSubscriptionDeliversTheQueuedEventsThenEndWithReasonOverflow) {
  diag_log diags;  // outlives the bus, which holds its hook
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto opt = bounded(4, overflow_policy::end_subscription);
  opt.id = herald::make_id("bp", "end");
  opt.name = "bp-end";
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_event>(sub::down, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 4 ? 1u : 0u) << "event " << i;
  }
  EXPECT_FALSE(s->is_active());
  EXPECT_EQ(list.size_approx(), 0u);
  // Event 5 ended it; 6..10 found it ended and are not counted.
  expect_counts(q.stats(), {.published = 5, .dropped_ended = 1, .queued = 4});
  const drained d = pop_until_end(q);
  EXPECT_EQ(ids_of(d.events), id_range(1, 4));
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 4));
  EXPECT_EQ(d.ends, 1);
  EXPECT_FALSE(d.after_end);
  ASSERT_TRUE(d.reason);
  EXPECT_EQ(*d.reason, end_reason::overflow);
  EXPECT_FALSE(q.is_open());
  // Later publishes no longer reach it.
  auto r = list.publish<tbp_event>(sub::down, payload(11));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0u);
  expect_counts(s->stats(), {.published = 5, .delivered = 4, .dropped_ended = 1});
  const auto seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, herald::diagnostic_kind::ended_on_overflow);
  EXPECT_EQ(seen[0].info.id, herald::make_id("bp", "end"));
  EXPECT_EQ(seen[0].info.name, "bp-end");
  EXPECT_EQ(seen[0].info.type, type_of<tbp_event>(sub::down));
  EXPECT_EQ(seen[0].info.queued, 4u);
  EXPECT_EQ(seen[0].info.bound, 4u);
}

TEST(BoundedQueue, EndSubscriptionWithDiscardCountsTheQueuedEventsAsDiscarded) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto opt = bounded(4, overflow_policy::end_subscription);
  opt.on_end = herald::pending_on_end::discard;
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  const drained d = pop_until_end(q);
  EXPECT_TRUE(d.events.empty());
  ASSERT_TRUE(d.reason);
  EXPECT_EQ(*d.reason, end_reason::overflow);
  expect_counts(q.stats(), {.published = 5, .dropped_ended = 1, .discarded = 4});
}

// overflow_policy::block with nobody popping: each publish that finds the queue full waits for
// the (short) timeout, then applies after_timeout. Only the outcome is checked, never the time.
TEST(BoundedQueue, BlockWithoutAConsumerFallsBackToAfterTimeout) {
  diag_log diags;  // outlives the bus, which holds its hook
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  for (overflow_policy after : {overflow_policy::drop_newest, overflow_policy::drop_oldest,
                                overflow_policy::notify, overflow_policy::end_subscription}) {
    SCOPED_TRACE("after_timeout " + std::to_string(static_cast<int>(after)));
    herald::event_queue<tbp_event> q;
    int hooked = 0;
    auto opt = bounded(2, overflow_policy::block);
    opt.backpressure.block_timeout = 2ms;
    opt.backpressure.after_timeout = after;
    opt.backpressure.on_overflow = [&](const herald::overflow_info& i) {
      ++hooked;
      EXPECT_EQ(i.bound, 2u);
    };
    auto s =
        list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
    ASSERT_TRUE(s);
    for (int i = 1; i <= 5; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));  // returns: that is the point
    }
    switch (after) {
      case overflow_policy::drop_newest: {
        expect_counts(q.stats(), {.published = 5, .dropped_newest = 3, .queued = 2});
        const drained d = pop_all(q);
        EXPECT_EQ(seqs_of(d.events), seq_range(1, 2));
        break;
      }
      case overflow_policy::drop_oldest: {
        expect_counts(q.stats(), {.published = 5, .dropped_oldest = 3, .queued = 2});
        const drained d = pop_all(q);
        EXPECT_EQ(seqs_of(d.events), seq_range(4, 5));
        break;
      }
      case overflow_policy::notify: {
        EXPECT_EQ(hooked, 3);
        expect_counts(q.stats(), {.published = 5, .dropped_notify = 3, .queued = 2});
        const drained d = pop_all(q);
        EXPECT_EQ(seqs_of(d.events), seq_range(1, 2));
        break;
      }
      case overflow_policy::end_subscription: {
        expect_counts(q.stats(), {.published = 3, .dropped_ended = 1, .queued = 2});
        const drained d = pop_until_end(q);
        EXPECT_EQ(seqs_of(d.events), seq_range(1, 2));
        ASSERT_TRUE(d.reason);
        EXPECT_EQ(*d.reason, end_reason::overflow);
        break;
      }
      default:
        FAIL();
    }
    EXPECT_EQ(hooked, after == overflow_policy::notify ? 3 : 0);
  }
  const auto seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 1u);  // the end_subscription round only
  EXPECT_EQ(seen[0].kind, herald::diagnostic_kind::ended_on_overflow);
}

TEST(BoundedQueue, BlockWithAConsumerDropsNothingAndKeepsOrder) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto opt = bounded(4, overflow_policy::block);
  opt.backpressure.block_timeout = std::chrono::seconds(60);  // never reached
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  constexpr int n = 3000;
  std::vector<item> got;
  std::thread consumer([&] {
    while (got.size() < static_cast<std::size_t>(n)) {
      if (auto e = q.pop()) {
        if (e->is_end()) {
          break;
        }
        got.push_back({e->safe().id, e->sub_sequence()});
      } else {
        std::this_thread::yield();
      }
    }
  });
  for (int i = 1; i <= n; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 1u);
  }
  consumer.join();
  EXPECT_EQ(ids_of(got), id_range(1, n));
  EXPECT_EQ(seqs_of(got), seq_range(1, n));
  const auto st = q.stats();
  expect_counts(st, {.published = n, .delivered = n});
  EXPECT_GT(st.high_water, 0u);
  EXPECT_LE(st.high_water, 4u);
}

TEST(BoundedQueue, UnboundedSubSequenceIsGapFreeAndHighWaterFollowsTheQueue) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q);
  ASSERT_TRUE(s);
  constexpr int n = 200;
  for (int i = 1; i <= n; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 1u);
  }
  auto st = q.stats();
  expect_counts(st, {.published = n, .queued = n});
  EXPECT_EQ(st.high_water, static_cast<std::uint64_t>(n));
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), id_range(1, n));
  EXPECT_EQ(seqs_of(d.events), seq_range(1, n));
  st = q.stats();
  expect_counts(st, {.published = n, .delivered = n});
  EXPECT_GT(st.high_water, 0u);
  EXPECT_LE(st.high_water, static_cast<std::uint64_t>(n));
}

TEST(BoundedQueue, PublishesWhilePausedAreNotCountedAndLeaveNoGap) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                           bounded(8, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(s->pause());
  for (int i = 4; i <= 6; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(s->resume());
  for (int i = 7; i <= 9; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  const drained d = pop_all(q);
  EXPECT_EQ(ids_of(d.events), (std::vector<int>{1, 2, 3, 7, 8, 9}));
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 6));
  expect_counts(q.stats(), {.published = 6, .delivered = 6});
}

// Every policy gives the dropped event's reference on the shared snapshot back: with an
// unbounded subscriber beside bounded ones, a snapshot lives exactly as long as some queue holds
// it (no leak, no early free: AddressSanitizer watches the latter).
TEST(BoundedQueue, DroppedEventsGiveTheirSharedSnapshotBack) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  using counted = tbp_counted::safe_part;
  herald::event_queue<tbp_counted> all;
  herald::event_queue<tbp_counted> newest;
  herald::event_queue<tbp_counted> oldest;
  herald::event_queue<tbp_counted> notified;
  auto notify = bounded(2, overflow_policy::notify);
  notify.backpressure.on_overflow = [](const herald::overflow_info&) {};
  ASSERT_TRUE(list.subscribe_queue<tbp_counted>(type_of<tbp_counted>(), all));
  ASSERT_TRUE(list.subscribe_queue<tbp_counted>(type_of<tbp_counted>(), newest,
                                                herald::queue_notify::none(),
                                                bounded(2, overflow_policy::drop_newest)));
  ASSERT_TRUE(list.subscribe_queue<tbp_counted>(type_of<tbp_counted>(), oldest,
                                                herald::queue_notify::none(),
                                                bounded(2, overflow_policy::drop_oldest)));
  ASSERT_TRUE(list.subscribe_queue<tbp_counted>(type_of<tbp_counted>(), notified,
                                                herald::queue_notify::none(), notify));
  const int alive_before = counted::alive.load();
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_counted>(tbp_counted::subtype::only, counted(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 2 ? 4u : 2u) << "event " << i;  // `all` and drop_oldest always
  }
  EXPECT_EQ(counted::alive.load() - alive_before, 10);  // one snapshot per publish
  auto pop_ids = [](herald::event_queue<tbp_counted>& q) {
    std::vector<int> ids;
    while (auto e = q.pop()) {
      ids.push_back(e->safe().id);
    }
    return ids;
  };
  EXPECT_EQ(pop_ids(all), id_range(1, 10));
  EXPECT_EQ(counted::alive.load() - alive_before, 4);  // 1, 2 (newest, notified); 9, 10 (oldest)
  EXPECT_EQ(pop_ids(newest), id_range(1, 2));
  EXPECT_EQ(pop_ids(notified), id_range(1, 2));
  EXPECT_EQ(counted::alive.load() - alive_before, 2);
  EXPECT_EQ(pop_ids(oldest), id_range(9, 10));
  EXPECT_EQ(counted::alive.load() - alive_before, 0);
}

// ---- Async mode: each policy; the executor is the test's, so nothing runs until it says ------

TEST(BoundedAsync, DropPoliciesOnAUserExecutorCountExactly) {
  struct expectation {
    overflow_policy policy;
    std::vector<int> ids;
    counts before;  // after publishing, before the executor runs
    counts after;   // after it ran
  };
  const std::vector<expectation> cases{
      {overflow_policy::drop_newest,
       id_range(1, 4),
       {.published = 10, .dropped_newest = 6, .queued = 4},
       {.published = 10, .delivered = 4, .dropped_newest = 6}},
      {overflow_policy::drop_oldest,
       id_range(7, 10),
       {.published = 10, .dropped_oldest = 6, .queued = 4},
       {.published = 10, .delivered = 4, .dropped_oldest = 6}},
      {overflow_policy::notify,
       id_range(1, 4),
       {.published = 10, .dropped_notify = 6, .queued = 4},
       {.published = 10, .delivered = 4, .dropped_notify = 6}},
  };
  for (const expectation& c : cases) {
    SCOPED_TRACE("policy " + std::to_string(static_cast<int>(c.policy)));
    manual_executor ex;
    end_log log;  // outlives the handler, which points to it
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    int hooked = 0;
    auto opt = bounded(4, c.policy);
    opt.executor = ex.ref();
    opt.backpressure.on_overflow = [&](const herald::overflow_info& i) {
      ++hooked;
      EXPECT_EQ(i.queued, 4u);
      EXPECT_EQ(i.bound, 4u);
    };
    auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log), opt);
    ASSERT_TRUE(s);
    for (int i = 1; i <= 10; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
    }
    EXPECT_EQ(log.calls.load(), 0);
    auto st = s->stats();
    expect_counts(st, c.before);
    EXPECT_EQ(st.high_water, 4u) << show(st);
    ex.run_all();
    const auto got = events_of(log);
    EXPECT_EQ(ids_of(got), c.ids);
    std::vector<std::uint64_t> want_seqs;
    for (int id : c.ids) {
      want_seqs.push_back(static_cast<std::uint64_t>(id));
    }
    EXPECT_EQ(seqs_of(got), want_seqs);
    st = s->stats();
    expect_counts(st, c.after);
    EXPECT_LE(st.high_water, 4u);
    EXPECT_EQ(hooked, c.policy == overflow_policy::notify ? 6 : 0);
    s->unsubscribe();
    ex.run_all();
    EXPECT_EQ(log.destroyed.load(), 1);
    EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::unsubscribed}));
  }
}

TEST(BoundedAsync, EndSubscriptionCallsOnEndWithOverflowAfterTheQueuedEvents) {
  manual_executor ex;
  diag_log diags;  // outlives the bus, which holds its hook
  end_log log;     // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  auto opt = bounded(4, overflow_policy::end_subscription);
  opt.executor = ex.ref();
  opt.name = "bp-async-end";
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log), opt);
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 4 ? 1u : 0u) << "event " << i;
  }
  EXPECT_FALSE(s->is_active());
  expect_counts(s->stats(), {.published = 5, .dropped_ended = 1, .queued = 4});
  // END is queued from the bus's workers after a grace period; run the executor until it came.
  ASSERT_TRUE(wait_for([&] {
    ex.run_all();
    return log.destroyed.load() == 1;
  }));
  EXPECT_EQ(ids_of(events_of(log)), id_range(1, 4));
  EXPECT_EQ(seqs_of(events_of(log)), seq_range(1, 4));
  EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::overflow}));
  EXPECT_EQ(log.end_calls.load(), 1);
  EXPECT_EQ(log.events_after_end.load(), 0);
  EXPECT_EQ(log.destroyed_before_end.load(), 0);
  ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(11)));
  expect_counts(s->stats(), {.published = 5, .delivered = 4, .dropped_ended = 1});
  const auto seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, herald::diagnostic_kind::ended_on_overflow);
  EXPECT_EQ(seen[0].info.name, "bp-async-end");
  EXPECT_EQ(seen[0].info.queued, 4u);
  EXPECT_EQ(seen[0].info.bound, 4u);
}

// The bus's own workers, with a handler held on a gate: the first event is taken off the queue
// (and is being handled) when the other ten are published, so four of them fit.
TEST(BoundedAsync, HandlerHeldOnAGateMakesTheQueueOverflowOnTheBusWorkers) {
  for (overflow_policy policy : {overflow_policy::drop_newest, overflow_policy::drop_oldest}) {
    SCOPED_TRACE("policy " + std::to_string(static_cast<int>(policy)));
    gate hold;
    end_log log;  // outlives the handler, which points to it
    herald::bus b({.threads = 2});
    herald::sub_list list(b);
    log.hold = &hold;
    auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log),
                                             bounded(4, policy));
    ASSERT_TRUE(s);
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(1)));
    ASSERT_TRUE(wait_for([&] { return log.calls.load() == 1; }));
    for (int i = 2; i <= 11; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
    }
    const bool newest = policy == overflow_policy::drop_newest;
    expect_counts(s->stats(), {.published = 11,
                               .dropped_newest = newest ? 6u : 0u,
                               .dropped_oldest = newest ? 0u : 6u,
                               .queued = 4 + 1});  // the event being handled is not delivered yet
    hold.open();
    ASSERT_TRUE(wait_for([&] { return log.calls.load() == 5; }));
    s->unsubscribe();
    ASSERT_TRUE(wait_for([&] { return log.destroyed.load() == 1; }));
    const auto got = events_of(log);
    EXPECT_EQ(ids_of(got),
              newest ? (std::vector<int>{1, 2, 3, 4, 5}) : (std::vector<int>{1, 8, 9, 10, 11}));
    EXPECT_EQ(seqs_of(got), newest ? (std::vector<std::uint64_t>{1, 2, 3, 4, 5})
                                   : (std::vector<std::uint64_t>{1, 8, 9, 10, 11}));
    const auto st = s->stats();
    expect_counts(st, {.published = 11,
                       .delivered = 5,
                       .dropped_newest = newest ? 6u : 0u,
                       .dropped_oldest = newest ? 0u : 6u});
    EXPECT_GT(st.high_water, 0u);
    EXPECT_LE(st.high_water, 4u);
  }
}

TEST(BoundedAsync, BlockWithAWorkerConsumerDropsNothingAndKeepsOrder) {
  end_log log;  // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto opt = bounded(4, overflow_policy::block);
  opt.backpressure.block_timeout = std::chrono::seconds(60);  // never reached
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log), opt);
  ASSERT_TRUE(s);
  constexpr int n = 3000;
  for (int i = 1; i <= n; ++i) {
    auto r = list.publish<tbp_event>(sub::up, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 1u);
  }
  b.shutdown();
  const auto got = events_of(log);
  EXPECT_EQ(ids_of(got), id_range(1, n));
  EXPECT_EQ(seqs_of(got), seq_range(1, n));
  const auto st = s->stats();
  expect_counts(st, {.published = n, .delivered = n});
  EXPECT_GT(st.high_water, 0u);
  EXPECT_LE(st.high_water, 4u);
  EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::shutdown}));
}

TEST(BoundedAsync, UnboundedSubSequenceIsGapFree) {
  end_log log;  // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log));
  ASSERT_TRUE(s);
  constexpr int n = 500;
  for (int i = 1; i <= n; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  b.shutdown();
  EXPECT_EQ(seqs_of(events_of(log)), seq_range(1, n));
  const auto st = s->stats();
  expect_counts(st, {.published = n, .delivered = n});
  EXPECT_GT(st.high_water, 0u);
  EXPECT_LE(st.high_water, static_cast<std::uint64_t>(n));
}

TEST(BoundedAsync, DiscardingShutdownCountsPendingEventsAsDiscarded) {
  gate hold;
  end_log log;  // outlives the handler, which points to it
  herald::bus b({.threads = 1, .on_shutdown = herald::shutdown_mode::discard});
  herald::sub_list list(b);
  log.hold = &hold;
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log),
                                           bounded(4, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(1)));
  ASSERT_TRUE(wait_for([&] { return log.calls.load() == 1; }));
  for (int i = 2; i <= 8; ++i) {  // 2..5 queued, 6..8 dropped
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  std::thread opener([&] {
    wait_for([&] { return b.is_shut_down(); });
    hold.open();
  });
  b.shutdown();
  opener.join();
  EXPECT_EQ(log.calls.load(), 1);
  expect_counts(s->stats(), {.published = 8, .delivered = 1, .dropped_newest = 3, .discarded = 4});
  EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::shutdown}));
}

// ---- Block: never waits inside a handler or on a worker --------------------------------------

// The target of the nested publishes below: a queue of bound 1 that blocks for an hour. A
// publish that waits although it must not is released by popping (see wait_or_rescue).
herald::subscribe_options block_for_an_hour(overflow_policy after) {
  auto opt = bounded(1, overflow_policy::block);
  opt.backpressure.block_timeout = std::chrono::hours(1);
  opt.backpressure.after_timeout = after;
  return opt;
}

TEST(BlockPolicy, PublishFromASyncHandlerNeverBlocks) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto target =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                      block_for_an_hour(overflow_policy::drop_newest));
  ASSERT_TRUE(target);
  auto trigger = list.subscribe_sync<tbp_trigger>(
      type_of<tbp_trigger>(), [&](herald::sync_event<tbp_trigger>&) {
        for (int i = 1; i <= 3; ++i) {
          (void)list.publish<tbp_event>(sub::up, payload(i));
        }
      });
  ASSERT_TRUE(trigger);
  std::atomic<bool> done{false};
  std::thread publisher([&] {
    (void)list.publish<tbp_trigger>(tbp_trigger::subtype::go, tbp_trigger::safe_part{1});
    done.store(true);
  });
  drained rescued;
  wait_or_rescue([&] { return done.load(); }, [&] { pop_into(q, rescued); });
  publisher.join();
  EXPECT_TRUE(rescued.events.empty());
  const drained d = pop_all(q);
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 1));
  expect_counts(q.stats(), {.published = 3, .delivered = 1, .dropped_newest = 2});
}

TEST(BlockPolicy, PublishFromATaskletOnTheBusWorkersNeverBlocks) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto target =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                      block_for_an_hour(overflow_policy::drop_oldest));
  ASSERT_TRUE(target);
  std::atomic<bool> done{false};
  // Outside any handler, but on a worker: a wait there would stall every task of that worker.
  herald::tasklet t = b.workers().make_tasklet([&] {
    for (int i = 1; i <= 3; ++i) {
      (void)list.publish<tbp_event>(sub::up, payload(i));
    }
    done.store(true);
  });
  t.wake();
  drained rescued;
  wait_or_rescue([&] { return done.load(); }, [&] { pop_into(q, rescued); });
  EXPECT_TRUE(rescued.events.empty());
  const drained d = pop_all(q);
  EXPECT_EQ(seqs_of(d.events), seq_range(3, 3));
  expect_counts(q.stats(), {.published = 3, .delivered = 1, .dropped_oldest = 2});
}

TEST(BlockPolicy, PublishFromAnAsyncHandlerOnTheBusWorkersNeverBlocks) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  int hooked = 0;  // the hook runs in the publishing handler, one call at a time
  auto opt = block_for_an_hour(overflow_policy::notify);
  opt.backpressure.on_overflow = [&](const herald::overflow_info&) { ++hooked; };
  auto target =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(target);
  std::atomic<bool> done{false};
  auto trigger =
      list.subscribe_async<tbp_trigger>(type_of<tbp_trigger>(), [&](async_event<tbp_trigger>&) {
        for (int i = 1; i <= 3; ++i) {
          (void)list.publish<tbp_event>(sub::up, payload(i));
        }
        done.store(true);
      });
  ASSERT_TRUE(trigger);
  ASSERT_TRUE(list.publish<tbp_trigger>(tbp_trigger::subtype::go, tbp_trigger::safe_part{1}));
  drained rescued;
  wait_or_rescue([&] { return done.load(); }, [&] { pop_into(q, rescued); });
  EXPECT_TRUE(rescued.events.empty());
  const drained d = pop_all(q);
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 1));
  EXPECT_EQ(hooked, 2);
  expect_counts(q.stats(), {.published = 3, .delivered = 1, .dropped_notify = 2});
}

// herald/backpressure.hpp: "Inside a handler, or on a thread of the bus's workers, a publisher
// never waits". An async handler run by the user's own executor is inside a handler: a wait
// there would stall that executor (and every subscription it runs, perhaps the very consumer
// the publisher waits for) for block_timeout.
TEST(BlockPolicy, PublishFromAnAsyncHandlerOnAUserExecutorNeverBlocks) {
  manual_executor ex;
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto target =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                      block_for_an_hour(overflow_policy::drop_newest));
  ASSERT_TRUE(target);
  std::atomic<int> handled{0};
  auto trigger =
      list.subscribe_async<tbp_trigger>(type_of<tbp_trigger>(),
                                        [&](async_event<tbp_trigger>&) {
                                          for (int i = 1; i <= 3; ++i) {
                                            (void)list.publish<tbp_event>(sub::up, payload(i));
                                          }
                                          handled.fetch_add(1);
                                        },
                                        {.executor = ex.ref()});
  ASSERT_TRUE(trigger);
  ASSERT_TRUE(list.publish<tbp_trigger>(tbp_trigger::subtype::go, tbp_trigger::safe_part{1}));
  std::atomic<bool> done{false};
  std::thread runner([&] {
    ex.run_all();
    done.store(true);
  });
  drained rescued;
  wait_or_rescue([&] { return done.load(); }, [&] { pop_into(q, rescued); });
  runner.join();
  EXPECT_EQ(handled.load(), 1);
  EXPECT_TRUE(rescued.events.empty()) << "the handler waited in publish until the test popped";
  const drained d = pop_all(q);
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 1));
  expect_counts(q.stats(), {.published = 3, .delivered = 1, .dropped_newest = 2});
  trigger->unsubscribe();
  ex.run_all();  // END of the trigger subscription
}

// on_end runs on the handler's executor like a handler call: a publish made from it never
// waits either.
TEST(BlockPolicy, PublishFromOnEndOnAUserExecutorNeverBlocks) {
  struct publishing_end {
    herald::sub_list* list;
    std::atomic<int>* ended;
    void operator()(async_event<tbp_trigger>&) {}
    void on_end(end_reason) {
      for (int i = 1; i <= 3; ++i) {
        (void)list->publish<tbp_event>(sub::up, payload(i));
      }
      ended->fetch_add(1);
    }
  };
  manual_executor ex;
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  auto target =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                      block_for_an_hour(overflow_policy::drop_newest));
  ASSERT_TRUE(target);
  std::atomic<int> ended{0};
  auto trigger = list.subscribe_async<tbp_trigger>(
      type_of<tbp_trigger>(), publishing_end{&list, &ended}, {.executor = ex.ref()});
  ASSERT_TRUE(trigger);
  trigger->unsubscribe();  // END is now queued on the executor
  std::atomic<bool> done{false};
  std::thread runner([&] {
    ex.run_all();
    done.store(true);
  });
  drained rescued;
  wait_or_rescue([&] { return done.load(); }, [&] { pop_into(q, rescued); });
  runner.join();
  EXPECT_EQ(ended.load(), 1);
  EXPECT_TRUE(rescued.events.empty()) << "on_end waited in publish until the test popped";
  const drained d = pop_all(q);
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 1));
  expect_counts(q.stats(), {.published = 3, .delivered = 1, .dropped_newest = 2});
}

// ---- Wildcard subscriptions: the same policies, across families ------------------------------

// A list where only a bounded wildcard queue listens: every publish, of either family, takes the
// next sub_sequence and goes through the same admission.
TEST(BoundedWildcard, DropNewestCountsEveryFamilyInOneSequence) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::wildcard_queue q;
  auto s = list.subscribe_wildcard_queue(q, herald::queue_notify::none(),
                                         bounded(4, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 10; ++i) {
    auto r = i % 2 == 0
                 ? list.publish<tbp_event>(sub::up, payload(i))
                 : list.publish<tbp_trigger>(tbp_trigger::subtype::go, tbp_trigger::safe_part{i});
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 4 ? 1u : 0u) << "event " << i;
  }
  expect_counts(q.stats(), {.published = 10, .dropped_newest = 6, .queued = 4});
  std::vector<std::uint64_t> seqs;
  std::vector<int> ids;
  while (auto e = q.pop()) {
    ASSERT_FALSE(e->is_end());
    const herald::event_view v = e->view();
    seqs.push_back(v.sub_sequence());
    if (const auto* ev = v.safe_as<tbp_event>()) {
      ids.push_back(ev->id);
    } else if (const auto* tr = v.safe_as<tbp_trigger>()) {
      ids.push_back(tr->n);
    }
  }
  EXPECT_EQ(seqs, seq_range(1, 4));
  EXPECT_EQ(ids, id_range(1, 4));
  expect_counts(q.stats(), {.published = 10, .delivered = 4, .dropped_newest = 6});
}

// One publish reaching a bounded typed queue and a bounded wildcard queue: each applies its own
// policy to its own node of the shared snapshot.
TEST(BoundedWildcard, TypedAndWildcardSubscribersOfOnePublishOverflowIndependently) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tbp_event> typed;
  herald::wildcard_queue wild;
  ASSERT_TRUE(list.subscribe_queue<tbp_event>(type_of<tbp_event>(), typed,
                                              herald::queue_notify::none(),
                                              bounded(3, overflow_policy::drop_newest)));
  ASSERT_TRUE(list.subscribe_wildcard_queue(wild, herald::queue_notify::none(),
                                            bounded(2, overflow_policy::drop_oldest)));
  for (int i = 1; i <= 6; ++i) {
    auto r = list.publish<tbp_event>(sub::down, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, i <= 3 ? 2u : 1u) << "event " << i;
  }
  expect_counts(typed.stats(), {.published = 6, .dropped_newest = 3, .queued = 3});
  expect_counts(wild.stats(), {.published = 6, .dropped_oldest = 4, .queued = 2});
  const drained d = pop_all(typed);
  EXPECT_EQ(seqs_of(d.events), seq_range(1, 3));
  std::vector<std::uint64_t> wild_seqs;
  while (auto e = wild.pop()) {
    wild_seqs.push_back(e->view().sub_sequence());
    EXPECT_EQ(e->view().type(), type_of<tbp_event>(sub::down));
  }
  EXPECT_EQ(wild_seqs, seq_range(5, 6));
}

TEST(BoundedWildcard, AsyncEndSubscriptionCallsOnEndWithOverflow) {
  struct wild_handler {
    end_log* log;
    void operator()(herald::wildcard_event& e) {
      std::lock_guard lock(log->m);
      log->events.push_back({0, e.sub_sequence()});
    }
    void on_end(end_reason why) {
      {
        std::lock_guard lock(log->m);
        log->reasons.push_back(why);
      }
      log->end_calls.fetch_add(1);
    }
  };
  manual_executor ex;
  end_log log;
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto opt = bounded(2, overflow_policy::end_subscription);
  opt.executor = ex.ref();
  auto s = list.subscribe_wildcard_async(wild_handler{&log}, opt);
  ASSERT_TRUE(s);
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(wait_for([&] {
    ex.run_all();
    return log.end_calls.load() == 1;
  }));
  EXPECT_EQ(seqs_of(events_of(log)), seq_range(1, 2));
  EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::overflow}));
  expect_counts(s->stats(), {.published = 3, .delivered = 2, .dropped_ended = 1});
}

// ---- Options ---------------------------------------------------------------------------------

TEST(BackpressureOptions, InconsistentOptionsAreRefusedWithInvalidArgument) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::vector<std::pair<std::string, herald::subscribe_options>> bad;
  {
    auto o = bounded(4, overflow_policy::block);
    o.backpressure.after_timeout = overflow_policy::block;
    bad.emplace_back("after_timeout block", o);
  }
  bad.emplace_back("notify without a hook", bounded(4, overflow_policy::notify));
  {
    auto o = bounded(4, overflow_policy::block);
    o.backpressure.after_timeout = overflow_policy::notify;
    bad.emplace_back("block then notify without a hook", o);
  }
  bad.emplace_back("policy out of range", bounded(4, static_cast<overflow_policy>(42)));
  {
    auto o = bounded(4, overflow_policy::block);
    o.backpressure.after_timeout = static_cast<overflow_policy>(42);
    bad.emplace_back("after_timeout out of range", o);
  }
  {
    auto o = bounded(4, overflow_policy::block);
    o.backpressure.block_timeout = std::chrono::microseconds(-1);
    bad.emplace_back("negative block_timeout", o);
  }
  {
    auto o = bounded(0, overflow_policy::drop_newest);
    o.backpressure.slow_threshold = 4;
    o.backpressure.slow_after = std::chrono::milliseconds(-1);
    bad.emplace_back("negative slow_after", o);
  }
  for (const auto& [what, opt] : bad) {
    SCOPED_TRACE(what);
    herald::event_queue<tbp_event> q;
    auto qs =
        list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
    ASSERT_FALSE(qs);
    EXPECT_EQ(qs.error(), herald::errc::invalid_argument);
    EXPECT_FALSE(q.is_open());
    EXPECT_FALSE(q.pop());
    auto as = list.subscribe_async<tbp_event>(
        type_of<tbp_event>(), [](async_event<tbp_event>&) {}, opt);
    ASSERT_FALSE(as);
    EXPECT_EQ(as.error(), herald::errc::invalid_argument);
    EXPECT_EQ(list.size_approx(), 0u);
  }
  // The same with a hook is accepted.
  auto ok = bounded(4, overflow_policy::block);
  ok.backpressure.after_timeout = overflow_policy::notify;
  ok.backpressure.on_overflow = [](const herald::overflow_info&) {};
  herald::event_queue<tbp_event> q;
  EXPECT_TRUE(
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), ok));
}

// ---- Stats of sync subscriptions --------------------------------------------------------------

TEST(SubscriptionStats, SyncSubscriptionKeepsNoCountersAndIgnoresBackpressure) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  int calls = 0;
  auto s = list.subscribe_sync<tbp_event>(
      type_of<tbp_event>(), [&](herald::sync_event<tbp_event>&) { ++calls; },
      bounded(1, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  EXPECT_EQ(calls, 5);
  const auto st = s->stats();
  expect_counts(st, {});
  EXPECT_EQ(st.high_water, 0u);
  herald::event_queue<tbp_event> unsubscribed;
  EXPECT_EQ(unsubscribed.stats().published, 0u);
}

// ---- END reasons -------------------------------------------------------------------------------

enum class end_path { handle, lookup, self, list_destroy, shutdown };

// Ends an async subscription (handler type H, with on_end) by `path`; checks that on_end ran
// once with `want`, after the last event and before the handler was destroyed.
template <class H>
void check_on_end(end_path path, end_reason want) {
  end_log log;  // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  log.unsubscribe_at = path == end_path::self ? 3 : 0;
  const std::uint64_t id = herald::make_id("bp", "on_end");
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), H(&log), {.id = id});
  ASSERT_TRUE(s);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  switch (path) {
    case end_path::handle:
      s->unsubscribe();
      break;
    case end_path::lookup:
      EXPECT_TRUE(list.lookup_unsubscribe(id));
      break;
    case end_path::self:
      break;  // the handler ends it at event 3
    case end_path::list_destroy:
      list.destroy();
      break;
    case end_path::shutdown:
      b.shutdown();
      break;
  }
  ASSERT_TRUE(wait_for([&] { return log.destroyed.load() == 1; }));
  EXPECT_EQ(ids_of(events_of(log)), id_range(1, 3));
  EXPECT_EQ(reasons_of(log), std::vector<end_reason>{want});
  EXPECT_EQ(log.end_calls.load(), 1);
  EXPECT_EQ(log.events_after_end.load(), 0);
  EXPECT_EQ(log.destroyed_before_end.load(), 0);
  b.shutdown();  // no second on_end
  EXPECT_EQ(log.end_calls.load(), 1);
  EXPECT_EQ(log.destroyed.load(), 1);
  expect_counts(s->stats(), {.published = 3, .delivered = 3});
}

TEST(AsyncOnEnd, UnsubscribeByHandleCallsOnEndOnceWithUnsubscribed) {
  check_on_end<ending_handler>(end_path::handle, end_reason::unsubscribed);
  check_on_end<big_ending_handler>(end_path::handle, end_reason::unsubscribed);
}

TEST(AsyncOnEnd, LookupUnsubscribeCallsOnEndOnceWithUnsubscribed) {
  check_on_end<ending_handler>(end_path::lookup, end_reason::unsubscribed);
  check_on_end<big_ending_handler>(end_path::lookup, end_reason::unsubscribed);
}

TEST(AsyncOnEnd, SelfUnsubscribeCallsOnEndOnceWithUnsubscribed) {
  check_on_end<ending_handler>(end_path::self, end_reason::unsubscribed);
  check_on_end<big_ending_handler>(end_path::self, end_reason::unsubscribed);
}

TEST(AsyncOnEnd, ListDestroyCallsOnEndOnceWithListDestroyed) {
  check_on_end<ending_handler>(end_path::list_destroy, end_reason::list_destroyed);
  check_on_end<big_ending_handler>(end_path::list_destroy, end_reason::list_destroyed);
}

TEST(AsyncOnEnd, BusShutdownCallsOnEndOnceWithShutdown) {
  check_on_end<ending_handler>(end_path::shutdown, end_reason::shutdown);
  check_on_end<big_ending_handler>(end_path::shutdown, end_reason::shutdown);
}

TEST(AsyncOnEnd, TheFirstEndingPathGivesTheReason) {
  end_log log;  // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log));
  ASSERT_TRUE(s);
  s->unsubscribe();
  list.destroy();
  b.shutdown();
  EXPECT_EQ(reasons_of(log), (std::vector<end_reason>{end_reason::unsubscribed}));
}

TEST(AsyncOnEnd, OnEndThatThrowsIsReportedAndTheHandlerIsStillDestroyedOnce) {
  struct throwing_end {
    std::shared_ptr<std::atomic<int>> destroyed;
    bool armed = true;
    explicit throwing_end(std::shared_ptr<std::atomic<int>> d) : destroyed(std::move(d)) {}
    throwing_end(throwing_end&& o) noexcept : destroyed(o.destroyed), armed(o.armed) {
      o.armed = false;
    }
    throwing_end(const throwing_end&) = delete;
    ~throwing_end() {
      if (armed) {
        destroyed->fetch_add(1);
      }
    }
    void operator()(async_event<tbp_event>&) {}
    void on_end(end_reason) { throw std::runtime_error("on_end failed"); }
  };
  auto destroyed = std::make_shared<std::atomic<int>>(0);
  std::atomic<int> reported{0};
  herald::bus b({.threads = 1});
  b.set_error_hook([&](const herald::handler_error& e) {
    if (e.what == "on_end failed") {
      reported.fetch_add(1);
    }
  });
  herald::sub_list list(b);
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), throwing_end(destroyed));
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(1)));
  s->unsubscribe();
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
  EXPECT_EQ(reported.load(), 1);
  EXPECT_EQ(b.handler_exceptions(), 1u);
  b.shutdown();
  EXPECT_EQ(destroyed->load(), 1);
}

TEST(QueueEnd, EndCarriesTheReasonOfEachEndingPath) {
  for (end_path path :
       {end_path::handle, end_path::lookup, end_path::list_destroy, end_path::shutdown}) {
    SCOPED_TRACE("path " + std::to_string(static_cast<int>(path)));
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    herald::event_queue<tbp_event> q;
    const std::uint64_t id = herald::make_id("bp", "queue_end");
    auto s = list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(),
                                             {.id = id});
    ASSERT_TRUE(s);
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(1)));
    end_reason want = end_reason::unsubscribed;
    switch (path) {
      case end_path::handle:
        s->unsubscribe();
        break;
      case end_path::lookup:
        EXPECT_TRUE(list.lookup_unsubscribe(id));
        break;
      case end_path::list_destroy:
        list.destroy();
        want = end_reason::list_destroyed;
        break;
      case end_path::shutdown:
        b.shutdown();
        want = end_reason::shutdown;
        break;
      default:
        FAIL();
    }
    const drained d = pop_until_end(q);
    EXPECT_EQ(ids_of(d.events), id_range(1, 1));
    EXPECT_EQ(d.ends, 1);
    ASSERT_TRUE(d.reason);
    EXPECT_EQ(*d.reason, want);
    expect_counts(q.stats(), {.published = 1, .delivered = 1});
  }
}

// ---- Slow-consumer diagnostic ------------------------------------------------------------------

TEST(SlowConsumer, ReportedOncePerEpisode) {
  diag_log diags;  // outlives the bus, which holds its hook
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  herald::subscribe_options opt;
  opt.id = herald::make_id("bp", "slow");
  opt.name = "bp-slow";
  opt.backpressure.slow_threshold = 3;
  opt.backpressure.slow_after = 5ms;
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  int next = 1;
  auto publish = [&](int count) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(next++)));
    }
  };
  // Episode 1: the depth reaches the threshold, stays there longer than slow_after, and the
  // next publish reports it; later ones do not.
  publish(3);
  let_pass(opt.backpressure.slow_after + 2ms);
  publish(1);
  auto seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, herald::diagnostic_kind::slow_consumer);
  EXPECT_EQ(seen[0].info.id, herald::make_id("bp", "slow"));
  EXPECT_EQ(seen[0].info.name, "bp-slow");
  EXPECT_EQ(seen[0].info.type, type_of<tbp_event>(sub::up));
  EXPECT_GE(seen[0].info.queued, 3u);
  EXPECT_EQ(seen[0].info.bound, 0u);
  EXPECT_GE(seen[0].duration, std::chrono::nanoseconds(opt.backpressure.slow_after));
  publish(5);
  let_pass(opt.backpressure.slow_after + 2ms);
  publish(1);
  EXPECT_EQ(diags.snapshot().size(), 1u) << "a second report within one episode";
  // The consumer catches up; the next publish finds the depth below the threshold and closes
  // the episode.
  EXPECT_EQ(pop_all(q).events.size(), 10u);
  publish(1);
  EXPECT_EQ(diags.snapshot().size(), 1u);
  // Episode 2.
  publish(2);
  let_pass(opt.backpressure.slow_after + 2ms);
  publish(1);
  seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].kind, herald::diagnostic_kind::slow_consumer);
  EXPECT_GE(seen[1].info.queued, 3u);
  publish(3);
  EXPECT_EQ(diags.snapshot().size(), 2u);
  expect_counts(q.stats(), {.published = 17, .delivered = 10, .queued = 7});
}

TEST(SlowConsumer, NotReportedBeforeSlowAfter) {
  diag_log diags;  // outlives the bus, which holds its hook
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  herald::event_queue<tbp_event> q;
  herald::subscribe_options opt;
  opt.backpressure.slow_threshold = 2;
  opt.backpressure.slow_after = std::chrono::hours(1);
  auto s =
      list.subscribe_queue<tbp_event>(type_of<tbp_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  for (int i = 1; i <= 100; ++i) {
    ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(i)));
  }
  EXPECT_TRUE(diags.snapshot().empty());
}

TEST(SlowConsumer, BoundedAsyncOnAUserExecutorIsReportedOncePerEpisode) {
  manual_executor ex;
  diag_log diags;  // outlives the bus, which holds its hook
  end_log log;     // outlives the handler, which points to it
  herald::bus b({.threads = 1});
  diags.attach(b);
  herald::sub_list list(b);
  auto opt = bounded(8, overflow_policy::drop_newest);
  opt.executor = ex.ref();
  opt.backpressure.slow_threshold = 4;
  opt.backpressure.slow_after = 5ms;
  auto s = list.subscribe_async<tbp_event>(type_of<tbp_event>(), ending_handler(&log), opt);
  ASSERT_TRUE(s);
  int next = 1;
  auto publish = [&](int count) {
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(list.publish<tbp_event>(sub::up, payload(next++)));
    }
  };
  publish(4);
  let_pass(opt.backpressure.slow_after + 2ms);
  publish(1);
  auto seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kind, herald::diagnostic_kind::slow_consumer);
  EXPECT_EQ(seen[0].info.bound, 8u);
  publish(10);  // fills up and drops: still the same episode
  EXPECT_EQ(diags.snapshot().size(), 1u);
  ex.run_all();  // the consumer catches up
  publish(1);    // closes the episode
  publish(3);
  let_pass(opt.backpressure.slow_after + 2ms);
  publish(1);
  seen = diags.snapshot();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].kind, herald::diagnostic_kind::slow_consumer);
  s->unsubscribe();
  ex.run_all();
  EXPECT_EQ(log.destroyed.load(), 1);
  const auto st = s->stats();
  expect_counts(st, {.published = 20, .delivered = 13, .dropped_newest = 7});
}

}  // namespace
