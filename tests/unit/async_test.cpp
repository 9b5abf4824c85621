// Unit tests of async and queue delivery (herald/bus.hpp): handlers on workers with a shared
// snapshot, order and one-at-a-time delivery, events handled per run and their leftovers, END
// on every ending path, pending events delivered or discarded, queue notification (tasklet,
// eventfd, callback), user executors, and bus shutdown.
//
// Waiting: tests wait for conditions (wait_for below polls with a generous deadline and fails
// the test instead of hanging); nothing asserts on time.
#include <gtest/gtest.h>
#include <poll.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "herald/bus.hpp"
#include "herald/scheduler.hpp"

#include "test_support.hpp"

namespace {

using herald_test::wait_for;
using herald_test::gate;
using herald_test::manual_executor;

// Payload copies made and destroyed, to count snapshots.
struct copy_counter {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> destroyed{0};
  copy_counter() = default;
  copy_counter(const copy_counter&) noexcept { copies.fetch_add(1); }
  copy_counter& operator=(const copy_counter&) = default;
  ~copy_counter() { destroyed.fetch_add(1); }
};

struct tasync_event {
  static constexpr std::string_view family_name = "TASYNC";
  enum class subtype : std::uint8_t { up, down, state };
  static constexpr std::array<std::string_view, 3> subtype_names{"UP", "DOWN", "STATE"};
  struct safe_part {
    int id = 0;
    std::string name;
    copy_counter counter;
  };
  struct unsafe_part {
    int* live = nullptr;
  };
};

struct tasync_other {
  static constexpr std::string_view family_name = "TASYNCOTHER";
  enum class subtype : std::uint8_t { tick };
  static constexpr std::array<std::string_view, 1> subtype_names{"TICK"};
  struct safe_part {
    int n = 0;
  };
};

// A family whose events carry nothing but their type.
struct tasync_empty {
  static constexpr std::string_view family_name = "TASYNCEMPTY";
  enum class subtype : std::uint8_t { ping };
  static constexpr std::array<std::string_view, 1> subtype_names{"PING"};
  struct safe_part {};
};

[[maybe_unused]] const bool families_declared =
    herald::family_id_of<tasync_event>() != herald::family_id_of<tasync_other>() &&
    herald::family_id_of<tasync_empty>() != herald::family_id_of<tasync_other>();

using herald::async_event;
using herald::type_of;
using sub = tasync_event::subtype;

// Counts its own destruction (captured by value in handlers).
struct life_probe {
  std::shared_ptr<std::atomic<int>> destroyed = std::make_shared<std::atomic<int>>(0);
  bool armed = true;
  life_probe() = default;
  life_probe(const life_probe& o) : destroyed(o.destroyed), armed(o.armed) {}
  life_probe(life_probe&& o) noexcept : destroyed(o.destroyed), armed(o.armed) {
    o.armed = false;
  }
  ~life_probe() {
    if (armed) {
      destroyed->fetch_add(1);
    }
  }
};

tasync_event::safe_part payload(int id) { return tasync_event::safe_part{id, "srv", {}}; }

// The unsafe part is not reachable from an async event: only sync_event has unsafe().
template <class E>
concept has_unsafe_accessor = requires(E& e) { e.unsafe(); };
static_assert(has_unsafe_accessor<herald::sync_event<tasync_event>>);
static_assert(!has_unsafe_accessor<async_event<tasync_event>>);
static_assert(!has_unsafe_accessor<herald::queued_event<tasync_event>>);

// ---- Async --------------------------------------------------------------------------------

TEST(AsyncDelivery, HandlerRunsOnAWorkerWithTheSnapshotSequenceAndTime) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  const auto publisher = std::this_thread::get_id();
  std::mutex m;
  std::vector<std::uint64_t> seqs;
  std::vector<int> ids;
  bool other_thread = true;
  bool on_worker = true;
  const auto before = std::chrono::steady_clock::now();
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(), [&](async_event<tasync_event>& e) {
    std::lock_guard lock(m);
    other_thread = other_thread && std::this_thread::get_id() != publisher;
    on_worker = on_worker && b.workers().current() != nullptr;
    seqs.push_back(e.sequence());
    ids.push_back(e.safe().id);
    EXPECT_EQ(e.safe().name, "srv");
    EXPECT_GE(e.when(), before);
    EXPECT_EQ(e.subtype(), sub::down);
    EXPECT_EQ(e.type(), type_of<tasync_event>(sub::down));
  });
  ASSERT_TRUE(s);
  for (int i = 1; i <= 5; ++i) {
    auto r = list.publish<tasync_event>(sub::down, payload(i));
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 1u);
  }
  b.shutdown();  // drains
  EXPECT_TRUE(other_thread);
  EXPECT_TRUE(on_worker);
  EXPECT_EQ(ids, (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_EQ(seqs, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
}

TEST(AsyncDelivery, OneSnapshotPerPublishWhateverTheNumberOfSubscribers) {
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  std::vector<herald::subscription> subs;
  for (int i = 0; i < 16; ++i) {
    auto s = list.subscribe_async<tasync_event>(
        type_of<tasync_event>(), [&](async_event<tasync_event>&) { calls.fetch_add(1); });
    ASSERT_TRUE(s);
    subs.push_back(std::move(*s));
  }
  const auto src = payload(7);
  copy_counter::copies = 0;
  copy_counter::destroyed = 0;
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, src));
  }
  b.shutdown();
  EXPECT_EQ(calls.load(), 160);
  EXPECT_EQ(copy_counter::copies.load(), 10);     // one snapshot per publish
  EXPECT_EQ(copy_counter::destroyed.load(), 10);  // each destroyed once, after its consumers
}

TEST(AsyncDelivery, PublishWithoutAsyncSubscriberMakesNoSnapshot) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  int sync_calls = 0;
  auto s = list.subscribe_sync<tasync_event>(type_of<tasync_event>(),
                                             [&](herald::sync_event<tasync_event>&) { ++sync_calls; });
  ASSERT_TRUE(s);
  // An async subscriber of another subtype does not match.
  auto a = list.subscribe_async<tasync_event>(type_of<tasync_event>(sub::state),
                                              [](async_event<tasync_event>&) {});
  ASSERT_TRUE(a);
  const auto src = payload(1);
  copy_counter::copies = 0;
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, src));
  EXPECT_EQ(sync_calls, 1);
  EXPECT_EQ(copy_counter::copies.load(), 0);
  // A paused one makes none either.
  ASSERT_TRUE(a->pause());
  ASSERT_TRUE(list.publish<tasync_event>(sub::state, src));
  EXPECT_EQ(copy_counter::copies.load(), 0);
}

TEST(AsyncDelivery, SyncHandlersRunInlineAndTheCountIncludesAsyncOnes) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  int live = 41;
  int seen_live = 0;
  std::atomic<int> async_calls{0};
  auto s1 = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                               [&](async_event<tasync_event>&) { ++async_calls; });
  auto s2 = list.subscribe_sync<tasync_event>(
      type_of<tasync_event>(), [&](herald::sync_event<tasync_event>& e) { seen_live = *e.unsafe()->live; });
  ASSERT_TRUE(s1 && s2);
  tasync_event::unsafe_part unsafe{&live};
  auto r = list.publish<tasync_event>(sub::up, payload(1), unsafe);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 2u);
  EXPECT_EQ(seen_live, 41);  // before publish returned
  b.shutdown();
  EXPECT_EQ(async_calls.load(), 1);
}

TEST(AsyncDelivery, EventsOfOneSubscriptionRunOneAtATimeInPublishOrder) {
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  std::atomic<int> inside{0};
  std::atomic<bool> overlap{false};
  std::vector<int> order;  // written by one handler call at a time
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(), [&](async_event<tasync_event>& e) {
    if (inside.fetch_add(1) != 0) {
      overlap = true;
    }
    order.push_back(e.safe().id);
    inside.fetch_sub(1);
  }, {.events_per_run = 2});
  ASSERT_TRUE(s);
  constexpr int n = 20000;
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  b.shutdown();
  EXPECT_FALSE(overlap.load());
  ASSERT_EQ(order.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(order[static_cast<std::size_t>(i)], i);
  }
}

TEST(AsyncDelivery, EventsPerRunIsRespectedAndLeftoversRunWithoutANewPublish) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  // Hold the only worker until both subscriptions have their events queued.
  gate hold;
  auto blocker = b.workers().make_tasklet([&] { hold.wait(); });
  blocker.wake();
  std::mutex m;
  std::vector<char> order;
  auto a = list.subscribe_async<tasync_event>(type_of<tasync_event>(), [&](async_event<tasync_event>&) {
    std::lock_guard lock(m);
    order.push_back('A');
  }, {.events_per_run = 3});
  auto o = list.subscribe_async<tasync_other>(type_of<tasync_other>(), [&](async_event<tasync_other>&) {
    std::lock_guard lock(m);
    order.push_back('B');
  });
  ASSERT_TRUE(a && o);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(list.publish<tasync_other>(tasync_other::subtype::tick, {1}));
  hold.open();
  ASSERT_TRUE(wait_for([&] {
    std::lock_guard lock(m);
    return order.size() == 11;
  }));
  // A ran 3, yielded behind B's run, then finished its leftovers with no new publish.
  std::lock_guard lock(m);
  EXPECT_EQ(std::string(order.begin(), order.end()), "AAABAAAAAAA");
}

TEST(AsyncDelivery, PendingEventsAreDeliveredAfterUnsubscribeThenTheHandlerIsDestroyed) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  gate hold;
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                              [&, probe](async_event<tasync_event>&) {
                                                if (calls.fetch_add(1) == 0) {
                                                  hold.wait();
                                                }
                                              });
  ASSERT_TRUE(s);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(wait_for([&] { return calls.load() == 1; }));
  s->unsubscribe();  // returns without waiting for the queued events
  EXPECT_FALSE(s->is_active());
  EXPECT_EQ(destroyed->load(), 0);
  auto r = list.publish<tasync_event>(sub::up, payload(99));  // after the end: not queued
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0u);
  hold.open();
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
  EXPECT_EQ(calls.load(), 10);
}

TEST(AsyncDelivery, PendingEventsAreDiscardedWhenAskedAndEndFollows) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  gate hold;
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto s = list.subscribe_async<tasync_event>(
      type_of<tasync_event>(),
      [&, probe](async_event<tasync_event>&) {
        if (calls.fetch_add(1) == 0) {
          hold.wait();
        }
      },
      {.on_end = herald::pending_on_end::discard});
  ASSERT_TRUE(s);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(wait_for([&] { return calls.load() == 1; }));
  s->unsubscribe();
  hold.open();
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
  EXPECT_EQ(calls.load(), 1);  // the one running when it ended; the other 9 were dropped
}

TEST(AsyncDelivery, HandlerUnsubscribingItselfGetsTheQueuedEventsThenEnds) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  gate hold;
  auto blocker = b.workers().make_tasklet([&] { hold.wait(); });
  blocker.wake();
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                              [&, probe](async_event<tasync_event>& e) {
                                                if (calls.fetch_add(1) == 4) {
                                                  e.self().unsubscribe();
                                                }
                                              });
  ASSERT_TRUE(s);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  hold.open();
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
  EXPECT_EQ(calls.load(), 10);  // queued before the end: delivered (pending_on_end::deliver)
  EXPECT_FALSE(s->is_active());
  EXPECT_EQ(list.size_approx(), 0u);
}

TEST(AsyncDelivery, EndingFromASyncHandlerStillReachesEndWithoutAnotherCall) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto a = list.subscribe_async<tasync_other>(type_of<tasync_other>(),
                                              [probe](async_event<tasync_other>&) {});
  ASSERT_TRUE(a);
  herald::subscription async_handle = *a;
  auto s = list.subscribe_sync<tasync_event>(
      type_of<tasync_event>(),
      [&](herald::sync_event<tasync_event>&) { async_handle.unsubscribe(); });
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));
  // Nothing waits after that publish: the bus's workers run the reclamation that queues END.
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
}

TEST(AsyncDelivery, ThrowingHandlerIsCountedReportedAndKeepsItsWorker) {
  herald::bus b({.threads = 1});
  std::atomic<int> reported{0};
  b.set_error_hook([&](const herald::handler_error& e) {
    EXPECT_EQ(e.what, "boom");
    EXPECT_EQ(e.subscription_name, "thrower");
    reported.fetch_add(1);
  });
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(), [&](async_event<tasync_event>&) {
    calls.fetch_add(1);
    throw std::runtime_error("boom");
  }, {.name = "thrower"});
  ASSERT_TRUE(s);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  b.shutdown();
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(reported.load(), 3);
  EXPECT_EQ(s->exceptions(), 3u);
}

TEST(AsyncDelivery, PausedResubscribedAndIdentifiedLikeSyncOnes) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  const auto id = herald::make_id("test", "async");
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(sub::up),
                                              [&](async_event<tasync_event>&) { calls.fetch_add(1); },
                                              {.id = id});
  ASSERT_TRUE(s);
  EXPECT_EQ(list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                               [](async_event<tasync_event>&) {}, {.id = id})
                .error(),
            herald::errc::duplicate_id);
  ASSERT_TRUE(list.lookup_pause(id));
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));
  ASSERT_TRUE(list.lookup_resume(id));
  ASSERT_TRUE(list.publish<tasync_event>(sub::down, payload(2)));  // not subscribed
  ASSERT_TRUE(list.lookup_resubscribe(id, type_of<tasync_event>(sub::down)));
  ASSERT_TRUE(list.publish<tasync_event>(sub::down, payload(3)));
  EXPECT_EQ(list.lookup_resubscribe(id, type_of<tasync_other>()).error(),
            herald::errc::family_mismatch);
  ASSERT_TRUE(list.lookup_unsubscribe(id));
  b.shutdown();
  EXPECT_EQ(calls.load(), 1);
}

TEST(AsyncDelivery, EventsWithAnEmptySafePartReachAsyncAndQueueSubscribers) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  std::atomic<std::uint64_t> last_seq{0};
  auto a = list.subscribe_async<tasync_empty>(type_of<tasync_empty>(),
                                              [&](async_event<tasync_empty>& e) {
                                                EXPECT_EQ(e.subtype(), tasync_empty::subtype::ping);
                                                last_seq = e.sequence();
                                                calls.fetch_add(1);
                                              });
  herald::event_queue<tasync_empty> q;
  auto s = list.subscribe_queue<tasync_empty>(type_of<tasync_empty>(), q);
  ASSERT_TRUE(a && s);
  for (int i = 0; i < 3; ++i) {
    auto r = list.publish<tasync_empty>(tasync_empty::subtype::ping, {});
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 2u);
  }
  b.shutdown();
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(last_seq.load(), 3u);
  int events = 0;
  while (auto e = q.pop()) {
    events += e->is_end() ? 0 : 1;
  }
  EXPECT_EQ(events, 3);
}

TEST(AsyncDelivery, EventsPerRunOutOfRangeIsRefused) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                              [](async_event<tasync_event>&) {},
                                              {.events_per_run = 10001});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), herald::errc::invalid_argument);
}

TEST(AsyncDelivery, HandlerRunsOnTheUsersExecutor) {
  manual_executor ex;
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::vector<int> got;  // only the test thread runs the executor
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto s = list.subscribe_async<tasync_event>(
      type_of<tasync_event>(), [&, probe](async_event<tasync_event>& e) { got.push_back(e.safe().id); },
      {.executor = ex.ref()});
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(2)));
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(ex.run_all(), 1u);  // both events in one run
  EXPECT_EQ(got, (std::vector<int>{1, 2}));
  s->unsubscribe();
  EXPECT_EQ(destroyed->load(), 0);  // END is queued; the executor has not run it yet
  ex.run_all();
  EXPECT_EQ(destroyed->load(), 1);
}

// ---- Queue --------------------------------------------------------------------------------

TEST(QueueDelivery, PopsEventsInOrderThenEndExactlyOnce) {
  herald::bus b;
  herald::sub_list list(b);
  herald::event_queue<tasync_event> q;
  auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), q);
  ASSERT_TRUE(s);
  EXPECT_TRUE(q.is_open());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::state, payload(i)));
  }
  EXPECT_EQ(q.size_approx(), 5u);
  auto first = q.pop();
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->is_end());
  EXPECT_EQ(first->safe().id, 0);
  EXPECT_EQ(first->sequence(), 1u);
  EXPECT_EQ(first->subtype(), sub::state);
  s->unsubscribe();
  std::vector<int> rest;
  int ends = 0;
  while (auto e = q.pop()) {
    if (e->is_end()) {
      ++ends;
    } else {
      EXPECT_EQ(ends, 0) << "an event after END";
      rest.push_back(e->safe().id);
    }
  }
  EXPECT_EQ(rest, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(ends, 1);
  EXPECT_FALSE(q.is_open());
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(q.delivered(), 5u);
}

TEST(QueueDelivery, EventfdIsReadableExactlyWhileItemsWait) {
  herald::bus b;
  herald::sub_list list(b);
  herald::event_queue<tasync_event> q;
  auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), q, herald::queue_notify::fd());
  ASSERT_TRUE(s);
  ASSERT_GE(q.fd(), 0);
  auto readable = [&] {
    pollfd p{q.fd(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
  };
  EXPECT_FALSE(readable());
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(2)));
  EXPECT_TRUE(readable());
  while (q.pop()) {
  }
  EXPECT_FALSE(readable());
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(3)));
  EXPECT_TRUE(readable());
  s->unsubscribe();
  int ends = 0;
  while (auto e = q.pop()) {
    ends += e->is_end() ? 1 : 0;
  }
  EXPECT_EQ(ends, 1);
}

TEST(QueueDelivery, TaskletIsWokenAndMayDropItselfOnEnd) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  struct consumer {
    herald::event_queue<tasync_event> q;
    herald::tasklet self;
    std::atomic<int>* events = nullptr;
    std::atomic<bool>* ended = nullptr;
  };
  std::atomic<int> events{0};
  std::atomic<bool> ended{false};
  auto* c = new consumer;
  c->events = &events;
  c->ended = &ended;
  c->self = b.workers().make_tasklet([c] {
    while (auto e = c->q.pop()) {
      if (e->is_end()) {
        std::atomic<bool>* done = c->ended;
        delete c;  // frees the queue and drops the tasklet handle, from inside its own run
        done->store(true);
        return;
      }
      c->events->fetch_add(1);
    }
  });
  auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), c->q,
                                              herald::queue_notify::wake(c->self));
  ASSERT_TRUE(s);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(wait_for([&] { return events.load() == 100; }));
  s->unsubscribe();
  ASSERT_TRUE(wait_for([&] { return ended.load(); }));
}

TEST(QueueDelivery, CallbackIsCalledOncePerEmptyToNonEmptyEdge) {
  herald::bus b;
  herald::sub_list list(b);
  herald::event_queue<tasync_event> q;
  int calls = 0;
  auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), q,
                                              herald::queue_notify::call([&] { ++calls; }));
  ASSERT_TRUE(s);
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(2)));
  EXPECT_EQ(calls, 1);
  while (q.pop()) {
  }
  ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(3)));
  EXPECT_EQ(calls, 2);
}

TEST(QueueDelivery, DestroyingTheQueueEndsTheSubscription) {
  herald::bus b;
  herald::sub_list list(b);
  herald::subscription handle;
  {
    herald::event_queue<tasync_event> q;
    auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), q);
    ASSERT_TRUE(s);
    handle = *s;
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(1)));  // never popped: released
  }
  EXPECT_FALSE(handle.is_active());
  EXPECT_EQ(list.size_approx(), 0u);
  auto r = list.publish<tasync_event>(sub::up, payload(2));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 0u);
}

TEST(QueueDelivery, DiscardOnEndDropsWhatWasNotPopped) {
  herald::bus b;
  herald::sub_list list(b);
  herald::event_queue<tasync_event> q;
  auto s = list.subscribe_queue<tasync_event>(type_of<tasync_event>(), q, herald::queue_notify::none(),
                                              {.on_end = herald::pending_on_end::discard});
  ASSERT_TRUE(s);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(q.pop());
  list.destroy();
  auto e = q.pop();
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is_end());
  EXPECT_EQ(q.delivered(), 1u);
  EXPECT_EQ(q.discarded(), 3u);
}

// ---- Shutdown -----------------------------------------------------------------------------

TEST(BusShutdown, DrainsAsyncEndsQueuesAndRefusesEverythingAfter) {
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto a = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                              [&, probe](async_event<tasync_event>&) { calls.fetch_add(1); });
  herald::event_queue<tasync_event> q;
  auto s = b.global().subscribe_queue<tasync_event>(type_of<tasync_event>(), q);
  ASSERT_TRUE(a && s);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
    ASSERT_TRUE(b.global().publish<tasync_event>(sub::up, payload(i)));
  }
  b.shutdown();
  EXPECT_TRUE(b.is_shut_down());
  EXPECT_EQ(calls.load(), 1000);
  EXPECT_EQ(destroyed->load(), 1);
  int events = 0;
  int ends = 0;
  while (auto e = q.pop()) {
    e->is_end() ? ++ends : ++events;
  }
  EXPECT_EQ(events, 1000);
  EXPECT_EQ(ends, 1);
  EXPECT_EQ(list.publish<tasync_event>(sub::up, payload(0)).error(), herald::errc::shutting_down);
  EXPECT_EQ(list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                               [](async_event<tasync_event>&) {})
                .error(),
            herald::errc::shutting_down);
  herald::sub_list late(b);
  EXPECT_EQ(late.subscribe_sync<tasync_event>(type_of<tasync_event>(),
                                              [](herald::sync_event<tasync_event>&) {})
                .error(),
            herald::errc::shutting_down);
  b.shutdown();  // idempotent
}

TEST(BusShutdown, AsyncSubscribeOnAListThatOutlivedItsBusIsRefusedWithShuttingDown) {
  auto b = std::make_unique<herald::bus>(herald::bus_options{.threads = 1});
  herald::sub_list list(*b);
  b.reset();
  auto s = list.subscribe_async<tasync_event>(type_of<tasync_event>(),
                                              [](async_event<tasync_event>&) {});
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), herald::errc::shutting_down);
}

TEST(BusShutdown, DiscardModeDropsPendingEvents) {
  herald::bus b({.threads = 1, .on_shutdown = herald::shutdown_mode::discard});
  herald::sub_list list(b);
  gate hold;
  std::atomic<int> calls{0};
  auto a = list.subscribe_async<tasync_event>(type_of<tasync_event>(), [&](async_event<tasync_event>&) {
    if (calls.fetch_add(1) == 0) {
      hold.wait();
    }
  });
  ASSERT_TRUE(a);
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(list.publish<tasync_event>(sub::up, payload(i)));
  }
  ASSERT_TRUE(wait_for([&] { return calls.load() == 1; }));
  std::thread opener([&] {
    // Lets the running handler finish once shutdown has begun.
    wait_for([&] { return b.is_shut_down(); });
    hold.open();
  });
  b.shutdown();
  opener.join();
  EXPECT_EQ(calls.load(), 1);
}

}  // namespace
