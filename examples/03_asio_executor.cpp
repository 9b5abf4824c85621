// Example 03: herald tasks on an asio io_context and on a scheduler with two thread groups.
//
// A program already has an event loop (an asio::io_context, run here by the main thread) and
// wants herald's asynchronous work on worker threads, with the two groups kept apart (on a big
// machine, one group per socket or L3 cache). Three pieces of work take turns:
//   - `probe` (a tasklet on thread group 0) checks a server; each run wakes `tally`;
//   - `tally` (a tasklet on group 1) aggregates results; each run wakes `report`;
//   - `report` (a plain herald::task bound to the io_context with herald::asio_executor) runs on
//     the event loop's thread, so it may touch the loop's own state without any lock.
// Producer threads wake `probe` in bursts and wait for it to catch up after each burst.
// Wake-ups that arrive while a task is queued are merged, and one that arrives while it runs
// makes exactly one more run, so the number of runs depends on the timing, but the last
// wake-up is never lost. At the end the program checks where each piece ran and that each one
// saw the last wake-up aimed at it, and exits non-zero otherwise.
//
// Usage: herald_example_03_asio_executor [--quick]
#include <herald/asio.hpp>
#include <herald/scheduler.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// A task run by the event loop. Plain herald::task: the program owns it (on main's stack) and
// the io_context outlives every wake-up of it (see herald/asio.hpp, "Lifetimes").
struct loop_report : herald::task {
  explicit loop_report(asio::io_context& loop)
      : task(&loop_report::run, herald::asio_executor(loop)) {}

  static bool run(herald::task& t) noexcept {
    auto& self = static_cast<loop_report&>(t);
    // Loop-owned state: only the loop's thread runs this, and never twice at once.
    ++self.runs;
    self.last_seen = self.tallied->load(std::memory_order_acquire);
    self.on_loop_thread = self.on_loop_thread && std::this_thread::get_id() == self.loop_thread;
    return true;  // keep the task: it will be woken again
  }

  std::thread::id loop_thread = std::this_thread::get_id();
  const std::atomic<std::uint64_t>* tallied = nullptr;
  std::uint64_t runs = 0;
  std::uint64_t last_seen = 0;
  bool on_loop_thread = true;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const unsigned producers = 2;
  const std::uint64_t bursts = quick ? 200 : 20000;
  const std::uint64_t burst_size = 8;

  // The program's event loop, run by this thread below.
  asio::io_context loop;
  auto keep_running = asio::make_work_guard(loop);

  // Two worker threads in two thread groups: thread 0 is group 0, thread 1 is group 1.
  herald::scheduler_options opt;
  opt.threads = 2;
  opt.groups = 2;
  opt.name = "example03";
  herald::scheduler sched(opt);

  std::atomic<std::uint64_t> requested{0};  // wake-ups of `probe`, counted before each wake()
  std::atomic<std::uint64_t> probed{0};     // what the latest probe run had seen
  std::atomic<std::uint64_t> tallied{0};    // what the latest tally run had seen
  std::atomic<int> misplaced{0};
  std::uint64_t probe_runs = 0;  // plain: a tasklet never runs twice at once
  std::uint64_t tally_runs = 0;

  loop_report report(loop);
  report.tallied = &tallied;

  // Group 1: aggregates, then hands the result to the event loop.
  herald::tasklet tally = sched.make_tasklet(
      [&] {
        const herald::worker_info* me = sched.current();
        if (me == nullptr || me->group != 1) {
          misplaced.fetch_add(1);
        }
        ++tally_runs;
        tallied.store(probed.load(std::memory_order_acquire), std::memory_order_release);
        report.wake();  // from a worker to the io_context: any thread may wake any task
      },
      herald::run_on::group(1));

  // Group 0: checks, then wakes the aggregator in the other group.
  herald::tasklet probe = sched.make_tasklet(
      [&] {
        const herald::worker_info* me = sched.current();
        if (me == nullptr || me->group != 0) {
          misplaced.fetch_add(1);
        }
        ++probe_runs;
        probed.store(requested.load(std::memory_order_acquire), std::memory_order_release);
        tally.wake();
      },
      herald::run_on::group(0));

  // Producer threads: bursts of wake-ups, then wait until a run of `probe` has seen them.
  std::vector<std::thread> threads;
  for (unsigned p = 0; p < producers; ++p) {
    threads.emplace_back([&] {
      for (std::uint64_t b = 0; b < bursts; ++b) {
        std::uint64_t mine = 0;
        for (std::uint64_t i = 0; i < burst_size; ++i) {
          mine = requested.fetch_add(1, std::memory_order_release) + 1;
          probe.wake();  // any thread may wake a tasklet; merged if already queued
        }
        while (probed.load(std::memory_order_acquire) < mine) {
          std::this_thread::yield();
        }
      }
    });
  }
  // Meanwhile this thread runs the event loop, until the report has seen every wake-up.
  const std::uint64_t total = producers * bursts * burst_size;
  while (report.last_seen != total) {
    loop.run_one();  // blocks until a handler (a run of `report`) is ready, then runs it
  }
  for (std::thread& t : threads) {
    t.join();
  }

  // Shutdown, in dependency order: the scheduler first (its tasks wake `report`), then the
  // loop, run until idle so that a last wake-up of `report` still runs before it goes away.
  sched.stop();
  keep_running.reset();
  loop.restart();
  loop.run();

  std::printf("probe: %llu wake-ups, %llu runs; tally: %llu runs; report: %llu runs\n",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(probe_runs),
              static_cast<unsigned long long>(tally_runs),
              static_cast<unsigned long long>(report.runs));
  std::printf("tasks run by the scheduler: %llu; misplaced runs: %d\n",
              static_cast<unsigned long long>(sched.tasks_run_approx()), misplaced.load());
  const bool ok = misplaced.load() == 0 && report.on_loop_thread && report.last_seen == total &&
                  tallied.load() == total && probed.load() == total;
  std::printf("%s\n",
              ok ? "every task ran where it was bound and saw the last wake-up" : "MISMATCH");
  return ok ? 0 : 1;
}
