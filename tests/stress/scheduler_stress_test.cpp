// Multi-threaded stress tests for herald::scheduler, tasks and tasklets (herald/scheduler.hpp)
// and the intrusive MPSC queue under them (herald/detail/mpsc_queue.hpp).
//
// What is checked
//   - A web of tasks with every placement, woken by outside threads and by each other's runs:
//     no wake-up is ever lost (some run starts after the last wake-up of every task) and no
//     task ever runs on two threads at once.
//   - Tasklets created, woken and dropped from outside threads and from workers, each ending
//     its own life from inside its run (a reference cycle it breaks itself): every callable is
//     destroyed exactly once, and ASan/LSan see neither a use after free nor a leak.
//   - stop() while outside threads keep waking and tasks keep waking each other: whatever was
//     woken before, during or after stop() runs; after stop() the wakers drain concurrently.
//   - Ping-pong across workers that sleep at once (no polling): every hop must wake a sleeping
//     worker, so a lost futex wake-up shows as a hang.
//   - The MPSC queue with several producers reusing their nodes: FIFO per producer, every push
//     popped exactly once.
//   A lost wake-up makes a test hang rather than fail; the ctest timeout catches that.
//
// How the threads meet
//   Nothing sleeps and nothing is timed: threads wait for counters and flags with spin_until
//   (stress_support.hpp), which spins briefly and then yields.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies every count; optimised
//   uninstrumented builds do more of everything (build_boost).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/detail/mpsc_queue.hpp"
#include "herald/scheduler.hpp"

#include "stress_support.hpp"

namespace {

using herald::run_on;
using herald::scheduler;
using herald::scheduler_options;
using herald::tasklet;
using herald::test::spin_until;

constexpr std::size_t build_boost = herald::test::optimised_build ? 16 : 1;
using herald::test::stress_scale;

std::size_t scaled(std::size_t base) {
  const double n = static_cast<double>(base * build_boost) * stress_scale();
  return std::max<std::size_t>(1, static_cast<std::size_t>(n));
}

scheduler_options options(unsigned threads, unsigned groups, unsigned spin_us) {
  scheduler_options opt;
  opt.threads = threads;
  opt.groups = groups;
  opt.spin_before_sleep_us = spin_us;
  opt.name = "sched-stress";
  return opt;
}

run_on placement_for(std::size_t i, const scheduler& s) {
  switch (i % 3) {
    case 0:
      return run_on::any();
    case 1:
      return run_on::group(static_cast<unsigned>(i / 3) % s.groups());
    default:
      return run_on::thread(static_cast<unsigned>(i / 3) % s.threads());
  }
}

// ---- A web of tasks waking each other ---------------------------------------------------------

struct web;

// A plain task. Each run records the wake-ups it saw, checks it is alone, checks its placement,
// and, while the web's fan-out budget lasts, wakes two random tasks of the web.
struct web_task : herald::task {
  web_task(web& w, std::size_t i, herald::executor_ref ex, run_on where)
      : task(&web_task::run, ex, where), owner(&w), rng(static_cast<std::uint32_t>(i) + 1) {}

  static bool run(herald::task& t) noexcept;

  void counted_wake() noexcept {
    wakes.fetch_add(1, std::memory_order_relaxed);
    wake();
  }

  web* owner;
  std::minstd_rand rng;  // plain: only runs use it, and they never overlap (TSan checks that)
  std::uint64_t plain_runs = 0;
  std::atomic<bool> inside{false};
  std::atomic<std::uint64_t> wakes{0};
  std::atomic<std::uint64_t> seen{0};
  std::atomic<std::uint64_t> runs{0};
};

struct web {
  web(scheduler& s, std::size_t n, std::int64_t fanout_budget) : sched(&s), budget(fanout_budget) {
    for (std::size_t i = 0; i < n; ++i) {
      tasks.push_back(std::make_unique<web_task>(*this, i, s.executor(), placement_for(i, s)));
    }
  }

  scheduler* sched;
  std::vector<std::unique_ptr<web_task>> tasks;
  std::atomic<std::int64_t> budget;      // fan-outs left to start
  std::atomic<std::int64_t> fanouts{0};  // fan-outs finished (their wake-ups issued)
  std::atomic<int> overlaps{0};
  std::atomic<int> misplaced{0};
};

bool web_task::run(herald::task& t) noexcept {
  auto& self = static_cast<web_task&>(t);
  web& w = *self.owner;
  if (self.inside.exchange(true, std::memory_order_relaxed)) {
    w.overlaps.fetch_add(1, std::memory_order_relaxed);
  }
  ++self.plain_runs;
  self.seen.store(self.wakes.load(std::memory_order_relaxed), std::memory_order_relaxed);
  if (const herald::worker_info* me = w.sched->current(); me != nullptr) {
    const run_on p = self.placement();
    if ((p.where() == run_on::kind::thread && me->thread != p.index()) ||
        (p.where() == run_on::kind::group && me->group != p.index())) {
      w.misplaced.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (w.budget.fetch_sub(1, std::memory_order_relaxed) > 0) {
    const std::size_t n = w.tasks.size();
    w.tasks[self.rng() % n]->counted_wake();
    w.tasks[self.rng() % n]->counted_wake();
    w.fanouts.fetch_add(1, std::memory_order_release);
  }
  self.inside.store(false, std::memory_order_relaxed);
  self.runs.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Outside threads wake random tasks of the web `per_thread` times each.
void wake_from_outside(web& w, unsigned threads, std::size_t per_thread) {
  std::vector<std::thread> wakers;
  for (unsigned k = 0; k < threads; ++k) {
    wakers.emplace_back([&w, k, per_thread] {
      std::minstd_rand rng(1000 + k);
      for (std::size_t i = 0; i < per_thread; ++i) {
        w.tasks[rng() % w.tasks.size()]->counted_wake();
      }
    });
  }
  for (std::thread& t : wakers) {
    t.join();
  }
}

// Every task of the web has had a run that started after its last wake-up.
void expect_every_wake_served(const web& w) {
  for (std::size_t i = 0; i < w.tasks.size(); ++i) {
    const web_task& t = *w.tasks[i];
    EXPECT_EQ(t.seen.load(), t.wakes.load()) << "task " << i;
    EXPECT_EQ(t.plain_runs, t.runs.load()) << "task " << i;
  }
  EXPECT_EQ(w.overlaps.load(), 0);
  EXPECT_EQ(w.misplaced.load(), 0);
}

void web_round(unsigned threads, unsigned groups, unsigned spin_us) {
  scheduler s(options(threads, groups, spin_us));
  const auto budget = static_cast<std::int64_t>(scaled(30000));
  web w(s, 24, budget);
  wake_from_outside(w, 3, scaled(20000));
  // The fan-out chains end once the budget is spent, which needs every wake-up they issue to
  // be served; then no wake-up is issued any more, and the workers serve the last ones.
  spin_until([&] { return w.fanouts.load(std::memory_order_acquire) == budget; });
  for (const auto& t : w.tasks) {
    spin_until([&] { return t->seen.load() == t->wakes.load(); });
  }
  s.stop();
  expect_every_wake_served(w);
}

TEST(SchedulerStress, WebOfTasksNeverLosesAWakeUpNorOverlapsARun) { web_round(4, 2, 50); }

TEST(SchedulerStress, WebOfTasksOnWorkersThatSleepAtOnceNeverLosesAWakeUp) { web_round(3, 3, 0); }

// ---- stop() under load --------------------------------------------------------------------------

TEST(SchedulerStress, StopWhileEverythingIsBusyLosesNoWakeUp) {
  const std::size_t rounds = scaled(10);
  for (std::size_t round = 0; round < rounds; ++round) {
    SCOPED_TRACE(testing::Message() << "round " << round);
    scheduler s(options(3, 2, round % 2 == 0 ? 0 : 50));
    web w(s, 16, static_cast<std::int64_t>(scaled(1500)));
    std::atomic<bool> stopping{false};
    std::vector<std::thread> wakers;
    for (unsigned k = 0; k < 3; ++k) {
      wakers.emplace_back([&w, &stopping, k, round] {
        std::minstd_rand rng(static_cast<std::uint32_t>(round * 10 + k));
        const std::size_t each = scaled(800);
        for (std::size_t i = 0; i < each; ++i) {
          w.tasks[rng() % w.tasks.size()]->counted_wake();
          if (i == each / 3) {
            stopping.store(true, std::memory_order_release);
          }
        }
      });
    }
    // Stop in the middle of the wakers' work: what they wake later runs inline, on them.
    spin_until([&] { return stopping.load(std::memory_order_acquire); });
    s.stop();
    for (std::thread& t : wakers) {
      t.join();
    }
    // Every drain has returned: nothing is left to run, and every wake-up was served.
    expect_every_wake_served(w);
  }
}

// ---- Tasklets ending their own life -----------------------------------------------------------

struct life_counter {
  explicit life_counter(std::atomic<std::uint64_t>* n) noexcept : destroyed(n) {}
  life_counter(life_counter&& o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)) {}
  // std::function wants a copyable target; make_tasklet moves it, so no copy is ever made.
  life_counter(const life_counter&) = default;
  life_counter& operator=(const life_counter&) = delete;
  life_counter& operator=(life_counter&&) = delete;
  ~life_counter() {
    if (destroyed != nullptr) {
      destroyed->fetch_add(1, std::memory_order_release);
    }
  }
  std::atomic<std::uint64_t>* destroyed;
};

// Makes a tasklet that holds itself through a shared slot (a reference cycle) and breaks the
// cycle from inside its run once `done` is set, HAProxy's "task frees itself" pattern. Each run
// also wakes `buddy` (a long-lived tasklet), so that workers wake tasklets too.
tasklet make_self_owned(scheduler& s, run_on where, std::atomic<std::uint64_t>& created,
                        std::atomic<std::uint64_t>& destroyed, const tasklet& buddy,
                        std::shared_ptr<std::atomic<bool>>& done_out) {
  auto slot = std::make_shared<std::optional<tasklet>>();
  auto done = std::make_shared<std::atomic<bool>>(false);
  created.fetch_add(1, std::memory_order_relaxed);
  slot->emplace(s.make_tasklet(
      [slot, done, &buddy, life = life_counter(&destroyed), data = std::vector<int>(16, 7)] {
        buddy.wake();
        if (done->load(std::memory_order_acquire) && slot->has_value()) {
          slot->reset();  // the cycle's last handle: freed after this run
          // The callable is still alive here; ASan reports it otherwise.
          if (data[15] != 7 || life.destroyed == nullptr) {
            std::abort();
          }
        }
      },
      where));
  done_out = done;
  return **slot;  // a handle for the creator
}

TEST(SchedulerStress, TaskletsEndingTheirOwnLivesAreFreedExactlyOnce) {
  scheduler s(options(3, 2, 20));
  std::atomic<std::uint64_t> created{0};
  std::atomic<std::uint64_t> destroyed{0};
  std::atomic<std::uint64_t> buddy_runs{0};
  const tasklet buddy = s.make_tasklet([&] { buddy_runs.fetch_add(1); });
  const std::size_t per_thread = scaled(3000);
  // Workers create self-owned tasklets too: a spawner tasklet makes one per run.
  std::atomic<std::uint64_t> spawned{0};
  const std::size_t spawns = scaled(2000);
  std::optional<tasklet> spawner;
  spawner.emplace(s.make_tasklet([&] {
    std::shared_ptr<std::atomic<bool>> done;
    tasklet t = make_self_owned(s, run_on::any(), created, destroyed, buddy, done);
    t.wake();
    done->store(true, std::memory_order_release);
    t.wake();  // a run after `done`: it breaks the cycle
    if (spawned.fetch_add(1) + 1 < spawns) {
      spawner->wake();
    }
  }));
  spawner->wake();
  std::vector<std::thread> creators;
  for (unsigned k = 0; k < 3; ++k) {
    creators.emplace_back([&, k] {
      for (std::size_t i = 0; i < per_thread; ++i) {
        std::shared_ptr<std::atomic<bool>> done;
        tasklet t = make_self_owned(s, placement_for(i + k, s), created, destroyed, buddy, done);
        for (std::size_t n = 0; n < i % 4; ++n) {
          t.wake();
        }
        tasklet copy = t;  // more handles, dropped at various points
        done->store(true, std::memory_order_release);
        copy.wake();
      }
    });
  }
  for (std::thread& t : creators) {
    t.join();
  }
  spin_until([&] { return spawned.load() == spawns; });
  const std::uint64_t expected = 3 * per_thread + spawns;
  spin_until([&] { return destroyed.load(std::memory_order_acquire) == expected; });
  s.stop();
  EXPECT_EQ(created.load(), expected);
  EXPECT_EQ(destroyed.load(), expected);
  EXPECT_GE(buddy_runs.load(), 1u);
}

// ---- Sleep and wake-up races ------------------------------------------------------------------

TEST(SchedulerStress, PingPongAcrossWorkersThatSleepAtOnceNeverStalls) {
  scheduler s(options(2, 2, 0));  // no polling: a worker sleeps as soon as it is idle
  const std::size_t hops = scaled(20000);
  std::atomic<std::size_t> count{0};
  std::optional<tasklet> ping;
  std::optional<tasklet> pong;
  ping.emplace(s.make_tasklet(
      [&] {
        if (count.fetch_add(1, std::memory_order_relaxed) + 1 < hops) {
          pong->wake();
        }
      },
      run_on::thread(0)));
  pong.emplace(s.make_tasklet(
      [&] {
        if (count.fetch_add(1, std::memory_order_relaxed) + 1 < hops) {
          ping->wake();
        }
      },
      run_on::group(1)));
  ping->wake();
  spin_until([&] { return count.load() >= hops; });
  // An outside thread and a worker taking turns: each turn wakes a worker that just slept.
  std::atomic<std::size_t> turns{0};
  tasklet echo =
      s.make_tasklet([&] { turns.fetch_add(1, std::memory_order_release); }, run_on::thread(1));
  const std::size_t rounds = scaled(5000);
  for (std::size_t i = 1; i <= rounds; ++i) {
    echo.wake();
    spin_until([&] { return turns.load(std::memory_order_acquire) == i; });
  }
  s.stop();
  EXPECT_EQ(count.load(), hops);
  EXPECT_EQ(turns.load(), rounds);
  EXPECT_GE(s.sleeps_approx(), 1u);
}

// ---- Start and stop -------------------------------------------------------------------------

TEST(SchedulerStress, StartingAndStoppingWithWorkInFlightRunsItAllOnTheWorkers) {
  const std::size_t rounds = scaled(50);
  std::minstd_rand rng(7);
  for (std::size_t round = 0; round < rounds; ++round) {
    const unsigned threads = 1 + static_cast<unsigned>(rng() % 4);
    const unsigned groups = 1 + static_cast<unsigned>(rng() % threads);
    scheduler s(options(threads, groups, static_cast<unsigned>(rng() % 2) * 30));
    // Tasklets pinned to each thread relay a hop count around the threads: stop() must let the
    // workers finish the relay (every hop on its own thread), not run it elsewhere.
    constexpr std::size_t kHops = 64;
    std::atomic<std::size_t> hops{0};
    std::atomic<int> elsewhere{0};
    std::vector<tasklet> relay(threads);
    for (unsigned t = 0; t < threads; ++t) {
      relay[t] = s.make_tasklet(
          [&, t, threads] {
            const herald::worker_info* me = s.current();
            if (me == nullptr || me->thread != t) {
              elsewhere.fetch_add(1, std::memory_order_relaxed);
            }
            if (hops.fetch_add(1, std::memory_order_relaxed) + 1 < kHops) {
              relay[(t + 1) % threads].wake();
            }
          },
          run_on::thread(t));
    }
    if (round % 3 != 0) {  // every third round stops an idle scheduler
      relay[0].wake();
    }
    s.stop();
    EXPECT_EQ(hops.load(), round % 3 != 0 ? kHops : 0u) << "round " << round;
    EXPECT_EQ(elsewhere.load(), 0) << "round " << round;
  }
}

// ---- notify(): a wake-up that trusts its channel
// -------------------------------------------------

// A consumer task draining its own MPSC queue, as herald's event queues do: producers push,
// then notify(). The run drains until the queue is empty (waiting out half-done pushes).
struct channel_task : herald::task {
  explicit channel_task(herald::executor_ref ex) : task(&channel_task::run, ex) {}
  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<channel_task&>(t);
    for (unsigned misses = 1; !self.queue.empty_approx(); ++misses) {
      if (self.queue.pop() != nullptr) {
        ++self.plain_popped;
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
  std::uint64_t plain_popped = 0;  // plain: runs never overlap
  std::atomic<std::uint64_t> popped{0};
};

TEST(SchedulerStress, NotifyAfterAPushNeverStrandsAnItem) {
  scheduler s(options(2, 1, 0));
  channel_task consumer(s.executor());
  constexpr unsigned kProducers = 3;
  const std::size_t each = scaled(20000);
  std::vector<std::vector<herald::detail::mpsc_node>> nodes(kProducers);
  for (auto& n : nodes) {
    n = std::vector<herald::detail::mpsc_node>(each);
  }
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::size_t i = 0; i < each; ++i) {
        consumer.queue.push(nodes[p][i]);
        consumer.notify();
      }
    });
  }
  for (std::thread& p : producers) {
    p.join();
  }
  // Waited for before stop(): the workers must have been woken for the last items.
  spin_until([&] { return consumer.popped.load(std::memory_order_acquire) == kProducers * each; });
  s.stop();
  EXPECT_EQ(consumer.plain_popped, kProducers * each);
}

// ---- mpsc_queue -------------------------------------------------------------------------------

struct qnode : herald::detail::mpsc_node {
  unsigned producer = 0;
  std::uint64_t seq = 0;
  std::atomic<bool> free{true};  // the consumer hands the node back (release/acquire)
};

TEST(MpscQueueStress, ProducersReusingNodesGetFifoPerProducerAndEveryPushPoppedOnce) {
  herald::detail::mpsc_queue q;
  constexpr unsigned kProducers = 3;
  constexpr std::size_t kPool = 8;  // nodes per producer, reused
  const std::size_t each = scaled(40000);
  std::vector<std::vector<qnode>> pools(kProducers);
  for (auto& p : pools) {
    p = std::vector<qnode>(kPool);
  }
  std::vector<std::thread> producers;
  for (unsigned p = 0; p < kProducers; ++p) {
    producers.emplace_back([&q, &pools, p, each] {
      for (std::uint64_t i = 0; i < each; ++i) {
        qnode& n = pools[p][i % kPool];
        spin_until([&] { return n.free.load(std::memory_order_acquire); });
        n.free.store(false, std::memory_order_relaxed);
        n.producer = p;
        n.seq = i;
        q.push(n);
      }
    });
  }
  std::vector<std::uint64_t> next(kProducers, 0);
  std::uint64_t disorder = 0;
  std::uint64_t popped = 0;
  unsigned misses = 0;
  while (popped < kProducers * each) {
    auto* n = static_cast<qnode*>(q.pop());
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
    if (n->seq != next[n->producer]) {
      ++disorder;
    }
    next[n->producer] = n->seq + 1;
    n->free.store(true, std::memory_order_release);
  }
  for (std::thread& p : producers) {
    p.join();
  }
  EXPECT_EQ(disorder, 0u);
  for (unsigned p = 0; p < kProducers; ++p) {
    EXPECT_EQ(next[p], each);
  }
  EXPECT_EQ(q.pop(), nullptr);
  EXPECT_TRUE(q.empty_approx());
}

}  // namespace
