// Unit tests of the ordering contract (docs/ordering.md): sync handlers in subscription order
// with nested publishes inside the outer handler; per subscription and per publishing thread,
// events in publish order (async and queue, several publisher threads); the list's sequence()
// (increasing in arrival order for one publisher, taken only by publishes that reach a deferred
// subscriber, the same set for every subscriber of a type, independent per list, kept by
// last-value replays, a total order for stateful publishes); the subscription's sub_sequence()
// (1..N without drops, gaps exactly the dropped count with drop_newest and drop_oldest, also
// with several publishers); pause/resume and resubscribe.
//
// Determinism: queue subscriptions fill because nobody pops until the test does; async ones
// because their handler waits on a gate. Waiting: wait_for polls a condition with a generous
// deadline and fails the test instead of hanging. Nothing asserts on time.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "herald/bus.hpp"

#include "test_support.hpp"

namespace {

using herald_test::wait_for;
using herald_test::gate;

struct tord_event {
  static constexpr std::string_view family_name = "TORD";
  enum class subtype : std::uint8_t { a, b };
  static constexpr std::array<std::string_view, 2> subtype_names{"A", "B"};
  struct safe_part {
    unsigned thread = 0;  // the publishing thread's index
    std::uint64_t n = 0;  // that thread's own count, from 1
  };
};

struct tord_other {
  static constexpr std::string_view family_name = "TORDOTHER";
  enum class subtype : std::uint8_t { tick };
  static constexpr std::array<std::string_view, 1> subtype_names{"TICK"};
  struct safe_part {
    std::uint64_t n = 0;
  };
};

// A family only sync handlers listen to (its publishes take no sequence number).
struct tord_sync_only {
  static constexpr std::string_view family_name = "TORDSYNC";
  enum class subtype : std::uint8_t { ping };
  static constexpr std::array<std::string_view, 1> subtype_names{"PING"};
  struct safe_part {
    std::uint64_t n = 0;
  };
};

// Last-value events: every subtype is stateful.
struct tord_state {
  static constexpr std::string_view family_name = "TORDSTATE";
  enum class subtype : std::uint8_t { a, b };
  static constexpr std::array<std::string_view, 2> subtype_names{"A", "B"};
  static constexpr bool stateful = true;
  struct safe_part {
    unsigned thread = 0;
    std::uint64_t n = 0;
  };
};

using herald::overflow_policy;
using herald::type_of;
using ev = tord_event::subtype;

// What a subscriber saw of one event, in arrival order.
struct seen {
  unsigned thread = 0;
  std::uint64_t n = 0;
  std::uint64_t sequence = 0;
  std::uint64_t sub_sequence = 0;
};

// What an async handler saw: its events in arrival order, and END.
struct recorder {
  std::mutex m;
  std::vector<seen> events;  // guarded by m
  std::atomic<std::size_t> count{0};
  std::atomic<int> ends{0};

  template <class E>
  void add(const E& e) {
    {
      std::lock_guard lock(m);
      events.push_back({e.safe().thread, e.safe().n, e.sequence(), e.sub_sequence()});
    }
    count.fetch_add(1);
  }
  std::vector<seen> snapshot() {
    std::lock_guard lock(m);
    return events;
  }
};

// An async handler that records into a shared recorder and hears END through on_end.
template <class F>
struct recording_handler {
  std::shared_ptr<recorder> rec;
  void operator()(herald::async_event<F>& e) { rec->add(e); }
  void on_end(herald::end_reason) { rec->ends.fetch_add(1); }
};

// Pops `q` until it is empty (END, if it comes, is counted in *ends).
template <class F>
std::vector<seen> pop_available(herald::event_queue<F>& q, int* ends = nullptr) {
  std::vector<seen> out;
  while (auto item = q.pop()) {
    if (item->is_end()) {
      if (ends != nullptr) {
        ++*ends;
      }
      continue;
    }
    out.push_back({item->safe().thread, item->safe().n, item->sequence(), item->sub_sequence()});
  }
  return out;
}

// Pops `q` until END (which an unsubscribe queues after a grace period, maybe from a worker).
template <class F>
std::vector<seen> pop_until_end(herald::event_queue<F>& q) {
  std::vector<seen> out;
  int ends = 0;
  (void)wait_for([&] {
    auto more = pop_available(q, &ends);
    out.insert(out.end(), more.begin(), more.end());
    return ends != 0;
  });
  EXPECT_EQ(ends, 1);
  return out;
}

std::vector<std::uint64_t> sequences_of(const std::vector<seen>& v) {
  std::vector<std::uint64_t> out;
  for (const seen& s : v) {
    out.push_back(s.sequence);
  }
  return out;
}
std::vector<std::uint64_t> sub_sequences_of(const std::vector<seen>& v) {
  std::vector<std::uint64_t> out;
  for (const seen& s : v) {
    out.push_back(s.sub_sequence);
  }
  return out;
}
std::vector<std::uint64_t> ns_of(const std::vector<seen>& v) {
  std::vector<std::uint64_t> out;
  for (const seen& s : v) {
    out.push_back(s.n);
  }
  return out;
}
// first, first + 1, ..., last
std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = first; i <= last; ++i) {
    out.push_back(i);
  }
  return out;
}
std::vector<std::uint64_t> concat(std::vector<std::uint64_t> a,
                                  const std::vector<std::uint64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
bool strictly_increasing(const std::vector<std::uint64_t>& v) {
  return std::adjacent_find(v.begin(), v.end(),
                            [](std::uint64_t x, std::uint64_t y) { return x >= y; }) == v.end();
}

// Per publishing thread, n is 1, 2, 3, ... in arrival order (nothing lost, nothing reordered),
// and so is sequence() (strictly increasing). `threads` publishers of `per_thread` events each.
void expect_per_thread_order(const std::vector<seen>& v, unsigned threads, std::uint64_t per_thread,
                             const char* who) {
  std::vector<std::uint64_t> next(threads, 1);
  std::vector<std::uint64_t> last_sequence(threads, 0);
  for (const seen& s : v) {
    ASSERT_LT(s.thread, threads) << who;
    ASSERT_EQ(s.n, next[s.thread]) << who << ": thread " << s.thread << " out of order";
    ASSERT_GT(s.sequence, last_sequence[s.thread]) << who << ": thread " << s.thread;
    ++next[s.thread];
    last_sequence[s.thread] = s.sequence;
  }
  for (unsigned t = 0; t < threads; ++t) {
    EXPECT_EQ(next[t], per_thread + 1) << who << ": thread " << t << " lost events";
  }
}

// The identity of herald/backpressure.hpp, once the subscription is quiet.
void expect_identity(const herald::subscription_stats& st) {
  EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded + st.queued);
}

// Without drops: the sub_sequence numbers delivered are 1..published (nothing missing). With
// drops: the numbers missing from 1..published are exactly as many as the events dropped.
// `subs` in arrival order, from one publisher (so they are increasing).
void expect_gaps_are_drops(const std::vector<std::uint64_t>& subs,
                           const herald::subscription_stats& st) {
  EXPECT_TRUE(strictly_increasing(subs));
  ASSERT_FALSE(subs.empty());
  EXPECT_GE(subs.front(), 1U);
  EXPECT_LE(subs.back(), st.published);
  std::uint64_t missing = subs.front() - 1 + (st.published - subs.back());
  for (std::size_t i = 1; i < subs.size(); ++i) {
    missing += subs[i] - subs[i - 1] - 1;
  }
  EXPECT_EQ(missing, st.dropped() + st.discarded);
  EXPECT_EQ(subs.size(), st.delivered);
  expect_identity(st);
}

herald::subscribe_options bounded(std::size_t bound, overflow_policy policy) {
  herald::subscribe_options opt;
  opt.backpressure.bound = bound;
  opt.backpressure.policy = policy;
  return opt;
}

// ---- Sync mode -------------------------------------------------------------------------------

TEST(SyncOrdering, HandlersRunInSubscriptionOrderAndKeepTheirPlace) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::string order;
  std::vector<herald::subscription> subs;
  for (char c : std::string_view("ABCD")) {
    auto s = list.subscribe_sync<tord_event>(
        type_of<tord_event>(ev::a), [&order, c](herald::sync_event<tord_event>&) { order += c; });
    ASSERT_TRUE(s);
    subs.push_back(std::move(*s));
  }
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {}));
  EXPECT_EQ(order, "ABCD");

  // B leaves subtype a and comes back: it keeps its place. C ends; E comes last.
  order.clear();
  ASSERT_TRUE(subs[1].resubscribe(type_of<tord_event>(ev::b)));
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {}));
  ASSERT_TRUE(subs[1].resubscribe(type_of<tord_event>()));
  subs[2].unsubscribe();
  auto e = list.subscribe_sync<tord_event>(
      type_of<tord_event>(), [&order](herald::sync_event<tord_event>&) { order += 'E'; });
  ASSERT_TRUE(e);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {}));
  EXPECT_EQ(order, "ACDABDE");  // the two publishes
}

TEST(SyncOrdering, NestedPublishRunsInsideTheOuterHandler) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::vector<std::string> order;
  auto outer = list.subscribe_sync<tord_event>(type_of<tord_event>(ev::a),
                                               [&](herald::sync_event<tord_event>&) {
                                                 order.emplace_back("a1 begin");
                                                 (void)list.publish<tord_event>(ev::b, {});
                                                 order.emplace_back("a1 end");
                                               });
  auto second = list.subscribe_sync<tord_event>(
      type_of<tord_event>(ev::a),
      [&](herald::sync_event<tord_event>&) { order.emplace_back("a2"); });
  auto inner = list.subscribe_sync<tord_event>(
      type_of<tord_event>(ev::b),
      [&](herald::sync_event<tord_event>&) { order.emplace_back("b"); });
  ASSERT_TRUE(outer && second && inner);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {}));
  EXPECT_EQ(order, (std::vector<std::string>{"a1 begin", "b", "a1 end", "a2"}));
}

// The deferred part of a publish (its number, its queuing) comes after its sync handlers: an
// event published by a sync handler reaches async and queue subscribers before the event whose
// handler published it, and has the smaller number.
TEST(SyncOrdering, NestedPublishIsQueuedBeforeTheOuterEvent) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tord_event> q;
  auto queued = list.subscribe_queue<tord_event>(type_of<tord_event>(), q);
  auto outer = list.subscribe_sync<tord_event>(type_of<tord_event>(ev::a),
                                               [&](herald::sync_event<tord_event>&) {
                                                 (void)list.publish<tord_event>(ev::b, {0, 2});
                                               });
  ASSERT_TRUE(queued && outer);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 1}));
  const auto got = pop_available(q);
  EXPECT_EQ(ns_of(got), (std::vector<std::uint64_t>{2, 1}));
  EXPECT_EQ(sequences_of(got), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(sub_sequences_of(got), (std::vector<std::uint64_t>{1, 2}));
}

// ---- Per publishing thread -------------------------------------------------------------------

TEST(PublisherOrder, EachThreadsEventsArriveInPublishOrderAtAsyncAndQueueSubscribers) {
  constexpr unsigned threads = 4;
  constexpr std::uint64_t per_thread = 3000;
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  auto rec = std::make_shared<recorder>();
  auto async_sub = list.subscribe_async<tord_event>(
      type_of<tord_event>(), recording_handler<tord_event>{rec}, {.events_per_run = 7});
  herald::event_queue<tord_event> q;
  auto queue_sub = list.subscribe_queue<tord_event>(type_of<tord_event>(), q);
  ASSERT_TRUE(async_sub && queue_sub);

  // The queue's consumer pops while the publishers publish.
  std::vector<seen> popped;
  std::thread consumer([&] { popped = pop_until_end(q); });
  std::atomic<bool> go{false};
  std::vector<std::thread> publishers;
  for (unsigned t = 0; t < threads; ++t) {
    publishers.emplace_back([&list, &go, t] {
      while (!go.load()) {
        std::this_thread::yield();
      }
      for (std::uint64_t i = 1; i <= per_thread; ++i) {
        (void)list.publish<tord_event>(i % 3 == 0 ? ev::b : ev::a, {t, i});
      }
    });
  }
  go.store(true);
  for (auto& p : publishers) {
    p.join();
  }
  queue_sub->unsubscribe();
  async_sub->unsubscribe();
  consumer.join();
  ASSERT_TRUE(wait_for([&] { return rec->ends.load() == 1; }));

  const auto delivered = rec->snapshot();
  expect_per_thread_order(delivered, threads, per_thread, "async");
  expect_per_thread_order(popped, threads, per_thread, "queue");
  // Every publish reached both: each saw every number of the list, 1..N, once.
  auto seq_async = sequences_of(delivered);
  auto seq_queue = sequences_of(popped);
  std::sort(seq_async.begin(), seq_async.end());
  std::sort(seq_queue.begin(), seq_queue.end());
  EXPECT_EQ(seq_async, range(1, threads * per_thread));
  EXPECT_EQ(seq_queue, range(1, threads * per_thread));
}

// ---- sequence() ------------------------------------------------------------------------------

// One publisher: sequence() is strictly increasing in arrival order. Numbers are taken by the
// publishes that reach an async or queue subscriber, whatever their family (so a subscriber of
// one family sees gaps: other families' events); publishes that reach only sync handlers take
// none.
TEST(Sequence, IncreasesInArrivalOrderAndCountsOnlyPublishesThatReachADeferredSubscriber) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto rec = std::make_shared<recorder>();
  auto async_sub =
      list.subscribe_async<tord_event>(type_of<tord_event>(), recording_handler<tord_event>{rec});
  herald::event_queue<tord_other> q;
  auto queue_sub = list.subscribe_queue<tord_other>(type_of<tord_other>(), q);
  std::uint64_t sync_calls = 0;
  auto sync_sub = list.subscribe_sync<tord_sync_only>(
      type_of<tord_sync_only>(), [&](herald::sync_event<tord_sync_only>&) { ++sync_calls; });
  ASSERT_TRUE(async_sub && queue_sub && sync_sub);

  constexpr std::uint64_t n = 300;
  std::uint64_t next = 0;  // the list's last number, as the test predicts it
  std::vector<std::uint64_t> expected_event;
  std::vector<std::uint64_t> expected_other;
  for (std::uint64_t i = 1; i <= n; ++i) {
    ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
    expected_event.push_back(++next);
    if (i % 3 == 0) {
      ASSERT_TRUE(list.publish<tord_other>(tord_other::subtype::tick, {i}));
      expected_other.push_back(++next);
    }
    if (i % 2 == 0) {
      ASSERT_TRUE(list.publish<tord_sync_only>(tord_sync_only::subtype::ping, {i}));
    }
  }
  ASSERT_TRUE(wait_for([&] { return rec->count.load() == n; }));
  EXPECT_EQ(sync_calls, n / 2);
  const auto delivered = rec->snapshot();
  EXPECT_EQ(sequences_of(delivered), expected_event);
  EXPECT_EQ(sub_sequences_of(delivered), range(1, n));
  std::vector<std::uint64_t> other;
  while (auto item = q.pop()) {
    other.push_back(item->sequence());
  }
  EXPECT_EQ(other, expected_other);
}

// A publish whose deferred subscribers are all paused takes no number; one whose only deferred
// subscriber drops the event (overflow) does.
TEST(Sequence, PausedSubscribersTakeNoNumberDroppedEventsDo) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tord_event> q;
  auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(), q, herald::queue_notify::none(),
                                            bounded(2, overflow_policy::drop_newest));
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 1}));  // number 1
  ASSERT_TRUE(s->pause());
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 2}));  // nobody: no number
  ASSERT_TRUE(s->resume());
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 3}));  // number 2
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 4}));  // number 3, dropped
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 5}));  // number 4, dropped
  (void)q.pop();
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 6}));  // number 5
  const auto got = pop_available(q);
  EXPECT_EQ(ns_of(got), (std::vector<std::uint64_t>{3, 6}));
  EXPECT_EQ(sequences_of(got), (std::vector<std::uint64_t>{2, 5}));
  EXPECT_EQ(sub_sequences_of(got), (std::vector<std::uint64_t>{2, 5}));
  EXPECT_EQ(q.stats().dropped_newest, 2U);
}

// Two subscribers of the same type see the same set of numbers (each publish is one number,
// shared by all its subscribers), even with several publishers and other families on the list.
TEST(Sequence, SubscribersOfTheSameTypeSeeTheSameNumbers) {
  constexpr unsigned threads = 3;
  constexpr std::uint64_t per_thread = 2000;
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  auto rec1 = std::make_shared<recorder>();
  auto rec2 = std::make_shared<recorder>();
  auto s1 = list.subscribe_async<tord_event>(type_of<tord_event>(ev::a),
                                             recording_handler<tord_event>{rec1});
  auto s2 = list.subscribe_async<tord_event>(
      type_of<tord_event>(ev::a), recording_handler<tord_event>{rec2}, {.events_per_run = 3});
  herald::event_queue<tord_other> q;
  auto s3 = list.subscribe_queue<tord_other>(type_of<tord_other>(), q);
  ASSERT_TRUE(s1 && s2 && s3);
  std::vector<std::thread> publishers;
  for (unsigned t = 0; t < threads; ++t) {
    publishers.emplace_back([&list, t] {
      for (std::uint64_t i = 1; i <= per_thread; ++i) {
        (void)list.publish<tord_event>(ev::a, {t, i});
        if (i % 4 == 0) {
          (void)list.publish<tord_other>(tord_other::subtype::tick, {i});
        }
      }
    });
  }
  for (auto& p : publishers) {
    p.join();
  }
  ASSERT_TRUE(wait_for([&] {
    return rec1->count.load() == threads * per_thread && rec2->count.load() == threads * per_thread;
  }));
  auto seq1 = sequences_of(rec1->snapshot());
  auto seq2 = sequences_of(rec2->snapshot());
  std::vector<std::uint64_t> other;
  while (auto item = q.pop()) {
    other.push_back(item->sequence());
  }
  std::sort(seq1.begin(), seq1.end());
  std::sort(seq2.begin(), seq2.end());
  EXPECT_EQ(seq1, seq2);
  EXPECT_EQ(std::adjacent_find(seq1.begin(), seq1.end()), seq1.end());  // each number once
  // Together with the other family's events: every number of the list, once.
  auto all = concat(seq1, other);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, range(1, threads * (per_thread + per_thread / 4)));
}

// Each list numbers its own publishes: the same event published to two lists is two publishes
// with independent numbers.
TEST(Sequence, ListsNumberTheirPublishesIndependently) {
  herald::bus b({.threads = 1});
  herald::sub_list first(b);
  herald::sub_list second(b);
  herald::event_queue<tord_event> q1;
  herald::event_queue<tord_event> q2;
  auto rec = std::make_shared<recorder>();
  auto s1 = first.subscribe_queue<tord_event>(type_of<tord_event>(), q1);
  auto s2 = second.subscribe_queue<tord_event>(type_of<tord_event>(), q2);
  auto s3 =
      second.subscribe_async<tord_event>(type_of<tord_event>(), recording_handler<tord_event>{rec});
  ASSERT_TRUE(s1 && s2 && s3);
  ASSERT_TRUE(first.publish<tord_event>(ev::a, {0, 1}));
  ASSERT_TRUE(first.publish<tord_event>(ev::a, {0, 2}));
  for (std::uint64_t i = 3; i <= 5; ++i) {  // the same event to both lists
    const tord_event::safe_part e{0, i};
    ASSERT_TRUE(first.publish<tord_event>(ev::b, e));
    ASSERT_TRUE(second.publish<tord_event>(ev::b, e));
  }
  const auto got1 = pop_available(q1);
  const auto got2 = pop_available(q2);
  EXPECT_EQ(ns_of(got1), range(1, 5));
  EXPECT_EQ(sequences_of(got1), range(1, 5));
  EXPECT_EQ(ns_of(got2), range(3, 5));
  EXPECT_EQ(sequences_of(got2), range(1, 3));
  ASSERT_TRUE(wait_for([&] { return rec->count.load() == 3; }));
  EXPECT_EQ(sequences_of(rec->snapshot()), range(1, 3));
}

// Stateful publishes are serialised per list: whatever the publishing threads, every subscriber
// receives them in the order of their numbers (a total order, the same for all).
TEST(Sequence, StatefulPublishesFromSeveralThreadsArriveInNumberOrder) {
  constexpr unsigned threads = 3;
  constexpr std::uint64_t per_thread = 1500;
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  herald::event_queue<tord_state> q1;
  herald::event_queue<tord_state> q2;
  auto s1 = list.subscribe_queue<tord_state>(type_of<tord_state>(), q1);
  auto s2 = list.subscribe_queue<tord_state>(type_of<tord_state>(), q2);
  ASSERT_TRUE(s1 && s2);
  std::vector<std::thread> publishers;
  for (unsigned t = 0; t < threads; ++t) {
    publishers.emplace_back([&list, t] {
      for (std::uint64_t i = 1; i <= per_thread; ++i) {
        (void)list.publish<tord_state>(i % 2 == 0 ? tord_state::subtype::a : tord_state::subtype::b,
                                       {t, i});
      }
    });
  }
  std::vector<seen> popped1;  // popped while the publishers run
  std::atomic<bool> published{false};
  std::thread consumer([&] {
    while (!published.load()) {
      auto more = pop_available(q1);
      popped1.insert(popped1.end(), more.begin(), more.end());
      std::this_thread::yield();
    }
    auto rest = pop_available(q1);
    popped1.insert(popped1.end(), rest.begin(), rest.end());
  });
  for (auto& p : publishers) {
    p.join();
  }
  published.store(true);
  consumer.join();
  const auto popped2 = pop_available(q2);
  EXPECT_EQ(sequences_of(popped1), range(1, threads * per_thread));
  EXPECT_EQ(sequences_of(popped2), range(1, threads * per_thread));
  expect_per_thread_order(popped1, threads, per_thread, "queue 1");
}

// ---- Last-value replay -----------------------------------------------------------------------

// A new subscription first receives the last value of each stateful subtype it subscribes to,
// in subtype order (not publish order), each with the number and time of the publish it
// repeats; later events follow with new numbers. The replays take the subscription's first
// sub_sequences. A stateful publish is numbered even when no deferred subscriber receives it
// (the stored last value carries the number).
TEST(Replay, LastValuesComeFirstInSubtypeOrderWithTheirOriginalNumbers) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  using st = tord_state::subtype;
  ASSERT_TRUE(list.publish<tord_state>(st::b, {0, 1}));  // nobody listens; number 1 all the same
  herald::event_queue<tord_state> early;
  auto e = list.subscribe_queue<tord_state>(type_of<tord_state>(), early);  // replay: b = 1
  ASSERT_TRUE(e);
  ASSERT_TRUE(list.publish<tord_state>(st::b, {0, 2}));  // number 2 (a replay takes none)
  ASSERT_TRUE(list.publish<tord_state>(st::a, {0, 3}));  // number 3
  ASSERT_TRUE(list.publish<tord_state>(st::a, {0, 4}));  // number 4
  herald::event_queue<tord_state> late;
  auto l = list.subscribe_queue<tord_state>(type_of<tord_state>(), late);  // replay: a = 4, b = 2
  ASSERT_TRUE(l);
  ASSERT_TRUE(list.publish<tord_state>(st::b, {0, 5}));  // number 5

  const auto got_late = pop_available(late);
  EXPECT_EQ(ns_of(got_late), (std::vector<std::uint64_t>{4, 2, 5}));  // a's last, b's last, new
  EXPECT_EQ(sequences_of(got_late), (std::vector<std::uint64_t>{4, 2, 5}));
  EXPECT_EQ(sub_sequences_of(got_late), range(1, 3));

  const auto got_early = pop_available(early);
  EXPECT_EQ(ns_of(got_early), range(1, 5));
  EXPECT_EQ(sequences_of(got_early), range(1, 5));
  EXPECT_EQ(sub_sequences_of(got_early), range(1, 5));
}

// ---- sub_sequence() and drops ----------------------------------------------------------------

TEST(SubSequence, IsGapFreeWithoutDrops) {
  constexpr std::uint64_t n = 2000;
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto unbounded = std::make_shared<recorder>();
  auto blocking = std::make_shared<recorder>();
  auto s1 = list.subscribe_async<tord_event>(type_of<tord_event>(),
                                             recording_handler<tord_event>{unbounded});
  // Bounded, but the publisher waits for room (for an hour at most: never, in practice).
  auto opt = bounded(4, overflow_policy::block);
  opt.backpressure.block_timeout = std::chrono::hours(1);
  auto s2 = list.subscribe_async<tord_event>(type_of<tord_event>(),
                                             recording_handler<tord_event>{blocking}, opt);
  herald::event_queue<tord_event> q;
  auto s3 = list.subscribe_queue<tord_event>(type_of<tord_event>(), q);
  ASSERT_TRUE(s1 && s2 && s3);
  for (std::uint64_t i = 1; i <= n; ++i) {
    ASSERT_TRUE(list.publish<tord_event>(i % 2 == 0 ? ev::a : ev::b, {0, i}));
  }
  s1->unsubscribe();
  s2->unsubscribe();
  s3->unsubscribe();
  const auto popped = pop_until_end(q);
  ASSERT_TRUE(wait_for([&] { return unbounded->ends.load() == 1 && blocking->ends.load() == 1; }));
  for (const auto& [what, got, st] :
       {std::tuple{"unbounded async", unbounded->snapshot(), s1->stats()},
        std::tuple{"blocking async", blocking->snapshot(), s2->stats()},
        std::tuple{"queue", popped, s3->stats()}}) {
    SCOPED_TRACE(what);
    EXPECT_EQ(sub_sequences_of(got), range(1, n));
    EXPECT_EQ(sequences_of(got), range(1, n));
    EXPECT_EQ(ns_of(got), range(1, n));
    EXPECT_EQ(st.published, n);
    EXPECT_EQ(st.delivered, n);
    EXPECT_EQ(st.dropped(), 0U);
    expect_identity(st);
  }
}

// A bounded queue nobody pops until the end: the survivors are in publish order, and the
// numbers missing from their sub_sequences are exactly the dropped events.
TEST(SubSequence, GapsEqualTheDroppedCountInABoundedQueue) {
  struct expectation {
    overflow_policy policy;
    std::vector<std::uint64_t> survivors;
  };
  for (const expectation& x : {expectation{overflow_policy::drop_newest, range(1, 4)},
                               expectation{overflow_policy::drop_oldest, range(7, 10)}}) {
    SCOPED_TRACE(x.policy == overflow_policy::drop_newest ? "drop_newest" : "drop_oldest");
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    herald::event_queue<tord_event> q;
    auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(), q,
                                              herald::queue_notify::none(), bounded(4, x.policy));
    ASSERT_TRUE(s);
    for (std::uint64_t i = 1; i <= 10; ++i) {
      ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
    }
    s->unsubscribe();
    const auto got = pop_until_end(q);
    EXPECT_EQ(ns_of(got), x.survivors);
    EXPECT_EQ(sub_sequences_of(got), x.survivors);
    EXPECT_EQ(sequences_of(got), x.survivors);  // its only subscriber: every publish numbered
    const auto st = q.stats();
    EXPECT_EQ(st.published, 10U);
    EXPECT_EQ(st.dropped(), 6U);
    EXPECT_EQ(x.policy == overflow_policy::drop_newest ? st.dropped_newest : st.dropped_oldest, 6U);
    expect_gaps_are_drops(sub_sequences_of(got), st);
  }
}

// The same with pops in between: gaps open and close where the drops happened.
TEST(SubSequence, GapsEqualTheDroppedCountWithPopsInBetween) {
  struct expectation {
    overflow_policy policy;
    std::vector<std::uint64_t> survivors;
  };
  for (const expectation& x : {expectation{overflow_policy::drop_newest, {1, 2, 3, 4, 7, 8}},
                               expectation{overflow_policy::drop_oldest, {3, 4, 9, 10, 11, 12}}}) {
    SCOPED_TRACE(x.policy == overflow_policy::drop_newest ? "drop_newest" : "drop_oldest");
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    herald::event_queue<tord_event> q;
    auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(), q,
                                              herald::queue_notify::none(), bounded(4, x.policy));
    ASSERT_TRUE(s);
    std::vector<seen> got;
    std::uint64_t i = 0;
    auto publish = [&](int count) {
      for (int k = 0; k < count; ++k) {
        ++i;
        ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
      }
    };
    auto pop = [&](int count) {
      for (int k = 0; k < count; ++k) {
        auto item = q.pop();
        ASSERT_TRUE(item && !item->is_end());
        got.push_back({0, item->safe().n, item->sequence(), item->sub_sequence()});
      }
    };
    publish(6);
    pop(2);
    publish(6);
    s->unsubscribe();
    const auto rest = pop_until_end(q);
    got.insert(got.end(), rest.begin(), rest.end());
    EXPECT_EQ(ns_of(got), x.survivors);
    EXPECT_EQ(sub_sequences_of(got), x.survivors);
    const auto st = q.stats();
    EXPECT_EQ(st.published, 12U);
    EXPECT_EQ(st.dropped(), 6U);
    expect_gaps_are_drops(sub_sequences_of(got), st);
  }
}

// An async handler held on a gate: the first event is being handled, the next four fit.
TEST(SubSequence, GapsEqualTheDroppedCountForAnAsyncHandler) {
  struct expectation {
    overflow_policy policy;
    std::vector<std::uint64_t> survivors;
  };
  for (const expectation& x : {expectation{overflow_policy::drop_newest, range(1, 5)},
                               expectation{overflow_policy::drop_oldest, {1, 8, 9, 10, 11}}}) {
    SCOPED_TRACE(x.policy == overflow_policy::drop_newest ? "drop_newest" : "drop_oldest");
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    gate hold;
    std::atomic<bool> entered{false};
    auto rec = std::make_shared<recorder>();
    struct held_handler {
      std::shared_ptr<recorder> rec;
      gate* hold;
      std::atomic<bool>* entered;
      void operator()(herald::async_event<tord_event>& e) {
        if (!entered->exchange(true)) {
          hold->wait();
        }
        rec->add(e);
      }
      void on_end(herald::end_reason) { rec->ends.fetch_add(1); }
    };
    auto s = list.subscribe_async<tord_event>(
        type_of<tord_event>(), held_handler{rec, &hold, &entered}, bounded(4, x.policy));
    ASSERT_TRUE(s);
    ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 1}));
    ASSERT_TRUE(wait_for([&] { return entered.load(); }));
    for (std::uint64_t i = 2; i <= 11; ++i) {
      ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
    }
    s->unsubscribe();
    hold.open();
    ASSERT_TRUE(wait_for([&] { return rec->ends.load() == 1; }));
    const auto got = rec->snapshot();
    EXPECT_EQ(ns_of(got), x.survivors);
    EXPECT_EQ(sub_sequences_of(got), x.survivors);
    const auto st = s->stats();
    EXPECT_EQ(st.published, 11U);
    EXPECT_EQ(st.dropped(), 6U);
    expect_gaps_are_drops(sub_sequences_of(got), st);
  }
}

// Several publishers and a consumer that pops meanwhile: sub_sequence is increasing per
// publishing thread (not across threads: a number is taken before the push), every number is
// delivered at most once, and the numbers never delivered are exactly the dropped events.
TEST(SubSequence, MissingNumbersEqualTheDroppedCountWithSeveralPublishers) {
  constexpr unsigned threads = 3;
  constexpr std::uint64_t per_thread = 3000;
  for (const overflow_policy policy :
       {overflow_policy::drop_newest, overflow_policy::drop_oldest}) {
    SCOPED_TRACE(policy == overflow_policy::drop_newest ? "drop_newest" : "drop_oldest");
    herald::bus b({.threads = 1});
    herald::sub_list list(b);
    herald::event_queue<tord_event> q;
    auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(), q,
                                              herald::queue_notify::none(), bounded(8, policy));
    ASSERT_TRUE(s);
    std::vector<seen> popped;
    std::thread consumer([&] { popped = pop_until_end(q); });
    std::vector<std::thread> publishers;
    for (unsigned t = 0; t < threads; ++t) {
      publishers.emplace_back([&list, t] {
        for (std::uint64_t i = 1; i <= per_thread; ++i) {
          (void)list.publish<tord_event>(ev::a, {t, i});
        }
      });
    }
    for (auto& p : publishers) {
      p.join();
    }
    s->unsubscribe();
    consumer.join();
    const auto st = s->stats();
    RecordProperty(
        policy == overflow_policy::drop_newest ? "dropped_newest_run" : "dropped_oldest_run",
        std::to_string(st.dropped()));
    EXPECT_EQ(st.published, threads * per_thread);
    EXPECT_EQ(st.queued, 0U);
    expect_identity(st);
    EXPECT_EQ(popped.size(), st.delivered);
    // Per thread: n and sub_sequence increase in arrival order.
    std::vector<std::uint64_t> last_n(threads, 0);
    std::vector<std::uint64_t> last_sub(threads, 0);
    for (const seen& e : popped) {
      ASSERT_LT(e.thread, threads);
      EXPECT_GT(e.n, last_n[e.thread]);
      EXPECT_GT(e.sub_sequence, last_sub[e.thread]);
      last_n[e.thread] = e.n;
      last_sub[e.thread] = e.sub_sequence;
    }
    auto subs = sub_sequences_of(popped);
    std::sort(subs.begin(), subs.end());
    EXPECT_EQ(std::adjacent_find(subs.begin(), subs.end()), subs.end());
    ASSERT_FALSE(subs.empty());
    EXPECT_LE(subs.back(), st.published);
    EXPECT_EQ(st.published - subs.size(), st.dropped());
  }
}

// drop_oldest makes room for the new event by dropping the oldest queued one: the new event
// (the newest, the one a drop_oldest consumer wants) is never the one dropped, also when the
// consumer pops while the publisher handles the overflow. Here the consumer's pop happens at a
// chosen moment: in the diagnostic hook, which the publisher calls (slow_threshold 1,
// slow_after 0) after it found the queue full and before it removes the oldest event. With one
// publisher and one consumer, this is what a concurrent consumer does at the wrong moment.
//
// Fails today: admit() finds nothing left to remove (the consumer took it), so it drops the new
// event and counts it as dropped_newest, although the queue is now empty. With a consumer
// thread popping concurrently, a single publisher sees a few such drops per few hundred
// thousand events (bound 4, release build), and examples/10_backpressure.cpp shows some under
// ThreadSanitizer.
TEST(DropOldest, TheNewEventIsNeverDroppedWhenTheConsumerEmptiedTheQueueMeanwhile) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tord_event> q;
  auto opt = bounded(1, overflow_policy::drop_oldest);
  opt.backpressure.slow_threshold = 1;
  opt.backpressure.slow_after = std::chrono::milliseconds(0);
  bool pop_in_hook = false;
  std::vector<std::uint64_t> popped_in_hook;  // the hook runs in this (the publishing) thread
  b.set_diagnostic_hook([&](const herald::diagnostic& d) {
    if (d.kind == herald::diagnostic_kind::slow_consumer && pop_in_hook) {
      while (auto item = q.pop()) {
        popped_in_hook.push_back(item->safe().n);
      }
    }
  });
  auto s =
      list.subscribe_queue<tord_event>(type_of<tord_event>(), q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 1}));  // queued; the queue is full
  pop_in_hook = true;
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 2}));  // finds it full; the consumer pops 1
  pop_in_hook = false;
  EXPECT_EQ(popped_in_hook, (std::vector<std::uint64_t>{1}));
  const auto rest = pop_available(q);
  EXPECT_EQ(ns_of(rest), (std::vector<std::uint64_t>{2}));  // the newest event survives
  const auto st = q.stats();
  EXPECT_EQ(st.published, 2U);
  EXPECT_EQ(st.dropped_newest, 0U);
  EXPECT_EQ(st.dropped(), 0U);  // the queue had room: nothing needed dropping
  expect_identity(st);
}

// ---- Pause, resume, resubscribe --------------------------------------------------------------

// A paused subscription gets nothing published while it is paused (no number of its own
// either: sub_sequence has no gap), then resumes in order.
TEST(PauseOrdering, PausedSubscribersGetNothingThenResumeInOrder) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto paused_rec = std::make_shared<recorder>();
  auto async_sub = list.subscribe_async<tord_event>(type_of<tord_event>(),
                                                    recording_handler<tord_event>{paused_rec});
  herald::event_queue<tord_event> paused_q;
  auto queue_sub = list.subscribe_queue<tord_event>(type_of<tord_event>(), paused_q);
  std::vector<std::uint64_t> sync_got;
  auto sync_sub = list.subscribe_sync<tord_event>(
      type_of<tord_event>(),
      [&](herald::sync_event<tord_event>& e) { sync_got.push_back(e.safe().n); });
  herald::event_queue<tord_event> active_q;  // never paused
  auto active = list.subscribe_queue<tord_event>(type_of<tord_event>(), active_q);
  ASSERT_TRUE(async_sub && queue_sub && sync_sub && active);

  auto publish = [&](std::uint64_t from, std::uint64_t to) {
    for (std::uint64_t i = from; i <= to; ++i) {
      ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
    }
  };
  publish(1, 5);
  for (auto* s : {&*async_sub, &*queue_sub, &*sync_sub}) {
    ASSERT_TRUE(s->pause());
  }
  publish(6, 10);
  for (auto* s : {&*async_sub, &*queue_sub, &*sync_sub}) {
    ASSERT_TRUE(s->resume());
  }
  publish(11, 15);

  const auto expected = concat(range(1, 5), range(11, 15));
  EXPECT_EQ(sync_got, expected);
  ASSERT_TRUE(wait_for([&] { return paused_rec->count.load() == 10; }));
  const auto from_async = paused_rec->snapshot();
  const auto from_queue = pop_available(paused_q);
  for (const auto& got : {from_async, from_queue}) {
    EXPECT_EQ(ns_of(got), expected);
    EXPECT_EQ(sequences_of(got), expected);  // the active queue kept the list numbering
    EXPECT_EQ(sub_sequences_of(got), range(1, 10));
  }
  const auto from_active = pop_available(active_q);
  EXPECT_EQ(ns_of(from_active), range(1, 15));
  EXPECT_EQ(sequences_of(from_active), range(1, 15));
}

// Pausing holds back later publishes only: what was queued before is still delivered.
TEST(PauseOrdering, EventsQueuedBeforeThePauseAreStillDelivered) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tord_event> q;
  auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(), q);
  ASSERT_TRUE(s);
  for (std::uint64_t i = 1; i <= 3; ++i) {
    ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, i}));
  }
  ASSERT_TRUE(s->pause());
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 4}));
  EXPECT_EQ(ns_of(pop_available(q)), range(1, 3));
  EXPECT_TRUE(s->is_paused());
}

// A resubscribe keeps the queue: the events of the old and the new subtypes arrive in publish
// order, and sub_sequence continues.
TEST(PauseOrdering, ResubscribeKeepsTheQueueAndItsNumbering) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::event_queue<tord_event> q;
  auto s = list.subscribe_queue<tord_event>(type_of<tord_event>(ev::a), q);
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 1}));
  ASSERT_TRUE(list.publish<tord_event>(ev::b, {0, 2}));  // not subscribed: not received
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 3}));
  ASSERT_TRUE(s->resubscribe(type_of<tord_event>(ev::b)));
  ASSERT_TRUE(list.publish<tord_event>(ev::a, {0, 4}));  // no longer subscribed
  ASSERT_TRUE(list.publish<tord_event>(ev::b, {0, 5}));
  ASSERT_TRUE(list.publish<tord_event>(ev::b, {0, 6}));
  const auto got = pop_available(q);
  EXPECT_EQ(ns_of(got), (std::vector<std::uint64_t>{1, 3, 5, 6}));
  EXPECT_EQ(sub_sequences_of(got), range(1, 4));
  // Only the publishes that reached this queue (its list's only deferred subscriber) numbered.
  EXPECT_EQ(sequences_of(got), range(1, 4));
}

}  // namespace
