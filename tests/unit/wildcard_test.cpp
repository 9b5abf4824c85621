// Unit tests of wildcard subscriptions (herald/bus.hpp: subscribe_wildcard_sync/_async/_queue,
// event_view, wildcard_event, wildcard_queue; src/core/sub_list.cpp: publish_rest,
// publish_unindexed, build_wildcard, replay_last_values; docs/wildcard.md).
//
// What the tests show (the contract as documented):
//   - A wildcard subscription receives every event published to its list, of every family, in
//     every mode: also families nobody else subscribes to in that list (the publish then takes
//     the "unindexed" path), families whose last subscriber left, and lists that hold wildcard
//     subscriptions only.
//   - The view: type, family, family_name(), type_name(), safe_as<F>() (nullptr for another
//     family), safe_data(), encode() through the family's codec (no_codec without one; an
//     error, not a crash, when the codec throws). Sync deliveries carry sequence() == 0,
//     sub_sequence() == 0 and when() == now, and the publisher's own object; async and queue
//     deliveries carry the list's sequence, the subscription's sub_sequence and the publish time.
//   - Sync wildcard handlers run after the family's own sync handlers, whatever the order of
//     subscription; among themselves, in subscription order.
//   - Pause/resume, ids and lookups, unsubscribe from inside the handler, handler exceptions,
//     END with its reason (unsubscribe, list destroyed, shutdown) work as for family
//     subscriptions; resubscribe is refused (family_mismatch).
//   - Last values: a new wildcard subscription receives the last value of every stateful subtype
//     of every family of its list, family by family (by family id), each in subtype order,
//     before any newer event (sync: inside subscribe).
//   - Backpressure applies to wildcard async and queue subscriptions.
//   - One snapshot per publish, shared by the family's async/queue subscribers and the wildcard
//     ones; none when only sync subscriptions receive the event.
//   - A destroyed list reports list_destroyed (shutting_down after the bus's shutdown).
//
// Waiting: tests wait for conditions (wait_for below polls with a generous deadline and fails
// the test instead of hanging); nothing asserts on time.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"
#include "herald/scheduler.hpp"

#include "test_support.hpp"

namespace {

using herald_test::wait_for;
using herald_test::gate;

using herald::end_reason;
using herald::errc;
using herald::type_of;
using clock_type = std::chrono::steady_clock;

// Payload copies made and destroyed, to count snapshots.
struct copy_counter {
  static inline std::atomic<int> copies{0};
  static inline std::atomic<int> destroyed{0};
  copy_counter() = default;
  copy_counter(const copy_counter&) noexcept { copies.fetch_add(1); }
  copy_counter& operator=(const copy_counter&) = default;
  ~copy_counter() { destroyed.fetch_add(1); }
};

// ---- Families (declared in this order at start-up: their ids increase in this order) --------

// An ordinary family with a codec and an unsafe part.
struct tw_server {
  static constexpr std::string_view family_name = "TWSERVER";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  struct safe_part {
    int id = 0;
    copy_counter counter;
  };
  struct unsafe_part {
    int* live = nullptr;
  };
  struct codec {
    static std::string encode(const safe_part& p) { return "server " + std::to_string(p.id); }
  };
};

// No codec.
struct tw_peer {
  static constexpr std::string_view family_name = "TWPEER";
  enum class subtype : std::uint8_t { identified, lost };
  static constexpr std::array<std::string_view, 2> subtype_names{"IDENTIFIED", "LOST"};
  struct safe_part {
    int id = 0;
    std::string name = "peer";
    copy_counter counter;
  };
};

// A family the tests publish without any family subscription (the "unindexed" path).
struct tw_tick {
  static constexpr std::string_view family_name = "TWTICK";
  enum class subtype : std::uint8_t { tick };
  static constexpr std::array<std::string_view, 1> subtype_names{"TICK"};
  struct safe_part {
    int id = 0;
    copy_counter counter;
  };
  struct codec {
    static std::string encode(const safe_part& p) { return "tick " + std::to_string(p.id); }
  };
};

// A codec that throws.
struct tw_faulty {
  static constexpr std::string_view family_name = "TWFAULTY";
  enum class subtype : std::uint8_t { oops };
  static constexpr std::array<std::string_view, 1> subtype_names{"OOPS"};
  struct safe_part {
    int id = 0;
  };
  struct codec {
    static std::string encode(const safe_part&) { throw std::runtime_error("codec failed"); }
  };
};

// Every subtype stateful.
struct tw_state {
  static constexpr std::string_view family_name = "TWSTATE";
  enum class subtype : std::uint8_t { a, b, c };
  static constexpr std::array<std::string_view, 3> subtype_names{"A", "B", "C"};
  static constexpr bool stateful = true;
  struct safe_part {
    int id = 0;
  };
  struct codec {
    static std::string encode(const safe_part& p) { return "state " + std::to_string(p.id); }
  };
};

// Some subtypes stateful (ON, PING), OFF not.
struct tw_partial {
  static constexpr std::string_view family_name = "TWPARTIAL";
  enum class subtype : std::uint8_t { on, off, ping };
  static constexpr std::array<std::string_view, 3> subtype_names{"ON", "OFF", "PING"};
  static constexpr std::array<subtype, 2> stateful_subtypes{subtype::on, subtype::ping};
  struct safe_part {
    int id = 0;
  };
};

const std::array<herald::family_id, 6> family_ids{
    herald::family_id_of<tw_server>(), herald::family_id_of<tw_peer>(),
    herald::family_id_of<tw_tick>(),   herald::family_id_of<tw_faulty>(),
    herald::family_id_of<tw_state>(),  herald::family_id_of<tw_partial>()};

using srv = tw_server::subtype;
using peer = tw_peer::subtype;
using tick = tw_tick::subtype;
using stt = tw_state::subtype;
using part = tw_partial::subtype;

tw_server::safe_part server(int id) { return {id, {}}; }
tw_peer::safe_part peer_payload(int id) { return {id, "peer", {}}; }
tw_tick::safe_part tick_payload(int id) { return {id, {}}; }

// ---- Helpers ----------------------------------------------------------------------------------

// The error of `r`, or errc{} when it holds a value (error() on a value would abort).
template <class R>
errc error_of(const R& r) {
  return r ? errc{} : r.error();
}

// Counts its own destruction (captured by value in handlers).
struct life_probe {
  std::shared_ptr<std::atomic<int>> destroyed = std::make_shared<std::atomic<int>>(0);
  bool armed = true;
  life_probe() = default;
  life_probe(const life_probe& o) : destroyed(o.destroyed), armed(o.armed) {}
  life_probe(life_probe&& o) noexcept : destroyed(o.destroyed), armed(o.armed) { o.armed = false; }
  ~life_probe() {
    if (armed) {
      destroyed->fetch_add(1);
    }
  }
};

// What a wildcard subscriber saw of one event.
struct seen_event {
  herald::family_id family = 0;
  std::string family_name;
  std::string type_name;
  int id = -1;          // the payload's id, read through safe_as<F>() of the right family
  int typed_views = 0;  // how many of the families' safe_as<F>() gave a non-null pointer
  std::uint64_t sequence = 0;
  std::uint64_t sub_sequence = 0;
  std::string encoded;  // encode()'s string, or "error:<code>"
  bool has_codec = false;
};

template <class F>
void read_typed(const herald::event_view& v, seen_event& out) {
  if (const auto* p = v.safe_as<F>()) {
    ++out.typed_views;
    out.id = p->id;
    EXPECT_EQ(static_cast<const void*>(p), v.safe_data());
  }
}

seen_event describe(const herald::event_view& v) {
  seen_event s;
  s.family = v.family();
  EXPECT_EQ(v.type().family(), v.family());
  s.family_name = std::string(v.family_name());
  s.type_name = v.type_name();
  read_typed<tw_server>(v, s);
  read_typed<tw_peer>(v, s);
  read_typed<tw_tick>(v, s);
  read_typed<tw_faulty>(v, s);
  read_typed<tw_state>(v, s);
  read_typed<tw_partial>(v, s);
  s.sequence = v.sequence();
  s.sub_sequence = v.sub_sequence();
  s.has_codec = v.has_codec();
  auto encoded = v.encode();
  s.encoded = encoded ? *encoded : "error:" + std::string(herald::to_string(encoded.error()));
  return s;
}

// Events seen by a wildcard subscriber (any thread).
class recorder {
 public:
  void add(const herald::event_view& v) {
    seen_event s = describe(v);
    std::lock_guard lock(m_);
    events_.push_back(std::move(s));
  }
  std::vector<seen_event> events() {
    std::lock_guard lock(m_);
    return events_;
  }
  std::size_t size() {
    std::lock_guard lock(m_);
    return events_.size();
  }

 private:
  std::mutex m_;
  std::vector<seen_event> events_;
};

std::vector<std::string> type_names(const std::vector<seen_event>& v) {
  std::vector<std::string> out;
  for (const auto& e : v) {
    out.push_back(e.type_name);
  }
  return out;
}
std::vector<int> ids(const std::vector<seen_event>& v) {
  std::vector<int> out;
  for (const auto& e : v) {
    out.push_back(e.id);
  }
  return out;
}
std::vector<std::uint64_t> sequences(const std::vector<seen_event>& v) {
  std::vector<std::uint64_t> out;
  for (const auto& e : v) {
    out.push_back(e.sequence);
  }
  return out;
}
std::vector<std::uint64_t> sub_sequences(const std::vector<seen_event>& v) {
  std::vector<std::uint64_t> out;
  for (const auto& e : v) {
    out.push_back(e.sub_sequence);
  }
  return out;
}

// Pops every item of `q` (the test thread is its consumer): the events, and END's reason.
struct drained {
  std::vector<seen_event> events;
  int ends = 0;
  int after_end = 0;
  end_reason reason = end_reason::unsubscribed;
};
drained drain(herald::wildcard_queue& q) {
  drained d;
  while (auto item = q.pop()) {
    if (item->is_end()) {
      ++d.ends;
      d.reason = item->end_reason();
    } else {
      d.after_end += d.ends;
      d.events.push_back(describe(item->view()));
    }
  }
  return d;
}

// An async wildcard handler that records and hears END through on_end.
struct wild_handler {
  recorder* rec;
  std::shared_ptr<std::atomic<int>> ends = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::atomic<end_reason>> why =
      std::make_shared<std::atomic<end_reason>>(end_reason::unsubscribed);
  void operator()(herald::wildcard_event& e) { rec->add(e); }
  void on_end(end_reason r) {
    why->store(r);
    ends->fetch_add(1);
  }
};

// Holds the only worker of a one-thread bus until released, so that events stay queued.
class worker_blocker {
 public:
  explicit worker_blocker(herald::bus& b) : t_(b.workers().make_tasklet([this] { g_.wait(); })) {
    t_.wake();
  }
  void release() { g_.open(); }

 private:
  gate g_;
  herald::tasklet t_;
};

// ---- Every mode, every family -----------------------------------------------------------------

TEST(WildcardSubscription, EveryModeReceivesEveryFamilyIncludingOnesNobodyElseSubscribesTo) {
  ASSERT_LT(herald::family_id_of<tw_server>(), herald::family_id_of<tw_peer>());
  ASSERT_LT(herald::family_id_of<tw_peer>(), herald::family_id_of<tw_tick>());
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  // The only family subscription is to TWSERVER (the lowest id): TWPEER and TWTICK are beyond
  // the list's family index, so their publishes take the unindexed path.
  int family_calls = 0;
  auto f = list.subscribe_sync<tw_server>(type_of<tw_server>(),
                                          [&](herald::sync_event<tw_server>&) { ++family_calls; });
  recorder sync_rec;
  recorder async_rec;
  herald::wildcard_queue q;
  auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { sync_rec.add(e); });
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) { async_rec.add(e); });
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(f && ws && wa && wq);

  auto r1 = list.publish<tw_server>(srv::up, server(1));
  auto r2 = list.publish<tw_peer>(peer::identified, peer_payload(2));
  auto r3 = list.publish<tw_tick>(tick::tick, tick_payload(3));
  auto r4 = list.publish<tw_server>(srv::down, server(4));
  ASSERT_TRUE(r1 && r2 && r3 && r4);
  EXPECT_EQ(*r1, 4u);  // the family's handler and three wildcard subscriptions
  EXPECT_EQ(*r2, 3u);
  EXPECT_EQ(*r3, 3u);
  EXPECT_EQ(*r4, 4u);
  EXPECT_EQ(family_calls, 2);
  ASSERT_TRUE(wait_for([&] { return async_rec.size() == 4; }));
  const drained d = drain(q);
  EXPECT_EQ(d.ends, 0);

  // type_name() of a family's only subtype is the family's name (the whole family).
  const std::vector<std::string> names{"TWSERVER_UP", "TWPEER_IDENTIFIED", "TWTICK",
                                       "TWSERVER_DOWN"};
  for (const auto& got : {sync_rec.events(), async_rec.events(), d.events}) {
    EXPECT_EQ(type_names(got), names);
    EXPECT_EQ(ids(got), (std::vector<int>{1, 2, 3, 4}));
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(got[0].family_name, "TWSERVER");
    EXPECT_EQ(got[1].family_name, "TWPEER");
    EXPECT_EQ(got[2].family_name, "TWTICK");
    EXPECT_EQ(got[1].family, herald::family_id_of<tw_peer>());
    for (const auto& e : got) {
      EXPECT_EQ(e.typed_views, 1) << e.type_name;  // safe_as<F>() of the other families: null
    }
  }
  b.shutdown();
}

TEST(WildcardSubscription, AListWithOnlyWildcardSubscriptionsDeliversEveryFamilyInEveryMode) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  recorder sync_rec;
  recorder async_rec;
  herald::wildcard_queue q;
  auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { sync_rec.add(e); });
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) { async_rec.add(e); });
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wa && wq);
  EXPECT_EQ(list.size_approx(), 3u);

  ASSERT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(1)), 3u);
  ASSERT_EQ(*list.publish<tw_server>(srv::down, server(2)), 3u);
  ASSERT_EQ(*list.publish<tw_state>(stt::b, {3}), 3u);       // a stateful publish
  ASSERT_EQ(*list.publish<tw_partial>(part::off, {4}), 3u);  // a non-stateful subtype of it
  ASSERT_EQ(*list.publish<tw_peer>(peer::lost, peer_payload(5)), 3u);
  ASSERT_TRUE(wait_for([&] { return async_rec.size() == 5; }));
  const drained d = drain(q);

  const std::vector<std::string> names{"TWTICK", "TWSERVER_DOWN", "TWSTATE_B", "TWPARTIAL_OFF",
                                       "TWPEER_LOST"};
  for (const auto& got : {sync_rec.events(), async_rec.events(), d.events}) {
    EXPECT_EQ(type_names(got), names);
    EXPECT_EQ(ids(got), (std::vector<int>{1, 2, 3, 4, 5}));
  }
  EXPECT_EQ(sequences(async_rec.events()), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(sequences(d.events), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  b.shutdown();
}

TEST(WildcardSubscription, FamiliesWithoutSubscribersInsideTheIndexStillReachWildcards) {
  herald::bus b;
  herald::sub_list list(b);
  // A family subscription to TWTICK (a higher id) puts TWSERVER and TWPEER inside the index,
  // with no subscriber of their own.
  auto t = list.subscribe_sync<tw_tick>(type_of<tw_tick>(), [](herald::sync_event<tw_tick>&) {});
  // And a TWSERVER subscription that leaves again.
  auto gone = list.subscribe_sync<tw_server>(type_of<tw_server>(srv::up),
                                             [](herald::sync_event<tw_server>&) {});
  ASSERT_TRUE(t && gone);
  gone->unsubscribe();
  recorder rec;
  auto w = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { rec.add(e); });
  ASSERT_TRUE(w);
  EXPECT_EQ(*list.publish<tw_server>(srv::up, server(1)), 1u);
  EXPECT_EQ(*list.publish<tw_peer>(peer::lost, peer_payload(2)), 1u);
  EXPECT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(3)), 2u);
  EXPECT_EQ(ids(rec.events()), (std::vector<int>{1, 2, 3}));
  // Once the wildcard subscription left, the publishes reach nobody (or the family only).
  w->unsubscribe();
  EXPECT_EQ(*list.publish<tw_server>(srv::up, server(4)), 0u);
  EXPECT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(5)), 1u);
  EXPECT_EQ(rec.size(), 3u);
}

// has_subscribers() is the documented "anyone listening?" test that publishers use to skip
// building a payload (docs/events.md, docs/guide.md). A wildcard subscription listens to every
// type of its list, so it counts (paused too, like any subscription); otherwise such
// publishers would never feed a wildcard logger.
TEST(WildcardSubscription, HasSubscribersCountsWildcardSubscriptions) {
  herald::bus b;
  herald::sub_list list(b);
  EXPECT_FALSE(list.has_subscribers(type_of<tw_server>(srv::up)));
  auto w = list.subscribe_wildcard_sync([](herald::wildcard_event&) {});
  ASSERT_TRUE(w);
  EXPECT_TRUE(list.has_subscribers(type_of<tw_server>(srv::up)));
  EXPECT_TRUE(list.has_subscribers(type_of<tw_tick>()));
  ASSERT_TRUE(w->pause());
  EXPECT_TRUE(list.has_subscribers(type_of<tw_peer>(peer::lost)));
  w->unsubscribe();
  EXPECT_FALSE(list.has_subscribers(type_of<tw_server>(srv::up)));
}

// ---- The view ---------------------------------------------------------------------------------

TEST(WildcardView, SyncDeliveryShowsNamesTheTypedPayloadAndNoNumbers) {
  herald::bus b;
  herald::sub_list list(b);
  const tw_server::safe_part payload = server(7);
  int calls = 0;
  clock_type::time_point before;
  auto w = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) {
    ++calls;
    EXPECT_EQ(e.type(), type_of<tw_server>(srv::down));
    EXPECT_EQ(e.family(), herald::family_id_of<tw_server>());
    EXPECT_EQ(e.family_name(), "TWSERVER");
    EXPECT_EQ(e.type_name(), "TWSERVER_DOWN");
    const tw_server::safe_part* p = e.safe_as<tw_server>();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p, &payload);  // sync: the publisher's own object, no copy
    EXPECT_EQ(e.safe_data(), &payload);
    EXPECT_EQ(p->id, 7);
    EXPECT_EQ(e.safe_as<tw_peer>(), nullptr);
    EXPECT_EQ(e.safe_as<tw_tick>(), nullptr);
    EXPECT_EQ(e.sequence(), 0u);
    EXPECT_EQ(e.sub_sequence(), 0u);
    const auto when = e.when();
    EXPECT_GE(when, before);
    EXPECT_LE(when, clock_type::now());
  });
  ASSERT_TRUE(w);
  before = clock_type::now();
  copy_counter::copies = 0;
  ASSERT_TRUE(list.publish<tw_server>(srv::down, payload));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(copy_counter::copies.load(), 0);  // only sync receivers: no snapshot
}

TEST(WildcardView, AsyncAndQueueDeliveriesCarryTheListSequenceTheirSubSequenceAndTheTime) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  // Two publishes reach a family async subscription first: they take list numbers 1 and 2.
  std::atomic<int> family_calls{0};
  auto f = list.subscribe_async<tw_peer>(type_of<tw_peer>(),
                                         [&](herald::async_event<tw_peer>&) { ++family_calls; });
  ASSERT_TRUE(f);
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(0)));
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(0)));
  std::mutex m;
  std::vector<clock_type::time_point> async_when;
  std::vector<clock_type::time_point> queue_when;
  recorder rec;
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) {
    {
      std::lock_guard lock(m);
      async_when.push_back(e.when());
    }
    rec.add(e);
  });
  herald::wildcard_queue q;
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(wa && wq);
  const auto before = clock_type::now();
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  ASSERT_TRUE(list.publish<tw_peer>(peer::identified, peer_payload(2)));
  ASSERT_TRUE(list.publish<tw_tick>(tick::tick, tick_payload(3)));
  const auto after = clock_type::now();
  ASSERT_TRUE(wait_for([&] { return rec.size() == 3; }));
  std::vector<seen_event> popped;
  while (auto item = q.pop()) {
    ASSERT_FALSE(item->is_end());
    queue_when.push_back(item->view().when());
    popped.push_back(describe(item->view()));
  }
  for (const auto& got : {rec.events(), popped}) {
    EXPECT_EQ(ids(got), (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(sequences(got), (std::vector<std::uint64_t>{3, 4, 5}));
    EXPECT_EQ(sub_sequences(got), (std::vector<std::uint64_t>{1, 2, 3}));
  }
  std::lock_guard lock(m);
  for (const auto& when : {async_when, queue_when}) {
    ASSERT_EQ(when.size(), 3u);
    for (std::size_t i = 0; i < when.size(); ++i) {
      EXPECT_GE(when[i], before);
      EXPECT_LE(when[i], after);
      if (i > 0) {
        EXPECT_GE(when[i], when[i - 1]);
      }
    }
  }
  EXPECT_EQ(async_when, queue_when);  // one snapshot: the same publish time for both
}

TEST(WildcardView, EncodeUsesTheFamilysCodecReportsNoCodecAndSurvivesAThrowingCodec) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  recorder sync_rec;
  recorder async_rec;
  herald::wildcard_queue q;
  auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { sync_rec.add(e); });
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) { async_rec.add(e); });
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wa && wq);
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(7)));
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(8)));
  ASSERT_TRUE(list.publish<tw_faulty>(tw_faulty::subtype::oops, {9}));
  ASSERT_TRUE(list.publish<tw_state>(stt::c, {10}));
  ASSERT_TRUE(wait_for([&] { return async_rec.size() == 4; }));
  const drained d = drain(q);
  for (const auto& got : {sync_rec.events(), async_rec.events(), d.events}) {
    ASSERT_EQ(got.size(), 4u);
    EXPECT_TRUE(got[0].has_codec);
    EXPECT_EQ(got[0].encoded, "server 7");
    EXPECT_FALSE(got[1].has_codec);
    EXPECT_EQ(got[1].encoded, "error:" + std::string(herald::to_string(errc::no_codec)));
    EXPECT_TRUE(got[2].has_codec);
    EXPECT_EQ(got[2].encoded, "error:" + std::string(herald::to_string(errc::no_memory)))
        << "a codec that throws reports an error (no_memory), as event_view::encode() says";
    EXPECT_EQ(got[3].encoded, "state 10");
  }
  EXPECT_EQ(b.handler_exceptions(), 0u);  // a throwing codec is not a handler exception
  b.shutdown();
}

// ---- Ordering with the family's handlers ------------------------------------------------------

TEST(WildcardOrder, SyncWildcardHandlersRunAfterTheFamilysSyncHandlersInSubscriptionOrder) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::vector<std::string> order;
  auto add_wild = [&](std::string name) {
    return list.subscribe_wildcard_sync(
        [&order, name](herald::wildcard_event& e) { order.push_back(name + ":" + e.type_name()); });
  };
  auto add_family = [&](std::string name) {
    return list.subscribe_sync<tw_server>(
        type_of<tw_server>(),
        [&order, name](herald::sync_event<tw_server>&) { order.push_back(name); });
  };
  auto add_state = [&](std::string name) {
    return list.subscribe_sync<tw_state>(
        type_of<tw_state>(),
        [&order, name](herald::sync_event<tw_state>&) { order.push_back(name); });
  };
  // Interleaved subscriptions, and async ones that must not change the sync order.
  auto w1 = add_wild("w1");
  auto f1 = add_family("f1");
  auto a1 = list.subscribe_wildcard_async([](herald::wildcard_event&) {});
  auto w2 = add_wild("w2");
  auto s1 = add_state("s1");
  auto f2 = add_family("f2");
  ASSERT_TRUE(w1 && f1 && a1 && w2 && s1 && f2);
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  EXPECT_EQ(order, (std::vector<std::string>{"f1", "f2", "w1:TWSERVER_UP", "w2:TWSERVER_UP"}));
  order.clear();
  ASSERT_TRUE(list.publish<tw_state>(stt::a, {2}));  // the stateful path
  EXPECT_EQ(order, (std::vector<std::string>{"s1", "w1:TWSTATE_A", "w2:TWSTATE_A"}));
  order.clear();
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(3)));  // no family handler
  EXPECT_EQ(order, (std::vector<std::string>{"w1:TWPEER_LOST", "w2:TWPEER_LOST"}));
  b.shutdown();
}

// ---- Pause, resubscribe, ids, unsubscribe ------------------------------------------------------

TEST(WildcardSubscription, PausedReceivesNothingUntilResumedInEveryMode) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  recorder sync_rec;
  recorder async_rec;
  herald::wildcard_queue q;
  const auto async_id = herald::make_id("wildcard", "paused-async");
  auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { sync_rec.add(e); });
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) { async_rec.add(e); },
                                          {.id = async_id});
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wa && wq);
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  ASSERT_TRUE(ws->pause());
  ASSERT_TRUE(list.lookup_pause(async_id));
  ASSERT_TRUE(wq->pause());
  EXPECT_TRUE(ws->is_paused() && wa->is_paused() && wq->is_paused());
  EXPECT_EQ(*list.publish<tw_peer>(peer::lost, peer_payload(2)), 0u);
  EXPECT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(3)), 0u);
  ASSERT_TRUE(ws->resume());
  ASSERT_TRUE(list.lookup_resume(async_id));
  ASSERT_TRUE(wq->resume());
  ASSERT_TRUE(list.publish<tw_tick>(tick::tick, tick_payload(4)));
  ASSERT_TRUE(wait_for([&] { return async_rec.size() == 2; }));
  const drained d = drain(q);
  for (const auto& got : {sync_rec.events(), async_rec.events(), d.events}) {
    EXPECT_EQ(ids(got), (std::vector<int>{1, 4}));
  }
  EXPECT_EQ(sub_sequences(d.events), (std::vector<std::uint64_t>{1, 2}));  // paused: not counted
  EXPECT_EQ(wq->stats().published, 2u);
  b.shutdown();
  EXPECT_EQ(wa->stats().published, 2u);
  EXPECT_EQ(wa->stats().delivered, 2u);
}

TEST(WildcardSubscription, ResubscribeIsRefusedWithFamilyMismatchAndChangesNothing) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  const auto id = herald::make_id("wildcard", "resub");
  std::vector<errc> inside;
  recorder rec;
  auto ws = list.subscribe_wildcard_sync(
      [&](herald::wildcard_event& e) {
        inside.push_back(error_of(e.self().resubscribe(type_of<tw_server>())));
        rec.add(e);
      },
      {.id = id});
  std::atomic<int> async_calls{0};
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event&) { ++async_calls; });
  herald::wildcard_queue q;
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wa && wq);
  const herald::event_type before = ws->type();
  for (herald::subscription* s : {&*ws, &*wa, &*wq}) {
    EXPECT_EQ(error_of(s->resubscribe(type_of<tw_server>())), errc::family_mismatch);
    EXPECT_EQ(error_of(s->resubscribe(type_of<tw_peer>(peer::lost))), errc::family_mismatch);
    EXPECT_EQ(error_of(s->resubscribe(s->type())), errc::family_mismatch);
  }
  EXPECT_EQ(error_of(list.lookup_resubscribe(id, type_of<tw_tick>())), errc::family_mismatch);
  EXPECT_EQ(ws->type(), before);
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(1)));
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(2)));
  EXPECT_EQ(inside, (std::vector<errc>{errc::family_mismatch, errc::family_mismatch}));
  EXPECT_EQ(ids(rec.events()), (std::vector<int>{1, 2}));  // still every family
  ASSERT_TRUE(wait_for([&] { return async_calls.load() == 2; }));
  EXPECT_EQ(drain(q).events.size(), 2u);
  b.shutdown();
}

TEST(WildcardSubscription, IdLookupsWorkOnWildcardSubscriptions) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  const auto id = herald::make_id("wildcard", "logger");
  const auto qid = herald::make_id("wildcard", "bridge");
  recorder rec;
  wild_handler h{&rec};
  auto wa = list.subscribe_wildcard_async(h, {.id = id, .name = "logger"});
  herald::wildcard_queue q;
  auto wq =
      list.subscribe_wildcard_queue(q, herald::queue_notify::none(), {.id = qid, .name = "bridge"});
  ASSERT_TRUE(wa && wq);
  // Ids are unique within the list, across wildcard and family subscriptions.
  EXPECT_EQ(error_of(list.subscribe_wildcard_sync([](herald::wildcard_event&) {}, {.id = id})),
            errc::duplicate_id);
  EXPECT_EQ(error_of(list.subscribe_sync<tw_server>(
                type_of<tw_server>(), [](herald::sync_event<tw_server>&) {}, {.id = qid})),
            errc::duplicate_id);
  auto taken = list.lookup_take(id);
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->id(), id);
  EXPECT_EQ(taken->name(), "logger");
  EXPECT_NE(std::string_view(taken->origin_file()).find("wildcard_test.cpp"),
            std::string_view::npos);
  EXPECT_TRUE(taken->is_active());
  ASSERT_TRUE(list.lookup_pause(qid));
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  ASSERT_TRUE(list.lookup_resume(qid));
  ASSERT_TRUE(list.publish<tw_peer>(peer::lost, peer_payload(2)));
  ASSERT_TRUE(list.lookup_unsubscribe(id));
  ASSERT_TRUE(list.lookup_unsubscribe(qid));
  EXPECT_FALSE(taken->is_active());
  EXPECT_EQ(error_of(list.lookup_take(id)), errc::not_found);
  EXPECT_EQ(error_of(list.lookup_pause(qid)), errc::not_found);
  EXPECT_EQ(error_of(list.lookup_unsubscribe(id)), errc::not_found);
  ASSERT_TRUE(wait_for([&] { return h.ends->load() == 1; }));
  EXPECT_EQ(h.why->load(), end_reason::unsubscribed);
  EXPECT_EQ(ids(rec.events()), (std::vector<int>{1, 2}));
  const drained d = drain(q);
  EXPECT_EQ(ids(d.events), (std::vector<int>{2}));
  EXPECT_EQ(d.ends, 1);
  EXPECT_EQ(d.reason, end_reason::unsubscribed);
  EXPECT_EQ(list.size_approx(), 0u);
}

TEST(WildcardSubscription, SyncHandlerUnsubscribingItselfStopsDeliveryAndIsDestroyedOnce) {
  herald::bus b;
  herald::sub_list list(b);
  life_probe probe;
  auto destroyed = probe.destroyed;
  int calls = 0;
  recorder other;
  auto w = list.subscribe_wildcard_sync([&, probe](herald::wildcard_event& e) {
    if (++calls == 2) {
      e.self().unsubscribe();
    }
  });
  auto w2 = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) { other.add(e); });
  ASSERT_TRUE(w && w2);
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  auto r = list.publish<tw_peer>(peer::lost, peer_payload(2));  // unsubscribes in here
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, 2u);
  EXPECT_FALSE(w->is_active());
  EXPECT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(3)), 1u);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(ids(other.events()), (std::vector<int>{1, 2, 3}));  // the other one goes on
  b.reclaim();  // the handler is destroyed at the next reclamation
  EXPECT_EQ(destroyed->load(), 1);
  EXPECT_EQ(list.size_approx(), 1u);
}

TEST(WildcardSubscription, AsyncHandlerUnsubscribingItselfGetsTheQueuedEventsThenOnEnd) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  worker_blocker blocker(b);
  recorder rec;
  life_probe probe;
  auto destroyed = probe.destroyed;
  struct self_ending {
    recorder* rec;
    life_probe probe;
    std::shared_ptr<std::atomic<int>> ends;
    std::shared_ptr<std::atomic<end_reason>> why;
    void operator()(herald::wildcard_event& e) {
      rec->add(e);
      if (e.sub_sequence() == 3) {
        e.self().unsubscribe();
      }
    }
    void on_end(end_reason r) {
      why->store(r);
      ends->fetch_add(1);
    }
  };
  auto ends = std::make_shared<std::atomic<int>>(0);
  auto why = std::make_shared<std::atomic<end_reason>>(end_reason::shutdown);
  auto w = list.subscribe_wildcard_async(self_ending{&rec, probe, ends, why});
  ASSERT_TRUE(w);
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(i % 2 == 0 ? list.publish<tw_server>(srv::up, server(i))
                           : list.publish<tw_tick>(tick::tick, tick_payload(i)));
  }
  blocker.release();
  ASSERT_TRUE(wait_for([&] { return destroyed->load() == 1; }));
  EXPECT_EQ(ends->load(), 1);
  EXPECT_EQ(why->load(), end_reason::unsubscribed);
  EXPECT_EQ(ids(rec.events()), (std::vector<int>{1, 2, 3, 4, 5, 6}));  // queued: delivered
  EXPECT_EQ(*list.publish<tw_server>(srv::up, server(7)), 0u);
  const herald::subscription_stats s = w->stats();
  EXPECT_EQ(s.published, 6u);
  EXPECT_EQ(s.delivered, 6u);
}

TEST(WildcardSubscription, ThrowingHandlersAreCountedAndReportedAndDeliveryGoesOn) {
  herald::bus b({.threads = 1});
  std::mutex m;
  std::vector<std::string> reported;
  b.set_error_hook([&](const herald::handler_error& e) {
    std::lock_guard lock(m);
    reported.push_back(std::string(e.subscription_name) + " " + herald::type_name(e.type) + " " +
                       std::string(e.what));
  });
  herald::sub_list list(b);
  std::atomic<int> async_calls{0};
  auto ws = list.subscribe_wildcard_sync(
      [](herald::wildcard_event& e) { throw std::runtime_error(e.type_name()); }, {.name = "sync"});
  auto wa = list.subscribe_wildcard_async(
      [&](herald::wildcard_event&) {
        ++async_calls;
        throw std::runtime_error("async");
      },
      {.name = "async"});
  ASSERT_TRUE(ws && wa);
  EXPECT_EQ(*list.publish<tw_peer>(peer::lost, peer_payload(1)), 2u);
  EXPECT_EQ(*list.publish<tw_tick>(tick::tick, tick_payload(2)), 2u);
  b.shutdown();
  EXPECT_EQ(async_calls.load(), 2);
  EXPECT_EQ(ws->exceptions(), 2u);
  EXPECT_EQ(wa->exceptions(), 2u);
  std::lock_guard lock(m);
  // The sync reports come in publish order; the async ones (on the worker) may interleave.
  std::vector<std::string> sync_reports;
  std::vector<std::string> async_reports;
  for (const auto& r : reported) {
    (r.starts_with("sync ") ? sync_reports : async_reports).push_back(r);
  }
  EXPECT_EQ(sync_reports,
            (std::vector<std::string>{"sync TWPEER_LOST TWPEER_LOST", "sync TWTICK TWTICK"}));
  EXPECT_EQ(async_reports,
            (std::vector<std::string>{"async TWPEER_LOST async", "async TWTICK async"}));
}

// ---- END ----------------------------------------------------------------------------------------

TEST(WildcardQueue, EndComesLastWithTheReasonOfUnsubscribeListDestroyAndShutdown) {
  herald::bus b({.threads = 1});
  herald::sub_list by_handle(b);
  herald::sub_list destroyed(b);
  herald::wildcard_queue q1;
  herald::wildcard_queue q2;
  herald::wildcard_queue q3;
  auto s1 = by_handle.subscribe_wildcard_queue(q1);
  auto s2 = destroyed.subscribe_wildcard_queue(q2);
  auto s3 = b.global().subscribe_wildcard_queue(q3);
  recorder async_rec;
  wild_handler async_destroyed{&async_rec};
  wild_handler async_shutdown{&async_rec};
  auto a2 = destroyed.subscribe_wildcard_async(async_destroyed);
  auto a3 = b.global().subscribe_wildcard_async(async_shutdown);
  ASSERT_TRUE(s1 && s2 && s3 && a2 && a3);
  EXPECT_TRUE(q1.is_open());
  ASSERT_TRUE(by_handle.publish<tw_server>(srv::up, server(1)));
  ASSERT_TRUE(destroyed.publish<tw_peer>(peer::lost, peer_payload(2)));
  ASSERT_TRUE(b.global().publish<tw_tick>(tick::tick, tick_payload(3)));

  s1->unsubscribe();
  const drained d1 = drain(q1);
  EXPECT_EQ(ids(d1.events), (std::vector<int>{1}));
  EXPECT_EQ(d1.ends, 1);
  EXPECT_EQ(d1.after_end, 0);
  EXPECT_EQ(d1.reason, end_reason::unsubscribed);
  EXPECT_FALSE(q1.is_open());
  EXPECT_FALSE(q1.pop());

  destroyed.destroy();
  const drained d2 = drain(q2);
  EXPECT_EQ(ids(d2.events), (std::vector<int>{2}));
  EXPECT_EQ(d2.ends, 1);
  EXPECT_EQ(d2.reason, end_reason::list_destroyed);
  ASSERT_TRUE(wait_for([&] { return async_destroyed.ends->load() == 1; }));
  EXPECT_EQ(async_destroyed.why->load(), end_reason::list_destroyed);

  b.shutdown();
  const drained d3 = drain(q3);
  EXPECT_EQ(ids(d3.events), (std::vector<int>{3}));
  EXPECT_EQ(d3.ends, 1);
  EXPECT_EQ(d3.reason, end_reason::shutdown);
  EXPECT_EQ(async_shutdown.ends->load(), 1);  // shutdown ran it to its END
  EXPECT_EQ(async_shutdown.why->load(), end_reason::shutdown);
  EXPECT_EQ(async_rec.size(), 2u);
}

TEST(WildcardQueue, DestroyingTheQueueEndsTheSubscriptionAndHeldItemsStayReadable) {
  herald::bus b;
  auto list = std::make_unique<herald::sub_list>(b);
  herald::subscription handle;
  std::optional<herald::queued_wildcard> kept;
  {
    herald::wildcard_queue q;
    auto s = list->subscribe_wildcard_queue(q);
    ASSERT_TRUE(s);
    handle = *s;
    ASSERT_TRUE(list->publish<tw_server>(srv::down, server(5)));
    ASSERT_TRUE(list->publish<tw_tick>(tick::tick, tick_payload(6)));  // never popped
    kept = q.pop();
    ASSERT_TRUE(kept);
  }
  EXPECT_FALSE(handle.is_active());
  EXPECT_EQ(list->size_approx(), 0u);
  EXPECT_EQ(*list->publish<tw_server>(srv::up, server(7)), 0u);
  list.reset();  // the item holds its snapshot, not the list
  const seen_event e = describe(kept->view());
  EXPECT_EQ(e.type_name, "TWSERVER_DOWN");
  EXPECT_EQ(e.id, 5);
  EXPECT_EQ(e.encoded, "server 5");
}

// ---- Last values --------------------------------------------------------------------------------

// Publishes last values to `list` out of family order: TWPARTIAL ON=1, TWSTATE B=2, A=3,
// TWPARTIAL OFF=4 (not stateful), TWSTATE B=5 (replaces 2), TWSERVER UP=6 (not stateful),
// TWPARTIAL ON=7 (replaces 1). The replay is then TWSTATE A=3, B=5, TWPARTIAL ON=7.
void publish_last_values(herald::sub_list& list) {
  ASSERT_TRUE(list.publish<tw_partial>(part::on, {1}));
  ASSERT_TRUE(list.publish<tw_state>(stt::b, {2}));
  ASSERT_TRUE(list.publish<tw_state>(stt::a, {3}));
  ASSERT_TRUE(list.publish<tw_partial>(part::off, {4}));
  ASSERT_TRUE(list.publish<tw_state>(stt::b, {5}));
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(6)));
  ASSERT_TRUE(list.publish<tw_partial>(part::on, {7}));
}

TEST(WildcardLastValue, SyncReplayRunsInsideSubscribeInFamilyThenSubtypeOrderBeforeNewerEvents) {
  ASSERT_LT(herald::family_id_of<tw_state>(), herald::family_id_of<tw_partial>());
  herald::bus b;
  herald::sub_list list(b);
  herald::sub_list other(b);
  publish_last_values(list);
  ASSERT_TRUE(other.publish<tw_state>(stt::c, {99}));  // another list's last value: not replayed
  bool returned = false;
  std::vector<std::string> seen;
  auto w = list.subscribe_wildcard_sync([&](herald::wildcard_event& e) {
    const seen_event s = describe(e);
    seen.push_back(std::string(returned ? "live " : "replay ") + s.type_name + "=" +
                   std::to_string(s.id));
    EXPECT_EQ(s.sequence, 0u);
  });
  returned = true;
  ASSERT_TRUE(w);
  EXPECT_EQ(seen, (std::vector<std::string>{"replay TWSTATE_A=3", "replay TWSTATE_B=5",
                                            "replay TWPARTIAL_ON=7"}));
  ASSERT_TRUE(list.publish<tw_state>(stt::a, {8}));
  EXPECT_EQ(seen.back(), "live TWSTATE_A=8");
  EXPECT_EQ(seen.size(), 4u);
}

TEST(WildcardLastValue, AsyncAndQueueReplaysComeFirstWithTheirOriginalNumbers) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  publish_last_values(list);  // stateful publishes take list numbers 1..5
  worker_blocker blocker(b);
  recorder rec;
  auto wa = list.subscribe_wildcard_async([&](herald::wildcard_event& e) { rec.add(e); });
  herald::wildcard_queue q;
  std::atomic<int> notified{0};
  auto wq = list.subscribe_wildcard_queue(q, herald::queue_notify::call([&] { ++notified; }));
  ASSERT_TRUE(wa && wq);
  EXPECT_EQ(notified.load(), 1);  // the replay notified the consumer inside subscribe
  EXPECT_EQ(q.size_approx(), 3u);
  ASSERT_TRUE(list.publish<tw_tick>(tick::tick, tick_payload(8)));
  ASSERT_TRUE(list.publish<tw_partial>(part::ping, {9}));
  blocker.release();
  ASSERT_TRUE(wait_for([&] { return rec.size() == 5; }));
  const drained d = drain(q);
  for (const auto& got : {rec.events(), d.events}) {
    EXPECT_EQ(type_names(got), (std::vector<std::string>{"TWSTATE_A", "TWSTATE_B", "TWPARTIAL_ON",
                                                         "TWTICK", "TWPARTIAL_PING"}));
    EXPECT_EQ(ids(got), (std::vector<int>{3, 5, 7, 8, 9}));
    // The replays keep the numbers of the publishes they repeat (A=3 was the third stateful
    // publish, B=5 the fourth, ON=7 the fifth); the newer events take 6 and 7.
    EXPECT_EQ(sequences(got), (std::vector<std::uint64_t>{3, 4, 5, 6, 7}));
    EXPECT_EQ(sub_sequences(got), (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  }
  b.shutdown();
  EXPECT_EQ(wa->stats().published, 5u);
}

TEST(WildcardLastValue, AFreshListOrAListWithoutStatefulPublishesReplaysNothing) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  ASSERT_TRUE(list.publish<tw_server>(srv::up, server(1)));
  ASSERT_TRUE(list.publish<tw_partial>(part::off, {2}));
  int calls = 0;
  auto w = list.subscribe_wildcard_sync([&](herald::wildcard_event&) { ++calls; });
  herald::wildcard_queue q;
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(w && wq);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(q.size_approx(), 0u);
}

// ---- Backpressure -------------------------------------------------------------------------------

TEST(WildcardBackpressure, BoundedQueueDropsTheNewestAndCountsEveryEvent) {
  herald::bus b;
  herald::sub_list list(b);
  herald::wildcard_queue q;
  herald::subscribe_options opt;
  opt.backpressure.bound = 3;
  opt.backpressure.policy = herald::overflow_policy::drop_newest;
  auto s = list.subscribe_wildcard_queue(q, herald::queue_notify::none(), opt);
  ASSERT_TRUE(s);
  std::size_t reached = 0;
  for (int i = 1; i <= 10; ++i) {
    auto r = i % 3 == 0   ? list.publish<tw_server>(srv::up, server(i))
             : i % 3 == 1 ? list.publish<tw_peer>(peer::lost, peer_payload(i))
                          : list.publish<tw_tick>(tick::tick, tick_payload(i));
    ASSERT_TRUE(r);
    reached += *r;
  }
  EXPECT_EQ(reached, 3u);  // a dropped event is not counted by publish
  herald::subscription_stats st = q.stats();
  EXPECT_EQ(st.published, 10u);
  EXPECT_EQ(st.dropped_newest, 7u);
  EXPECT_EQ(st.dropped(), 7u);
  EXPECT_EQ(st.queued, 3u);
  EXPECT_LE(st.high_water, 3u);
  s->unsubscribe();
  const drained d = drain(q);
  EXPECT_EQ(ids(d.events), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(sub_sequences(d.events), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(d.ends, 1);
  st = s->stats();
  EXPECT_EQ(st.delivered, 3u);
  EXPECT_EQ(st.queued, 0u);
  EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded + st.queued);
}

TEST(WildcardBackpressure, BoundedAsyncSubscriptionDropsTheNewestWhileItsWorkerIsBusy) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  worker_blocker blocker(b);
  recorder rec;
  wild_handler h{&rec};
  herald::subscribe_options opt;
  opt.backpressure.bound = 2;
  opt.backpressure.policy = herald::overflow_policy::drop_newest;
  auto w = list.subscribe_wildcard_async(h, opt);
  ASSERT_TRUE(w);
  std::vector<std::size_t> reached;
  for (int i = 1; i <= 5; ++i) {
    auto r = i % 2 == 0 ? list.publish<tw_server>(srv::down, server(i))
                        : list.publish<tw_tick>(tick::tick, tick_payload(i));
    ASSERT_TRUE(r);
    reached.push_back(*r);
  }
  EXPECT_EQ(reached, (std::vector<std::size_t>{1, 1, 0, 0, 0}));
  blocker.release();
  w->unsubscribe();
  ASSERT_TRUE(wait_for([&] { return h.ends->load() == 1; }));
  EXPECT_EQ(ids(rec.events()), (std::vector<int>{1, 2}));
  const herald::subscription_stats st = w->stats();
  EXPECT_EQ(st.published, 5u);
  EXPECT_EQ(st.delivered, 2u);
  EXPECT_EQ(st.dropped_newest, 3u);
  EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded + st.queued);
}

TEST(WildcardBackpressure, InvalidOptionsAreRefused) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  herald::subscribe_options opt;
  opt.backpressure.bound = 1;
  opt.backpressure.policy = herald::overflow_policy::notify;  // without a hook
  herald::wildcard_queue q;
  EXPECT_EQ(error_of(list.subscribe_wildcard_queue(q, herald::queue_notify::none(), opt)),
            errc::invalid_argument);
  EXPECT_FALSE(q.is_open());
  EXPECT_EQ(error_of(list.subscribe_wildcard_async([](herald::wildcard_event&) {}, opt)),
            errc::invalid_argument);
  EXPECT_EQ(error_of(list.subscribe_wildcard_async([](herald::wildcard_event&) {},
                                                   {.events_per_run = 10001})),
            errc::invalid_argument);
  EXPECT_EQ(list.size_approx(), 0u);
}

// ---- One snapshot per publish -------------------------------------------------------------------

TEST(WildcardSnapshot, OnePayloadCopyPerPublishHoweverManyFamilyAndWildcardSubscribers) {
  herald::bus b({.threads = 2});
  herald::sub_list list(b);
  std::atomic<int> calls{0};
  std::vector<herald::subscription> subs;
  herald::event_queue<tw_server> fq;
  herald::wildcard_queue wq1;
  herald::wildcard_queue wq2;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(*list.subscribe_async<tw_server>(
        type_of<tw_server>(), [&](herald::async_event<tw_server>&) { ++calls; }));
    subs.push_back(*list.subscribe_wildcard_async([&](herald::wildcard_event&) { ++calls; }));
  }
  subs.push_back(*list.subscribe_queue<tw_server>(type_of<tw_server>(), fq));
  subs.push_back(*list.subscribe_wildcard_queue(wq1));
  subs.push_back(*list.subscribe_wildcard_queue(wq2));
  subs.push_back(*list.subscribe_wildcard_sync([&](herald::wildcard_event&) { ++calls; }));
  subs.push_back(*list.subscribe_sync<tw_server>(type_of<tw_server>(),
                                                 [&](herald::sync_event<tw_server>&) { ++calls; }));
  const auto s = server(1);
  const auto p = peer_payload(2);
  copy_counter::copies = 0;
  copy_counter::destroyed = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = list.publish<tw_server>(srv::up, s);
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 11u);
  }
  EXPECT_EQ(copy_counter::copies.load(), 10);
  for (int i = 0; i < 5; ++i) {
    auto r = list.publish<tw_peer>(peer::lost, p);  // only the wildcard ones receive it
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 6u);
  }
  EXPECT_EQ(copy_counter::copies.load(), 15);
  b.shutdown();
  EXPECT_EQ(calls.load(), 10 * 8 + 5 * 4);
  int popped = 0;
  for (auto* q : {&wq1, &wq2}) {
    const drained d = drain(*q);
    popped += static_cast<int>(d.events.size());
  }
  while (auto e = fq.pop()) {
    popped += e->is_end() ? 0 : 1;
  }
  EXPECT_EQ(popped, 2 * 15 + 10);
  EXPECT_EQ(copy_counter::destroyed.load(), 15);  // each snapshot destroyed once, at the end
}

TEST(WildcardSnapshot, PausedOrSyncOnlyWildcardsMakeNoSnapshot) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  int sync_calls = 0;
  auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event&) { ++sync_calls; });
  herald::wildcard_queue q;
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wq);
  ASSERT_TRUE(wq->pause());
  const auto s = server(1);
  copy_counter::copies = 0;
  EXPECT_EQ(*list.publish<tw_server>(srv::up, s), 1u);
  EXPECT_EQ(sync_calls, 1);
  EXPECT_EQ(copy_counter::copies.load(), 0);
  ASSERT_TRUE(wq->resume());
  EXPECT_EQ(*list.publish<tw_server>(srv::up, s), 2u);
  EXPECT_EQ(copy_counter::copies.load(), 1);
}

// ---- Destroyed lists and shutdown ---------------------------------------------------------------

TEST(WildcardSubscription, ADestroyedListReportsListDestroyedToPublishesAndSubscribes) {
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  life_probe probe;
  auto destroyed = probe.destroyed;
  auto ws = list.subscribe_wildcard_sync([probe](herald::wildcard_event&) {});
  herald::wildcard_queue q;
  auto wq = list.subscribe_wildcard_queue(q);
  ASSERT_TRUE(ws && wq);
  list.destroy();
  EXPECT_EQ(destroyed->load(), 1);
  EXPECT_FALSE(ws->is_active());
  // Every family, indexed or not, stateful or not.
  EXPECT_EQ(error_of(list.publish<tw_server>(srv::up, server(1))), errc::list_destroyed);
  EXPECT_EQ(error_of(list.publish<tw_tick>(tick::tick, tick_payload(2))), errc::list_destroyed);
  EXPECT_EQ(error_of(list.publish<tw_state>(stt::a, {3})), errc::list_destroyed);
  EXPECT_EQ(error_of(list.subscribe_wildcard_sync([](herald::wildcard_event&) {})),
            errc::list_destroyed);
  EXPECT_EQ(error_of(list.subscribe_wildcard_async([](herald::wildcard_event&) {})),
            errc::list_destroyed);
  herald::wildcard_queue late;
  EXPECT_EQ(error_of(list.subscribe_wildcard_queue(late)), errc::list_destroyed);
  EXPECT_FALSE(late.is_open());
  const drained d = drain(q);
  EXPECT_EQ(d.ends, 1);
  EXPECT_EQ(d.reason, end_reason::list_destroyed);

  b.shutdown();
  EXPECT_EQ(error_of(list.publish<tw_server>(srv::up, server(1))), errc::shutting_down);
  herald::sub_list after(b);
  EXPECT_EQ(error_of(after.subscribe_wildcard_sync([](herald::wildcard_event&) {})),
            errc::shutting_down);
  EXPECT_EQ(error_of(after.subscribe_wildcard_async([](herald::wildcard_event&) {})),
            errc::shutting_down);
  EXPECT_EQ(error_of(after.subscribe_wildcard_queue(late)), errc::shutting_down);
  EXPECT_EQ(error_of(after.publish<tw_peer>(peer::lost, peer_payload(1))), errc::shutting_down);
}

}  // namespace
