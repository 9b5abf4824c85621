// Unit tests of last-value ("stateful") events (herald/bus.hpp, stateful_mask_v; src/core/
// sub_list.cpp, publish_stateful and replay_last_values; docs/last_value.md).
//
// What the tests show (the contract as implemented):
//   - Declaration: `static constexpr bool stateful = true;` makes every subtype of a family
//     stateful, `stateful_subtypes{...}` the listed ones, neither (or `stateful = false`) none.
//   - A new subscription receives, for each stateful subtype it subscribed to that has a last
//     value in its list, that list's latest event of the subtype, once, before any newer event:
//     sync subscriptions inside subscribe (in the subscriber's thread, before subscribe returns,
//     with no unsafe part); async and queue subscriptions queued first, before subscribe
//     returns, with the original publish's sequence() and when(). Subtypes not subscribed to,
//     non-stateful subtypes of a partly stateful family and non-stateful families replay
//     nothing.
//   - Last values belong to one list: the global list and a per-entity list keep their own.
//   - resubscribe() and resume() replay nothing (only a new subscription does).
//   - A destroyed list (or a shut-down bus) drops its last values, reports list_destroyed (or
//     shutting_down) to publishes and refuses subscribes.
//   - Out of memory, a stateful publish reaches nobody (sync subscribers included), reports
//     no_memory and leaves the old last value in place; a replay that cannot be queued makes
//     subscribe report no_memory.
//   - Handlers may publish stateful events to their own list, subscribe on it, unsubscribe,
//     throw or destroy the list, during a stateful publish or during their own replay, without
//     deadlock.
//   - Nothing leaks: every test checks that every safe-part object was destroyed (and the asan
//     build runs LeakSanitizer).
//
// Waiting: tests wait for conditions (wait_for below polls with a generous deadline and fails
// the test instead of hanging); nothing asserts on time.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "herald/detail/deferred.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"

#include "test_support.hpp"

namespace {

using herald_test::wait_for;

using herald::async_event;
using herald::errc;
using herald::event_queue;
using herald::sub_list;
using herald::subscription;
using herald::sync_event;
using herald::type_of;
using clock_type = std::chrono::steady_clock;

// ---- Payload bookkeeping ----------------------------------------------------------------------

// Live safe-part objects over the whole process (the test's own included). Atomic: snapshots
// are destroyed on the bus's workers.
std::atomic<long> g_live{0};
// A copy of a payload whose value equals this one throws (a snapshot that cannot be made).
std::atomic<int> g_poison{-1};

struct lv_payload {
  explicit lv_payload(int v = 0) noexcept : value(v) { g_live.fetch_add(1); }
  lv_payload(const lv_payload& o) : value(o.value) {
    if (o.value == g_poison.load()) {
      throw std::runtime_error("lv_payload: poisoned copy");
    }
    g_live.fetch_add(1);
  }
  lv_payload& operator=(const lv_payload&) = default;
  ~lv_payload() {
    g_live.fetch_sub(1);
    // Poisoned, so that a handler reading a destroyed snapshot sees it even without ASan
    // (volatile: the store must survive dead-store elimination).
    *static_cast<volatile int*>(&value) = destroyed_value;
  }

  static constexpr int destroyed_value = -12345;

  int value;
};

// ---- Families ---------------------------------------------------------------------------------

// Every subtype stateful; has an unsafe part.
struct tlv_state {
  static constexpr std::string_view family_name = "TLVSTATE";
  enum class subtype : std::uint8_t { up, down, load };
  static constexpr std::array<std::string_view, 3> subtype_names{"UP", "DOWN", "LOAD"};
  static constexpr bool stateful = true;
  using safe_part = lv_payload;
  struct unsafe_part {
    int* live = nullptr;
  };
};
using st = tlv_state::subtype;

// Partly stateful: config and metric keep a last value, alert does not.
struct tlv_partial {
  static constexpr std::string_view family_name = "TLVPARTIAL";
  enum class subtype : std::uint8_t { config, alert, metric };
  static constexpr std::array<std::string_view, 3> subtype_names{"CONFIG", "ALERT", "METRIC"};
  static constexpr std::array<subtype, 2> stateful_subtypes{subtype::config, subtype::metric};
  using safe_part = lv_payload;
};
using pt = tlv_partial::subtype;

// Not stateful (no declaration), and explicitly not stateful.
struct tlv_plain {
  static constexpr std::string_view family_name = "TLVPLAIN";
  enum class subtype : std::uint8_t { tick, tock };
  static constexpr std::array<std::string_view, 2> subtype_names{"TICK", "TOCK"};
  using safe_part = lv_payload;
};
struct tlv_off {
  static constexpr std::string_view family_name = "TLVOFF";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  static constexpr bool stateful = false;
  using safe_part = lv_payload;
};

static_assert(herald::stateful_mask_v<tlv_state> == 0b111);
static_assert(herald::stateful_mask_v<tlv_partial> == 0b101);
static_assert(herald::stateful_mask_v<tlv_plain> == 0);
static_assert(herald::stateful_mask_v<tlv_off> == 0);

[[maybe_unused]] const bool families_declared =
    (static_cast<void>(herald::family_id_of<tlv_state>()),
     static_cast<void>(herald::family_id_of<tlv_partial>()),
     static_cast<void>(herald::family_id_of<tlv_plain>()),
     static_cast<void>(herald::family_id_of<tlv_off>()), true);

// "UP:2" style tags, readable in failure messages.
std::string tag(st s, int v) {
  return std::string(tlv_state::subtype_names[static_cast<std::size_t>(s)]) + ":" +
         std::to_string(v);
}
std::string tag(pt s, int v) {
  return std::string(tlv_partial::subtype_names[static_cast<std::size_t>(s)]) + ":" +
         std::to_string(v);
}
using tags = std::vector<std::string>;

// ---- Waiting and receivers --------------------------------------------------------------------

// One event as an async handler or a queue consumer saw it.
struct seen_event {
  std::string tag;
  std::uint64_t sequence = 0;
  std::uint64_t sub_sequence = 0;
  clock_type::time_point when;
};

// What an async handler saw; the handler runs on a worker, the test reads after waiting.
class async_log {
 public:
  template <class E>
  void add(E& e) {
    std::lock_guard lock(m_);
    events_.push_back({tag(e.subtype(), e.safe().value), e.sequence(), e.sub_sequence(), e.when()});
  }
  // The events once there are at least n of them (or what there is after the deadline).
  std::vector<seen_event> wait_for_count(std::size_t n) {
    (void)wait_for([&] {
      std::lock_guard lock(m_);
      return events_.size() >= n;
    });
    return snapshot();
  }
  std::vector<seen_event> snapshot() {
    std::lock_guard lock(m_);
    return events_;
  }
  tags tag_list() {
    tags out;
    for (const auto& e : snapshot()) {
      out.push_back(e.tag);
    }
    return out;
  }

 private:
  std::mutex m_;
  std::vector<seen_event> events_;  // guarded by m_
};

auto logging(async_log& log) {
  return [&log](async_event<tlv_state>& e) { log.add(e); };
}

template <class F>
std::vector<seen_event> drain(event_queue<F>& q, bool* ended = nullptr) {
  std::vector<seen_event> out;
  while (auto item = q.pop()) {
    if (item->is_end()) {
      if (ended != nullptr) {
        *ended = true;
      }
      continue;
    }
    out.push_back({tag(item->subtype(), item->safe().value), item->sequence(), item->sub_sequence(),
                   item->when()});
  }
  return out;
}

tags tags_of(const std::vector<seen_event>& v) {
  tags out;
  for (const auto& e : v) {
    out.push_back(e.tag);
  }
  return out;
}

// Counts its own destruction (captured by value in handlers).
struct life_probe {
  std::shared_ptr<std::atomic<int>> destroyed = std::make_shared<std::atomic<int>>(0);
  bool armed = true;
  life_probe() = default;
  life_probe(const life_probe& o) : destroyed(o.destroyed), armed(o.armed) {}
  life_probe(life_probe&& o) noexcept : destroyed(o.destroyed), armed(o.armed) { o.armed = false; }
  life_probe& operator=(const life_probe&) = delete;
  ~life_probe() {
    if (armed) {
      destroyed->fetch_add(1);
    }
  }
};

subscription must(herald::result<subscription> r) {
  EXPECT_TRUE(r.has_value()) << "subscribe failed: " << herald::to_string(r.error());
  return r ? std::move(*r) : subscription{};
}

std::size_t must_publish(herald::result<std::size_t> r) {
  EXPECT_TRUE(r.has_value()) << "publish failed: " << herald::to_string(r.error());
  return r ? *r : 0;
}

// Every test starts with no failure armed and ends with every payload object destroyed (the
// bus and the lists are locals of the test body, gone by TearDown).
class lv_fixture : public ::testing::Test {
 protected:
  void SetUp() override {
    herald::detail::inject_allocation_failures(0);
    g_poison.store(-1);
    live_at_start_ = g_live.load();
  }
  void TearDown() override {
    herald::detail::inject_allocation_failures(0);
    g_poison.store(-1);
    EXPECT_EQ(g_live.load(), live_at_start_) << "safe-part objects leaked or destroyed twice";
  }

 private:
  long live_at_start_ = 0;
};

class LastValueSync : public lv_fixture {};
class LastValueAsync : public lv_fixture {};
class LastValueQueue : public lv_fixture {};
class LastValueLists : public lv_fixture {};
class LastValueFailure : public lv_fixture {};
class LastValueReentrancy : public lv_fixture {};

// ---- Sync -------------------------------------------------------------------------------------

TEST_F(LastValueSync, ReplayRunsInsideSubscribeWithTheLatestValueOfEachSubscribedSubtype) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  // Nobody listens: the publishes reach nobody but still become the last values.
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(1))), 0u);
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(2))), 0u);
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::down, lv_payload(3))), 0u);
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::load, lv_payload(4))), 0u);

  const auto subscriber = std::this_thread::get_id();
  bool returned = false;
  tags seen;
  bool inside_subscribe = true;
  bool same_thread = true;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up, st::down), [&](sync_event<tlv_state>& e) {
        seen.push_back(tag(e.subtype(), e.safe().value));
        inside_subscribe = inside_subscribe && !returned;
        same_thread = same_thread && std::this_thread::get_id() == subscriber;
      }));
  returned = true;
  // LOAD was not subscribed to: not replayed. UP: the latest of the two.
  EXPECT_EQ(seen, (tags{"UP:2", "DOWN:3"}));
  EXPECT_TRUE(inside_subscribe) << "the sync replay ran after subscribe returned";
  EXPECT_TRUE(same_thread) << "the sync replay ran on another thread";

  // Newer events follow the replay.
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(5))), 1u);
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::load, lv_payload(6))), 0u);
  EXPECT_EQ(seen, (tags{"UP:2", "DOWN:3", "UP:5"}));
}

TEST_F(LastValueSync, ReplayHasNoUnsafePartWhileLiveEventsHaveIt) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  int live = 7;
  tlv_state::unsafe_part unsafe{&live};
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(1), unsafe)), 0u);

  std::vector<bool> had_unsafe;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { had_unsafe.push_back(e.unsafe() != nullptr); }));
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(2), unsafe)), 1u);
  // The replay has none (the references were live only during the first publish); the live
  // event has the publisher's.
  EXPECT_EQ(had_unsafe, (std::vector<bool>{false, true}));
}

TEST_F(LastValueSync, NothingIsReplayedWhenTheSubtypeHasNoValueYet) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(1)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up, st::load),
      [&](sync_event<tlv_state>& e) { seen.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_TRUE(seen.empty());
}

TEST_F(LastValueSync, OnlyTheStatefulSubtypesOfAPartlyStatefulFamilyAreReplayed) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_partial>(pt::config, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_partial>(pt::alert, lv_payload(2)));
  ASSERT_TRUE(list.publish<tlv_partial>(pt::metric, lv_payload(3)));
  ASSERT_TRUE(list.publish<tlv_partial>(pt::config, lv_payload(4)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_partial>(
      type_of<tlv_partial>(),
      [&](sync_event<tlv_partial>& e) { seen.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(seen, (tags{"CONFIG:4", "METRIC:3"}));
  // ALERT flows live like any event.
  ASSERT_EQ(must_publish(list.publish<tlv_partial>(pt::alert, lv_payload(5))), 1u);
  EXPECT_EQ(seen, (tags{"CONFIG:4", "METRIC:3", "ALERT:5"}));
}

TEST_F(LastValueSync, FamiliesThatAreNotStatefulReplayNothing) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_plain>(tlv_plain::subtype::tick, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_off>(tlv_off::subtype::only, lv_payload(2)));
  int calls = 0;
  auto s1 = must(list.subscribe_sync<tlv_plain>(type_of<tlv_plain>(),
                                                [&](sync_event<tlv_plain>&) { ++calls; }));
  auto s2 = must(
      list.subscribe_sync<tlv_off>(type_of<tlv_off>(), [&](sync_event<tlv_off>&) { ++calls; }));
  EXPECT_EQ(calls, 0);
  // No snapshot was kept either: only the test's own objects are alive.
  EXPECT_EQ(g_live.load(), 0);
}

TEST_F(LastValueSync, EachNewSubscriptionGetsItsOwnReplayAndOlderOnesGetNothingMore) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  tags first;
  tags second;
  auto s1 =
      must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
        first.push_back(tag(e.subtype(), e.safe().value));
      }));
  auto s2 =
      must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
        second.push_back(tag(e.subtype(), e.safe().value));
      }));
  EXPECT_EQ(first, (tags{"UP:1"}));
  EXPECT_EQ(second, (tags{"UP:1"}));
}

TEST_F(LastValueSync, ResubscribeToAStatefulSubtypeReplaysNothing) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { seen.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(seen, (tags{"UP:1"}));
  // As implemented: only a new subscription is replayed to. Adding DOWN by resubscribe does
  // not deliver DOWN's last value; the next DOWN event does arrive.
  ASSERT_TRUE(s.resubscribe(type_of<tlv_state>(st::up, st::down)));
  EXPECT_EQ(seen, (tags{"UP:1"}));
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::down, lv_payload(3))), 1u);
  EXPECT_EQ(seen, (tags{"UP:1", "DOWN:3"}));
  // By id too: LOAD has no value, so nothing at subscribe; UP and DOWN added later by
  // lookup_resubscribe are not replayed either.
  tags by_id;
  auto t = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::load),
      [&](sync_event<tlv_state>& e) { by_id.push_back(tag(e.subtype(), e.safe().value)); },
      {.id = herald::make_id("lv", "by-id")}));
  ASSERT_TRUE(list.lookup_resubscribe(herald::make_id("lv", "by-id"), type_of<tlv_state>()));
  EXPECT_TRUE(by_id.empty());
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(4))), 2u);
  EXPECT_EQ(by_id, (tags{"UP:4"}));
}

TEST_F(LastValueSync, ResumeReplaysNothingPublishedWhilePaused) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { seen.push_back(tag(e.subtype(), e.safe().value)); }));
  ASSERT_TRUE(s.pause());
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(1))), 0u);
  ASSERT_TRUE(s.resume());
  EXPECT_TRUE(seen.empty());
  // It still became the last value for new subscriptions.
  tags late;
  auto t = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { late.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(late, (tags{"UP:1"}));
}

TEST_F(LastValueSync, APublishCountsTheHandlersThatRanAndTheReplayIsNotCounted) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(1))), 0u);
  int calls = 0;
  auto s = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(),
                                               [&](sync_event<tlv_state>&) { ++calls; }));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(2))), 1u);
  EXPECT_EQ(calls, 2);
}

TEST_F(LastValueSync, AThrowingReplayHandlerIsReportedAndTheSubscriptionStands) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  int reported = 0;
  b.set_error_hook([&](const herald::handler_error& e) {
    ++reported;
    EXPECT_EQ(e.what, "replay boom");
    EXPECT_EQ(e.type, type_of<tlv_state>(st::down));
  });
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(2)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    seen.push_back(tag(e.subtype(), e.safe().value));
    if (e.subtype() == st::down) {
      throw std::runtime_error("replay boom");
    }
  }));
  EXPECT_EQ(seen, (tags{"UP:2", "DOWN:1"}));
  EXPECT_EQ(reported, 1);
  EXPECT_EQ(s.exceptions(), 1u);
  EXPECT_TRUE(s.is_active());
}

// ---- Async ------------------------------------------------------------------------------------

TEST_F(LastValueAsync, ReplayIsQueuedFirstWithTheOriginalSequenceAndTime) {
  async_log witness_log;
  async_log late_log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  // A witness subscribed from the start sees the original sequence numbers and times.
  auto w = must(list.subscribe_async<tlv_state>(type_of<tlv_state>(), logging(witness_log)));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(2)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(3)));
  const auto original = witness_log.wait_for_count(3);
  ASSERT_EQ(original.size(), 3u);

  auto late = must(list.subscribe_async<tlv_state>(type_of<tlv_state>(), logging(late_log)));
  // Queued before subscribe returned: UP and DOWN (LOAD has no value).
  EXPECT_EQ(late.stats().published, 2u);
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(4))), 2u);
  const auto got = late_log.wait_for_count(3);
  ASSERT_EQ(tags_of(got), (tags{"UP:2", "DOWN:3", "UP:4"}));
  EXPECT_EQ(got[0].sequence, original[1].sequence);
  EXPECT_EQ(got[0].when, original[1].when);
  EXPECT_EQ(got[1].sequence, original[2].sequence);
  EXPECT_EQ(got[1].when, original[2].when);
  EXPECT_GT(got[2].sequence, original[2].sequence);
  // Per subscription the replay takes the first numbers: no gap.
  EXPECT_EQ(got[0].sub_sequence, 1u);
  EXPECT_EQ(got[1].sub_sequence, 2u);
  EXPECT_EQ(got[2].sub_sequence, 3u);
  b.shutdown();
  const auto stats = late.stats();
  EXPECT_EQ(stats.published, 3u);
  EXPECT_EQ(stats.delivered, 3u);
}

TEST_F(LastValueAsync, OnlySubscribedStatefulSubtypesAreReplayed) {
  async_log log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  ASSERT_TRUE(list.publish<tlv_state>(st::load, lv_payload(3)));
  auto s =
      must(list.subscribe_async<tlv_state>(type_of<tlv_state>(st::down, st::load), logging(log)));
  async_log partial_log;
  ASSERT_TRUE(list.publish<tlv_partial>(pt::config, lv_payload(4)));
  ASSERT_TRUE(list.publish<tlv_partial>(pt::alert, lv_payload(5)));
  auto p = must(list.subscribe_async<tlv_partial>(
      type_of<tlv_partial>(), [&](async_event<tlv_partial>& e) { partial_log.add(e); }));
  b.shutdown();  // drains
  EXPECT_EQ(log.tag_list(), (tags{"DOWN:2", "LOAD:3"}));
  EXPECT_EQ(partial_log.tag_list(), (tags{"CONFIG:4"}));
}

// ---- Queue ------------------------------------------------------------------------------------

TEST_F(LastValueQueue, ReplayIsQueuedFirstWithTheOriginalSequenceAndTime) {
  async_log witness_log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  auto w = must(list.subscribe_async<tlv_state>(type_of<tlv_state>(), logging(witness_log)));
  ASSERT_TRUE(list.publish<tlv_state>(st::load, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(2)));
  ASSERT_TRUE(list.publish<tlv_state>(st::load, lv_payload(3)));
  const auto original = witness_log.wait_for_count(3);
  ASSERT_EQ(original.size(), 3u);

  event_queue<tlv_state> q;
  auto s = must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(st::up, st::load), q));
  EXPECT_EQ(q.size_approx(), 2u) << "the replay is queued before subscribe returns";
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::load, lv_payload(4))), 2u);
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::down, lv_payload(5))), 1u);
  const auto got = drain(q);
  ASSERT_EQ(tags_of(got), (tags{"UP:2", "LOAD:3", "LOAD:4"}));
  EXPECT_EQ(got[0].sequence, original[1].sequence);
  EXPECT_EQ(got[0].when, original[1].when);
  EXPECT_EQ(got[1].sequence, original[2].sequence);
  EXPECT_EQ(got[1].when, original[2].when);
  EXPECT_EQ(got[0].sub_sequence, 1u);
  EXPECT_EQ(got[2].sub_sequence, 3u);
  EXPECT_EQ(q.delivered(), 3u);
}

TEST_F(LastValueQueue, NotifiesTheConsumerOfTheReplay) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  int notified = 0;
  event_queue<tlv_state> q;
  auto s = must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(), q,
                                                herald::queue_notify::call([&] { ++notified; })));
  EXPECT_EQ(notified, 1);
  EXPECT_EQ(tags_of(drain(q)), (tags{"UP:1"}));
}

// ---- Lists ------------------------------------------------------------------------------------

TEST_F(LastValueLists, EachListKeepsItsOwnLastValues) {
  herald::bus b({.threads = 1});
  sub_list& global = b.global();
  sub_list server1(b);
  sub_list server2(b);
  ASSERT_TRUE(global.publish<tlv_state>(st::up, lv_payload(10)));
  ASSERT_TRUE(global.publish<tlv_state>(st::down, lv_payload(11)));
  ASSERT_TRUE(server1.publish<tlv_state>(st::up, lv_payload(20)));

  auto watch = [](sub_list& l, tags& out) {
    return must(l.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&out](sync_event<tlv_state>& e) {
      out.push_back(tag(e.subtype(), e.safe().value));
    }));
  };
  tags on_global;
  tags on_server1;
  tags on_server2;
  auto g = watch(global, on_global);
  auto s1 = watch(server1, on_server1);
  auto s2 = watch(server2, on_server2);
  EXPECT_EQ(on_global, (tags{"UP:10", "DOWN:11"}));
  EXPECT_EQ(on_server1, (tags{"UP:20"}));
  EXPECT_TRUE(on_server2.empty());

  // Destroying one list drops its values only.
  server1.destroy();
  tags later_global;
  auto g2 = watch(global, later_global);
  EXPECT_EQ(later_global, (tags{"UP:10", "DOWN:11"}));
}

TEST_F(LastValueLists, DestroyedListDropsItsLastValuesReportsListDestroyedAndRefusesSubscribes) {
  async_log log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  EXPECT_EQ(g_live.load(), 2) << "one snapshot per stateful subtype";
  list.destroy();
  EXPECT_EQ(g_live.load(), 0) << "destroy() did not drop the last values";

  auto r = list.publish<tlv_state>(st::up, lv_payload(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::list_destroyed);
  EXPECT_EQ(g_live.load(), 0) << "a publish to a destroyed list kept a value";

  int calls = 0;
  auto s = list.subscribe_sync<tlv_state>(type_of<tlv_state>(),
                                          [&](sync_event<tlv_state>&) { ++calls; });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), errc::list_destroyed);
  auto a = list.subscribe_async<tlv_state>(type_of<tlv_state>(), logging(log));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error(), errc::list_destroyed);
  event_queue<tlv_state> q;
  auto qs = list.subscribe_queue<tlv_state>(type_of<tlv_state>(), q);
  ASSERT_FALSE(qs);
  EXPECT_EQ(qs.error(), errc::list_destroyed);
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(q.pop().has_value());
  b.shutdown();
  EXPECT_TRUE(log.snapshot().empty());
}

TEST_F(LastValueLists, ValuesStillQueuedOutliveTheirListAndAreFreedAfterDelivery) {
  herald::bus b({.threads = 1});
  event_queue<tlv_state> q;
  {
    sub_list list(b);
    ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
    auto s = must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(), q));
  }  // the list is gone: its last value stays alive in the queue only
  EXPECT_EQ(g_live.load(), 1);
  bool ended = false;
  EXPECT_EQ(tags_of(drain(q, &ended)), (tags{"UP:1"}));
  EXPECT_TRUE(ended);
  EXPECT_EQ(g_live.load(), 0);
}

TEST_F(LastValueLists, BusShutdownDropsTheLastValuesOfEveryList) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(b.global().publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_partial>(pt::metric, lv_payload(2)));
  EXPECT_EQ(g_live.load(), 2);
  b.shutdown();
  EXPECT_EQ(g_live.load(), 0) << "shutdown() did not drop the last values";
  auto r = b.global().publish<tlv_state>(st::up, lv_payload(3));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::shutting_down);
  auto r2 = list.publish<tlv_partial>(pt::metric, lv_payload(4));
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error(), errc::shutting_down);
  int calls = 0;
  auto s = list.subscribe_sync<tlv_partial>(type_of<tlv_partial>(),
                                            [&](sync_event<tlv_partial>&) { ++calls; });
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), errc::shutting_down);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(g_live.load(), 0);
}

// ---- Failure ----------------------------------------------------------------------------------

TEST_F(LastValueFailure, StatefulPublishOutOfMemoryReachesNobodyAndKeepsTheOldValue) {
  async_log log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  tags sync_seen;
  auto s = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { sync_seen.push_back(tag(e.subtype(), e.safe().value)); }));
  auto a = must(list.subscribe_async<tlv_state>(type_of<tlv_state>(st::up), logging(log)));
  event_queue<tlv_state> q;
  auto qs = must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(st::up), q));

  herald::detail::inject_allocation_failures(1);
  auto r = list.publish<tlv_state>(st::up, lv_payload(2));
  herald::detail::inject_allocation_failures(0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::no_memory);
  // Nobody got it, the sync subscriber included (unlike a non-stateful publish, whose sync
  // subscribers run before the snapshot is attempted).
  EXPECT_EQ(sync_seen, (tags{"UP:1"}));
  EXPECT_EQ(a.stats().published, 1u);
  EXPECT_EQ(q.size_approx(), 1u);

  // The old value is what a new subscriber sees.
  tags late;
  auto t = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { late.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(late, (tags{"UP:1"}));

  // Not sticky: the next publish reaches everybody and replaces the value.
  EXPECT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(3))), 4u);
  EXPECT_EQ(sync_seen, (tags{"UP:1", "UP:3"}));
  EXPECT_EQ(late, (tags{"UP:1", "UP:3"}));
  EXPECT_EQ(tags_of(log.wait_for_count(2)), (tags{"UP:1", "UP:3"}));
  EXPECT_EQ(tags_of(drain(q)), (tags{"UP:1", "UP:3"}));
  tags latest;
  auto u = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { latest.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(latest, (tags{"UP:3"}));
}

TEST_F(LastValueFailure, StatefulPublishWhoseCopyThrowsReachesNobodyAndKeepsTheOldValue) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(1)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    seen.push_back(tag(e.subtype(), e.safe().value));
  }));
  g_poison.store(2);
  auto r = list.publish<tlv_state>(st::down, lv_payload(2));
  g_poison.store(-1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::no_memory);
  EXPECT_EQ(seen, (tags{"DOWN:1"}));
  tags late;
  auto t = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    late.push_back(tag(e.subtype(), e.safe().value));
  }));
  EXPECT_EQ(late, (tags{"DOWN:1"}));
}

// A sync replay calls the handler with the stored snapshot itself: it makes no copy, so an
// armed snapshot failure is not consumed by it.
TEST_F(LastValueFailure, SyncReplayMakesNoSnapshot) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  herald::detail::inject_allocation_failures(1);
  tags seen;
  auto s = list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    seen.push_back(tag(e.subtype(), e.safe().value));
  });
  ASSERT_TRUE(s);
  EXPECT_EQ(seen, (tags{"UP:1"}));
  // Still armed: the next snapshot fails.
  auto r = list.publish<tlv_state>(st::up, lv_payload(2));
  herald::detail::inject_allocation_failures(0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::no_memory);
  EXPECT_EQ(seen, (tags{"UP:1"}));
}

TEST_F(LastValueFailure, AsyncReplayOutOfMemoryFailsTheSubscribeAndTheHandlerNeverRuns) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  herald::detail::inject_allocation_failures(1);
  auto s = list.subscribe_async<tlv_state>(
      type_of<tlv_state>(), [&calls, probe](async_event<tlv_state>&) { calls.fetch_add(1); });
  herald::detail::inject_allocation_failures(0);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), errc::no_memory);
  EXPECT_EQ(list.size_approx(), 0u);
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; })) << "handler not destroyed";
  EXPECT_EQ(calls.load(), 0);
  // Not sticky.
  async_log log;
  auto t = must(list.subscribe_async<tlv_state>(type_of<tlv_state>(), logging(log)));
  EXPECT_EQ(tags_of(log.wait_for_count(1)), (tags{"UP:1"}));
  b.shutdown();
}

// Two stateful subtypes to replay; the first replay is queued, the second cannot be made (its
// copy throws). subscribe reports no_memory: the handler of the subscription that failed
// should then never run.
TEST_F(LastValueFailure, AsyncReplayFailingHalfwayFailsTheSubscribeAndTheHandlerNeverRuns) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  std::atomic<int> calls{0};
  life_probe probe;
  auto destroyed = probe.destroyed;
  g_poison.store(2);
  auto s = list.subscribe_async<tlv_state>(
      type_of<tlv_state>(), [&calls, probe](async_event<tlv_state>&) { calls.fetch_add(1); });
  g_poison.store(-1);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), errc::no_memory);
  EXPECT_EQ(list.size_approx(), 0u);
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; })) << "handler not destroyed";
  EXPECT_EQ(calls.load(), 0) << "the handler of a subscribe that reported no_memory ran";
}

TEST_F(LastValueFailure, QueueReplayOutOfMemoryFailsTheSubscribeAndLeavesTheQueueUnbound) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  event_queue<tlv_state> q;
  herald::detail::inject_allocation_failures(1);
  auto s = list.subscribe_queue<tlv_state>(type_of<tlv_state>(), q);
  herald::detail::inject_allocation_failures(0);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), errc::no_memory);
  EXPECT_FALSE(q.is_open());
  EXPECT_FALSE(q.pop().has_value());
  EXPECT_EQ(list.size_approx(), 0u);
  // The queue can be subscribed again.
  auto t = must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(), q));
  EXPECT_EQ(tags_of(drain(q)), (tags{"UP:1"}));
  // (LeakSanitizer, in the asan build, checks that the failed subscription was freed.)
}

// ---- Reentrancy -------------------------------------------------------------------------------

TEST_F(LastValueReentrancy, HandlerPublishingAStatefulEventToItsOwnListDoesNotDeadlock) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  tags seen;
  auto s = must(
      list.subscribe_sync<tlv_state>(type_of<tlv_state>(st::up), [&](sync_event<tlv_state>& e) {
        seen.push_back(tag(e.subtype(), e.safe().value));
        if (e.safe().value < 4) {
          (void)list.publish<tlv_state>(st::up, lv_payload(e.safe().value + 1));
        }
      }));
  ASSERT_EQ(must_publish(list.publish<tlv_state>(st::up, lv_payload(1))), 1u);
  EXPECT_EQ(seen, (tags{"UP:1", "UP:2", "UP:3", "UP:4"}));
  // The innermost publish stored last: that is the last value.
  tags late;
  auto t = must(list.subscribe_sync<tlv_state>(
      type_of<tlv_state>(st::up),
      [&](sync_event<tlv_state>& e) { late.push_back(tag(e.subtype(), e.safe().value)); }));
  EXPECT_EQ(late, (tags{"UP:4"}));
}

TEST_F(LastValueReentrancy, AsyncHandlerPublishingStatefulEventsToItsOwnListDoesNotDeadlock) {
  async_log log;
  herald::bus b({.threads = 2});
  sub_list list(b);
  std::atomic<int> calls{0};
  auto s = must(
      list.subscribe_async<tlv_state>(type_of<tlv_state>(st::up), [&](async_event<tlv_state>& e) {
        calls.fetch_add(1);
        if (e.safe().value < 50) {
          (void)list.publish<tlv_state>(st::up, lv_payload(e.safe().value + 1));
        }
      }));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  // Meanwhile, this thread keeps subscribing (each replay is one of the values in flight).
  std::vector<subscription> subs;
  for (int i = 0; i < 20; ++i) {
    subs.push_back(must(list.subscribe_async<tlv_state>(type_of<tlv_state>(st::up), logging(log))));
  }
  ASSERT_TRUE(wait_for([&] { return calls.load() == 50; }));
  b.shutdown();
  EXPECT_EQ(calls.load(), 50);
}

TEST_F(LastValueReentrancy, SyncHandlerSubscribingDuringAStatefulPublishGetsThatEventOnce) {
  async_log log;
  herald::bus b({.threads = 1});
  sub_list list(b);
  tags nested_sync;
  event_queue<tlv_state> q;
  std::vector<subscription> nested;
  auto s =
      must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(st::up), [&](sync_event<tlv_state>&) {
        if (!nested.empty()) {
          return;
        }
        nested.push_back(must(list.subscribe_sync<tlv_state>(
            type_of<tlv_state>(st::up), [&](sync_event<tlv_state>& e) {
              nested_sync.push_back(tag(e.subtype(), e.safe().value));
            })));
        nested.push_back(
            must(list.subscribe_async<tlv_state>(type_of<tlv_state>(st::up), logging(log))));
        nested.push_back(must(list.subscribe_queue<tlv_state>(type_of<tlv_state>(st::up), q)));
      }));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  // The publish stored its event before calling the handlers: the nested subscriptions get it
  // by replay, and not a second time from the publish (which kept its own receivers).
  EXPECT_EQ(nested_sync, (tags{"UP:1"}));
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(2)));
  EXPECT_EQ(nested_sync, (tags{"UP:1", "UP:2"}));
  EXPECT_EQ(tags_of(drain(q)), (tags{"UP:1", "UP:2"}));
  EXPECT_EQ(tags_of(log.wait_for_count(2)), (tags{"UP:1", "UP:2"}));
  b.shutdown();
  EXPECT_EQ(log.snapshot().size(), 2u);
}

TEST_F(LastValueReentrancy, ReplayHandlerSubscribingOnTheSameListDoesNotDeadlock) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  tags outer;
  tags inner;
  subscription inner_sub;
  auto s = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    outer.push_back(tag(e.subtype(), e.safe().value));
    if (!inner_sub) {
      inner_sub =
          must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& i) {
            inner.push_back(tag(i.subtype(), i.safe().value));
          }));
    }
  }));
  EXPECT_EQ(outer, (tags{"UP:1"}));
  EXPECT_EQ(inner, (tags{"UP:1"}));
}

TEST_F(LastValueReentrancy, ReplayHandlerUnsubscribingItselfStopsTheRestOfTheReplay) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  life_probe probe;
  auto destroyed = probe.destroyed;
  tags seen;
  auto s = list.subscribe_sync<tlv_state>(type_of<tlv_state>(),
                                          [&seen, probe](sync_event<tlv_state>& e) {
                                            seen.push_back(tag(e.subtype(), e.safe().value));
                                            e.self().unsubscribe();
                                          });
  ASSERT_TRUE(s) << "the subscription was made; it ended during its replay";
  EXPECT_FALSE(s->is_active());
  EXPECT_EQ(seen, (tags{"UP:1"}));
  b.reclaim();
  EXPECT_EQ(destroyed->load(), 1);
}

// A replay handler that publishes a newer event of the very subtype being replayed: the event it
// is handling (the old last value) must stay valid until it returns.
TEST_F(LastValueReentrancy, ReplayHandlerPublishingTheSameSubtypeKeepsItsEventValid) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  tags seen;
  auto s = must(
      list.subscribe_sync<tlv_state>(type_of<tlv_state>(st::up), [&](sync_event<tlv_state>& e) {
        seen.push_back(tag(e.subtype(), e.safe().value));
        if (e.safe().value == 1) {
          (void)list.publish<tlv_state>(st::up, lv_payload(5));
          // Still the replayed event.
          seen.push_back("after:" + std::to_string(e.safe().value));
        }
      }));
  EXPECT_EQ(seen, (tags{"UP:1", "UP:5", "after:1"}));
}

// A replay handler that publishes a newer event of another subtype it subscribed to: it gets
// that event live (it is subscribed already) and must not get it a second time as the "replay"
// of that subtype afterwards.
TEST_F(LastValueReentrancy, ReplayHandlerPublishingAnotherSubtypeGetsThatEventOnce) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  tags seen;
  auto s = must(list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    seen.push_back(tag(e.subtype(), e.safe().value));
    if (e.subtype() == st::up && e.safe().value == 1) {
      (void)list.publish<tlv_state>(st::down, lv_payload(7));  // no deadlock
    }
  }));
  // Either DOWN:2 (the replay) then DOWN:7, or DOWN:7 alone; never DOWN:7 twice.
  EXPECT_TRUE(seen == (tags{"UP:1", "DOWN:7"}) || seen == (tags{"UP:1", "DOWN:2", "DOWN:7"}))
      << "got: " << ::testing::PrintToString(seen);
}

// A replay handler that destroys its own list (allowed from a handler of the list) while more
// subtypes remain to be replayed: the replay ends, and the event being handled stays valid until
// the handler returns.
TEST_F(LastValueReentrancy, ReplayHandlerDestroyingItsListEndsTheReplay) {
  herald::bus b({.threads = 1});
  sub_list list(b);
  ASSERT_TRUE(list.publish<tlv_state>(st::up, lv_payload(1)));
  ASSERT_TRUE(list.publish<tlv_state>(st::down, lv_payload(2)));
  ASSERT_TRUE(list.publish<tlv_state>(st::load, lv_payload(3)));
  tags seen;
  auto s = list.subscribe_sync<tlv_state>(type_of<tlv_state>(), [&](sync_event<tlv_state>& e) {
    list.destroy();
    seen.push_back(tag(e.subtype(), e.safe().value));
  });
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->is_active());
  EXPECT_EQ(seen, (tags{"UP:1"}));
  EXPECT_TRUE(list.is_destroyed());
  b.reclaim();
  EXPECT_EQ(g_live.load(), 0);
}

// Publishers keep publishing increasing values while this thread subscribes (sync, async, queue
// in turn) and unsubscribes: each subscription sees, per subtype, the last value at its subscribe
// (or, if there was none, the first value published), then every later value, each once, in
// order, up to at least the last value published before it was ended (the publishes of a
// stateful subtype are serialised with subscribes, which replay under the same lock). A small
// version of tests/stress/last_value_stress_test.cpp, for the unit runs under ThreadSanitizer.
TEST_F(LastValueReentrancy, PublishersRunningDuringSubscribeNeverInterleaveWithTheReplay) {
  constexpr std::size_t publishers = 2;
  constexpr int per_publisher = 3000;
  constexpr int subscriptions = 60;
  constexpr std::size_t alive = 4;  // subscriptions active at once
  herald::bus b({.threads = 2});
  sub_list list(b);
  std::array<std::atomic<int>, publishers> started{};  // values whose publish began
  std::array<std::atomic<int>, publishers> done{};     // values whose publish returned
  std::atomic<int> made{0};                            // subscriptions made
  std::vector<std::thread> threads;
  for (std::size_t p = 0; p < publishers; ++p) {
    threads.emplace_back([&, p] {
      const auto s = static_cast<st>(p);
      for (int v = 1; v <= per_publisher; ++v) {
        // Keep pace with the subscriber (it waits for us too): subscribes and publishes overlap.
        while (made.load() < v * subscriptions / per_publisher - 1) {
          std::this_thread::yield();
        }
        started[p].store(v);
        (void)list.publish<tlv_state>(s, lv_payload(v));
        done[p].store(v);
      }
    });
  }

  // Per subscription and subtype: the values received, in order. Sync handlers run in the
  // publishers' threads, hence the mutex.
  struct record {
    std::mutex m;
    std::array<std::vector<int>, publishers> values;  // guarded by m
    void add(st s, int v) {
      std::lock_guard lock(m);
      values[static_cast<std::size_t>(s)].push_back(v);
    }
  };
  struct subscribed {
    std::unique_ptr<record> rec = std::make_unique<record>();
    std::array<int, publishers> done_before{};    // returned before subscribe was called
    std::array<int, publishers> started_after{};  // began before subscribe returned
    std::array<int, publishers> done_at_end{};    // returned before unsubscribe was called
    subscription handle;
    std::unique_ptr<event_queue<tlv_state>> q;
  };
  std::vector<subscribed> subs(subscriptions);
  auto end_sub = [&](subscribed& s) {
    for (std::size_t p = 0; p < publishers; ++p) {
      s.done_at_end[p] = done[p].load();
    }
    s.handle.unsubscribe();
  };
  const auto mask = type_of<tlv_state>(st::up, st::down);
  for (int i = 0; i < subscriptions; ++i) {
    // Spread the subscriptions over the run: wait for the publishers' progress.
    const int mark = i * per_publisher / subscriptions;
    while (done[0].load() < mark && done[1].load() < mark) {
      std::this_thread::yield();
    }
    subscribed& s = subs[static_cast<std::size_t>(i)];
    for (std::size_t p = 0; p < publishers; ++p) {
      s.done_before[p] = done[p].load();
    }
    record* rec = s.rec.get();
    switch (i % 3) {
      case 0:
        s.handle = must(list.subscribe_sync<tlv_state>(
            mask, [rec](sync_event<tlv_state>& e) { rec->add(e.subtype(), e.safe().value); }));
        break;
      case 1:
        s.handle = must(list.subscribe_async<tlv_state>(
            mask, [rec](async_event<tlv_state>& e) { rec->add(e.subtype(), e.safe().value); }));
        break;
      default:
        s.q = std::make_unique<event_queue<tlv_state>>();
        s.handle = must(list.subscribe_queue<tlv_state>(mask, *s.q));
        break;
    }
    for (std::size_t p = 0; p < publishers; ++p) {
      s.started_after[p] = started[p].load();
    }
    made.store(i + 1);
    if (static_cast<std::size_t>(i) >= alive) {
      end_sub(subs[static_cast<std::size_t>(i) - alive]);
    }
  }
  for (auto& t : threads) {
    t.join();
  }
  for (std::size_t i = subs.size() - alive; i < subs.size(); ++i) {
    end_sub(subs[i]);
  }
  b.shutdown();  // drains the async subscriptions
  for (auto& s : subs) {
    if (s.q) {
      while (auto item = s.q->pop()) {
        if (!item->is_end()) {
          s.rec->add(item->subtype(), item->safe().value);
        }
      }
    }
  }
  for (std::size_t i = 0; i < subs.size(); ++i) {
    auto& s = subs[i];
    std::lock_guard lock(s.rec->m);
    for (std::size_t p = 0; p < publishers; ++p) {
      const auto& v = s.rec->values[p];
      const std::string where =
          "subscription " + std::to_string(i) + ", subtype " + std::to_string(p);
      if (v.empty()) {
        // Nothing published before the subscribe (no replay) and nothing returned before its
        // end.
        EXPECT_EQ(s.done_at_end[p], 0) << where << ": received nothing";
        continue;
      }
      // The first is the last value at subscribe time (or the first published after).
      EXPECT_GE(v.front(), std::max(s.done_before[p], 1)) << where << ": replay too old";
      EXPECT_LE(v.front(), std::max(s.started_after[p], 1)) << where << ": replay too new";
      for (std::size_t k = 1; k < v.size(); ++k) {
        ASSERT_EQ(v[k], v[k - 1] + 1) << where << ": gap, duplicate or reorder at " << k;
      }
      EXPECT_GE(v.back(), s.done_at_end[p]) << where << ": missed events before its end";
    }
  }
}

}  // namespace
