// Multi-threaded stress tests for herald/bus.hpp: subscription lists, handles, lookups and sync
// publishing raced against each other. They run under ThreadSanitizer.
//
// What is checked
//   - Threads racing to subscribe one id: exactly one wins, the others get duplicate_id.
//   - A handler never runs after unsubscribe() (or a successful lookup_unsubscribe(), or
//     destroy()) returned outside a handler, while publishers keep publishing; and its state is
//     destroyed by then (the documented ownership contract).
//   - Every ending path racing every other (handle, lookup, list destroy) ends each
//     subscription once and destroys its handler exactly once.
//   - Lookup unsubscribe racing pause or unsubscribe through a handle; two destroy() calls
//     racing; unsubscribes racing other threads' reclamation.
//   - destroy() racing subscribe(): a subscription either fails with list_destroyed or lands and
//     is ended, and its handler is destroyed exactly once.
//   - Random operations by several threads over a few lists, handlers included (nested
//     publishes, self unsubscribe/resubscribe, subscribes, lookups and list destruction from
//     inside handlers): every handler state is destroyed exactly once in the end.
//
// How the threads meet
//   Nothing sleeps and nothing is timed. Racing threads start each round together by spinning
//   on counters (cpu_relax, then yield so that an awaited thread can run on a small machine).
//   Handlers that watch for late calls linger a little (spin, one yield) to widen the window in
//   which a call is running, so that an ending path returning too early shows up.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies every round and operation
//   count, e.g. 20 for a long soak, 0.1 for a quick smoke run.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/bus.hpp"

#include "stress_support.hpp"

namespace {

using herald::errc;
using herald::event_type;
using herald::sub_list;
using herald::subscription;

// ---- Families --------------------------------------------------------------------------------

struct tstress_event {
  static constexpr std::string_view family_name = "TSTRESS";
  enum class subtype : std::uint8_t { a, b, c, d };
  static constexpr std::array<std::string_view, 4> subtype_names{"A", "B", "C", "D"};
  struct safe_part {
    std::uint64_t seq = 0;
  };
};
using st = tstress_event::subtype;
using sev = herald::sync_event<tstress_event>;

struct tstress_alt_event {
  static constexpr std::string_view family_name = "TSTRESSALT";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  struct safe_part {};
};

event_type type_a() { return herald::type_of<tstress_event>(st::a); }

// ---- Scale and waiting ----------------------------------------------------------------------

// Work multiplier for the build (see stress_support.hpp).
constexpr std::size_t build_boost = herald::test::optimised_build ? 8 : 1;
using herald::test::stress_scale;

std::size_t scaled(std::size_t base) {
  const double n = static_cast<double>(base * build_boost) * stress_scale();
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

using herald::test::spin_until;

// Delays the calling racer by `units` short spins, so that over many rounds racers meet in
// every order (a count of spins, never a time).
void stagger(std::size_t units) {
  for (std::size_t i = 0; i < units * 64; ++i) {
    herald::cpu_relax();
  }
}

// Runs `rounds` rounds. Before round r, prepare(r) runs on the calling thread; then every
// racers[i](r) runs on its own thread, all released together; once all have returned,
// check(r) runs on the calling thread. The racer threads live for all the rounds.
void race_rounds(std::size_t rounds, const std::vector<std::function<void(std::size_t)>>& racers,
                 const std::function<void(std::size_t)>& prepare,
                 const std::function<void(std::size_t)>& check) {
  const std::size_t n = racers.size();
  std::atomic<std::size_t> go{0};
  std::atomic<std::size_t> arrived{0};
  std::atomic<std::size_t> finished{0};
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      for (std::size_t r = 1; r <= rounds; ++r) {
        spin_until([&] { return go.load(std::memory_order_acquire) >= r; });
        arrived.fetch_add(1, std::memory_order_acq_rel);
        spin_until([&] { return arrived.load(std::memory_order_acquire) >= r * n; });
        racers[i](r - 1);
        finished.fetch_add(1, std::memory_order_acq_rel);
      }
    });
  }
  for (std::size_t r = 1; r <= rounds; ++r) {
    prepare(r - 1);
    go.store(r, std::memory_order_release);
    spin_until([&] { return finished.load(std::memory_order_acquire) >= r * n; });
    check(r - 1);
  }
  for (std::thread& t : threads) {
    t.join();
  }
}

// ---- What the checks know about one subscription ---------------------------------------------

struct sub_record {
  std::atomic<int> made{0};       // live probes made (a moved-from probe counts for nothing)
  std::atomic<int> destroyed{0};  // live probes destroyed: exactly 1 in the end
  std::atomic<std::uint64_t> calls{0};
  // Set right after a call returned that promises "the handler is not running and will not run"
  // (unsubscribe() or destroy() outside a handler, a successful lookup_unsubscribe()).
  std::atomic<bool> quiet{false};
  // Calls that began, or were still running, once `quiet` was set.
  std::atomic<std::uint64_t> late_calls{0};
  // Calls that found their own state already destroyed.
  std::atomic<std::uint64_t> calls_after_destruction{0};
};

constexpr std::uint32_t alive_magic = 0xA11FE;
constexpr std::uint32_t dead_magic = 0xDEAD;

// Handler state that reports to a sub_record.
class probe {
 public:
  explicit probe(sub_record& r) noexcept : record_(&r) {
    r.made.fetch_add(1, std::memory_order_relaxed);
  }
  probe(const probe& o) noexcept : record_(o.record_) {
    if (record_ != nullptr) {
      record_->made.fetch_add(1, std::memory_order_relaxed);
    }
  }
  probe(probe&& o) noexcept : record_(std::exchange(o.record_, nullptr)) {}
  probe& operator=(const probe&) = delete;
  probe& operator=(probe&&) = delete;
  ~probe() {
    magic_ = dead_magic;
    if (record_ != nullptr) {
      record_->destroyed.fetch_add(1, std::memory_order_acq_rel);
    }
  }
  [[nodiscard]] sub_record& record() const noexcept { return *record_; }
  [[nodiscard]] bool alive() const noexcept { return magic_ == alive_magic; }
  [[nodiscard]] bool owns_record() const noexcept { return record_ != nullptr; }

 private:
  sub_record* record_;
  std::uint32_t magic_ = alive_magic;  // plain on purpose: TSan sees a call racing destruction
};

// A handler that counts its calls and flags calls that overlap the moment its subscription was
// promised to be quiet. With `linger`, each call spins and yields once, so that a call is often
// running when an ending path returns.
auto watched_handler(sub_record& r, bool linger) {
  return [p = probe(r), linger](sev&) {
    sub_record& rec = p.record();
    if (!p.alive()) {
      rec.calls_after_destruction.fetch_add(1, std::memory_order_relaxed);
    }
    if (rec.quiet.load(std::memory_order_acquire)) {
      rec.late_calls.fetch_add(1, std::memory_order_relaxed);
    }
    rec.calls.fetch_add(1, std::memory_order_relaxed);
    if (linger) {
      for (int i = 0; i < 32; ++i) {
        herald::cpu_relax();
      }
      std::this_thread::yield();
    }
    if (rec.quiet.load(std::memory_order_acquire)) {
      rec.late_calls.fetch_add(1, std::memory_order_relaxed);
    }
  };
}

// A probe whose live instance takes a while to go (a bounded spin before it counts itself
// destroyed): reclamation that runs it is slow, which widens the windows in which another
// thread could observe a reclamation still in progress.
class slow_probe {
 public:
  explicit slow_probe(sub_record& r) noexcept : probe_(r) {}
  slow_probe(const slow_probe&) noexcept = default;
  slow_probe(slow_probe&&) noexcept = default;
  slow_probe& operator=(const slow_probe&) = delete;
  slow_probe& operator=(slow_probe&&) = delete;
  ~slow_probe() {
    if (probe_.owns_record()) {
      for (int i = 0; i < 500; ++i) {
        herald::cpu_relax();
      }
    }
  }  // probe_ counts the destruction after the spin
  [[nodiscard]] const probe& inner() const noexcept { return probe_; }

 private:
  probe probe_;
};

// Records that an ending call promising quiet returned: late calls are counted from now on, and
// the handler must already be destroyed (the ownership contract of unsubscribe() and destroy()
// outside a handler). Returns false if it was not.
bool promised_quiet(sub_record& r) {
  r.quiet.store(true, std::memory_order_release);
  return r.destroyed.load(std::memory_order_acquire) == 1;
}

// 1 if `b`, else 0: for counting failed checks.
constexpr std::size_t tally(bool b) noexcept { return b ? 1 : 0; }

std::unique_ptr<sub_record[]> make_records(std::size_t n) {
  return std::make_unique<sub_record[]>(n);
}

// Sums of the records' counters, checked at the end of a test.
struct record_totals {
  std::uint64_t late_calls = 0;
  std::uint64_t calls_after_destruction = 0;
  std::size_t not_destroyed_once = 0;
  std::size_t not_made_once = 0;
};

record_totals totals(const sub_record* records, std::size_t n) {
  record_totals t;
  for (std::size_t i = 0; i < n; ++i) {
    t.late_calls += records[i].late_calls.load();
    t.calls_after_destruction += records[i].calls_after_destruction.load();
    t.not_destroyed_once += tally(records[i].destroyed.load() != 1);
    t.not_made_once += tally(records[i].made.load() != 1);
  }
  return t;
}

// Threads publishing TSTRESS_A to the list they are aimed at, until stopped. The lists they are
// aimed at must outlive them (destroying a list is fine: publishing then reports it).
class publisher_pool {
 public:
  explicit publisher_pool(std::size_t n) {
    threads_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      threads_.emplace_back([this] { run(); });
    }
  }
  publisher_pool(const publisher_pool&) = delete;
  publisher_pool& operator=(const publisher_pool&) = delete;
  ~publisher_pool() { stop(); }

  void aim(const sub_list* l) noexcept { target_.store(l, std::memory_order_release); }
  void stop() {
    stop_.store(true, std::memory_order_release);
    for (std::thread& t : threads_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }
  [[nodiscard]] std::uint64_t handler_runs() const noexcept {
    return runs_.load(std::memory_order_relaxed);
  }

 private:
  void run() {
    std::uint64_t seq = 0;
    while (!stop_.load(std::memory_order_acquire)) {
      const sub_list* l = target_.load(std::memory_order_acquire);
      if (l == nullptr) {
        std::this_thread::yield();
        continue;
      }
      auto r = l->publish<tstress_event>(st::a, tstress_event::safe_part{++seq});
      if (r) {
        runs_.fetch_add(*r, std::memory_order_relaxed);
      }
      if (!r || seq % 16 == 0) {
        std::this_thread::yield();  // leave some CPU to the threads that end subscriptions
      }
    }
  }

  std::atomic<const sub_list*> target_{nullptr};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> runs_{0};
  std::vector<std::thread> threads_;  // last: the fields above exist before the threads start
};

// ---- (a) Racing subscribes of one id ---------------------------------------------------------

struct subscribe_outcome {
  bool ok = false;
  errc error{};
  subscription handle;
};

void duplicate_id_race(std::size_t threads, std::size_t rounds) {
  herald::bus b;
  sub_list l(b);
  const std::uint64_t id = herald::make_id("stress", "contested");
  auto records = make_records(threads * rounds);
  std::vector<subscribe_outcome> outcomes(threads);
  std::size_t bad_rounds = 0;

  std::vector<std::function<void(std::size_t)>> racers;
  for (std::size_t t = 0; t < threads; ++t) {
    racers.emplace_back([&, t](std::size_t r) {
      auto res = l.subscribe_sync<tstress_event>(type_a(),
                                                 watched_handler(records[r * threads + t], false),
                                                 {.id = id, .name = "contested"});
      subscribe_outcome& o = outcomes[t];
      o.ok = res.has_value();
      o.error = res ? errc{} : res.error();
      o.handle = res ? std::move(*res) : subscription{};
    });
  }
  race_rounds(
      rounds, racers, [](std::size_t) {},
      [&](std::size_t r) {
        std::size_t winners = 0;
        std::size_t duplicates = 0;
        subscription winner;
        for (subscribe_outcome& o : outcomes) {
          if (o.ok) {
            ++winners;
            winner = std::move(o.handle);
          } else if (o.error == errc::duplicate_id) {
            ++duplicates;
          }
          o = subscribe_outcome{};
        }
        const bool one_winner = winners == 1 && duplicates == threads - 1;
        EXPECT_TRUE(one_winner) << threads << " threads, round " << r << ": " << winners
                                << " winners, " << duplicates << " duplicate_id";
        EXPECT_EQ(l.size_approx(), winners);
        auto ran = l.publish<tstress_event>(st::a, {});
        EXPECT_EQ(ran.value_or(std::size_t{0}), winners);
        // End the winner by handle and by lookup in turn; the id is then free for the next round.
        if (r % 2 == 0 && winner) {
          winner.unsubscribe();
        } else {
          EXPECT_EQ(l.lookup_unsubscribe(id).has_value(), winners >= 1);
        }
        for (std::size_t t = 0; t < threads; ++t) {
          const sub_record& rec = records[r * threads + t];
          if (rec.made.load() != 1 || rec.destroyed.load() != 1) {
            ++bad_rounds;
          }
        }
        EXPECT_FALSE(winner.is_active());
      });
  EXPECT_EQ(bad_rounds, 0u) << "handlers not destroyed exactly once after their round";
}

TEST(BusStress, ConcurrentSubscribesOfOneIdHaveExactlyOneWinnerWithTwoThreads) {
  duplicate_id_race(2, scaled(3000));
}

TEST(BusStress, ConcurrentSubscribesOfOneIdHaveExactlyOneWinnerWithFourThreads) {
  duplicate_id_race(4, scaled(2000));
}

TEST(BusStress, ConcurrentSubscribesOfOneIdHaveExactlyOneWinnerWithEightThreads) {
  duplicate_id_race(8, scaled(1000));
}

// ---- (b) Unsubscribe racing publish -------------------------------------------------------------

TEST(BusStress, HandlerNeverRunsAfterUnsubscribeReturned) {
  herald::bus b;
  const std::size_t rounds = scaled(6000);
  auto records = make_records(rounds);
  std::vector<std::unique_ptr<sub_list>> lists;  // outlive the publishers
  lists.reserve(rounds);
  const std::uint64_t id = herald::make_id("stress", "unsubscribe-vs-publish");
  std::size_t alive_after_return = 0;
  std::size_t lookup_failures = 0;
  {
    publisher_pool pubs(2);
    for (std::size_t r = 0; r < rounds; ++r) {
      sub_list& l = *lists.emplace_back(std::make_unique<sub_list>(b));
      sub_record& rec = records[r];
      auto s = l.subscribe_sync<tstress_event>(type_a(), watched_handler(rec, true), {.id = id});
      ASSERT_TRUE(s.has_value());
      pubs.aim(&l);
      spin_until([&] { return rec.calls.load(std::memory_order_relaxed) >= 1; });
      switch (r % 3) {
        case 0:
          s->unsubscribe();
          break;
        case 1:
          lookup_failures += tally(!l.lookup_unsubscribe(id).has_value());
          break;
        default:
          l.destroy();
          break;
      }
      alive_after_return += tally(!promised_quiet(rec));
      EXPECT_FALSE(s->is_active());
    }
    pubs.stop();
    EXPECT_GT(pubs.handler_runs(), 0u);
  }
  const record_totals t = totals(records.get(), rounds);
  EXPECT_EQ(lookup_failures, 0u);
  EXPECT_EQ(t.late_calls, 0u) << "a handler ran after its unsubscribe/destroy had returned";
  EXPECT_EQ(t.calls_after_destruction, 0u);
  EXPECT_EQ(alive_after_return, 0u)
      << "a handler was not yet destroyed when its ending call returned";
  lists.clear();
  EXPECT_EQ(totals(records.get(), rounds).not_destroyed_once, 0u);
  EXPECT_EQ(t.not_made_once, 0u);
}

// ---- (c) Every ending path at once
// ----------------------------------------------------------------

TEST(BusStress, HandlerIsDestroyedExactlyOnceWhenEveryEndingPathRaces) {
  constexpr std::size_t per_round = 4;
  const std::size_t rounds = scaled(2000);
  auto records = make_records(rounds * per_round);
  std::array<std::uint64_t, per_round> ids{};
  for (std::size_t i = 0; i < per_round; ++i) {
    ids[i] = herald::make_id("stress-every-path", std::to_string(i));
  }
  std::size_t unexpected_lookup = 0;  // touched by the lookup racer only
  std::size_t not_ended_once = 0;     // touched by check() only
  {
    auto b = std::make_unique<herald::bus>();
    std::vector<std::unique_ptr<sub_list>> lists;
    lists.reserve(rounds);
    std::vector<subscription> handles;  // used by the handle racer during a round
    publisher_pool pubs(1);
    const std::vector<std::function<void(std::size_t)>> racers = {
        [&](std::size_t) {
          for (subscription& h : handles) {
            h.unsubscribe();
          }
        },
        [&](std::size_t r) {
          for (std::size_t i = per_round; i-- > 0;) {
            auto res = lists[r]->lookup_unsubscribe(ids[i]);
            if (!res && res.error() != errc::not_found) {
              ++unexpected_lookup;
            }
          }
        },
        [&](std::size_t r) { lists[r]->destroy(); },
    };
    race_rounds(
        rounds, racers,
        [&](std::size_t r) {
          sub_list& l = *lists.emplace_back(std::make_unique<sub_list>(*b));
          handles.clear();
          for (std::size_t i = 0; i < per_round; ++i) {
            auto s = l.subscribe_sync<tstress_event>(
                type_a(), watched_handler(records[r * per_round + i], false), {.id = ids[i]});
            EXPECT_TRUE(s.has_value());
            if (s) {
              handles.push_back(std::move(*s));
            }
          }
          pubs.aim(&l);
          sub_record& last = records[r * per_round + per_round - 1];
          spin_until([&] { return last.calls.load(std::memory_order_relaxed) >= 1; });
        },
        [&](std::size_t r) {
          for (std::size_t i = 0; i < per_round; ++i) {
            const sub_record& rec = records[r * per_round + i];
            not_ended_once += tally(rec.destroyed.load() != 1);
            not_ended_once += tally(i < handles.size() && handles[i].is_active());
          }
        });
    pubs.stop();
    handles.clear();
    lists.clear();
    b.reset();
  }
  const record_totals t = totals(records.get(), rounds * per_round);
  EXPECT_EQ(unexpected_lookup, 0u);
  EXPECT_EQ(not_ended_once, 0u) << "after every ending call returned, a subscription was active "
                                   "or its handler not destroyed exactly once";
  EXPECT_EQ(t.not_destroyed_once, 0u);
  EXPECT_EQ(t.not_made_once, 0u);
  EXPECT_EQ(t.calls_after_destruction, 0u);
}

// ---- (d) Lookup unsubscribe racing pause/unsubscribe by handle
// -------------------------------------

TEST(BusStress, LookupUnsubscribeRacingHandlePauseOrUnsubscribeEndsTheSubscriptionOnce) {
  const std::size_t rounds = scaled(4000);
  auto records = make_records(rounds);
  const std::uint64_t id = herald::make_id("stress", "lookup-vs-handle");
  herald::bus b;
  sub_list l(b);
  publisher_pool pubs(1);
  pubs.aim(&l);
  subscription handle;
  herald::result<void> lookup_result;
  herald::result<void> pause_result;
  std::size_t bad = 0;
  std::size_t lookup_wins = 0;
  std::size_t handle_wins = 0;
  // Round kinds (r % 3): 0 a free race, 1 the lookup goes first, 2 the handle goes first.
  std::atomic<bool> lookup_done{false};
  std::atomic<bool> handle_done{false};
  const std::vector<std::function<void(std::size_t)>> racers = {
      [&](std::size_t r) {
        if (r % 3 == 2) {
          spin_until([&] { return handle_done.load(std::memory_order_acquire); });
        }
        stagger(r % 7);
        lookup_result = l.lookup_unsubscribe(id);
        lookup_done.store(true, std::memory_order_release);
      },
      [&](std::size_t r) {
        if (r % 3 == 1) {
          spin_until([&] { return lookup_done.load(std::memory_order_acquire); });
        }
        stagger(r % 5);
        if (r % 2 == 0) {
          handle.unsubscribe();
        } else {
          pause_result = handle.pause();
        }
        handle_done.store(true, std::memory_order_release);
      },
  };
  race_rounds(
      rounds, racers,
      [&](std::size_t r) {
        auto s = l.subscribe_sync<tstress_event>(type_a(), watched_handler(records[r], true),
                                                 {.id = id});
        EXPECT_TRUE(s.has_value());
        handle = s ? std::move(*s) : subscription{};
        lookup_result = herald::result<void>{};
        pause_result = herald::result<void>{};
        lookup_done.store(false, std::memory_order_relaxed);
        handle_done.store(false, std::memory_order_relaxed);
        spin_until([&] { return records[r].calls.load(std::memory_order_relaxed) >= 1; });
      },
      [&](std::size_t r) {
        const bool lookup_ok = lookup_result.has_value();
        const bool lookup_not_found = !lookup_ok && lookup_result.error() == errc::not_found;
        if (r % 2 == 0) {
          // Exactly one of the two ended it: the lookup either did, or found nothing.
          bad += tally(!(lookup_ok || lookup_not_found));
          (lookup_ok ? lookup_wins : handle_wins) += 1;
        } else {
          // A pause never ends it: the lookup always finds it; the pause either came first or
          // found it ended.
          bad += tally(!lookup_ok);
          bad += tally(!(pause_result.has_value() || pause_result.error() == errc::not_found));
        }
        bad += tally(handle.is_active());
        bad += tally(records[r].destroyed.load() != 1);
        bad += tally(l.lookup_take(id).has_value());
        handle.drop();
      });
  pubs.stop();
  EXPECT_EQ(bad, 0u);
  EXPECT_GT(lookup_wins, 0u);
  EXPECT_GT(handle_wins, 0u);
  EXPECT_EQ(l.size_approx(), 0u);
  const record_totals t = totals(records.get(), rounds);
  EXPECT_EQ(t.not_destroyed_once, 0u);
  EXPECT_EQ(t.not_made_once, 0u);
  EXPECT_EQ(t.calls_after_destruction, 0u);
  ::testing::Test::RecordProperty("lookup_wins", std::to_string(lookup_wins));
  ::testing::Test::RecordProperty("handle_wins", std::to_string(handle_wins));
}

// ---- Second ending calls: they promise what the first one promised
// -------------------------------
//
// unsubscribe() through a handle and destroy(), called outside a handler, promise that once they
// return the handler is not running, will not run again and has been destroyed, whatever path
// ended the subscription first (the calls are idempotent, not weaker when second). Each round
// is sequenced, not raced: a publisher thread starts one call of the handler; the first ending
// path runs while that call is running (and waits for it, if it is a waiting call); the second
// ending call starts once the subscription has ended. The handler lingers until the second call
// has returned, or for a bounded number of yields: a second call that returns without waiting
// is seen by the lingering handler, and a correct one simply waits for the handler.

enum class first_end { lookup, handle, destroy, self };
enum class second_end { handle, destroy };

struct sequenced_round {
  std::atomic<bool> running{false};          // the handler call has begun
  std::atomic<bool> second_returned{false};  // the second ending call has returned
};

constexpr int linger_yields = 300;

void second_ending_call(first_end first, second_end second) {
  const std::size_t rounds = scaled(60);
  auto records = make_records(rounds);
  auto steps = std::make_unique<sequenced_round[]>(rounds);
  const std::uint64_t id = herald::make_id("stress", "sequenced");
  herald::bus b;
  std::vector<std::unique_ptr<sub_list>> lists;
  lists.reserve(rounds);
  subscription handle_a;               // used by the first ender
  subscription handle_b;               // used by the second ender
  std::size_t alive_after_return = 0;  // touched by the second ender only
  std::size_t unexpected = 0;          // touched by the first ender only
  const std::vector<std::function<void(std::size_t)>> racers = {
      // The publisher: one call of the handler.
      [&](std::size_t r) { (void)lists[r]->publish<tstress_event>(st::a, {r}); },
      // The first ender, while the call runs.
      [&](std::size_t r) {
        if (first == first_end::self) {
          return;
        }
        spin_until([&] { return steps[r].running.load(std::memory_order_acquire); });
        switch (first) {
          case first_end::lookup:
            unexpected += tally(!lists[r]->lookup_unsubscribe(id).has_value());
            break;
          case first_end::handle:
            handle_a.unsubscribe();
            break;
          default:
            lists[r]->destroy();
            break;
        }
      },
      // The second ender, once the subscription has ended.
      [&](std::size_t r) {
        spin_until([&] { return !handle_b.is_active(); });
        if (second == second_end::handle) {
          handle_b.unsubscribe();
        } else {
          lists[r]->destroy();
        }
        alive_after_return += tally(!promised_quiet(records[r]));
        steps[r].second_returned.store(true, std::memory_order_release);
      },
  };
  race_rounds(
      rounds, racers,
      [&](std::size_t r) {
        sub_list& l = *lists.emplace_back(std::make_unique<sub_list>(b));
        sequenced_round& step = steps[r];
        const bool self_end = first == first_end::self;
        auto s = l.subscribe_sync<tstress_event>(
            type_a(),
            [p = probe(records[r]), &step, self_end](sev& e) {
              sub_record& rec = p.record();
              if (rec.quiet.load(std::memory_order_acquire)) {
                rec.late_calls.fetch_add(1, std::memory_order_relaxed);
              }
              rec.calls.fetch_add(1, std::memory_order_relaxed);
              if (self_end) {
                e.self().unsubscribe();
              }
              step.running.store(true, std::memory_order_release);
              for (int i = 0;
                   i < linger_yields && !step.second_returned.load(std::memory_order_acquire);
                   ++i) {
                std::this_thread::yield();
              }
              if (rec.quiet.load(std::memory_order_acquire)) {
                rec.late_calls.fetch_add(1, std::memory_order_relaxed);
              }
            },
            {.id = id});
        EXPECT_TRUE(s.has_value());
        handle_a = s ? *s : subscription{};
        handle_b = s ? std::move(*s) : subscription{};
      },
      [&](std::size_t) {
        handle_a.drop();
        handle_b.drop();
      });
  const record_totals t = totals(records.get(), rounds);
  EXPECT_EQ(unexpected, 0u);
  EXPECT_EQ(t.late_calls, 0u) << "the handler was still running after the second ending call "
                                 "had returned (in "
                              << t.late_calls << " of " << rounds << " rounds)";
  EXPECT_EQ(alive_after_return, 0u) << "the second ending call returned before the handler was "
                                       "destroyed (in "
                                    << alive_after_return << " of " << rounds << " rounds)";
  lists.clear();
  EXPECT_EQ(totals(records.get(), rounds).not_destroyed_once, 0u);
}

TEST(BusStress, HandleUnsubscribeAfterLookupUnsubscribeWaitsForTheRunningHandler) {
  second_ending_call(first_end::lookup, second_end::handle);
}

TEST(BusStress, HandleUnsubscribeAfterAnotherHandleUnsubscribeWaitsForTheRunningHandler) {
  second_ending_call(first_end::handle, second_end::handle);
}

TEST(BusStress, HandleUnsubscribeAfterListDestroyWaitsForTheRunningHandler) {
  second_ending_call(first_end::destroy, second_end::handle);
}

TEST(BusStress, HandleUnsubscribeAfterSelfUnsubscribeWaitsForTheRunningHandler) {
  second_ending_call(first_end::self, second_end::handle);
}

TEST(BusStress, SecondDestroyWaitsForTheRunningHandler) {
  second_ending_call(first_end::destroy, second_end::destroy);
}

// unsubscribe() of one's own subscription, while other threads unsubscribe theirs and reclaim:
// when it returns, the handler is destroyed (whoever's reclamation picked it up).
TEST(BusStress, UnsubscribeReturnsOnlyWhenItsHandlerIsDestroyedWhileOthersReclaim) {
  constexpr std::size_t workers = 2;
  const std::size_t per_worker = scaled(10000);
  auto records = make_records(workers * per_worker);
  herald::bus b;
  sub_list l(b);
  std::atomic<std::size_t> alive_after_return{0};
  std::atomic<std::size_t> workers_done{0};
  publisher_pool pubs(1);
  pubs.aim(&l);
  std::vector<std::thread> threads;
  for (std::size_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      for (std::size_t i = 0; i < per_worker; ++i) {
        sub_record& rec = records[w * per_worker + i];
        auto s = l.subscribe_sync<tstress_event>(type_a(), [p = slow_probe(rec)](sev&) {
          sub_record& r = p.inner().record();
          if (r.quiet.load(std::memory_order_acquire)) {
            r.late_calls.fetch_add(1, std::memory_order_relaxed);
          }
          r.calls.fetch_add(1, std::memory_order_relaxed);
        });
        if (!s) {
          continue;
        }
        (void)l.publish<tstress_event>(st::a, {});
        s->unsubscribe();
        if (!promised_quiet(rec)) {
          alive_after_return.fetch_add(1, std::memory_order_relaxed);
        }
      }
      workers_done.fetch_add(1, std::memory_order_release);
    });
  }
  threads.emplace_back([&] {
    while (workers_done.load(std::memory_order_acquire) < workers) {
      b.reclaim();
    }
  });
  for (std::thread& t : threads) {
    t.join();
  }
  pubs.stop();
  const record_totals t = totals(records.get(), workers * per_worker);
  EXPECT_EQ(alive_after_return.load(), 0u)
      << "unsubscribe() returned before its handler was destroyed (out of " << workers * per_worker
      << ")";
  EXPECT_EQ(t.late_calls, 0u);
  EXPECT_EQ(t.not_destroyed_once, 0u);
  EXPECT_EQ(t.not_made_once, 0u);
}

// A reclamation in progress on another thread: unsubscribe() must not return before the
// handler it promises to have destroyed is destroyed, even when another thread's collection
// took it. Sequenced with public calls only: subscriptions S then X end themselves inside one
// publish (retired, not yet reclaimed); thread A calls bus::reclaim(), which destroys S's
// handler first; S's handler state lingers in its destructor until thread B's X.unsubscribe()
// has returned (or for a bounded number of yields, so that a correct, waiting unsubscribe()
// simply waits for it).
TEST(BusStress, UnsubscribeWaitsForAReclamationInProgressOnAnotherThread) {
  struct step {
    std::atomic<bool> reclaiming{false};
    std::atomic<bool> b_returned{false};
  };
  // S's handler state: signals that reclamation reached it, then lingers.
  class lingering_state {
   public:
    explicit lingering_state(step& s) noexcept : step_(&s) {}
    lingering_state(const lingering_state&) = delete;
    lingering_state(lingering_state&& o) noexcept : step_(std::exchange(o.step_, nullptr)) {}
    lingering_state& operator=(const lingering_state&) = delete;
    lingering_state& operator=(lingering_state&&) = delete;
    ~lingering_state() {
      if (step_ == nullptr) {
        return;
      }
      step_->reclaiming.store(true, std::memory_order_release);
      for (int i = 0; i < linger_yields && !step_->b_returned.load(std::memory_order_acquire);
           ++i) {
        std::this_thread::yield();
      }
    }

   private:
    step* step_;
  };

  const std::size_t rounds = scaled(60);
  auto records = make_records(rounds);
  auto steps = std::make_unique<step[]>(rounds);
  herald::bus b;
  sub_list l(b);
  subscription x;
  std::size_t alive_after_return = 0;  // touched by B only
  const std::vector<std::function<void(std::size_t)>> racers = {
      [&](std::size_t) { b.reclaim(); },
      [&](std::size_t r) {
        spin_until([&] { return steps[r].reclaiming.load(std::memory_order_acquire); });
        x.unsubscribe();
        alive_after_return += tally(!promised_quiet(records[r]));
        steps[r].b_returned.store(true, std::memory_order_release);
      },
  };
  race_rounds(
      rounds, racers,
      [&](std::size_t r) {
        auto s = l.subscribe_sync<tstress_event>(
            herald::type_of<tstress_event>(st::b),
            [state = lingering_state(steps[r])](sev& e) { e.self().unsubscribe(); });
        auto xs = l.subscribe_sync<tstress_event>(
            herald::type_of<tstress_event>(st::b),
            [p = probe(records[r])](sev& e) { e.self().unsubscribe(); });
        EXPECT_TRUE(s.has_value() && xs.has_value());
        x = xs ? std::move(*xs) : subscription{};
        auto ran = l.publish<tstress_event>(st::b, {r});
        EXPECT_EQ(ran.value_or(std::size_t{0}), 2u);
      },
      [&](std::size_t) { x.drop(); });
  EXPECT_EQ(alive_after_return, 0u) << "unsubscribe() returned before its handler was destroyed "
                                       "(in "
                                    << alive_after_return << " of " << rounds << " rounds)";
  b.reclaim();
  EXPECT_EQ(totals(records.get(), rounds).not_destroyed_once, 0u);
}

// ---- (e) Destroy racing subscribe
// -------------------------------------------------------------------

TEST(BusStress, DestroyRacingSubscribeEitherRefusesOrEndsTheSubscription) {
  constexpr std::size_t subscribers = 2;
  constexpr std::size_t per_subscriber = 3;
  constexpr std::size_t per_round = subscribers * per_subscriber;
  const std::size_t rounds = scaled(2500);
  auto records = make_records(rounds * per_round);
  herald::bus b;
  std::vector<std::unique_ptr<sub_list>> lists;
  lists.reserve(rounds);
  std::vector<subscribe_outcome> outcomes(per_round);
  std::size_t landed = 0;
  std::size_t refused = 0;
  std::size_t bad = 0;
  publisher_pool pubs(1);
  std::vector<std::function<void(std::size_t)>> racers;
  // Round kinds (r % 3): 0 a free race, 1 destroy() after every subscribe, 2 the subscribes
  // after destroy().
  std::atomic<std::size_t> subscribers_done{0};
  for (std::size_t t = 0; t < subscribers; ++t) {
    racers.emplace_back([&, t](std::size_t r) {
      if (r % 3 == 2) {
        spin_until([&] { return lists[r]->is_destroyed(); });
      }
      for (std::size_t i = 0; i < per_subscriber; ++i) {
        const std::size_t k = t * per_subscriber + i;
        auto res = lists[r]->subscribe_sync<tstress_event>(
            type_a(), watched_handler(records[r * per_round + k], false),
            {.id = i == 0 ? 0 : herald::make_id("destroy-vs-subscribe", std::to_string(k))});
        outcomes[k].ok = res.has_value();
        outcomes[k].error = res ? errc{} : res.error();
        outcomes[k].handle = res ? std::move(*res) : subscription{};
      }
      subscribers_done.fetch_add(1, std::memory_order_acq_rel);
    });
  }
  racers.emplace_back([&](std::size_t r) {
    if (r % 3 == 1) {
      spin_until([&] { return subscribers_done.load(std::memory_order_acquire) == subscribers; });
    }
    stagger(r % 32);
    lists[r]->destroy();
  });
  race_rounds(
      rounds, racers,
      [&](std::size_t) {
        subscribers_done.store(0, std::memory_order_relaxed);
        pubs.aim(lists.emplace_back(std::make_unique<sub_list>(b)).get());
      },
      [&](std::size_t r) {
        for (std::size_t k = 0; k < per_round; ++k) {
          subscribe_outcome& o = outcomes[k];
          const sub_record& rec = records[r * per_round + k];
          if (o.ok) {
            ++landed;
            bad += tally(o.handle.is_active());  // destroy() has returned: it must be ended
          } else if (o.error == errc::list_destroyed) {
            ++refused;
          } else {
            ++bad;
          }
          bad += tally(!(rec.made.load() == 1 && rec.destroyed.load() == 1));
          o = subscribe_outcome{};
        }
        bad += tally(lists[r]->size_approx() != 0);
      });
  pubs.stop();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(landed + refused, rounds * per_round);
  // Both outcomes happen (forced rounds guarantee it), or the test tested nothing.
  EXPECT_GT(landed, 0u);
  EXPECT_GT(refused, 0u);
  lists.clear();
  EXPECT_EQ(totals(records.get(), rounds * per_round).not_destroyed_once, 0u);
  ::testing::Test::RecordProperty("landed", std::to_string(landed));
  ::testing::Test::RecordProperty("refused", std::to_string(refused));
}

// ---- (f) Random operations
// -----------------------------------------------------------------------

// Handler state of the random test: counts every instance made and destroyed (moved-from ones
// included), so that made == destroyed in the end means each was destroyed exactly once.
struct census {
  std::atomic<std::int64_t> made{0};
  std::atomic<std::int64_t> destroyed{0};
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> calls_after_destruction{0};
  std::atomic<std::uint64_t> unexpected{0};
  std::mutex notes_mutex;
  std::string notes;  // the first unexpected results, for the failure message

  void note(std::string_view op, errc e) {
    if (unexpected.fetch_add(1, std::memory_order_relaxed) < 10) {
      std::lock_guard lock(notes_mutex);
      notes += std::string(op) + ": " + std::string(herald::to_string(e)) + "; ";
    }
  }
};

class tracked {
 public:
  explicit tracked(census& c) noexcept : census_(&c) { c.made.fetch_add(1); }
  tracked(const tracked& o) noexcept : census_(o.census_) { census_->made.fetch_add(1); }
  tracked(tracked&& o) noexcept : census_(o.census_) { census_->made.fetch_add(1); }
  tracked& operator=(const tracked&) = delete;
  tracked& operator=(tracked&&) = delete;
  ~tracked() {
    magic_ = dead_magic;
    census_->destroyed.fetch_add(1);
  }
  [[nodiscard]] bool alive() const noexcept { return magic_ == alive_magic; }
  [[nodiscard]] census& counts() const noexcept { return *census_; }

 private:
  census* census_;
  std::uint32_t magic_ = alive_magic;
};

constexpr std::size_t random_lists = 4;  // [0] global, [1] [2] user lists, [3] destroyed mid-run
constexpr std::size_t random_ids = 16;

struct random_world {
  explicit random_world(census& c) : counts(c) {
    at[0] = &bus.global();
    for (std::size_t i = 1; i < random_lists; ++i) {
      owned.push_back(std::make_unique<sub_list>(bus));
      at[i] = owned.back().get();
    }
    for (std::size_t i = 0; i < random_ids; ++i) {
      ids[i] = herald::make_id("random", std::to_string(i));
    }
  }
  ~random_world() {
    // Handles first, then the lists, then the bus (declaration order, reversed).
    std::lock_guard lock(pool_mutex);
    pool.clear();
  }
  random_world(const random_world&) = delete;
  random_world& operator=(const random_world&) = delete;

  census& counts;
  herald::bus bus;
  std::vector<std::unique_ptr<sub_list>> owned;
  std::array<sub_list*, random_lists> at{};
  std::array<std::uint64_t, random_ids> ids{};
  std::mutex pool_mutex;
  std::vector<subscription> pool;  // handles shared between threads (guarded by pool_mutex)
};

// Per-thread generator for handlers (they run on any thread).
thread_local std::uint64_t t_handler_rng = 0x9E3779B97F4A7C15ull;
thread_local int t_nesting = 0;

std::uint64_t handler_next() noexcept {
  // xorshift64*
  std::uint64_t x = t_handler_rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t_handler_rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

event_type random_mask(std::uint64_t roll) {
  return event_type(herald::family_id_of<tstress_event>(),
                    static_cast<herald::subtype_mask>(1 + roll % 15));
}

st random_subtype(std::uint64_t roll) { return static_cast<st>(roll % 4); }

// The handler of every subscription of the random test: does a random thing now and then.
struct random_handler {
  tracked state;
  random_world* world;
  void operator()(sev& e) const;
};

random_handler make_random_handler(random_world& w) {
  return random_handler{tracked(w.counts), &w};
}

// Subscribes a random handler; the allowed failures are duplicate_id and list_destroyed.
herald::result<subscription> random_subscribe(random_world& w, std::uint64_t roll) {
  sub_list& l = *w.at[roll % random_lists];
  const std::uint64_t id = (roll >> 8) % 2 == 0 ? 0 : w.ids[(roll >> 12) % random_ids];
  auto r =
      l.subscribe_sync<tstress_event>(random_mask(roll >> 16), make_random_handler(w), {.id = id});
  if (!r && r.error() != errc::duplicate_id && r.error() != errc::list_destroyed) {
    w.counts.note("subscribe", r.error());
  }
  return r;
}

void expect_found_or_not(random_world& w, std::string_view op, const herald::result<void>& r) {
  if (!r && r.error() != errc::not_found) {
    w.counts.note(op, r.error());
  }
}

void random_handler::operator()(sev& e) const {
  random_world& w = *world;
  const tracked& t = state;
  census& c = t.counts();
  if (!t.alive()) {
    c.calls_after_destruction.fetch_add(1, std::memory_order_relaxed);
  }
  c.calls.fetch_add(1, std::memory_order_relaxed);
  if (e.self().type().family() != herald::family_id_of<tstress_event>()) {
    c.note("self().type()", errc::family_mismatch);
  }
  const std::uint64_t roll = handler_next();
  const std::uint64_t what = roll % 10000;
  if (what < 700) {
    if (t_nesting < 2) {
      ++t_nesting;
      auto r = w.at[(roll >> 16) % random_lists]->publish<tstress_event>(random_subtype(roll >> 20),
                                                                         {roll});
      if (!r && r.error() != errc::list_destroyed) {
        c.note("nested publish", r.error());
      }
      --t_nesting;
    }
  } else if (what < 900) {
    e.self().unsubscribe();
  } else if (what < 1100) {
    expect_found_or_not(w, "self resubscribe", e.self().resubscribe(random_mask(roll >> 16)));
  } else if (what < 1150) {
    auto r = e.self().resubscribe(herald::type_of<tstress_alt_event>());
    if (r || (r.error() != errc::family_mismatch && r.error() != errc::not_found)) {
      c.note("self resubscribe to another family", r ? errc{} : r.error());
    }
  } else if (what < 1300) {
    auto r = random_subscribe(w, roll >> 16);
    if (r && (roll >> 40) % 2 == 0) {
      r->drop();
    }
  } else if (what < 1500) {
    sub_list& l = *w.at[(roll >> 16) % random_lists];
    const std::uint64_t id = w.ids[(roll >> 20) % random_ids];
    switch ((roll >> 24) % 4) {
      case 0:
        expect_found_or_not(w, "lookup_unsubscribe in handler", l.lookup_unsubscribe(id));
        break;
      case 1:
        expect_found_or_not(w, "lookup_pause in handler", l.lookup_pause(id));
        break;
      case 2:
        expect_found_or_not(w, "lookup_resume in handler", l.lookup_resume(id));
        break;
      default:
        expect_found_or_not(w, "lookup_resubscribe in handler",
                            l.lookup_resubscribe(id, random_mask(roll >> 28)));
        break;
    }
  } else if (what < 1600) {
    subscription h = e.self().take();
    if (!h) {
      c.note("self().take()", errc::not_found);
    }
  } else if (what < 1602) {
    w.at[random_lists - 1]->destroy();  // from inside a handler, maybe of that very list
  }
}

// One thread's random operations.
void random_worker(random_world& w, std::uint32_t seed, std::size_t ops, bool destroys_midway) {
  std::mt19937_64 rng(seed);
  t_handler_rng = rng() | 1;
  std::vector<subscription> mine;
  census& c = w.counts;
  // A handle to operate on: one of this thread's, or a copy of a shared one.
  auto some_handle = [&](std::uint64_t roll) -> subscription {
    if (roll % 2 == 0 && !mine.empty()) {
      return mine[(roll >> 1) % mine.size()];
    }
    std::lock_guard lock(w.pool_mutex);
    return w.pool.empty() ? subscription{} : w.pool[(roll >> 1) % w.pool.size()];
  };
  for (std::size_t i = 0; i < ops; ++i) {
    if (destroys_midway && i == ops / 2) {
      w.at[random_lists - 1]->destroy();
    }
    const std::uint64_t roll = rng();
    sub_list& l = *w.at[(roll >> 8) % random_lists];
    const std::uint64_t id = w.ids[(roll >> 12) % random_ids];
    switch (roll % 16) {
      case 0:
      case 1: {
        auto r = random_subscribe(w, roll >> 16);
        if (r) {
          if ((roll >> 50) % 4 == 0) {
            std::lock_guard lock(w.pool_mutex);
            w.pool.push_back(*r);
          }
          mine.push_back(std::move(*r));
        }
        if (mine.size() > 24) {
          mine.front().unsubscribe();
          mine.erase(mine.begin());
        }
        break;
      }
      case 2:
        if (!mine.empty()) {
          const std::size_t k = (roll >> 16) % mine.size();
          mine[k].unsubscribe();
          mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(k));
        }
        break;
      case 3: {
        subscription h = some_handle(roll >> 16);
        if (h) {
          h.unsubscribe();
        }
        break;
      }
      case 4:
        expect_found_or_not(w, "lookup_unsubscribe", l.lookup_unsubscribe(id));
        break;
      case 5: {
        subscription h = some_handle(roll >> 16);
        if (h) {
          expect_found_or_not(w, "pause", (roll >> 40) % 2 == 0 ? h.pause() : h.resume());
        }
        break;
      }
      case 6:
        expect_found_or_not(w, "lookup_pause/resume",
                            (roll >> 40) % 2 == 0 ? l.lookup_pause(id) : l.lookup_resume(id));
        break;
      case 7: {
        subscription h = some_handle(roll >> 16);
        if (!h) {
          break;
        }
        if ((roll >> 40) % 8 == 0) {
          auto r = h.resubscribe(herald::type_of<tstress_alt_event>());
          if (r || (r.error() != errc::family_mismatch && r.error() != errc::not_found)) {
            c.note("resubscribe to another family", r ? errc{} : r.error());
          }
        } else {
          expect_found_or_not(w, "resubscribe", h.resubscribe(random_mask(roll >> 44)));
        }
        break;
      }
      case 8:
        if ((roll >> 40) % 8 == 0) {
          auto r = l.lookup_resubscribe(id, herald::type_of<tstress_alt_event>());
          if (r || (r.error() != errc::family_mismatch && r.error() != errc::not_found)) {
            c.note("lookup_resubscribe to another family", r ? errc{} : r.error());
          }
        } else {
          expect_found_or_not(w, "lookup_resubscribe",
                              l.lookup_resubscribe(id, random_mask(roll >> 44)));
        }
        break;
      case 9: {
        auto r = l.lookup_take(id);
        if (r) {
          if (r->id() != id) {
            c.note("lookup_take returned another id", errc::invalid_argument);
          }
          if ((roll >> 40) % 4 == 0) {
            std::lock_guard lock(w.pool_mutex);
            w.pool.push_back(std::move(*r));
          }
        } else if (r.error() != errc::not_found) {
          c.note("lookup_take", r.error());
        }
        break;
      }
      case 10:
      case 11:
      case 12: {
        auto r = l.publish<tstress_event>(random_subtype(roll >> 16), {roll});
        if (!r && r.error() != errc::list_destroyed) {
          c.note("publish", r.error());
        }
        break;
      }
      case 13:
        (void)l.has_subscribers(random_mask(roll >> 16));
        (void)l.size_approx();
        break;
      case 14: {
        std::lock_guard lock(w.pool_mutex);
        if (!w.pool.empty()) {
          w.pool.erase(w.pool.begin() + static_cast<std::ptrdiff_t>((roll >> 16) % w.pool.size()));
        }
        if (w.pool.size() > 64) {
          w.pool.erase(w.pool.begin());
        }
        break;
      }
      default:
        w.bus.reclaim();
        break;
    }
  }
  // Leave: end half of what is left, only drop the rest (the lists end it).
  for (std::size_t k = 0; k < mine.size(); k += 2) {
    mine[k].unsubscribe();
  }
}

void random_operations(std::size_t threads, std::size_t epochs, std::size_t ops_per_thread) {
  census c;
  std::uint64_t calls = 0;
  for (std::size_t epoch = 0; epoch < epochs; ++epoch) {
    {
      random_world w(c);
      std::vector<std::thread> workers;
      for (std::size_t t = 0; t < threads; ++t) {
        const auto seed = static_cast<std::uint32_t>(epoch * 131 + t * 7 + 1);
        workers.emplace_back(
            [&w, seed, ops_per_thread, t] { random_worker(w, seed, ops_per_thread, t == 0); });
      }
      for (std::thread& th : workers) {
        th.join();
      }
      EXPECT_TRUE(w.at[random_lists - 1]->is_destroyed());
    }
    // The world (handles, lists, bus) is gone: every handler state must be too.
    EXPECT_EQ(c.made.load(), c.destroyed.load()) << "epoch " << epoch;
  }
  calls = c.calls.load();
  EXPECT_GT(calls, 0u);
  EXPECT_EQ(c.calls_after_destruction.load(), 0u);
  EXPECT_EQ(c.unexpected.load(), 0u) << c.notes;
  ::testing::Test::RecordProperty("handler_calls", std::to_string(calls));
}

TEST(BusStress, RandomOperationsOnFewListsDestroyEveryHandlerExactlyOnce) {
  random_operations(4, 4, scaled(20000));
}

TEST(BusStress, RandomOperationsWithTwoThreadsDestroyEveryHandlerExactlyOnce) {
  random_operations(2, 3, scaled(15000));
}

}  // namespace
