// herald/scheduler.hpp - worker threads in thread groups, tasks and tasklets, executors.
//
// What it is
//   The sched layer runs herald's asynchronous work (and the user's, if they like): a
//   `scheduler` owns N worker threads split into thread groups (HAProxy's design: the threads
//   of one group share an L3 cache or a socket, so work woken for a group stays there). Each
//   worker has its own run queue; a wake-up can be aimed at one thread, at a group, or at any
//   thread. Idle workers spin briefly, then sleep on a futex: no CPU is burnt when idle.
//
// Tasks
//   A `task` is an intrusive unit of work: a function pointer plus the executor that runs it.
//   wake() may be called from any thread at any time; the task then runs once, later, on the
//   executor. A task never runs on two threads at once: a wake-up during a run makes it run
//   once more after that run (not concurrently), and wake-ups while it is queued are merged.
//   A `tasklet` is the user-facing, refcounted form, holding any callable.
//
// Executors
//   An `executor_ref` is how a task reaches the code that runs it: a scheduler's executor(),
//   or an adapter for an event loop the program already has (herald/asio.hpp for asio's
//   io_context; anything that can post a callable).
//
// Lifetimes and hazards
//   - A task must stay alive while it is queued or running. Its run function may end its life
//     (return false: the executor then never touches it again); nothing else may wake it then.
//   - A tasklet is kept alive by its handles and, while queued or running, by the scheduler:
//     dropping the last handle from inside its own run is safe (HAProxy's "task frees itself on
//     END" pattern); a later wake-up through another path is impossible, since no handle is left.
//   - stop() (and the destructor) lets the workers run every task already queued, and every
//     task they wake, each on the thread its placement names, until all run queues are empty;
//     then it joins the workers. A wake-up after the workers are gone runs the task inline in
//     the waking thread (or, if another thread is already running leftover tasks at that
//     moment, in that thread, before it returns), so nothing woken is ever lost. A wake-up from
//     outside that races with stop() gets either treatment.
//   - A scheduler must outlive every task bound to its executor() (tasklets included): a
//     wake-up after its destruction is a use after free.
//
// Memory ordering
//   A wake-up happens before the run it causes (the task's state transition is acq_rel, and the
//   run queue's push is a release paired with the worker's acquire pop). Everything a run did
//   happens before the next run of the same task (the state transition back to idle is a
//   release, the next wake-up's transition an acquire).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "herald/detail/mpsc_queue.hpp"

namespace herald {

class task;

/// Where a task runs: any worker, one thread group, or one thread (global index).
class run_on {
 public:
  enum class kind : std::uint8_t { any, group, thread };
  [[nodiscard]] static constexpr run_on any() noexcept { return run_on(kind::any, 0); }
  [[nodiscard]] static constexpr run_on group(unsigned g) noexcept {
    return run_on(kind::group, g);
  }
  [[nodiscard]] static constexpr run_on thread(unsigned t) noexcept {
    return run_on(kind::thread, t);
  }
  [[nodiscard]] constexpr kind where() const noexcept { return kind_; }
  [[nodiscard]] constexpr unsigned index() const noexcept { return index_; }

 private:
  constexpr run_on(kind k, unsigned i) noexcept : index_(i), kind_(k) {}
  unsigned index_;
  kind kind_;
};

/// A non-owning reference to something that runs tasks (a scheduler, an event loop adapter).
/// `post` must eventually call task::execute(t) exactly once, on some thread, and must not
/// touch `t` after making it runnable (it may already be running, or gone). Copyable.
class executor_ref {
 public:
  using post_fn = void (*)(void* self, task& t, run_on where) noexcept;
  constexpr executor_ref() noexcept = default;
  constexpr executor_ref(void* self, post_fn fn) noexcept : self_(self), post_(fn) {}
  /// Makes `t` runnable. Thread safety: any thread. Blocking: as the executor.
  void post(task& t, run_on where) const noexcept { post_(self_, t, where); }
  explicit operator bool() const noexcept { return post_ != nullptr; }

 private:
  void* self_ = nullptr;
  post_fn post_ = nullptr;
};

/// An intrusive unit of work (see the file comment). Not copyable, not movable: queues link it.
class task : public detail::mpsc_node {
 public:
  /// What a run returns: true to keep the task (it may be woken again), false if the run ended
  /// the task's life (the executor will not touch it again).
  using run_fn = bool (*)(task& self) noexcept;
  /// Optional reference hooks: `hold` is called when the task becomes queued (before it is
  /// posted), `release` when a run ends with the task idle. A refcounted owner (tasklet) uses
  /// them to stay alive while queued or running.
  using ref_fn = void (*)(task& self) noexcept;

  task(run_fn run, executor_ref ex, run_on where = run_on::any(), ref_fn hold = nullptr,
       ref_fn release = nullptr) noexcept
      : run_(run), hold_(hold), release_(release), ex_(ex), where_(where) {}
  task(const task&) = delete;
  task& operator=(const task&) = delete;

  /// Schedules one run (merged with a pending one; after the current one if running).
  /// Thread safety: any thread, the task's own run included. Handler context: allowed.
  /// Blocking: never (the executor's post may take a short lock). Allocation: none by herald's
  /// scheduler; an adapter may allocate. Ownership: the caller guarantees the task is alive
  /// for the duration of the call. Errors: none.
  void wake() noexcept;

  /// Like wake(), for a producer that has just handed the task data through a channel with its
  /// own release/acquire ordering (herald's event queues): when a run is already pending it
  /// returns after one load instead of a read-modify-write. Contract keys as wake().
  void notify() noexcept {
    // seq_cst: pairs with the seq_cst exchange that starts a run (execute()) and with the
    // channel's seq_cst push, so that either this load sees the run started (and it will see
    // the data), or the run sees the data.
    const std::uint32_t s = state_.load(std::memory_order_seq_cst);
    if (s == queued || s == running_rewake) {
      return;
    }
    wake();
  }

  /// Runs the task once (for executors). Thread safety: called by the executor only, for a
  /// task it received through post(). Blocking: as the task's run function.
  static void execute(task& t) noexcept;

  /// A run is queued, or will follow the current one (a racy hint, exact when only the
  /// caller's own run could change it; herald uses it to hand a queue's END to the last run).
  /// Memory ordering: acquire.
  [[nodiscard]] bool wake_pending() const noexcept {
    const std::uint32_t s = state_.load(std::memory_order_acquire);
    return s == queued || s == running_rewake;
  }

  /// Where the task asked to run.
  [[nodiscard]] run_on placement() const noexcept { return where_; }
  /// Changes the executor and placement. Only while the task is idle and nobody wakes it.
  void rebind(executor_ref ex, run_on where) noexcept {
    ex_ = ex;
    where_ = where;
  }

 private:
  static constexpr std::uint32_t idle = 0;
  static constexpr std::uint32_t queued = 1;
  static constexpr std::uint32_t running = 2;
  static constexpr std::uint32_t running_rewake = 3;

  std::atomic<std::uint32_t> state_{idle};
  run_fn run_;
  ref_fn hold_;
  ref_fn release_;
  executor_ref ex_;
  run_on where_;
};

/// Options of a scheduler.
struct scheduler_options {
  unsigned threads = 0;  ///< 0: std::thread::hardware_concurrency() (at least 1)
  unsigned groups = 1;   ///< thread groups, 1..threads; threads are split as evenly as possible
  /// How long an idle worker polls its run queue before it sleeps (microseconds). Polling
  /// saves the futex round trip when events arrive back to back; 0: sleep at once.
  unsigned spin_before_sleep_us = 50;
  std::string name = "herald";  ///< worker thread names: "<name>/<group>.<index in group>"
  /// Called on the worker, with the exception's what(), when a tasklet's callable throws (the
  /// worker carries on). Must not throw. Empty: the exception is only counted.
  std::function<void(std::string_view what)> on_exception;
};

/// Where the calling thread sits in a scheduler (see scheduler::current()).
struct worker_info {
  unsigned thread = 0;    ///< global index, 0..threads()-1
  unsigned group = 0;     ///< thread group, 0..groups()-1
  unsigned in_group = 0;  ///< index within the group
};

class tasklet;

/// N worker threads in thread groups running tasks (see the file comment).
/// Thread safety: every member may be called from any thread, workers included, except the
/// destructor. Not copyable, not movable.
class scheduler {
 public:
  /// Starts the workers. Errors: aborts with a message if threads cannot be created, or if
  /// `groups` is 0 or larger than the thread count (misuse).
  explicit scheduler(scheduler_options opt = {});
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;
  /// stop(). Thread safety: not concurrent with other uses; never on one of its workers.
  ~scheduler();

  /// Lets the workers run every queued task (and what they wake) to completion, then joins
  /// them and runs what was woken from outside meanwhile. Idempotent; concurrent calls all
  /// return once the queues are empty. Later wake-ups run inline (see the file comment).
  /// Blocking: yes. Handler context: not from one of this scheduler's workers (it would join
  /// itself; aborts); from a task that a drain after stop() runs, returns at once.
  void stop() noexcept;

  /// The executor that runs tasks on these workers. Allocation: none.
  [[nodiscard]] executor_ref executor() noexcept;

  /// Makes a tasklet running `fn` (callable as void()) on this scheduler.
  /// Allocation: the tasklet. Ownership: `fn` is moved in and destroyed with the tasklet.
  [[nodiscard]] tasklet make_tasklet(std::function<void()> fn, run_on where = run_on::any());

  // Accessors. Thread safety: any thread. Handler context: allowed. Blocking: never.
  // Allocation: none. Errors: an index the scheduler lacks is misuse (aborts).

  [[nodiscard]] unsigned threads() const noexcept;
  [[nodiscard]] unsigned groups() const noexcept;
  /// The group of a thread (global index) and the first thread of a group.
  [[nodiscard]] unsigned group_of(unsigned thread) const noexcept;
  [[nodiscard]] unsigned first_thread_of(unsigned group) const noexcept;
  [[nodiscard]] unsigned threads_in(unsigned group) const noexcept;

  /// The calling thread's place if it is a worker of this scheduler, else nullptr.
  [[nodiscard]] const worker_info* current() const noexcept;

  /// Tasks run so far (all workers; relaxed counter, for tests and diagnostics).
  [[nodiscard]] std::uint64_t tasks_run_approx() const noexcept;
  /// Exceptions thrown by tasklet callables (relaxed counter).
  [[nodiscard]] std::uint64_t task_exceptions_approx() const noexcept;
  /// Times a worker went to sleep (relaxed counter, for tests and diagnostics).
  [[nodiscard]] std::uint64_t sleeps_approx() const noexcept;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

/// A refcounted task holding a callable (HAProxy's tasklet). Copying a handle takes a
/// reference. The callable is destroyed when the last handle is gone and the tasklet is neither
/// queued nor running. Thread safety: distinct handles may be used from any threads.
class tasklet {
 public:
  tasklet() noexcept = default;
  tasklet(const tasklet& o) noexcept;
  tasklet(tasklet&& o) noexcept;
  tasklet& operator=(tasklet o) noexcept;
  ~tasklet();

  /// Schedules one run (see task::wake). Calling it on an empty handle is misuse (aborts).
  void wake() const noexcept;
  /// See task::wake_pending() (false for an empty handle).
  [[nodiscard]] bool wake_pending() const noexcept;
  explicit operator bool() const noexcept { return core_ != nullptr; }

  struct core;
  explicit tasklet(core* adopted) noexcept : core_(adopted) {}

 private:
  core* core_ = nullptr;
};

namespace detail {
/// True if the calling thread is a worker of a herald scheduler and no other task waits in its
/// run queue (a racy hint). A task that just ran dry uses it to decide whether it may poll for
/// more work a little longer without delaying anyone. Thread safety: any thread.
bool worker_queue_empty_approx() noexcept;
/// True if the calling thread is a worker of a herald scheduler (a publisher there must not
/// wait for a consumer that may need the same thread). Thread safety: any thread.
bool on_scheduler_worker() noexcept;
}  // namespace detail

}  // namespace herald
