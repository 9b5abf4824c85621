// Unit tests of herald/scheduler.hpp and herald/detail/mpsc_queue.hpp: thread and group
// numbering, placement (run_on), the task state machine (wake-ups merged, never lost, never two
// runs at once, one more run after a wake during a run), lifetimes (a tasklet dropping its last
// handle in its own run, a task ending its life by returning false), stop() (drains what is
// queued and what it wakes, idempotent, later wake-ups run inline), idle workers sleeping,
// exceptions from tasklets, and the intrusive MPSC queue on its own.
//
// How the checks wait
//   Nothing sleeps and nothing is timed: the test thread waits for an event (a counter, a flag)
//   with spin_until (herald/tests/stress/stress_support.hpp), which spins and then yields. A
//   broken wake-up makes such a wait hang; the ctest timeout turns the hang into a failure.
//   Where a property is "exactly N runs", the test calls stop() first: stop() runs everything
//   still queued, so nothing can run after the count is read.
//
// Plain tasks (herald::task) must stay alive while queued or running, so every test that uses
// them stops its scheduler before they go out of scope. Death tests run in a re-executed child
// ("threadsafe" style), since the scheduler starts threads.
#include "herald/scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string_view>
#include <string>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/detail/mpsc_queue.hpp"

#include "../stress/stress_support.hpp"

namespace {

using herald::run_on;
using herald::scheduler;
using herald::scheduler_options;
using herald::tasklet;
using herald::test::spin_until;

scheduler_options with_threads(unsigned threads, unsigned groups = 1, unsigned spin_us = 50) {
  scheduler_options opt;
  opt.threads = threads;
  opt.groups = groups;
  opt.spin_before_sleep_us = spin_us;
  opt.name = "sched-test";
  return opt;
}

// A plain task that records what the tests look at: how many runs, whether two runs ever
// overlapped, which worker ran it last, and how many wake-ups (counted by the wakers before
// they call wake()) the latest run had seen when it started.
struct probe_task : herald::task {
  probe_task(const scheduler& s, herald::executor_ref ex, run_on where)
      : task(&probe_task::run, ex, where), sched(&s) {}

  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<probe_task&>(t);
    if (self.inside.exchange(true, std::memory_order_relaxed)) {
      self.overlaps.fetch_add(1, std::memory_order_relaxed);
    }
    // Plain field: ThreadSanitizer checks that one run happens before the next.
    ++self.plain_runs;
    const herald::worker_info* w = self.sched->current();
    self.last_thread.store(w != nullptr ? static_cast<int>(w->thread) : -1,
                           std::memory_order_relaxed);
    self.seen_wakes.store(self.wakes.load(std::memory_order_relaxed), std::memory_order_relaxed);
    for (int i = 0; i < self.busy_loops; ++i) {
      herald::cpu_relax();
    }
    self.inside.store(false, std::memory_order_relaxed);
    self.runs.fetch_add(1, std::memory_order_release);
    return true;
  }

  /// What a waker does: count, then wake.
  void counted_wake() noexcept {
    wakes.fetch_add(1, std::memory_order_relaxed);
    wake();
  }

  const scheduler* sched;
  int busy_loops = 0;
  std::uint64_t plain_runs = 0;
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::atomic<int> last_thread{-2};
  std::atomic<std::uint64_t> wakes{0};
  std::atomic<std::uint64_t> seen_wakes{0};
  std::atomic<std::uint64_t> runs{0};
};

// Sets a flag when destroyed; moved-from instances say nothing.
struct destroy_flag {
  explicit destroy_flag(std::atomic<int>* counter) noexcept : destroyed(counter) {}
  destroy_flag(destroy_flag&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  // std::function wants a copyable target; make_tasklet moves it, so no copy is ever made.
  destroy_flag(const destroy_flag& o) noexcept = default;
  destroy_flag& operator=(const destroy_flag&) = delete;
  destroy_flag& operator=(destroy_flag&&) = delete;
  ~destroy_flag() {
    if (destroyed != nullptr) {
      destroyed->fetch_add(1, std::memory_order_release);
    }
  }
  std::atomic<int>* destroyed;
};

// ---- Thread and group numbering -------------------------------------------------------------

TEST(Scheduler, ThreadsAreSplitAsEvenlyAsPossibleIntoGroups) {
  struct shape {
    unsigned threads, groups;
    std::vector<unsigned> sizes;
  };
  const std::vector<shape> shapes{{1, 1, {1}},    {4, 1, {4}},          {4, 2, {2, 2}},
                                  {5, 2, {3, 2}}, {4, 4, {1, 1, 1, 1}}, {7, 3, {3, 2, 2}}};
  for (const shape& sh : shapes) {
    SCOPED_TRACE(testing::Message() << sh.threads << " threads in " << sh.groups << " groups");
    scheduler s(with_threads(sh.threads, sh.groups));
    ASSERT_EQ(s.threads(), sh.threads);
    ASSERT_EQ(s.groups(), sh.groups);
    unsigned first = 0;
    for (unsigned g = 0; g < sh.groups; ++g) {
      EXPECT_EQ(s.threads_in(g), sh.sizes[g]);
      EXPECT_EQ(s.first_thread_of(g), first);
      for (unsigned k = 0; k < sh.sizes[g]; ++k) {
        EXPECT_EQ(s.group_of(first + k), g);
      }
      first += sh.sizes[g];
    }
    EXPECT_EQ(first, sh.threads);
  }
}

TEST(Scheduler, ZeroThreadsMeansAtLeastOneWorker) {
  scheduler s(with_threads(0));
  EXPECT_GE(s.threads(), 1u);
  EXPECT_EQ(s.threads(), std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(s.groups(), 1u);
}

TEST(Scheduler, CurrentIsNullOutsideItsWorkers) {
  scheduler s(with_threads(2));
  scheduler other(with_threads(1));
  EXPECT_EQ(s.current(), nullptr);
  // On a worker of another scheduler, current() is null too.
  std::atomic<int> done{0};
  static const herald::worker_info sentinel{};
  const herald::worker_info* seen_from_other = &sentinel;
  tasklet t = other.make_tasklet([&] {
    seen_from_other = s.current();
    done.store(1, std::memory_order_release);
  });
  t.wake();
  spin_until([&] { return done.load(std::memory_order_acquire) == 1; });
  EXPECT_EQ(seen_from_other, nullptr);
}

TEST(Scheduler, CurrentOnAWorkerGivesItsGlobalAndInGroupIndex) {
  scheduler s(with_threads(5, 2));  // groups {0,1,2} and {3,4}
  std::vector<std::optional<herald::worker_info>> seen(s.threads());
  std::atomic<unsigned> done{0};
  std::vector<tasklet> probes;
  for (unsigned t = 0; t < s.threads(); ++t) {
    probes.push_back(s.make_tasklet(
        [&, t] {
          const herald::worker_info* w = s.current();
          if (w != nullptr) {
            seen[t] = *w;
          }
          done.fetch_add(1, std::memory_order_release);
        },
        run_on::thread(t)));
  }
  for (const tasklet& p : probes) {
    p.wake();
  }
  spin_until([&] { return done.load(std::memory_order_acquire) == s.threads(); });
  for (unsigned t = 0; t < s.threads(); ++t) {
    SCOPED_TRACE(testing::Message() << "thread " << t);
    ASSERT_TRUE(seen[t].has_value());
    EXPECT_EQ(seen[t]->thread, t);
    EXPECT_EQ(seen[t]->group, s.group_of(t));
    EXPECT_EQ(seen[t]->in_group, t - s.first_thread_of(s.group_of(t)));
  }
}

// ---- Placement ------------------------------------------------------------------------------

TEST(Scheduler, RunOnThreadRunsOnExactlyThatThread) {
  scheduler s(with_threads(4, 2));
  constexpr int kWakes = 50;
  std::vector<std::atomic<int>> wrong(s.threads());
  std::vector<std::atomic<int>> runs(s.threads());
  std::vector<tasklet> pinned;
  for (unsigned t = 0; t < s.threads(); ++t) {
    pinned.push_back(s.make_tasklet(
        [&, t] {
          const herald::worker_info* w = s.current();
          if (w == nullptr || w->thread != t) {
            wrong[t].fetch_add(1, std::memory_order_relaxed);
          }
          runs[t].fetch_add(1, std::memory_order_release);
        },
        run_on::thread(t)));
  }
  // Woken from outside, and from every worker (a relay on run_on::any wakes all of them).
  tasklet relay = s.make_tasklet([&] {
    for (const tasklet& p : pinned) {
      p.wake();
    }
  });
  for (int i = 0; i < kWakes; ++i) {
    for (const tasklet& p : pinned) {
      p.wake();
    }
    relay.wake();
  }
  s.stop();  // everything queued has run
  for (unsigned t = 0; t < s.threads(); ++t) {
    EXPECT_GE(runs[t].load(), 1);
    EXPECT_EQ(wrong[t].load(), 0) << "thread " << t;
  }
}

TEST(Scheduler, RunOnGroupRunsOnlyOnThreadsOfThatGroup) {
  scheduler s(with_threads(4, 2));
  constexpr int kTasklets = 8;
  constexpr int kWakes = 40;
  std::atomic<int> wrong{0};
  std::atomic<int> runs{0};
  std::vector<tasklet> placed;
  for (int i = 0; i < kTasklets; ++i) {
    const unsigned g = static_cast<unsigned>(i) % 2;
    placed.push_back(s.make_tasklet(
        [&, g] {
          const herald::worker_info* w = s.current();
          if (w == nullptr || w->group != g || s.group_of(w->thread) != g) {
            wrong.fetch_add(1, std::memory_order_relaxed);
          }
          runs.fetch_add(1, std::memory_order_release);
        },
        run_on::group(g)));
  }
  // Relays in each group wake tasklets of both groups: a wake from a worker of the other group
  // must still land in the named group.
  std::vector<tasklet> relays;
  for (unsigned g = 0; g < 2; ++g) {
    relays.push_back(s.make_tasklet(
        [&] {
          for (const tasklet& p : placed) {
            p.wake();
          }
        },
        run_on::group(g)));
  }
  for (int i = 0; i < kWakes; ++i) {
    for (const tasklet& p : placed) {
      p.wake();
    }
    for (const tasklet& r : relays) {
      r.wake();
    }
  }
  s.stop();
  EXPECT_GE(runs.load(), kTasklets);
  EXPECT_EQ(wrong.load(), 0);
}

// ---- The task state machine -----------------------------------------------------------------

TEST(Scheduler, WakeFromAnyThreadRunsTaskletOnAWorker) {
  scheduler s(with_threads(2));
  std::atomic<int> on_worker{0};
  std::atomic<int> off_worker{0};
  tasklet t = s.make_tasklet([&] {
    (s.current() != nullptr ? on_worker : off_worker).fetch_add(1, std::memory_order_release);
  });
  t.wake();
  spin_until([&] { return on_worker.load(std::memory_order_acquire) == 1; });
  std::thread other([&] { t.wake(); });
  other.join();
  spin_until([&] { return on_worker.load(std::memory_order_acquire) == 2; });
  EXPECT_EQ(off_worker.load(), 0);
}

TEST(Scheduler, WakeUpsWhileQueuedAreMergedIntoOneRun) {
  scheduler s(with_threads(1));
  std::atomic<bool> blocking{false};
  std::atomic<bool> unblock{false};
  tasklet blocker = s.make_tasklet([&] {
    blocking.store(true, std::memory_order_release);
    spin_until([&] { return unblock.load(std::memory_order_acquire); });
  });
  probe_task target(s, s.executor(), run_on::thread(0));
  blocker.wake();
  spin_until([&] { return blocking.load(std::memory_order_acquire); });
  for (int i = 0; i < 5; ++i) {
    target.wake();  // queued behind the blocker: merged
  }
  unblock.store(true, std::memory_order_release);
  s.stop();
  EXPECT_EQ(target.runs.load(), 1u);
}

TEST(Scheduler, WakeDuringARunCausesExactlyOneMoreRunAfterIt) {
  scheduler s(with_threads(2));
  std::atomic<int> runs{0};
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::atomic<bool> first_started{false};
  std::atomic<bool> first_may_end{false};
  tasklet t = s.make_tasklet([&] {
    if (inside.exchange(true)) {
      overlaps.fetch_add(1);
    }
    if (runs.load() == 0) {
      first_started.store(true, std::memory_order_release);
      spin_until([&] { return first_may_end.load(std::memory_order_acquire); });
    }
    inside.store(false);
    runs.fetch_add(1, std::memory_order_release);
  });
  t.wake();
  spin_until([&] { return first_started.load(std::memory_order_acquire); });
  // Several wake-ups while the first run is under way, from this thread and from another.
  t.wake();
  t.wake();
  std::thread other([&] {
    t.wake();
    t.wake();
  });
  other.join();
  first_may_end.store(true, std::memory_order_release);
  spin_until([&] { return runs.load(std::memory_order_acquire) >= 2; });
  s.stop();  // nothing is left to run: the count is final
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(Scheduler, SelfWakeInsideARunCausesExactlyOneMoreRun) {
  scheduler s(with_threads(2));
  std::atomic<int> runs{0};
  std::optional<tasklet> self;
  self.emplace(s.make_tasklet([&] {
    if (runs.fetch_add(1, std::memory_order_acq_rel) == 0) {
      self->wake();
      self->wake();
      self->wake();
    }
  }));
  self->wake();
  spin_until([&] { return runs.load(std::memory_order_acquire) >= 2; });
  s.stop();
  EXPECT_EQ(runs.load(), 2);
}

TEST(Scheduler, WakeUpsFromManyThreadsAreNeverLost) {
  scheduler s(with_threads(3));
  probe_task target(s, s.executor(), run_on::any());
  constexpr unsigned kWakers = 4;
  constexpr std::uint64_t kWakesEach = 2000;
  std::atomic<bool> go{false};
  std::vector<std::thread> wakers;
  for (unsigned w = 0; w < kWakers; ++w) {
    wakers.emplace_back([&] {
      spin_until([&] { return go.load(std::memory_order_acquire); });
      for (std::uint64_t i = 0; i < kWakesEach; ++i) {
        target.counted_wake();
      }
    });
  }
  go.store(true, std::memory_order_release);
  for (std::thread& w : wakers) {
    w.join();
  }
  // Some run started after the last wake-up was counted: it saw every one of them. Waited for
  // before stop(), so the workers (not stop's drain) must deliver it.
  spin_until([&] { return target.seen_wakes.load() == kWakers * kWakesEach; });
  s.stop();
  EXPECT_EQ(target.overlaps.load(), 0);
  EXPECT_GE(target.runs.load(), 1u);
  EXPECT_LE(target.runs.load(), kWakers * kWakesEach);
  EXPECT_EQ(target.plain_runs, target.runs.load());
}

TEST(Scheduler, TaskNeverRunsOnTwoThreadsAtOnce) {
  scheduler s(with_threads(4, 2));
  // Several tasks with different placements, each woken by every waker and by the others' runs.
  std::vector<std::unique_ptr<probe_task>> tasks;
  tasks.push_back(std::make_unique<probe_task>(s, s.executor(), run_on::any()));
  tasks.push_back(std::make_unique<probe_task>(s, s.executor(), run_on::group(0)));
  tasks.push_back(std::make_unique<probe_task>(s, s.executor(), run_on::group(1)));
  tasks.push_back(std::make_unique<probe_task>(s, s.executor(), run_on::thread(3)));
  for (auto& t : tasks) {
    t->busy_loops = 50;  // widen the window in which an overlap would show
  }
  constexpr unsigned kWakers = 4;
  constexpr unsigned kRounds = 1500;
  std::vector<std::thread> wakers;
  for (unsigned w = 0; w < kWakers; ++w) {
    wakers.emplace_back([&] {
      for (unsigned i = 0; i < kRounds; ++i) {
        for (auto& t : tasks) {
          t->counted_wake();
        }
      }
    });
  }
  for (std::thread& w : wakers) {
    w.join();
  }
  for (auto& t : tasks) {
    spin_until([&] { return t->seen_wakes.load() == kWakers * kRounds; });
  }
  s.stop();
  for (auto& t : tasks) {
    EXPECT_EQ(t->overlaps.load(), 0);
    EXPECT_EQ(t->plain_runs, t->runs.load());
  }
}

// ---- Lifetimes ------------------------------------------------------------------------------

TEST(Tasklet, DroppingItsLastHandleInsideItsOwnRunIsSafe) {
  scheduler s(with_threads(2));
  constexpr int kTasklets = 50;
  std::atomic<int> destroyed{0};
  std::atomic<int> ran{0};
  std::vector<std::optional<tasklet>> handles(kTasklets);
  for (int i = 0; i < kTasklets; ++i) {
    std::optional<tasklet>& self = handles[static_cast<std::size_t>(i)];
    self.emplace(s.make_tasklet(
        [&self, &ran, flag = destroy_flag(&destroyed), payload = std::vector<int>(32, i)] {
          self.reset();  // the last handle: the callable must survive until the run ends
          // Touch the captured state after the drop: ASan reports it if it was freed.
          const int sum = std::accumulate(payload.begin(), payload.end(), 0);
          if (sum == 32 * payload[0] && flag.destroyed != nullptr) {
            ran.fetch_add(1, std::memory_order_release);
          }
        }));
  }
  for (auto& h : handles) {
    h->wake();  // `h` is not touched by this thread after this call
  }
  spin_until([&] { return destroyed.load(std::memory_order_acquire) == kTasklets; });
  EXPECT_EQ(ran.load(), kTasklets);
}

TEST(Tasklet, RewakingThenDroppingTheLastHandleStillRunsOnceMore) {
  scheduler s(with_threads(2));
  std::atomic<int> destroyed{0};
  std::atomic<int> runs{0};
  std::optional<tasklet> self;
  self.emplace(s.make_tasklet([&self, &runs, flag = destroy_flag(&destroyed)] {
    if (runs.fetch_add(1, std::memory_order_acq_rel) == 0) {
      self->wake();  // one more run, after this one...
      self.reset();  // ...although no handle is left
    }
  }));
  self->wake();
  spin_until([&] { return destroyed.load(std::memory_order_acquire) == 1; });
  EXPECT_EQ(runs.load(), 2);
}

TEST(Tasklet, CallableIsDestroyedOnlyWhenTheLastHandleIsGone) {
  scheduler s(with_threads(1));
  std::atomic<int> destroyed{0};
  std::atomic<int> runs{0};
  tasklet a = s.make_tasklet(
      [&runs, flag = destroy_flag(&destroyed)] { runs.fetch_add(1, std::memory_order_release); });
  EXPECT_TRUE(a);
  tasklet b = a;             // copy: a second reference
  tasklet c = std::move(a);  // move: the same reference, `a` is empty
  EXPECT_FALSE(a);           // NOLINT(bugprone-use-after-move): moved-from handles are empty
  EXPECT_TRUE(c);
  c.wake();
  spin_until([&] { return runs.load(std::memory_order_acquire) == 1; });
  s.stop();  // the run and its release are over
  c = tasklet();
  EXPECT_EQ(destroyed.load(), 0);
  b.wake();  // after stop(): runs inline
  EXPECT_EQ(runs.load(), 2);
  b = tasklet();
  EXPECT_EQ(destroyed.load(), 1);
}

// A task that ends its own life in its last run: the executor must not touch it afterwards.
struct self_deleting_task : herald::task {
  self_deleting_task(herald::executor_ref ex, run_on where, int runs_to_live,
                     std::atomic<int>* deleted_counter)
      : task(&self_deleting_task::run, ex, where),
        left(runs_to_live),
        deleted(deleted_counter),
        payload(64, runs_to_live) {}

  static bool run(herald::task& t) noexcept {
    auto* self = static_cast<self_deleting_task*>(&t);
    if (--self->left > 0) {
      self->wake();  // from inside its own run: one more run after this one
      return true;
    }
    std::atomic<int>* counter = self->deleted;
    delete self;  // ASan reports any later access by the executor
    counter->fetch_add(1, std::memory_order_release);
    return false;
  }

  int left;
  std::atomic<int>* deleted;
  std::vector<int> payload;
};

TEST(Scheduler, TaskWhoseRunReturnsFalseIsNeverTouchedAgain) {
  scheduler s(with_threads(3, 3));
  constexpr int kTasks = 60;
  std::atomic<int> deleted{0};
  std::vector<self_deleting_task*> tasks;
  for (int i = 0; i < kTasks; ++i) {
    const run_on where = i % 3 == 0   ? run_on::any()
                         : i % 3 == 1 ? run_on::group(static_cast<unsigned>(i) % 3)
                                      : run_on::thread(static_cast<unsigned>(i) % 3);
    tasks.push_back(new self_deleting_task(s.executor(), where, 1 + i % 5, &deleted));
  }
  for (self_deleting_task* t : tasks) {
    t->wake();  // not touched by this thread again
  }
  spin_until([&] { return deleted.load(std::memory_order_acquire) == kTasks; });
  s.stop();
  EXPECT_EQ(deleted.load(), kTasks);
}

// ---- stop() ---------------------------------------------------------------------------------

TEST(Scheduler, StopRunsEverythingQueuedAndEverythingItWakes) {
  scheduler s(with_threads(2, 2));
  constexpr int kTasklets = 8;
  constexpr int kRewakes = 200;
  std::vector<std::atomic<int>> runs(kTasklets);
  std::vector<tasklet> self_wakers(kTasklets);
  for (int i = 0; i < kTasklets; ++i) {
    const auto k = static_cast<std::size_t>(i);
    self_wakers[k] = s.make_tasklet(
        [&runs, &self_wakers, k] {
          if (runs[k].fetch_add(1, std::memory_order_relaxed) + 1 < kRewakes) {
            self_wakers[k].wake();
          }
        },
        i % 2 == 0 ? run_on::any() : run_on::group(static_cast<unsigned>(i) % 2));
  }
  // A chain: each link wakes the next one, in the other group.
  constexpr int kChain = 50;
  std::vector<tasklet> chain(kChain);
  std::atomic<int> chain_runs{0};
  for (int i = kChain - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    chain[k] = s.make_tasklet(
        [&chain, &chain_runs, k] {
          chain_runs.fetch_add(1, std::memory_order_relaxed);
          if (k + 1 < chain.size()) {
            chain[k + 1].wake();
          }
        },
        run_on::group(static_cast<unsigned>(i) % 2));
  }
  for (const tasklet& t : self_wakers) {
    t.wake();
  }
  chain[0].wake();
  s.stop();  // at once: most of the work is still to do
  for (int i = 0; i < kTasklets; ++i) {
    EXPECT_EQ(runs[static_cast<std::size_t>(i)].load(), kRewakes) << "tasklet " << i;
  }
  EXPECT_EQ(chain_runs.load(), kChain);
}

TEST(Scheduler, StopIsIdempotent) {
  scheduler s(with_threads(2));
  std::atomic<int> runs{0};
  tasklet t = s.make_tasklet([&] { runs.fetch_add(1); });
  t.wake();
  s.stop();
  EXPECT_EQ(runs.load(), 1);
  s.stop();
  s.stop();
  EXPECT_EQ(runs.load(), 1);
  // The destructor stops once more.
}

TEST(Scheduler, ConcurrentStopCallsAllReturnAfterTheDrain) {
  scheduler s(with_threads(2));
  constexpr int kRewakes = 500;
  std::atomic<int> runs{0};
  std::optional<tasklet> self;
  self.emplace(s.make_tasklet([&] {
    if (runs.fetch_add(1, std::memory_order_relaxed) + 1 < kRewakes) {
      self->wake();
    }
  }));
  self->wake();
  std::atomic<int> early{0};
  std::vector<std::thread> stoppers;
  for (int i = 0; i < 3; ++i) {
    stoppers.emplace_back([&] {
      s.stop();
      if (runs.load() != kRewakes) {
        early.fetch_add(1);
      }
    });
  }
  for (std::thread& t : stoppers) {
    t.join();
  }
  EXPECT_EQ(early.load(), 0);
  EXPECT_EQ(runs.load(), kRewakes);
}

TEST(Scheduler, WakeAfterStopRunsInlineOnTheCaller) {
  scheduler s(with_threads(2));
  s.stop();
  std::thread::id ran_on;
  static const herald::worker_info sentinel{};
  const herald::worker_info* where = &sentinel;
  tasklet t = s.make_tasklet([&] {
    ran_on = std::this_thread::get_id();
    where = s.current();
  });
  t.wake();  // has run when wake() returns
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(where, nullptr);
  // A plain task with a placement, too.
  probe_task p(s, s.executor(), run_on::thread(1));
  p.wake();
  EXPECT_EQ(p.runs.load(), 1u);
  EXPECT_EQ(p.last_thread.load(), -1);
}

TEST(Scheduler, WakeAfterStopRunsWhatTheRunWakesToo) {
  scheduler s(with_threads(2));
  s.stop();
  constexpr int kRewakes = 100;
  std::atomic<int> self_runs{0};
  std::atomic<int> other_runs{0};
  tasklet other = s.make_tasklet([&] { other_runs.fetch_add(1); });
  std::optional<tasklet> self;
  self.emplace(s.make_tasklet([&] {
    other.wake();
    if (self_runs.fetch_add(1) + 1 < kRewakes) {
      self->wake();
    }
  }));
  self->wake();  // every run it causes is over when wake() returns
  EXPECT_EQ(self_runs.load(), kRewakes);
  EXPECT_GE(other_runs.load(), 1);
  // Waking from other threads after stop() loses nothing either.
  std::vector<std::thread> wakers;
  probe_task p(s, s.executor(), run_on::any());
  for (int i = 0; i < 3; ++i) {
    wakers.emplace_back([&] {
      for (int k = 0; k < 200; ++k) {
        p.counted_wake();
      }
    });
  }
  for (std::thread& w : wakers) {
    w.join();
  }
  EXPECT_EQ(p.seen_wakes.load(), 600u);
  EXPECT_EQ(p.overlaps.load(), 0);
}

// ---- Idle workers ---------------------------------------------------------------------------

void idle_workers_sleep_and_wake(unsigned spin_us) {
  scheduler s(with_threads(2, 1, spin_us));
  spin_until([&] { return s.sleeps_approx() >= 2; });  // both workers went to sleep
  std::atomic<int> runs{0};
  tasklet t =
      s.make_tasklet([&] { runs.fetch_add(1, std::memory_order_release); }, run_on::thread(1));
  for (int round = 1; round <= 3; ++round) {
    const std::uint64_t before = s.sleeps_approx();
    t.wake();
    spin_until([&] { return runs.load(std::memory_order_acquire) == round; });
    spin_until([&] { return s.sleeps_approx() > before; });  // asleep again after the run
  }
  EXPECT_GE(s.tasks_run_approx(), 3u);
}

TEST(Scheduler, IdleWorkersSleepAndALaterWakeStillRuns) { idle_workers_sleep_and_wake(50); }

TEST(Scheduler, IdleWorkersSleepAtOnceWithoutSpinningAndALaterWakeStillRuns) {
  idle_workers_sleep_and_wake(0);
}

// ---- Exceptions -----------------------------------------------------------------------------

TEST(Tasklet, ExceptionFromItsCallableDoesNotKillTheWorker) {
  scheduler s(with_threads(1));
  std::atomic<int> throws{0};
  tasklet thrower = s.make_tasklet([&] {
    if (throws.fetch_add(1, std::memory_order_release) % 2 == 0) {
      throw std::runtime_error("handler bug");
    }
    throw 42;  // not a std::exception
  });
  std::atomic<int> after{-1};
  tasklet checker = s.make_tasklet(
      [&] {
        const herald::worker_info* w = s.current();
        after.store(w != nullptr ? static_cast<int>(w->thread) : -2, std::memory_order_release);
      },
      run_on::thread(0));
  for (int i = 1; i <= 3; ++i) {
    thrower.wake();  // the same tasklet can run (and throw) again
    spin_until([&] { return throws.load(std::memory_order_acquire) == i; });
  }
  checker.wake();
  spin_until([&] { return after.load(std::memory_order_acquire) != -1; });
  EXPECT_EQ(after.load(), 0);
}

TEST(Tasklet, ExceptionIsCountedAndReportedToTheSchedulersHook) {
  std::mutex m;
  std::vector<std::string> seen;
  herald::scheduler_options opt = with_threads(1);
  opt.on_exception = [&](std::string_view what) {
    std::lock_guard lock(m);
    seen.emplace_back(what);
  };
  scheduler s(opt);
  std::atomic<int> runs{0};
  tasklet thrower = s.make_tasklet([&] {
    if (runs.fetch_add(1) == 0) {
      throw std::runtime_error("handler bug");
    }
    throw 42;
  });
  thrower.wake();
  spin_until([&] { return s.task_exceptions_approx() == 1; });
  thrower.wake();
  spin_until([&] { return s.task_exceptions_approx() == 2; });
  std::lock_guard lock(m);
  EXPECT_EQ(seen, (std::vector<std::string>{"handler bug", "unknown exception"}));
}

// ---- Small types ----------------------------------------------------------------------------

TEST(RunOn, NamesItsKindAndIndex) {
  static_assert(run_on::any().where() == run_on::kind::any);
  static_assert(run_on::group(3).where() == run_on::kind::group);
  static_assert(run_on::group(3).index() == 3);
  static_assert(run_on::thread(7).where() == run_on::kind::thread);
  static_assert(run_on::thread(7).index() == 7);
  SUCCEED();
}

TEST(ExecutorRef, DefaultIsEmptyAndASchedulersIsNot) {
  EXPECT_FALSE(herald::executor_ref());
  scheduler s(with_threads(1));
  EXPECT_TRUE(s.executor());
}

TEST(Task, PlacementAndRebindChangeWhereItRuns) {
  scheduler s(with_threads(3, 3));
  probe_task p(s, s.executor(), run_on::thread(2));
  EXPECT_EQ(p.placement().where(), run_on::kind::thread);
  EXPECT_EQ(p.placement().index(), 2u);
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 1; });
  EXPECT_EQ(p.last_thread.load(), 2);
  s.stop();  // p is idle and nobody wakes it: it may be rebound
  scheduler s2(with_threads(2));
  p.rebind(s2.executor(), run_on::thread(1));
  EXPECT_EQ(p.placement().index(), 1u);
  p.sched = &s2;
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 2; });
  EXPECT_EQ(p.last_thread.load(), 1);
  s2.stop();
}

// A consumer draining its own MPSC queue, as herald's event queues do: producers push, then
// notify() (which skips the read-modify-write when a run is already pending).
struct channel_task : herald::task {
  explicit channel_task(herald::executor_ref ex) : task(&channel_task::run, ex) {}
  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<channel_task&>(t);
    for (unsigned misses = 1; !self.queue.empty_approx(); ++misses) {
      if (self.queue.pop() != nullptr) {
        self.popped.fetch_add(1, std::memory_order_release);
      } else if (misses % 64 != 0) {
        herald::cpu_relax();  // a push is half done
      } else {
        std::this_thread::yield();  // and its producer may be descheduled
      }
    }
    return true;
  }
  herald::detail::mpsc_queue queue;
  std::atomic<unsigned> popped{0};
};

TEST(Task, NotifyAfterAChannelPushNeverStrandsAnItem) {
  scheduler s(with_threads(2, 1, 0));
  channel_task consumer(s.executor());
  constexpr unsigned kProducers = 2;
  constexpr unsigned kEach = 3000;
  std::vector<std::vector<herald::detail::mpsc_node>> nodes(kProducers);
  for (auto& n : nodes) {
    n = std::vector<herald::detail::mpsc_node>(kEach);
  }
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (herald::detail::mpsc_node& n : nodes[p]) {
        consumer.queue.push(n);
        consumer.notify();
      }
    });
  }
  for (std::thread& p : producers) {
    p.join();
  }
  spin_until([&] { return consumer.popped.load(std::memory_order_acquire) == kProducers * kEach; });
  s.stop();
  EXPECT_EQ(consumer.popped.load(), kProducers * kEach);
}

// ---- Misuse ---------------------------------------------------------------------------------

TEST(SchedulerDeathTest, GroupsOutsideOneToThreadCountAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(scheduler(with_threads(2, 0)), "misuse at .*groups must be between 1 and");
  EXPECT_DEATH(scheduler(with_threads(2, 3)), "misuse at .*groups must be between 1 and");
}

TEST(SchedulerDeathTest, RunOnAThreadOrGroupTheSchedulerLacksAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        scheduler s(with_threads(2));
        tasklet t = s.make_tasklet([] {}, run_on::thread(2));
        t.wake();
      },
      "misuse at .*run_on::thread\\(\\) names a thread the scheduler lacks");
  EXPECT_DEATH(
      {
        scheduler s(with_threads(2, 2));
        tasklet t = s.make_tasklet([] {}, run_on::group(2));
        t.wake();
      },
      "misuse at .*run_on::group\\(\\) names a group the scheduler lacks");
}

TEST(SchedulerDeathTest, StopOnOneOfItsOwnWorkersAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        scheduler s(with_threads(1));
        tasklet t = s.make_tasklet([&s] { s.stop(); });
        t.wake();
        spin_until([] { return false; });  // the worker aborts the process
      },
      "misuse at .*stop\\(\\) called on one of its own workers");
}

TEST(TaskletDeathTest, WakeOnAnEmptyHandleAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const tasklet empty;
  EXPECT_DEATH(empty.wake(), "misuse at .*wake\\(\\) on an empty tasklet handle");
}

// ---- mpsc_queue on its own ------------------------------------------------------------------

struct qnode : herald::detail::mpsc_node {
  unsigned producer = 0;
  unsigned seq = 0;
};

qnode* pop_node(herald::detail::mpsc_queue& q) { return static_cast<qnode*>(q.pop()); }

TEST(MpscQueue, EmptyQueuePopsNothingAndSaysEmpty) {
  herald::detail::mpsc_queue q;
  EXPECT_TRUE(q.empty_approx());
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_TRUE(q.empty_approx());
}

TEST(MpscQueue, OneProducerGetsItsNodesBackInPushOrder) {
  herald::detail::mpsc_queue q;
  std::vector<qnode> nodes(10);
  for (unsigned i = 0; i < nodes.size(); ++i) {
    nodes[i].seq = i;
    q.push(nodes[i]);
    EXPECT_FALSE(q.empty_approx());
  }
  for (unsigned i = 0; i < nodes.size(); ++i) {
    qnode* n = pop_node(q);
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n, &nodes[i]);
  }
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_TRUE(q.empty_approx());
}

TEST(MpscQueue, NodeMayBePushedAgainOncePopped) {
  herald::detail::mpsc_queue q;
  qnode a;
  qnode b;
  for (int round = 0; round < 5; ++round) {
    // One item at a time: the path that re-inserts the stub behind the last node.
    q.push(a);
    EXPECT_EQ(pop_node(q), &a);
    EXPECT_TRUE(q.empty_approx());
    // Interleaved pushes and pops.
    q.push(a);
    q.push(b);
    EXPECT_EQ(pop_node(q), &a);
    q.push(a);
    EXPECT_EQ(pop_node(q), &b);
    EXPECT_EQ(pop_node(q), &a);
    EXPECT_EQ(q.pop(), nullptr);
    EXPECT_TRUE(q.empty_approx());
  }
}

TEST(MpscQueue, ManyProducersEveryNodeComesOutOnceInEachProducersOrder) {
  herald::detail::mpsc_queue q;
  constexpr unsigned kProducers = 4;
  constexpr unsigned kEach = 5000;
  std::vector<std::vector<qnode>> nodes(kProducers);
  for (auto& pool : nodes) {
    pool = std::vector<qnode>(kEach);
  }
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < kProducers; ++p) {
    producers.emplace_back([&q, &nodes, p] {
      for (unsigned i = 0; i < kEach; ++i) {
        qnode& n = nodes[p][i];
        n.producer = p;
        n.seq = i;
        q.push(n);
      }
    });
  }
  std::vector<unsigned> next(kProducers, 0);
  std::vector<std::vector<int>> seen(kProducers, std::vector<int>(kEach, 0));
  unsigned popped = 0;
  unsigned disorder = 0;
  unsigned misses = 0;
  while (popped < kProducers * kEach) {
    qnode* n = pop_node(q);
    if (n == nullptr) {
      // Empty, or a push half done by a producer that may be descheduled: yield now and then.
      if (++misses % 64 != 0) {
        herald::cpu_relax();
      } else {
        std::this_thread::yield();
      }
      continue;
    }
    ++popped;
    ++seen[n->producer][n->seq];
    if (n->seq != next[n->producer]) {
      ++disorder;
    }
    next[n->producer] = n->seq + 1;
  }
  for (std::thread& p : producers) {
    p.join();
  }
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_TRUE(q.empty_approx());
  EXPECT_EQ(disorder, 0u);
  for (unsigned p = 0; p < kProducers; ++p) {
    EXPECT_EQ(std::count(seen[p].begin(), seen[p].end(), 1), static_cast<std::ptrdiff_t>(kEach));
  }
}

}  // namespace
