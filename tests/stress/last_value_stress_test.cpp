// Multi-threaded stress tests of last-value ("stateful") events (herald/bus.hpp,
// stateful_mask_v; src/core/sub_list.cpp, publish_stateful and subscribe_core). They run under
// ThreadSanitizer and AddressSanitizer.
//
// What is checked
//   - Replay census (LastValueStress.ReplayThenEveryNewerEventInOrderWhilePublishersRun): four
//     publishers, each with a stateful subtype of its own, publish increasing values 1, 2, ...
//     to one list, and a fifth publishes a non-stateful subtype of the same family, while three
//     threads keep subscribing (sync, async and queue in turn, to a random set of subtypes) and
//     unsubscribing. For each subscription and each stateful subtype it subscribed to:
//       * its first event of the subtype is the last value at subscribe time or newer, never
//         older: at least the value whose publish had returned before subscribe was called,
//         at most the value whose publish had begun when subscribe returned (so nothing
//         published after subscribe returned was skipped);
//       * after the first, the values arrive one by one: each is the previous + 1 (never a
//         gap, a duplicate or a step back);
//       * every value whose publish returned before unsubscribe was called arrived;
//       * async and queue: the replayed events come first, before any newer event of any
//         stateful subtype (their sequence numbers, those of the original publishes, are lower
//         than every later one, and once a newer event arrived the sequence numbers of the
//         stateful events only grow);
//     for the non-stateful subtype: no replay (the first value is newer than every publish that
//     had returned before subscribe), then every value in order; subtypes not subscribed to
//     never arrive; every async handler and every queue ends exactly once (END).
//   - Nested subscribes (LastValueStress.SubscribesInsideStatefulPublishesSeeTheEvent...):
//     sync handlers subscribe new sync subscriptions on their own list from inside stateful
//     publishes, while publishers on other threads publish to the same list and another thread
//     subscribes too; a subscription made inside the publish of value v receives v first (the
//     publish stored it before calling handlers), exactly once, then v + 1, v + 2, ... No
//     deadlock (the list's last-value lock is recursive).
//   - Lists destroyed under load (LastValueStress.ListsDestroyedWhilePublishingAndSubscribing):
//     per-entity lists are destroyed and replaced while publishers publish stateful events to
//     them and to the global list and other threads subscribe with replay; every publish to a
//     destroyed list reports list_destroyed, every subscribe to it fails with list_destroyed,
//     the global list's replay stays correct, and nothing leaks (LeakSanitizer, and a count of
//     live safe-part objects that returns to zero).
//
// How the threads meet
//   Nothing sleeps and nothing is timed: threads wait on counters and flags (spin, then yield),
//   and the subscription churn follows the publishers' progress.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies the work. The base counts are
//   sized for sanitizer builds; the optimised build does more.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "stress_support.hpp"

namespace {

using herald::errc;
using herald::event_queue;
using herald::sub_list;
using herald::subscription;
using herald::type_of;
using herald::test::optimised_build;
using herald::test::spin_until;
using herald::test::stress_scale;

// `sanitized` in sanitizer (and unoptimised) builds, `optimised` in the optimised build, both
// times HERALD_STRESS_SCALE.
std::size_t scaled(std::size_t sanitized, std::size_t optimised, double scale) {
  const double n = static_cast<double>(optimised_build ? optimised : sanitized) * scale;
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

// Live safe-part objects (the snapshots, the kept last values and the publishers' own).
std::atomic<long> g_live{0};

struct lv_value {
  explicit lv_value(std::uint32_t p = 0, std::int64_t v = 0) noexcept : pub(p), value(v) {
    g_live.fetch_add(1, std::memory_order_relaxed);
  }
  lv_value(const lv_value& o) noexcept : pub(o.pub), value(o.value) {
    g_live.fetch_add(1, std::memory_order_relaxed);
  }
  lv_value& operator=(const lv_value&) = default;
  ~lv_value() { g_live.fetch_sub(1, std::memory_order_relaxed); }

  std::uint32_t pub;
  std::int64_t value;
};

// Four stateful subtypes (one per publisher) and one that is not (the fifth publisher's).
constexpr std::size_t stateful_publishers = 4;
constexpr std::size_t all_publishers = 5;

struct tlvs_event {
  static constexpr std::string_view family_name = "TLVSTRESS";
  enum class subtype : std::uint8_t { p0, p1, p2, p3, plain };
  static constexpr std::array<std::string_view, 5> subtype_names{"P0", "P1", "P2", "P3", "PLAIN"};
  static constexpr std::array<subtype, 4> stateful_subtypes{subtype::p0, subtype::p1, subtype::p2,
                                                            subtype::p3};
  using safe_part = lv_value;
};
using ts = tlvs_event::subtype;
static_assert(herald::stateful_mask_v<tlvs_event> == 0b01111);

// Every subtype stateful (the nested-subscribe and list tests).
struct tlvn_event {
  static constexpr std::string_view family_name = "TLVNEST";
  enum class subtype : std::uint8_t { p0, p1 };
  static constexpr std::array<std::string_view, 2> subtype_names{"P0", "P1"};
  static constexpr bool stateful = true;
  using safe_part = lv_value;
};

[[maybe_unused]] const bool families_declared =
    (static_cast<void>(herald::family_id_of<tlvs_event>()),
     static_cast<void>(herald::family_id_of<tlvn_event>()), true);

using counters = std::array<std::int64_t, all_publishers>;

// Per publisher: the value whose publish began, and the value whose publish returned.
struct progress {
  std::array<std::atomic<std::int64_t>, all_publishers> started{};
  std::array<std::atomic<std::int64_t>, all_publishers> done{};
  std::atomic<std::size_t> finished{0};

  counters load_done() const {
    counters c{};
    for (std::size_t p = 0; p < all_publishers; ++p) {
      c[p] = done[p].load();
    }
    return c;
  }
  counters load_started() const {
    counters c{};
    for (std::size_t p = 0; p < all_publishers; ++p) {
      c[p] = started[p].load();
    }
    return c;
  }
};

// =============================================================================================
// Replay census
// =============================================================================================

enum class mode : std::uint8_t { sync, async, queue };
const char* mode_name(mode m) {
  return m == mode::sync ? "sync" : m == mode::async ? "async" : "queue";
}

// What one subscription received, checked as it arrives (the values are not kept).
struct census_record {
  mode kind = mode::sync;
  std::uint32_t mask = 0;    // subscribed subtypes (bit = publisher)
  counters done_before{};    // publishes returned before subscribe was called
  counters started_after{};  // publishes begun when subscribe returned
  counters done_at_end{};    // publishes returned before unsubscribe was called
  std::atomic<int> ends{0};  // async: on_end calls; queue: END popped

  std::mutex m;
  // Guarded by m (sync handlers run in the publishers' threads, several at once for different
  // subtypes; async handlers on a worker; queue items in the owner's thread).
  std::array<std::int64_t, all_publishers> first{};  // 0: none yet
  std::array<std::int64_t, all_publishers> last{};
  std::uint64_t received = 0;
  std::uint64_t max_stateful_seq = 0;  // async/queue: highest sequence of a stateful event
  bool in_replay_prefix = true;        // async/queue: only first events of subtypes so far
  std::vector<std::string> errors;

  void fail(std::string what) {
    if (errors.size() < 8) {
      errors.push_back(std::move(what));
    }
  }

  // One event of publisher p with value v (sequence: 0 for sync events, which have none).
  void on_event(std::size_t p, std::int64_t v, std::uint64_t sequence) {
    std::lock_guard lock(m);
    ++received;
    if ((mask >> p & 1U) == 0) {
      fail("received subtype " + std::to_string(p) + " it did not subscribe to");
      return;
    }
    const bool is_first = first[p] == 0;
    if (is_first) {
      first[p] = v;
    } else if (v != last[p] + 1) {
      fail("subtype " + std::to_string(p) + ": " + std::to_string(v) + " after " +
           std::to_string(last[p]));
    }
    last[p] = v;
    if (kind != mode::sync && p < stateful_publishers) {
      // The replays come first; after them, stateful events arrive in sequence order (their
      // numbers are taken under the list's last-value lock, in push order).
      if (sequence <= max_stateful_seq && !(in_replay_prefix && is_first)) {
        fail("subtype " + std::to_string(p) + " value " + std::to_string(v) + ": sequence " +
             std::to_string(sequence) + " after " + std::to_string(max_stateful_seq) +
             " outside the replay");
      }
      if (!is_first) {
        in_replay_prefix = false;
      }
      max_stateful_seq = std::max(max_stateful_seq, sequence);
    }
  }

  // After everything ended: the checks that need the whole history.
  void check_final(std::size_t index) {
    std::lock_guard lock(m);
    const std::string who = "subscription " + std::to_string(index) + " (" + mode_name(kind) + ")";
    for (const auto& e : errors) {
      ADD_FAILURE() << who << ": " << e;
    }
    for (std::size_t p = 0; p < all_publishers; ++p) {
      if ((mask >> p & 1U) == 0) {
        continue;
      }
      const std::string where = who + ", subtype " + std::to_string(p);
      if (first[p] == 0) {
        if (p < stateful_publishers) {
          // Any value stored before the subscribe was replayed, any stored after it delivered.
          EXPECT_EQ(done_at_end[p], 0) << where << ": nothing received, yet value "
                                       << done_at_end[p] << " was published before its end";
        } else {
          EXPECT_LE(done_at_end[p], started_after[p])
              << where << ": nothing received, yet value " << done_at_end[p]
              << " was published after subscribe returned and before its end";
        }
        continue;
      }
      if (p < stateful_publishers) {
        // The replay (the last value at subscribe time), or the first value if there was none.
        EXPECT_GE(first[p], std::max<std::int64_t>(done_before[p], 1))
            << where << ": first event older than the last value at subscribe time";
        EXPECT_LE(first[p], std::max<std::int64_t>(started_after[p], 1))
            << where << ": events published after subscribe returned were skipped";
      } else {
        // Not stateful: never replayed.
        EXPECT_GT(first[p], done_before[p]) << where << ": a non-stateful subtype was replayed";
        EXPECT_LE(first[p], started_after[p] + 1)
            << where << ": events published after subscribe returned were skipped";
      }
      EXPECT_GE(last[p], done_at_end[p]) << where << ": events published before unsubscribe "
                                         << "was called are missing";
    }
    if (kind != mode::sync) {
      EXPECT_EQ(ends.load(), 1) << who << ": END not seen exactly once";
    }
  }
};

// An async handler feeding a census record; on_end counts END.
struct census_handler {
  census_record* rec;
  void operator()(herald::async_event<tlvs_event>& e) const {
    rec->on_event(static_cast<std::size_t>(e.subtype()), e.safe().value, e.sequence());
  }
  void on_end(herald::end_reason) const { rec->ends.fetch_add(1); }
};

void drain_into(event_queue<tlvs_event>& q, census_record& rec) {
  while (auto item = q.pop()) {
    if (item->is_end()) {
      rec.ends.fetch_add(1);
      continue;
    }
    rec.on_event(static_cast<std::size_t>(item->subtype()), item->safe().value, item->sequence());
  }
}

TEST(LastValueStress, ReplayThenEveryNewerEventInOrderWhilePublishersRun) {
  const double scale = stress_scale();
  const auto per_publisher = static_cast<std::int64_t>(scaled(10000, 100000, scale));
  // A subscription is held while a publisher moves on by `hold` values; publishers keep pace
  // with the churn (at most `hold` values per subscription made), so that subscribes keep
  // meeting publishes (the last-value lock is not fair: publishers in a tight loop would
  // otherwise finish before the churn got going).
  const auto hold = static_cast<std::int64_t>(optimised_build ? 50 : 8);
  constexpr std::size_t churners = 3;

  std::deque<census_record> records[churners];  // per churner; stable addresses
  {
    herald::bus b({.threads = 2});
    sub_list list(b);
    progress prog;
    std::atomic<bool> go{false};
    std::atomic<std::int64_t> made{0};  // subscriptions made
    std::atomic<std::size_t> churners_done{0};

    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < all_publishers; ++p) {
      threads.emplace_back([&, p] {
        spin_until([&] { return go.load(); });
        const auto sub = static_cast<ts>(p);
        for (std::int64_t v = 1; v <= per_publisher; ++v) {
          spin_until(
              [&] { return v <= (made.load() + 1) * hold || churners_done.load() == churners; });
          prog.started[p].store(v);
          auto r = list.publish<tlvs_event>(sub, lv_value(static_cast<std::uint32_t>(p), v));
          if (!r) {
            ADD_FAILURE() << "publish failed: " << herald::to_string(r.error());
            break;
          }
          prog.done[p].store(v);
        }
        prog.finished.fetch_add(1);
      });
    }
    for (std::size_t c = 0; c < churners; ++c) {
      threads.emplace_back([&, c] {
        std::minstd_rand rng(static_cast<std::uint32_t>(c) + 1);
        std::deque<census_record>& mine = records[c];
        spin_until([&] { return go.load(); });
        for (std::size_t n = 0; prog.finished.load() < all_publishers; ++n) {
          census_record& rec = mine.emplace_back();
          rec.kind = static_cast<mode>((c + n) % 3);
          rec.mask = 1U + static_cast<std::uint32_t>(rng() % ((1U << all_publishers) - 1));
          herald::event_type type(herald::family_id_of<tlvs_event>(), rec.mask);
          rec.done_before = prog.load_done();
          herald::result<subscription> s = herald::unexpected(errc::invalid_argument);
          event_queue<tlvs_event> q;
          census_record* r = &rec;
          switch (rec.kind) {
            case mode::sync:
              s = list.subscribe_sync<tlvs_event>(type, [r](herald::sync_event<tlvs_event>& e) {
                r->on_event(static_cast<std::size_t>(e.subtype()), e.safe().value, 0);
              });
              break;
            case mode::async:
              s = list.subscribe_async<tlvs_event>(type, census_handler{r});
              break;
            case mode::queue:
              s = list.subscribe_queue<tlvs_event>(type, q);
              break;
          }
          rec.started_after = prog.load_started();
          if (!s) {
            ADD_FAILURE() << "subscribe failed: " << herald::to_string(s.error());
            mine.pop_back();
            break;
          }
          made.fetch_add(1);
          // Hold the subscription while a publisher moves on by `hold` values.
          const std::size_t ref = (c + n) % all_publishers;
          const std::int64_t until = rec.done_before[ref] + hold;
          spin_until([&] {
            if (rec.kind == mode::queue) {
              drain_into(q, rec);
            }
            return prog.done[ref].load() >= until || prog.finished.load() == all_publishers;
          });
          rec.done_at_end = prog.load_done();
          s->unsubscribe();
          if (rec.kind == mode::queue) {
            spin_until([&] {
              drain_into(q, rec);
              return rec.ends.load() != 0;
            });
          }
        }
        churners_done.fetch_add(1);
      });
    }
    go.store(true);
    for (auto& t : threads) {
      t.join();
    }
    b.shutdown();  // the async subscriptions' pending events, then END
  }
  std::size_t total = 0;
  std::array<std::size_t, 3> per_mode{};
  std::uint64_t events = 0;
  for (auto& mine : records) {
    for (auto& rec : mine) {
      rec.check_final(total++);
      ++per_mode[static_cast<std::size_t>(rec.kind)];
      events += rec.received;
    }
  }
  EXPECT_GE(per_mode[0], 1u);
  EXPECT_GE(per_mode[1], 1u);
  EXPECT_GE(per_mode[2], 1u);
  EXPECT_EQ(g_live.load(), 0) << "safe-part objects leaked";
  std::printf(
      "%zu subscriptions (sync %zu, async %zu, queue %zu), %llu events received, "
      "%lld values per publisher\n",
      total, per_mode[0], per_mode[1], per_mode[2], static_cast<unsigned long long>(events),
      static_cast<long long>(per_publisher));
}

// =============================================================================================
// Nested subscribes
// =============================================================================================

// A subscription made from inside a handler; what it saw (guarded by the mutex).
struct nested_record {
  std::int64_t made_at = 0;  // the value being published when it was made
  std::mutex m;
  std::int64_t first = 0;
  std::int64_t last = 0;
  std::uint64_t count = 0;
  bool in_order = true;
  subscription handle;
};

TEST(LastValueStress, SubscribesInsideStatefulPublishesSeeTheEventBeingPublished) {
  const double scale = stress_scale();
  const auto per_publisher = static_cast<std::int64_t>(scaled(6000, 40000, scale));
  const std::int64_t every = optimised_build ? 200 : 50;  // a nested subscribe every n values
  constexpr std::size_t publishers = 2;
  constexpr std::size_t keep = 3;  // nested subscriptions kept per publisher

  std::array<std::deque<nested_record>, publishers> nested;  // stable addresses
  std::int64_t outside_count = 0;
  {
    herald::bus b({.threads = 1});
    sub_list list(b);
    std::array<std::atomic<std::int64_t>, publishers> done{};
    std::atomic<std::size_t> finished{0};
    std::atomic<std::int64_t> outside{0};  // subscribes made from outside any handler
    std::atomic<bool> outside_done{false};
    // One spawner per publisher: a sync handler, running in that publisher's thread (so its
    // deque has a single writer), that subscribes inside the publish and ends old subscriptions.
    std::vector<subscription> spawners;
    for (std::size_t p = 0; p < publishers; ++p) {
      auto s = list.subscribe_sync<tlvn_event>(
          type_of<tlvn_event>(static_cast<tlvn_event::subtype>(p)),
          [&, p](herald::sync_event<tlvn_event>& e) {
            const std::int64_t v = e.safe().value;
            if (v % every != 0) {
              return;
            }
            nested_record& rec = nested[p].emplace_back();
            rec.made_at = v;
            nested_record* r = &rec;
            auto sub = list.subscribe_sync<tlvn_event>(
                type_of<tlvn_event>(static_cast<tlvn_event::subtype>(p)),
                [r](herald::sync_event<tlvn_event>& ev) {
                  std::lock_guard lock(r->m);
                  const std::int64_t x = ev.safe().value;
                  if (r->count == 0) {
                    r->first = x;
                  } else if (x != r->last + 1) {
                    r->in_order = false;
                  }
                  r->last = x;
                  ++r->count;
                });
            if (!sub) {
              ADD_FAILURE() << "nested subscribe failed: " << herald::to_string(sub.error());
              return;
            }
            rec.handle = std::move(*sub);
            if (nested[p].size() > keep) {
              // Inside the handler: does not wait; the subscription's handler stops.
              nested[p][nested[p].size() - keep - 1].handle.unsubscribe();
            }
          });
      ASSERT_TRUE(s);
      spawners.push_back(std::move(*s));
    }

    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < publishers; ++p) {
      threads.emplace_back([&, p] {
        for (std::int64_t v = 1; v <= per_publisher; ++v) {
          // Keep pace with the outside subscriber (the lock is not fair).
          spin_until([&] { return v <= (outside.load() + 1) * every || outside_done.load(); });
          (void)list.publish<tlvn_event>(static_cast<tlvn_event::subtype>(p),
                                         lv_value(static_cast<std::uint32_t>(p), v));
          done[p].store(v);
        }
        finished.fetch_add(1);
      });
    }
    // Meanwhile, subscribes from outside any handler, replayed under the same lock.
    threads.emplace_back([&] {
      while (finished.load() < publishers) {
        const std::int64_t before = done[0].load();
        std::atomic<std::int64_t> first{0};
        auto s = list.subscribe_sync<tlvn_event>(type_of<tlvn_event>(tlvn_event::subtype::p0),
                                                 [&first](herald::sync_event<tlvn_event>& e) {
                                                   std::int64_t none = 0;
                                                   first.compare_exchange_strong(
                                                       none, e.safe().value);  // the replay, if any
                                                 });
        if (!s) {
          ADD_FAILURE() << "subscribe failed";
          break;
        }
        const std::int64_t replayed = first.load();  // inside subscribe: in this thread
        s->unsubscribe();
        if (before > 0 && replayed < before) {
          ADD_FAILURE() << "replay " << replayed << " older than " << before;
        }
        outside.fetch_add(1);
      }
      outside_done.store(true);
    });
    for (auto& t : threads) {
      t.join();
    }
    outside_count = outside.load();
    for (auto& s : spawners) {
      s.unsubscribe();
    }
    for (auto& per : nested) {
      for (auto& rec : per) {
        rec.handle.unsubscribe();
      }
    }
  }
  std::size_t checked = 0;
  for (std::size_t p = 0; p < publishers; ++p) {
    for (auto& rec : nested[p]) {
      std::lock_guard lock(rec.m);
      ++checked;
      EXPECT_EQ(rec.first, rec.made_at)
          << "publisher " << p << ": a subscription made inside the publish of " << rec.made_at
          << " did not receive that event first (got " << rec.first << ")";
      EXPECT_TRUE(rec.in_order) << "publisher " << p << ", made at " << rec.made_at
                                << ": gap, duplicate or step back";
    }
  }
  EXPECT_GT(checked, 0u);
  EXPECT_EQ(g_live.load(), 0) << "safe-part objects leaked";
  std::printf("%zu nested subscriptions checked, %llu subscribes from outside\n", checked,
              static_cast<unsigned long long>(outside_count));
}

// =============================================================================================
// Lists destroyed under load
// =============================================================================================

TEST(LastValueStress, ListsDestroyedWhilePublishingAndSubscribing) {
  const double scale = stress_scale();
  const std::size_t generations = scaled(100, 150, scale);
  constexpr std::size_t slots = 2;

  {
    herald::bus b({.threads = 1});
    // Each slot's current list; old generations stay alive (destroyed, not deleted) until the
    // end, since a sub_list's destructor must not race with its users.
    std::mutex lists_m;
    std::vector<std::unique_ptr<sub_list>> all_lists;            // guarded by lists_m
    std::array<sub_list*, slots> current{};                      // guarded by lists_m
    std::array<std::atomic<std::int64_t>, slots> global_done{};  // per slot's publisher
    for (std::size_t s = 0; s < slots; ++s) {
      all_lists.push_back(std::make_unique<sub_list>(b));
      current[s] = all_lists.back().get();
    }
    auto pick = [&](std::size_t s) {
      std::lock_guard lock(lists_m);
      return current[s];
    };
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> refused_publishes{0};
    std::atomic<std::uint64_t> refused_subscribes{0};
    std::atomic<std::uint64_t> replays{0};

    std::vector<std::thread> threads;
    // Publishers: one per slot, publishing to the slot's current list and to the global list.
    for (std::size_t s = 0; s < slots; ++s) {
      threads.emplace_back([&, s] {
        const auto sub = static_cast<tlvn_event::subtype>(s);
        sub_list* l = nullptr;
        for (std::int64_t v = 1; !stop.load(); ++v) {
          if (v % 64 == 1) {
            l = pick(s);  // kept for a while: it may be destroyed meanwhile
          }
          auto r = l->publish<tlvn_event>(sub, lv_value(static_cast<std::uint32_t>(s), v));
          if (!r) {
            if (r.error() != errc::list_destroyed) {
              ADD_FAILURE() << "publish: " << herald::to_string(r.error());
            }
            EXPECT_TRUE(l->is_destroyed());
            refused_publishes.fetch_add(1);
          }
          if (!b.global().publish<tlvn_event>(sub, lv_value(static_cast<std::uint32_t>(s), v))) {
            ADD_FAILURE() << "publish to the global list failed";
          }
          global_done[s].store(v);
        }
      });
    }
    // Subscribers: to a slot's list (async, sync or queue), and to the global list (sync,
    // checking the replay against the publisher's progress).
    for (std::size_t c = 0; c < 2; ++c) {
      threads.emplace_back([&, c] {
        for (std::size_t n = 0; !stop.load(); ++n) {
          const std::size_t s = (c + n) % slots;
          sub_list* l = pick(s);
          std::atomic<int> calls{0};
          herald::result<subscription> r = herald::unexpected(errc::invalid_argument);
          event_queue<tlvn_event> q;
          switch (n % 3) {
            case 0:
              r = l->subscribe_sync<tlvn_event>(
                  type_of<tlvn_event>(),
                  [&calls](herald::sync_event<tlvn_event>&) { calls.fetch_add(1); });
              break;
            case 1:
              r = l->subscribe_async<tlvn_event>(type_of<tlvn_event>(),
                                                 [](herald::async_event<tlvn_event>&) {});
              break;
            default:
              r = l->subscribe_queue<tlvn_event>(type_of<tlvn_event>(), q);
              break;
          }
          if (!r) {
            if (r.error() != errc::list_destroyed) {
              ADD_FAILURE() << "subscribe: " << herald::to_string(r.error());
            }
            EXPECT_TRUE(l->is_destroyed());
            refused_subscribes.fetch_add(1);
          } else {
            r->unsubscribe();  // the sync handler is gone when this returns: `calls` may go
          }
          while (q.pop().has_value()) {
          }
          const std::int64_t before = global_done[s].load();
          std::atomic<std::int64_t> first{0};
          auto g = b.global().subscribe_sync<tlvn_event>(
              type_of<tlvn_event>(static_cast<tlvn_event::subtype>(s)),
              [&first](herald::sync_event<tlvn_event>& e) {
                std::int64_t none = 0;
                first.compare_exchange_strong(none, e.safe().value);
              });
          if (!g) {
            ADD_FAILURE() << "global subscribe failed";
            return;
          }
          const std::int64_t seen = first.load();  // the replay ran inside subscribe
          g->unsubscribe();
          if (before > 0) {
            EXPECT_GE(seen, before) << "global replay older than the last value";
            replays.fetch_add(1);
          }
        }
      });
    }
    // The janitor: destroys a slot's list and puts a fresh one in its place.
    for (std::size_t gen = 0; gen < generations; ++gen) {
      const std::size_t s = gen % slots;
      sub_list* old = nullptr;
      {
        std::lock_guard lock(lists_m);
        old = current[s];
        all_lists.push_back(std::make_unique<sub_list>(b));
        current[s] = all_lists.back().get();
      }
      // Let the others use both for a while.
      const std::int64_t until = global_done[s].load() + 20;
      spin_until([&] { return global_done[s].load() >= until; });
      old->destroy();
      EXPECT_EQ(old->publish<tlvn_event>(tlvn_event::subtype::p0, lv_value()).error(),
                errc::list_destroyed);
    }
    stop.store(true);
    for (auto& t : threads) {
      t.join();
    }
    b.shutdown();
    std::printf(
        "%zu list generations; %llu publishes and %llu subscribes refused by destroyed "
        "lists; %llu global replays checked\n",
        generations, static_cast<unsigned long long>(refused_publishes.load()),
        static_cast<unsigned long long>(refused_subscribes.load()),
        static_cast<unsigned long long>(replays.load()));
    std::lock_guard lock(lists_m);
    all_lists.clear();
  }
  EXPECT_EQ(g_live.load(), 0) << "safe-part objects leaked (last values not dropped?)";
}

}  // namespace
