// The sched layer: task state machine, worker threads with per-thread run queues, tasklets.
// See herald/scheduler.hpp for the contract.
#include "herald/scheduler.hpp"

#include <pthread.h>

#include <algorithm>
#include <exception>
#include <string_view>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/error.hpp"

namespace herald {

// ---- task ------------------------------------------------------------------------------------

void task::wake() noexcept {
  std::uint32_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    switch (s) {
      case idle:
        // acq_rel: the run that follows sees what the waker wrote before (release), and the
        // waker sees the previous run's writes (acquire of its release to idle).
        if (state_.compare_exchange_weak(s, queued, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          if (hold_ != nullptr) {
            hold_(*this);
          }
          ex_.post(*this, where_);
          return;
        }
        break;
      case queued:
      case running_rewake:
        // An RMW writing the same value: the run that is pending reads-from it (acquire) and
        // so sees what this waker wrote before the wake-up.
        if (state_.compare_exchange_weak(s, s, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          return;
        }
        break;
      case running:
        if (state_.compare_exchange_weak(s, running_rewake, std::memory_order_acq_rel,
                                         std::memory_order_acquire)) {
          return;
        }
        break;
      default:
        HERALD_ASSERT(false, "task state corrupted (a task used after its end?)");
    }
  }
}

void task::execute(task& t) noexcept {
  // acq_rel: pairs with the wake-up that queued it (and with same-value RMWs of later wakers).
  // seq_cst: also pairs with notify()'s seq_cst load (see there).
  t.state_.exchange(running, std::memory_order_seq_cst);
  if (!t.run_(t)) {
    return;  // the run ended the task's life
  }
  std::uint32_t s = running;
  // Read before the task goes idle: from then on another thread may run it, end it and free
  // it (a task without hooks is not touched after the transition).
  const ref_fn release = t.release_;
  // release: the next run (after a later wake-up's acquire) sees what this one wrote.
  if (t.state_.compare_exchange_strong(s, idle, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
    if (release != nullptr) {
      release(t);  // the queued episode's reference keeps it alive until here; may free it
    }
    return;
  }
  // Woken while running: one more run, after this one; the queued episode continues.
  t.state_.store(queued, std::memory_order_relaxed);
  t.ex_.post(t, t.where_);
}

// ---- scheduler -------------------------------------------------------------------------------

namespace {

struct worker {
  detail::mpsc_queue queue;
  // Sleep protocol (see post()): the worker announces `idle` (seq_cst), re-checks its queue,
  // then waits for `epoch` to change; a poster pushes (seq_cst), then bumps `epoch` if it sees
  // the worker idle. One of the two always sees the other.
  alignas(64) std::atomic<bool> idle{false};
  std::atomic<std::uint32_t> epoch{0};
  worker_info info;
  std::thread thread;
};

struct current_worker {
  const scheduler::impl* owner = nullptr;
  worker* self = nullptr;
};
thread_local current_worker tls_current;
thread_local unsigned tls_round_robin = 0;

}  // namespace

// How stop() ends. herald/scheduler.hpp promises that the workers run every task queued and
// every task those wake, and are joined only then; a worker leaving as soon as its own queue
// is empty would strand (or move to the stopping thread) what a busier worker wakes for it.
//   1. stop() sets `stopping` and wakes every worker.
//   2. A worker that finds its queue empty while `stopping` is set *parks*: it counts itself in
//      `parking` and sleeps until its queue gets work (it then unparks before it pops anything)
//      or until `finished`. One atomic word holds both the number of parked workers and the
//      number of unparks so far, so that one load sees both at the same instant.
//   3. A parked worker checks whether all are done (all_drained()): every worker parked, no
//      queue pushed to since its worker parked, and `parking` unchanged across the check (no
//      worker unparked in between, so none ran anything, so no running task could still wake
//      one). The first to see it sets `finished` and wakes the others; they all exit. Every
//      worker checks as it parks, so the last one to park always sees it.
//   A wake-up from outside that races with stop() may land after its worker left: stop()'s
//   drain runs it once the workers are joined, like any wake-up after that point.
//
// After the join (`joined`), post() pushes as usual, then drains every queue in the posting
// thread. Draining is combined and never blocks a poster: one thread at a time holds
// `drainer` and runs everything queued; a poster that finds another thread draining leaves its
// task to it (it counts a request, which the drainer reads after letting `drainer` go). A run
// that wakes a task from inside a drain (itself, another one) is thus run by the drain loop in
// progress, never by a nested drain (which would wait for itself).
struct scheduler::impl {
  scheduler_options opt;
  std::vector<std::unique_ptr<worker>> workers;
  std::vector<unsigned> group_first;
  std::vector<unsigned> group_size;
  std::atomic<bool> stopping{false};
  // Low 32 bits: workers parked (stop in progress). High 32 bits: unparks so far (wrapping;
  // a check would need 2^32 unparks during its few loads to be fooled).
  static constexpr std::uint64_t one_parked = 1;
  static constexpr std::uint64_t one_unpark = std::uint64_t{1} << 32;
  std::atomic<std::uint64_t> parking{0};
  std::atomic<bool> finished{false};  // all drained: the workers exit
  // Set by stop() once the workers are joined: posts then run in the poster's thread.
  std::atomic<bool> joined{false};
  std::mutex stop_mutex;  // one stop() at a time joins the workers
  // The thread running the queues once joined (a default id: none), and how many posts asked
  // for a drain. seq_cst: see drain().
  std::atomic<std::thread::id> drainer{};
  std::atomic<std::uint64_t> drain_requests{0};
  std::atomic<std::uint64_t> tasks_run{0};
  std::atomic<std::uint64_t> task_exceptions{0};

  // A tasklet's callable threw (called inside its catch block).
  void report_exception() noexcept {
    // Counted after the hook returned, so that a reader of the count sees the hook's effects.
    struct count_on_exit {
      std::atomic<std::uint64_t>& n;
      ~count_on_exit() { n.fetch_add(1, std::memory_order_release); }
    } counted{task_exceptions};
    if (!opt.on_exception) {
      return;
    }
    std::string_view what = "unknown exception";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    try {
      opt.on_exception(what);
    } catch (...) {
      // The hook must not throw; a worker never dies of it.
    }
  }
  std::atomic<std::uint64_t> sleeps{0};

  worker& pick(run_on where) noexcept {
    const auto n = static_cast<unsigned>(workers.size());
    const current_worker& cur = tls_current;
    const bool here = cur.owner == this;
    switch (where.where()) {
      case run_on::kind::thread:
        HERALD_ASSERT(where.index() < n, "run_on::thread() names a thread the scheduler lacks");
        return *workers[where.index()];
      case run_on::kind::group: {
        HERALD_ASSERT(where.index() < group_first.size(),
                      "run_on::group() names a group the scheduler lacks");
        if (here && cur.self->info.group == where.index()) {
          return *cur.self;
        }
        const unsigned k = tls_round_robin++ % group_size[where.index()];
        return *workers[group_first[where.index()] + k];
      }
      case run_on::kind::any:
        break;
    }
    if (here) {
      return *cur.self;
    }
    return *workers[tls_round_robin++ % n];
  }

  // Runs every queue until a full pass finds them all empty. The caller holds `drainer`.
  void run_queues() noexcept {
    for (bool again = true; again;) {
      again = false;
      for (auto& w : workers) {
        for (unsigned spins = 1; !w->queue.empty_approx(); ++spins) {
          if (detail::mpsc_node* n = w->queue.pop()) {
            tasks_run.fetch_add(1, std::memory_order_relaxed);
            task::execute(static_cast<task&>(*n));
            again = true;
          } else if (spins % 64 != 0) {
            cpu_relax();  // a push is half done
          } else {
            std::this_thread::yield();  // and its producer may be descheduled
          }
        }
      }
    }
  }

  // Once joined: runs what is queued, in this thread unless another one is draining. With
  // `wait` (stop()), waits for that drain to end and drains once more; without (post()),
  // leaves the work to it. From inside a run of this thread's own drain, returns at once: the
  // drain loop in progress runs what was queued.
  void drain(bool wait) noexcept {
    const std::thread::id me = std::this_thread::get_id();
    for (;;) {
      std::thread::id holder{};
      // seq_cst, as every access to `drainer` and `drain_requests`: a poster counts its request,
      // then tries to take `drainer`; the drainer lets `drainer` go, then reads the requests.
      // One of the two sees the other (Dekker), so no request is left behind.
      if (!drainer.compare_exchange_strong(holder, me, std::memory_order_seq_cst)) {
        if (holder == me || !wait) {
          return;
        }
        std::this_thread::yield();
        continue;
      }
      const std::uint64_t seen = drain_requests.load(std::memory_order_seq_cst);
      run_queues();
      drainer.store(std::thread::id{}, std::memory_order_seq_cst);
      if (drain_requests.load(std::memory_order_seq_cst) == seen) {
        return;
      }
    }
  }

  static void post(void* self, task& t, run_on where) noexcept {
    auto& s = *static_cast<impl*>(self);
    worker& w = s.pick(where);
    w.queue.push(t);
    // seq_cst loads: each pairs with the other side's seq_cst store (see `worker`, stop()).
    if (s.joined.load(std::memory_order_seq_cst)) [[unlikely]] {
      s.drain_requests.fetch_add(1, std::memory_order_seq_cst);
      s.drain(false);
      return;
    }
    if (w.idle.load(std::memory_order_seq_cst)) {
      w.epoch.fetch_add(1, std::memory_order_release);
      w.epoch.notify_one();
    }
  }

  // After setting `stopping` or `finished`: every worker re-checks them.
  void wake_all() noexcept {
    for (auto& w : workers) {
      // seq_cst: a worker loads `epoch`, then re-checks the flag (both seq_cst) before it
      // waits; this bump follows the flag's store, so the worker sees the flag or the new
      // epoch.
      w->epoch.fetch_add(1, std::memory_order_seq_cst);
      w->epoch.notify_one();
    }
  }

  // See "How stop() ends" above.
  [[nodiscard]] bool all_drained() const noexcept {
    const std::uint64_t before = parking.load(std::memory_order_seq_cst);
    if ((before & (one_unpark - 1)) != workers.size()) {
      return false;
    }
    for (const auto& w : workers) {
      if (!w->queue.idle_approx()) {
        return false;
      }
    }
    return parking.load(std::memory_order_seq_cst) == before;
  }

  // Sleeps until `epoch` moves, unless the queue has work or `flag` is set: both re-checked
  // after announcing `idle` (see `worker`).
  void sleep(worker& w, const std::atomic<bool>& flag) noexcept {
    const std::uint32_t e = w.epoch.load(std::memory_order_seq_cst);
    w.idle.store(true, std::memory_order_seq_cst);
    if (!w.queue.empty_approx() || flag.load(std::memory_order_seq_cst)) {
      w.idle.store(false, std::memory_order_relaxed);
      return;
    }
    sleeps.fetch_add(1, std::memory_order_relaxed);
    w.epoch.wait(e, std::memory_order_acquire);
    w.idle.store(false, std::memory_order_relaxed);
  }

  void run(worker& w) noexcept {
    tls_current = current_worker{this, &w};
    const auto spin = std::chrono::microseconds(opt.spin_before_sleep_us);
    bool is_parked = false;
    unsigned half_done = 0;  // consecutive polls that found a push half done
    for (;;) {
      if (is_parked) {
        if (w.queue.empty_approx()) {
          if (finished.load(std::memory_order_seq_cst)) {
            break;
          }
          if (all_drained()) {
            finished.store(true, std::memory_order_seq_cst);
            wake_all();
            break;
          }
          sleep(w, finished);
          continue;
        }
        // Work arrived: unpark (one fewer parked, one more unpark, in one step) before popping
        // anything: all_drained() relies on it.
        parking.fetch_add(one_unpark - one_parked, std::memory_order_seq_cst);
        is_parked = false;
      }
      if (detail::mpsc_node* n = w.queue.pop()) {
        half_done = 0;
        tasks_run.fetch_add(1, std::memory_order_relaxed);
        task::execute(static_cast<task&>(*n));
        continue;
      }
      if (!w.queue.empty_approx()) {
        // A push is half done. Its producer may have been descheduled between its two steps
        // (more threads than cores): yield now and then rather than spin a whole time slice.
        if (++half_done % 64 != 0) {
          cpu_relax();
        } else {
          std::this_thread::yield();
        }
        continue;
      }
      half_done = 0;
      if (stopping.load(std::memory_order_seq_cst)) {
        parking.fetch_add(one_parked, std::memory_order_seq_cst);
        is_parked = true;
        continue;
      }
      // Poll a little before sleeping: back-to-back events then cost no futex round trip.
      if (spin.count() > 0) {
        const auto until = std::chrono::steady_clock::now() + spin;
        bool got = false;
        for (unsigned i = 1; !got; ++i) {
          cpu_relax();
          got = !w.queue.empty_approx() || stopping.load(std::memory_order_relaxed);
          if (!got && i % 64 == 0 && std::chrono::steady_clock::now() >= until) {
            break;
          }
        }
        if (got) {
          continue;
        }
      }
      sleep(w, stopping);
    }
    tls_current = current_worker{};
  }
};

scheduler::scheduler(scheduler_options opt) : impl_(std::make_unique<impl>()) {
  impl& s = *impl_;
  if (opt.threads == 0) {
    opt.threads = std::max(1u, std::thread::hardware_concurrency());
  }
  HERALD_ASSERT(opt.groups >= 1 && opt.groups <= opt.threads,
                "scheduler_options::groups must be between 1 and the thread count");
  s.opt = opt;
  const unsigned base = opt.threads / opt.groups;
  const unsigned extra = opt.threads % opt.groups;
  unsigned next = 0;
  for (unsigned g = 0; g < opt.groups; ++g) {
    const unsigned size = base + (g < extra ? 1 : 0);
    s.group_first.push_back(next);
    s.group_size.push_back(size);
    for (unsigned k = 0; k < size; ++k) {
      auto w = std::make_unique<worker>();
      w->info = worker_info{next + k, g, k};
      s.workers.push_back(std::move(w));
    }
    next += size;
  }
  for (auto& w : s.workers) {
    worker* wp = w.get();
    try {
      w->thread = std::thread([&s, wp] { s.run(*wp); });
    } catch (const std::system_error&) {
      HERALD_ASSERT(false, "scheduler: cannot start a worker thread");
    }
    char name[16];
    std::snprintf(name, sizeof name, "%.8s/%u.%u", s.opt.name.c_str(), wp->info.group,
                  wp->info.in_group);
    (void)pthread_setname_np(w->thread.native_handle(), name);
  }
}

scheduler::~scheduler() { stop(); }

void scheduler::stop() noexcept {
  impl& s = *impl_;
  HERALD_ASSERT(tls_current.owner != impl_.get(),
                "scheduler::stop() called on one of its own workers (it would join itself)");
  {
    std::lock_guard lock(s.stop_mutex);
    if (!s.joined.load(std::memory_order_relaxed)) {
      s.stopping.store(true, std::memory_order_seq_cst);
      s.wake_all();
      for (auto& w : s.workers) {
        if (w->thread.joinable()) {
          w->thread.join();
        }
      }
      s.joined.store(true, std::memory_order_seq_cst);
    }
  }
  // What was woken from outside while the workers were leaving (and what that wakes). Every
  // caller waits for a drain in progress, so no stop() returns before the queues are empty;
  // a stop() from inside a run of this thread's own drain returns at once.
  s.drain(true);
}

executor_ref scheduler::executor() noexcept { return executor_ref(impl_.get(), &impl::post); }

unsigned scheduler::threads() const noexcept {
  return static_cast<unsigned>(impl_->workers.size());
}
unsigned scheduler::groups() const noexcept {
  return static_cast<unsigned>(impl_->group_first.size());
}
unsigned scheduler::group_of(unsigned thread) const noexcept {
  HERALD_ASSERT(thread < threads(), "group_of(): no such thread");
  return impl_->workers[thread]->info.group;
}
unsigned scheduler::first_thread_of(unsigned group) const noexcept {
  HERALD_ASSERT(group < groups(), "first_thread_of(): no such group");
  return impl_->group_first[group];
}
unsigned scheduler::threads_in(unsigned group) const noexcept {
  HERALD_ASSERT(group < groups(), "threads_in(): no such group");
  return impl_->group_size[group];
}
const worker_info* scheduler::current() const noexcept {
  const current_worker& cur = tls_current;
  return cur.owner == impl_.get() ? &cur.self->info : nullptr;
}
std::uint64_t scheduler::tasks_run_approx() const noexcept {
  return impl_->tasks_run.load(std::memory_order_relaxed);
}
std::uint64_t scheduler::task_exceptions_approx() const noexcept {
  // acquire: pairs with the release increment after the hook (report_exception).
  return impl_->task_exceptions.load(std::memory_order_acquire);
}
std::uint64_t scheduler::sleeps_approx() const noexcept {
  return impl_->sleeps.load(std::memory_order_relaxed);
}

// ---- tasklet ---------------------------------------------------------------------------------

struct tasklet::core : task {
  core(executor_ref ex, run_on where, std::function<void()> f, scheduler::impl* owner)
      : task(&core::run_once, ex, where, &core::hold, &core::release),
        fn(std::move(f)),
        sched(owner) {}

  static bool run_once(task& t) noexcept {
    auto& c = static_cast<core&>(t);
    try {
      c.fn();
    } catch (...) {
      c.exceptions.fetch_add(1, std::memory_order_relaxed);
      c.sched->report_exception();
    }
    return true;
  }
  static void hold(task& t) noexcept {
    static_cast<core&>(t).refs.fetch_add(1, std::memory_order_relaxed);
  }
  static void release(task& t) noexcept { drop(&static_cast<core&>(t)); }
  static void drop(core* c) noexcept {
    // acq_rel: the last dropper sees every use of the tasklet before destroying it.
    if (c->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      delete c;
    }
  }

  std::atomic<std::uint32_t> refs{1};
  std::atomic<std::uint64_t> exceptions{0};
  std::function<void()> fn;
  scheduler::impl* sched;  // outlives the tasklet (a scheduler outlives its tasks)
};

tasklet scheduler::make_tasklet(std::function<void()> fn, run_on where) {
  HERALD_ASSERT(static_cast<bool>(fn), "make_tasklet() with an empty callable");
  return tasklet(new tasklet::core(executor(), where, std::move(fn), impl_.get()));
}

tasklet::tasklet(const tasklet& o) noexcept : core_(o.core_) {
  if (core_ != nullptr) {
    core::hold(*core_);
  }
}
tasklet::tasklet(tasklet&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
tasklet& tasklet::operator=(tasklet o) noexcept {
  std::swap(core_, o.core_);
  return *this;
}
tasklet::~tasklet() {
  if (core_ != nullptr) {
    core::drop(core_);
  }
}
void tasklet::wake() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "wake() on an empty tasklet handle");
  core_->wake();
}

bool tasklet::wake_pending() const noexcept {
  return core_ != nullptr && core_->wake_pending();
}

bool detail::on_scheduler_worker() noexcept { return tls_current.self != nullptr; }

bool detail::worker_queue_empty_approx() noexcept {
  const current_worker& cur = tls_current;
  return cur.self != nullptr && cur.self->queue.empty_approx();
}

}  // namespace herald
