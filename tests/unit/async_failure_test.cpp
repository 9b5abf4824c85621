// Unit tests of async and queue delivery when the shared snapshot of a publish cannot be made:
// the pooled block allocation fails (herald::detail::inject_allocation_failures), or the copy
// of the safe part throws. Single publishing thread; the async handlers run on the bus's
// workers and the tests wait for them on conditions (atomic wait), never on time.
//
// What the tests show (the contract as implemented, see sub_list::publish and
// herald/detail/deferred.hpp):
//   - A publish runs its sync subscribers first, inline, then makes the one snapshot that its
//     async and queue subscribers share. When the snapshot fails, publish reports
//     errc::no_memory: the sync subscribers of that publish HAVE run (each exactly once, with
//     the event), but the caller is not told how many; no async or queue subscriber receives
//     the event at all (it is all or nothing for the deferred part), and the publish takes no
//     sequence number, so the next successful publish carries the next number without a gap.
//   - The failure is not sticky: the next publish delivers to everybody.
//   - A safe part whose copy constructor throws is reported the same way (no_memory); what the
//     partial copy built is destroyed and the block goes back to its pool (LeakSanitizer checks
//     it in the asan build; live-object counters check it everywhere).
//   - A publish that no async or queue subscription would receive (none in the list, only sync
//     ones, other subtypes, paused, ended) makes no snapshot: an armed allocation failure is
//     not consumed by it, and the safe part is never copied.
//
// The family registry is process-global: the families of this file have names of their own,
// declared at static initialisation.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "herald/detail/deferred.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"

namespace {

using herald::errc;
using herald::event_type;
using herald::sub_list;
using herald::subscription;
using herald::type_of;

// ---- Payload bookkeeping -------------------------------------------------------------------

// Live safe-part objects and copies made, over the whole process (the publisher's own objects
// included). Atomic: copies are destroyed on the bus's workers.
std::atomic<long> g_live{0};
std::atomic<long> g_copies{0};

// A member that counts live objects: constructed before the body of its owner's constructor
// runs, so it is destroyed by unwinding when that body throws.
struct tracker {
  tracker() noexcept { g_live.fetch_add(1, std::memory_order_relaxed); }
  tracker(const tracker&) noexcept { g_live.fetch_add(1, std::memory_order_relaxed); }
  tracker& operator=(const tracker&) = delete;
  ~tracker() { g_live.fetch_sub(1, std::memory_order_relaxed); }
};

// A safe part with a heap-allocated string (longer than any small-string buffer), so that a leak
// or a double destruction shows under ASan, and a switch that makes its copy throw after the
// string was copied.
struct tafail_payload {
  tafail_payload(int i, bool throw_on_copy)
      : id(i),
        text("a string long enough to live on the heap #" + std::to_string(i)),
        throws(throw_on_copy) {}
  tafail_payload(const tafail_payload& o)
      : track(o.track), id(o.id), text(o.text), throws(o.throws) {
    if (throws) {
      throw std::runtime_error("tafail_payload: copy refused");
    }
    g_copies.fetch_add(1, std::memory_order_relaxed);
  }
  tafail_payload& operator=(const tafail_payload&) = delete;
  ~tafail_payload() = default;

  tracker track;
  int id;
  std::string text;
  bool throws;
};

struct tafail_event {
  static constexpr std::string_view family_name = "TAFAIL";
  enum class subtype : std::uint8_t { one, two };
  static constexpr std::array<std::string_view, 2> subtype_names{"ONE", "TWO"};
  using safe_part = tafail_payload;
};
using tf = tafail_event::subtype;

// Families are declared on first use; declare this one before any test runs.
[[maybe_unused]] const bool families_declared =
    (static_cast<void>(herald::family_id_of<tafail_event>()), true);

event_type of(tf s) { return type_of<tafail_event>(s); }

std::string expected_text(int id) {
  return "a string long enough to live on the heap #" + std::to_string(id);
}

// ---- Receivers -------------------------------------------------------------------------------

// What an async handler saw: (id, sequence) per event, and how many events. The count is the
// condition the test waits on (atomic wait, woken by each handler call).
struct async_log {
  std::mutex mutex;
  std::vector<std::pair<int, std::uint64_t>> seen;  // guarded by mutex
  std::atomic<int> count{0};
  std::atomic<int> bad_text{0};

  void wait_for(int n) {
    for (int v = count.load(std::memory_order_acquire); v < n;
         v = count.load(std::memory_order_acquire)) {
      count.wait(v, std::memory_order_acquire);
    }
  }
  std::vector<std::pair<int, std::uint64_t>> snapshot() {
    std::lock_guard lock(mutex);
    return seen;
  }
};

auto logging_handler(async_log& log) {
  return [&log](herald::async_event<tafail_event>& e) {
    if (e.safe().text != expected_text(e.safe().id)) {
      log.bad_text.fetch_add(1, std::memory_order_relaxed);
    }
    {
      std::lock_guard lock(log.mutex);
      log.seen.emplace_back(e.safe().id, e.sequence());
    }
    log.count.fetch_add(1, std::memory_order_release);
    log.count.notify_all();
  };
}

subscription must(herald::result<subscription> r) {
  EXPECT_TRUE(r.has_value()) << "subscribe failed: " << herald::to_string(r.error());
  return r ? std::move(*r) : subscription{};
}

// Pops every item of `q` that is waiting: the ids of the events, and whether END came.
struct popped {
  std::vector<int> ids;
  std::vector<std::uint64_t> sequences;
  bool end = false;
};
popped drain(herald::event_queue<tafail_event>& q) {
  popped out;
  while (auto item = q.pop()) {
    if (item->is_end()) {
      out.end = true;
      continue;  // the next pop returns nothing
    }
    out.ids.push_back(item->safe().id);
    out.sequences.push_back(item->sequence());
  }
  return out;
}

// Every test starts and ends with no failure armed and every payload object gone.
class AsyncFailure : public ::testing::Test {
 protected:
  void SetUp() override {
    herald::detail::inject_allocation_failures(0);
    g_live.store(0);
    g_copies.store(0);
  }
  void TearDown() override {
    herald::detail::inject_allocation_failures(0);
    EXPECT_EQ(g_live.load(), 0) << "safe-part objects leaked or destroyed twice";
  }
};

// ---- Tests -----------------------------------------------------------------------------------

// One sync, one async and one queue subscriber; the snapshot allocation of the first publish
// fails. The sync handler ran for it; the async handler and the queue never see it; the
// second publish reaches all three and carries sequence number 1.
TEST_F(AsyncFailure, FailedSnapshotReportsNoMemoryAfterSyncSubscribersRanAndDeliversNothing) {
  std::vector<int> sync_seen;
  async_log alog;
  herald::event_queue<tafail_event> q;
  {
    herald::bus b(herald::bus_options{.threads = 1});
    sub_list& l = b.global();
    auto s1 =
        must(l.subscribe_sync<tafail_event>(of(tf::one), [&](herald::sync_event<tafail_event>& e) {
          sync_seen.push_back(e.safe().id);
        }));
    auto s2 = must(l.subscribe_async<tafail_event>(of(tf::one), logging_handler(alog)));
    auto s3 = must(l.subscribe_queue<tafail_event>(of(tf::one), q));

    herald::detail::inject_allocation_failures(1);
    {
      auto r = l.publish<tafail_event>(tf::one, tafail_payload(1, false));
      ASSERT_FALSE(r.has_value());
      EXPECT_EQ(r.error(), errc::no_memory);
    }
    // The sync subscriber ran for the failed publish, before the snapshot was attempted.
    EXPECT_EQ(sync_seen, std::vector<int>({1}));
    EXPECT_EQ(g_copies.load(), 0) << "the block allocation failed before any copy";
    EXPECT_FALSE(q.pop().has_value()) << "the queue received the failed event";
    EXPECT_EQ(q.size_approx(), 0u);

    {
      auto r = l.publish<tafail_event>(tf::one, tafail_payload(2, false));
      ASSERT_TRUE(r.has_value()) << herald::to_string(r.error());
      EXPECT_EQ(*r, 3u) << "sync + async + queue";
    }
    EXPECT_EQ(g_copies.load(), 1) << "one snapshot for the async and the queue subscriber";
    alog.wait_for(1);
    const popped p = drain(q);
    EXPECT_EQ(p.ids, std::vector<int>({2}));
    EXPECT_EQ(p.sequences, std::vector<std::uint64_t>({1})) << "the failed publish took a number";
    EXPECT_FALSE(p.end);
    EXPECT_EQ(q.delivered(), 1u);
    EXPECT_EQ(q.discarded(), 0u);
    b.shutdown();  // END to the async handler (destroyed) and to the queue
  }
  EXPECT_EQ(sync_seen, std::vector<int>({1, 2}));
  EXPECT_EQ(alog.snapshot(), (std::vector<std::pair<int, std::uint64_t>>{{2, 1}}));
  EXPECT_EQ(alog.bad_text.load(), 0);
  const popped p = drain(q);
  EXPECT_TRUE(p.ids.empty());
  EXPECT_TRUE(p.end) << "END after the shutdown";
  EXPECT_EQ(q.delivered(), 1u);
  EXPECT_EQ(q.discarded(), 0u);
}

// Several async and queue subscribers; three failures armed: three publishes in a row report
// no_memory and reach none of them; the fourth reaches all of them, with sequence number 1.
TEST_F(AsyncFailure, EachArmedFailureFailsOnePublishAndTheNextPublishReachesEverySubscriber) {
  constexpr int async_subs = 5;
  constexpr int queue_subs = 3;
  std::array<async_log, async_subs> alogs;
  std::array<herald::event_queue<tafail_event>, queue_subs> queues;
  int sync_calls = 0;
  {
    herald::bus b(herald::bus_options{.threads = 2});
    sub_list l(b);
    std::vector<subscription> subs;
    subs.push_back(must(l.subscribe_sync<tafail_event>(
        type_of<tafail_event>(), [&](herald::sync_event<tafail_event>&) { ++sync_calls; })));
    for (async_log& a : alogs) {
      subs.push_back(
          must(l.subscribe_async<tafail_event>(type_of<tafail_event>(), logging_handler(a))));
    }
    for (auto& q : queues) {
      subs.push_back(must(l.subscribe_queue<tafail_event>(type_of<tafail_event>(), q)));
    }

    herald::detail::inject_allocation_failures(3);
    for (int id = 1; id <= 3; ++id) {
      auto r = l.publish<tafail_event>(id % 2 == 0 ? tf::two : tf::one, tafail_payload(id, false));
      ASSERT_FALSE(r.has_value()) << "publish " << id;
      EXPECT_EQ(r.error(), errc::no_memory) << "publish " << id;
    }
    EXPECT_EQ(sync_calls, 3) << "the sync subscriber ran for every failed publish";
    {
      auto r = l.publish<tafail_event>(tf::two, tafail_payload(4, false));
      ASSERT_TRUE(r.has_value()) << herald::to_string(r.error());
      EXPECT_EQ(*r, std::size_t{1 + async_subs + queue_subs});
    }
    EXPECT_EQ(g_copies.load(), 1) << "one snapshot shared by every deferred subscriber";
    for (async_log& a : alogs) {
      a.wait_for(1);
    }
    for (auto& q : queues) {
      const popped p = drain(q);
      EXPECT_EQ(p.ids, std::vector<int>({4}));
      EXPECT_EQ(p.sequences, std::vector<std::uint64_t>({1}));
    }
    l.destroy();  // END everywhere; the async handlers are destroyed on the workers
  }
  for (async_log& a : alogs) {
    EXPECT_EQ(a.snapshot(), (std::vector<std::pair<int, std::uint64_t>>{{4, 1}}));
    EXPECT_EQ(a.bad_text.load(), 0);
  }
  for (auto& q : queues) {
    const popped p = drain(q);
    EXPECT_TRUE(p.ids.empty());
    EXPECT_TRUE(p.end);
    EXPECT_EQ(q.delivered(), 1u);
    EXPECT_EQ(q.discarded(), 0u);
  }
  EXPECT_EQ(sync_calls, 4);
}

// The copy of the safe part throws (after copying its string): publish reports no_memory, the
// partial copy's members are destroyed, the block is returned, nothing is delivered; the next
// publish (a payload that copies) works.
TEST_F(AsyncFailure, ThrowingSafePartCopyReportsNoMemoryAndLeaksNothing) {
  async_log alog;
  herald::event_queue<tafail_event> q;
  int sync_calls = 0;
  {
    herald::bus b(herald::bus_options{.threads = 1});
    sub_list l(b);
    auto s0 = must(l.subscribe_sync<tafail_event>(
        of(tf::two), [&](herald::sync_event<tafail_event>&) { ++sync_calls; }));
    auto s1 = must(l.subscribe_async<tafail_event>(of(tf::two), logging_handler(alog)));
    auto s2 = must(l.subscribe_queue<tafail_event>(of(tf::two), q));
    for (int id = 1; id <= 3; ++id) {
      auto r = l.publish<tafail_event>(tf::two, tafail_payload(id, /*throw_on_copy=*/true));
      ASSERT_FALSE(r.has_value()) << "publish " << id;
      EXPECT_EQ(r.error(), errc::no_memory) << "publish " << id;
      EXPECT_EQ(g_live.load(), 0) << "the partial copy of publish " << id << " was not unwound";
    }
    EXPECT_EQ(sync_calls, 3) << "the sync subscriber ran for every failed publish";
    EXPECT_FALSE(q.pop().has_value());
    {
      auto r = l.publish<tafail_event>(tf::two, tafail_payload(10, false));
      ASSERT_TRUE(r.has_value()) << herald::to_string(r.error());
      EXPECT_EQ(*r, 3u);
    }
    alog.wait_for(1);
    const popped p = drain(q);
    EXPECT_EQ(p.ids, std::vector<int>({10}));
    EXPECT_EQ(p.sequences, std::vector<std::uint64_t>({1})) << "a failed copy took a number";
    b.shutdown();
    EXPECT_EQ(g_live.load(), 0) << "the snapshot outlived every consumer";
  }
  EXPECT_EQ(alog.snapshot(), (std::vector<std::pair<int, std::uint64_t>>{{10, 1}}));
  EXPECT_EQ(g_copies.load(), 1);
  EXPECT_TRUE(drain(q).end);
}

// No async or queue subscription would receive the event: the publish makes no snapshot, so an
// armed allocation failure stays armed (no allocation was attempted) and the safe part is not
// copied. The first publish that does reach a deferred subscriber then consumes the failure.
TEST_F(AsyncFailure, PublishWithoutMatchingDeferredSubscriberMakesNoSnapshot) {
  async_log alog;
  int sync_calls = 0;
  herald::bus b(herald::bus_options{.threads = 1});
  sub_list empty(b);
  sub_list sync_only(b);
  sub_list other_subtype(b);
  sub_list paused(b);
  sub_list ended(b);
  sub_list live(b);
  auto s0 = must(sync_only.subscribe_sync<tafail_event>(
      type_of<tafail_event>(), [&](herald::sync_event<tafail_event>&) { ++sync_calls; }));
  auto s1 = must(other_subtype.subscribe_async<tafail_event>(of(tf::two), logging_handler(alog)));
  auto s2 = must(paused.subscribe_async<tafail_event>(of(tf::one), logging_handler(alog)));
  ASSERT_TRUE(s2.pause().has_value());
  herald::event_queue<tafail_event> ended_q;
  auto s3 = must(ended.subscribe_queue<tafail_event>(of(tf::one), ended_q));
  s3.unsubscribe();
  herald::event_queue<tafail_event> live_q;
  auto s4 = must(live.subscribe_queue<tafail_event>(of(tf::one), live_q));

  herald::detail::inject_allocation_failures(1);
  const tafail_payload payload(7, false);
  EXPECT_EQ(empty.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 0u);
  EXPECT_EQ(sync_only.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 1u);
  EXPECT_EQ(other_subtype.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 0u);
  EXPECT_EQ(paused.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 0u);
  EXPECT_EQ(ended.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 0u);
  EXPECT_EQ(sync_calls, 1);
  EXPECT_EQ(g_copies.load(), 0) << "a snapshot was made for a publish nobody deferred receives";

  // Still armed: the first publish that needs a snapshot fails, the next one succeeds.
  {
    auto r = live.publish<tafail_event>(tf::one, payload);
    ASSERT_FALSE(r.has_value()) << "the armed failure was consumed by an earlier publish";
    EXPECT_EQ(r.error(), errc::no_memory);
  }
  EXPECT_EQ(live.publish<tafail_event>(tf::one, payload).value_or(std::size_t{99}), 1u);
  const popped p = drain(live_q);
  EXPECT_EQ(p.ids, std::vector<int>({7}));
  const popped pe = drain(ended_q);
  EXPECT_TRUE(pe.ids.empty());
  EXPECT_TRUE(pe.end);
  b.shutdown();
  EXPECT_EQ(alog.count.load(), 0);
  EXPECT_EQ(g_copies.load(), 1);
}

}  // namespace
