// Unit tests of herald/asio.hpp: tasks bound to asio_executor(ctx) run on the threads running
// the io_context, with the same task semantics as on a herald::scheduler: wake-ups never lost,
// never two runs at once (also with two threads running the context), exactly one more run
// after a wake-up during a run, a refcounted (tasklet-like) task freeing itself from inside
// its run, a task ending its life by returning false, placement ignored, rebinding between a
// scheduler and an io_context.
//
// How the checks wait
//   The io_context runs on std::threads kept busy by a work guard. Tests wait for events with
//   spin_until (never sleep, never time anything); for "exactly N runs" they release the guard
//   and join the runners first: once run() has returned, every posted handler has run.
#include "herald/asio.hpp"

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

#include "herald/scheduler.hpp"

#include "../stress/stress_support.hpp"

namespace {

using herald::run_on;
using herald::test::spin_until;

// An io_context run by `threads` std::threads until finish().
class context_runner {
 public:
  explicit context_runner(unsigned threads = 1) : guard_(asio::make_work_guard(ctx)) {
    for (unsigned i = 0; i < threads; ++i) {
      runners_.emplace_back([this] { ctx.run(); });
    }
  }
  context_runner(const context_runner&) = delete;
  context_runner& operator=(const context_runner&) = delete;
  ~context_runner() { finish(); }

  /// Lets run() return once every posted handler has run, and joins the runners.
  void finish() {
    guard_.reset();
    for (std::thread& t : runners_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }
  [[nodiscard]] bool runs_here(std::thread::id id) const {
    for (const std::thread& t : runners_) {
      if (t.get_id() == id) {
        return true;
      }
    }
    return false;
  }

  asio::io_context ctx;

 private:
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::vector<std::thread> runners_;
};

// A plain task recording runs, overlaps, the thread of the last run and the wake-ups it saw.
struct probe_task : herald::task {
  probe_task(herald::executor_ref ex, run_on where = run_on::any())
      : task(&probe_task::run, ex, where) {}

  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<probe_task&>(t);
    if (self.inside.exchange(true, std::memory_order_relaxed)) {
      self.overlaps.fetch_add(1, std::memory_order_relaxed);
    }
    ++self.plain_runs;  // plain: ThreadSanitizer checks that runs are ordered
    self.last_thread = std::this_thread::get_id();
    self.seen_wakes.store(self.wakes.load(std::memory_order_relaxed), std::memory_order_relaxed);
    for (int i = 0; i < 20; ++i) {
      herald::cpu_relax();
    }
    self.inside.store(false, std::memory_order_relaxed);
    self.runs.fetch_add(1, std::memory_order_release);
    return true;
  }

  void counted_wake() noexcept {
    wakes.fetch_add(1, std::memory_order_relaxed);
    wake();
  }

  std::uint64_t plain_runs = 0;
  std::thread::id last_thread;  // written by runs, read after runs.load(acquire)
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::atomic<std::uint64_t> wakes{0};
  std::atomic<std::uint64_t> seen_wakes{0};
  std::atomic<std::uint64_t> runs{0};
};

TEST(AsioExecutor, IsAnExecutorRef) {
  asio::io_context ctx;
  const herald::executor_ref ex = herald::asio_executor(ctx);
  EXPECT_TRUE(ex);
}

TEST(AsioExecutor, WokenTaskRunsOnTheThreadRunningTheContext) {
  context_runner r;
  probe_task p(herald::asio_executor(r.ctx));
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 1; });
  EXPECT_TRUE(r.runs_here(p.last_thread));
  EXPECT_NE(p.last_thread, std::this_thread::get_id());
  r.finish();
  EXPECT_EQ(p.runs.load(), 1u);
}

TEST(AsioExecutor, PlacementIsIgnored) {
  context_runner r;
  probe_task p(herald::asio_executor(r.ctx), run_on::thread(7));  // no such thread: no matter
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 1; });
  EXPECT_TRUE(r.runs_here(p.last_thread));
}

TEST(AsioExecutor, WakeUpsFromManyThreadsAreNeverLostAndRunsNeverOverlap) {
  context_runner r(2);  // two threads run the context: the task must still run alone
  probe_task p(herald::asio_executor(r.ctx));
  constexpr unsigned kWakers = 4;
  constexpr std::uint64_t kEach = 2000;
  std::vector<std::thread> wakers;
  for (unsigned w = 0; w < kWakers; ++w) {
    wakers.emplace_back([&] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        p.counted_wake();
      }
    });
  }
  for (std::thread& w : wakers) {
    w.join();
  }
  // Some run started after the last wake-up was counted (the context delivered it).
  spin_until([&] { return p.seen_wakes.load() == kWakers * kEach; });
  r.finish();
  EXPECT_EQ(p.overlaps.load(), 0);
  EXPECT_EQ(p.plain_runs, p.runs.load());
  EXPECT_GE(p.runs.load(), 1u);
}

TEST(AsioExecutor, WakeDuringARunCausesExactlyOneMoreRunAfterIt) {
  context_runner r(2);
  std::atomic<int> runs{0};
  std::atomic<bool> first_started{false};
  std::atomic<bool> first_may_end{false};
  struct blocking_task : herald::task {
    using task::task;
    std::atomic<int>* runs = nullptr;
    std::atomic<bool>* started = nullptr;
    std::atomic<bool>* may_end = nullptr;
  };
  blocking_task t(
      [](herald::task& self) noexcept {
        auto& b = static_cast<blocking_task&>(self);
        if (b.runs->load() == 0) {
          b.started->store(true, std::memory_order_release);
          spin_until([&] { return b.may_end->load(std::memory_order_acquire); });
        }
        b.runs->fetch_add(1, std::memory_order_release);
        return true;
      },
      herald::asio_executor(r.ctx));
  t.runs = &runs;
  t.started = &first_started;
  t.may_end = &first_may_end;
  t.wake();
  spin_until([&] { return first_started.load(std::memory_order_acquire); });
  t.wake();
  t.wake();
  std::thread other([&] { t.wake(); });
  other.join();
  first_may_end.store(true, std::memory_order_release);
  spin_until([&] { return runs.load(std::memory_order_acquire) == 2; });
  r.finish();  // every posted handler has run: the count is final
  EXPECT_EQ(runs.load(), 2);
}

// A refcounted task, the shape of a tasklet, bound to any executor: the owner holds one
// reference; the hooks hold one more while the task is queued or running.
struct ref_task : herald::task {
  ref_task(herald::executor_ref ex, std::atomic<int>* freed_counter)
      : task(&ref_task::run, ex, run_on::any(), &ref_task::hold, &ref_task::release),
        freed(freed_counter),
        payload(32, 5) {}
  ~ref_task() { freed->fetch_add(1, std::memory_order_release); }
  ref_task(const ref_task&) = delete;
  ref_task& operator=(const ref_task&) = delete;

  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<ref_task&>(t);
    if (self.inside.exchange(true, std::memory_order_relaxed)) {
      self.overlaps->fetch_add(1, std::memory_order_relaxed);
    }
    self.seen->store(self.wakes->load(std::memory_order_relaxed), std::memory_order_relaxed);
    if (self.drop_owner_in_run.exchange(false, std::memory_order_acq_rel)) {
      drop(&self);  // the owner's reference: the run's own keeps the task alive
    }
    // Still alive here (ASan reports it otherwise).
    if (self.payload[31] != 5) {
      std::abort();
    }
    self.inside.store(false, std::memory_order_relaxed);
    return true;
  }
  static void hold(herald::task& t) noexcept {
    static_cast<ref_task&>(t).refs.fetch_add(1, std::memory_order_relaxed);
  }
  static void release(herald::task& t) noexcept { drop(&static_cast<ref_task&>(t)); }
  static void drop(ref_task* t) noexcept {
    // acq_rel: the last dropper sees every use of the task before deleting it.
    if (t->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete t;
    }
  }

  std::atomic<int> refs{1};  // the owner's
  std::atomic<int>* freed;
  std::atomic<bool> inside{false};
  std::atomic<bool> drop_owner_in_run{false};
  std::atomic<int>* overlaps = nullptr;
  std::atomic<std::uint64_t>* wakes = nullptr;
  std::atomic<std::uint64_t>* seen = nullptr;
  std::vector<int> payload;
};

TEST(AsioExecutor, RefcountedTaskIsNeverLostNeverConcurrentAndMayFreeItselfInItsRun) {
  context_runner r(2);
  std::atomic<int> freed{0};
  std::atomic<int> overlaps{0};
  std::atomic<std::uint64_t> wakes{0};
  std::atomic<std::uint64_t> seen{0};
  auto* t = new ref_task(herald::asio_executor(r.ctx), &freed);
  t->overlaps = &overlaps;
  t->wakes = &wakes;
  t->seen = &seen;
  constexpr unsigned kWakers = 3;
  constexpr std::uint64_t kEach = 1500;
  std::vector<std::thread> wakers;
  for (unsigned w = 0; w < kWakers; ++w) {
    wakers.emplace_back([&] {
      for (std::uint64_t i = 0; i < kEach; ++i) {
        wakes.fetch_add(1, std::memory_order_relaxed);
        t->wake();  // the owner's reference is alive until the last wake below
      }
    });
  }
  for (std::thread& w : wakers) {
    w.join();
  }
  spin_until([&] { return seen.load() == kWakers * kEach; });
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(freed.load(), 0);
  // The owner lets go; a run may still hold its own reference: the last one frees the task.
  ref_task::drop(t);
  spin_until([&] { return freed.load(std::memory_order_acquire) == 1; });

  // A task whose owner hands its reference to the run, which drops it: it frees itself.
  auto* u = new ref_task(herald::asio_executor(r.ctx), &freed);
  u->overlaps = &overlaps;
  u->wakes = &wakes;
  u->seen = &seen;
  u->drop_owner_in_run.store(true, std::memory_order_relaxed);
  u->wake();  // `u` is not touched by this thread any more
  spin_until([&] { return freed.load(std::memory_order_acquire) == 2; });
  r.finish();
  EXPECT_EQ(freed.load(), 2);
}

// A task that deletes itself in its last run and returns false.
struct self_deleting_task : herald::task {
  self_deleting_task(herald::executor_ref ex, int runs_to_live, std::atomic<int>* deleted_counter)
      : task(&self_deleting_task::run, ex), left(runs_to_live), deleted(deleted_counter) {}
  static bool run(herald::task& t) noexcept {
    auto* self = static_cast<self_deleting_task*>(&t);
    if (--self->left > 0) {
      self->wake();
      return true;
    }
    std::atomic<int>* counter = self->deleted;
    delete self;  // ASan reports any later access by the executor
    counter->fetch_add(1, std::memory_order_release);
    return false;
  }
  int left;
  std::atomic<int>* deleted;
};

TEST(AsioExecutor, TaskWhoseRunReturnsFalseIsNeverTouchedAgain) {
  context_runner r(2);
  std::atomic<int> deleted{0};
  constexpr int kTasks = 40;
  for (int i = 0; i < kTasks; ++i) {
    (new self_deleting_task(herald::asio_executor(r.ctx), 1 + i % 4, &deleted))->wake();
  }
  spin_until([&] { return deleted.load(std::memory_order_acquire) == kTasks; });
  r.finish();
  EXPECT_EQ(deleted.load(), kTasks);
}

TEST(AsioExecutor, TaskReboundBetweenASchedulerAndAContextRunsWhereItIsBound) {
  herald::scheduler_options opt;
  opt.threads = 2;
  herald::scheduler s(opt);
  context_runner r;
  probe_task p(s.executor(), run_on::thread(1));
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 1; });
  s.stop();  // p is idle and nobody wakes it: it may be rebound
  p.rebind(herald::asio_executor(r.ctx), run_on::any());
  p.wake();
  spin_until([&] { return p.runs.load(std::memory_order_acquire) == 2; });
  EXPECT_TRUE(r.runs_here(p.last_thread));
  r.finish();
}

}  // namespace
