// herald-demo: the subscribers, one class each, one per way of consuming events.
//
//   audit_logger     sync   global list   reads the live server through the unsafe part
//   stats_aggregator async  global list   aggregates on herald's workers
//   live_table       queue  global list   a tasklet drains the queue and prints a table
//   slow_consumer    async  global list   too slow on purpose: a bounded queue drops the oldest
//   state_view       async  server lists  joins late; last values tell it the current state
//
// Every class subscribes in subscribe()/start(), and after the bus shut down (and its END was
// seen) gives its summary_row and a sentence about what it saw. Counters a handler writes are
// read by the main thread only after that handler ended (its END or its destruction, which
// the library orders after the handler's last call).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "herald/bus.hpp"
#include "herald/scheduler.hpp"
#include "report.hpp"
#include "server_event.hpp"
#include "simulation.hpp"

namespace herald_demo {

using clock_type = std::chrono::steady_clock;

/// Counts the ENDs that async handlers hear (on_end) and the destruction of their handler
/// objects, and lets the main thread wait for them. Any thread.
class end_counter {
 public:
  void ended(herald::end_reason why);
  void destroyed();
  /// Waits until `n` handlers were destroyed; false on timeout.
  bool wait_destroyed(std::size_t n, std::chrono::milliseconds timeout);
  [[nodiscard]] std::size_t ends() const;
  [[nodiscard]] std::size_t ends_for(herald::end_reason why) const;
  [[nodiscard]] std::size_t destructions() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::array<std::size_t, 4> ends_{};  // by end_reason; guarded by mu_
  std::size_t destroyed_ = 0;          // guarded by mu_
};

/// Which of the numbers 1, 2, ... of one subscription (sub_sequence()) arrived, in whatever
/// order: with several publishers, events are queued in the order their pushes happened,
/// which may differ from the order of their numbers. Memory stays bounded: numbers more than
/// `window` below the highest one are settled (those not received count as missing for good,
/// and one arriving later is counted as too late). One thread at a time.
class sequence_tracker {
 public:
  static constexpr std::uint64_t window = std::uint64_t{1} << 16;

  void saw(std::uint64_t n);
  [[nodiscard]] std::uint64_t received() const noexcept { return received_; }
  [[nodiscard]] std::uint64_t highest() const noexcept { return highest_; }
  /// Numbers received twice, 0, or after they were settled (never expected).
  [[nodiscard]] std::uint64_t anomalies() const noexcept { return anomalies_; }
  /// Arrivals with a smaller number than one received before.
  [[nodiscard]] std::uint64_t out_of_order() const noexcept { return out_of_order_; }
  /// Numbers from 1 to `last` (>= highest()) never received, and how many runs they form.
  [[nodiscard]] std::uint64_t missing(std::uint64_t last) const noexcept;
  [[nodiscard]] std::uint64_t missing_runs(std::uint64_t last) const noexcept;

 private:
  void settle();

  std::uint64_t base_ = 1;  // seen_[i] is number base_ + i; every number below is settled
  std::vector<bool> seen_;
  std::uint64_t settled_missing_ = 0;
  std::uint64_t settled_runs_ = 0;
  bool settled_ends_missing_ = false;  // number base_ - 1 was missing
  std::uint64_t received_ = 0;
  std::uint64_t highest_ = 0;
  std::uint64_t anomalies_ = 0;
  std::uint64_t out_of_order_ = 0;
};

/// The handler object of an async subscription: forwards events to its owner, reports END
/// and its own destruction to an end_counter (once: a moved-from handler reports nothing).
template <class Owner>
class forwarding_handler {
 public:
  forwarding_handler(Owner* owner, end_counter* ends) noexcept : owner_(owner), ends_(ends) {}
  forwarding_handler(forwarding_handler&& o) noexcept
      : owner_(o.owner_), ends_(std::exchange(o.ends_, nullptr)) {}
  forwarding_handler(const forwarding_handler&) = delete;
  forwarding_handler& operator=(const forwarding_handler&) = delete;
  forwarding_handler& operator=(forwarding_handler&&) = delete;
  ~forwarding_handler() {
    if (ends_ != nullptr) {
      ends_->destroyed();
    }
  }
  void operator()(herald::async_event<server_event>& e) { owner_->on_event(e); }
  void on_end(herald::end_reason why) { ends_->ended(why); }

 private:
  Owner* owner_;
  end_counter* ends_;
};

// ---- sync ------------------------------------------------------------------------------------

/// Sync, on the global list, every SERVER event: runs inside each publish, so it may read the
/// live server object (the unsafe part) and reports how many connections a DOWN, a
/// maintenance or a removal cut. Keeps the last few notable lines.
class audit_logger {
 public:
  explicit audit_logger(clock_type::time_point t0) : t0_(t0) {}
  [[nodiscard]] herald::result<void> subscribe(herald::sub_list& global);
  void on_event(herald::sync_event<server_event>& e);

  /// Handler calls so far. Any thread.
  [[nodiscard]] std::uint64_t calls() const noexcept {
    return calls_.load(std::memory_order_relaxed);
  }
  /// The row: `published` is what the simulation published while the handler was subscribed.
  [[nodiscard]] summary_row row(std::uint64_t published) const;
  [[nodiscard]] std::string describe() const;

 private:
  clock_type::time_point t0_;
  herald::subscription sub_;
  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> cuts_{0};             // DOWN or MAINT with connections open
  std::atomic<std::uint64_t> connections_cut_{0};  // their connections
  std::atomic<std::uint64_t> without_live_{0};     // events with no unsafe part
  mutable std::mutex mu_;
  std::deque<std::string> recent_;  // guarded by mu_
  std::uint64_t notable_ = 0;       // guarded by mu_
};

// ---- async -----------------------------------------------------------------------------------

/// Async, on the global list, every SERVER event, unbounded: aggregates counts per event kind,
/// health-check results and transitions per backend, on herald's workers.
class stats_aggregator {
 public:
  [[nodiscard]] herald::result<void> subscribe(herald::sub_list& global);
  void on_event(herald::async_event<server_event>& e);
  /// Waits for the handler's END and destruction (after bus shutdown).
  [[nodiscard]] bool wait_end(std::chrono::milliseconds timeout) {
    return ends_.wait_destroyed(1, timeout);
  }

  [[nodiscard]] summary_row row() const;
  [[nodiscard]] std::string describe() const;
  /// Events seen per subtype (after the END).
  [[nodiscard]] const std::array<std::uint64_t, server_event::subtype_count>& by_subtype()
      const noexcept {
    return by_subtype_;
  }
  [[nodiscard]] std::uint64_t calls() const noexcept { return calls_; }
  [[nodiscard]] const end_counter& ends() const noexcept { return ends_; }
  [[nodiscard]] herald::subscription_stats stats() const noexcept { return sub_.stats(); }

 private:
  herald::subscription sub_;
  end_counter ends_;
  // Written by the handler (one call at a time), read after its END.
  std::uint64_t calls_ = 0;
  std::array<std::uint64_t, server_event::subtype_count> by_subtype_{};
  std::uint64_t checks_failed_ = 0;
  std::uint64_t check_ms_sum_ = 0;
  std::map<std::string, std::uint64_t, std::less<>> downs_by_backend_;
  latency_histogram latency_;
};

/// Async, on the global list, every SERVER event, deliberately slow (it sleeps `work` per
/// event on a thread of its own), with a queue bounded to `bound` events that drops the
/// oldest when full. It notes its own sub_sequence() numbers: every number missing is an event
/// the policy dropped, so they must add up to herald's dropped_oldest counter.
class slow_consumer {
 public:
  slow_consumer(std::chrono::microseconds work, std::size_t bound) : work_(work), bound_(bound) {}
  [[nodiscard]] herald::result<void> subscribe(herald::sub_list& global, herald::executor_ref ex);
  void on_event(herald::async_event<server_event>& e);
  [[nodiscard]] bool wait_end(std::chrono::milliseconds timeout) {
    return ends_.wait_destroyed(1, timeout);
  }
  /// Events dropped so far (racy). Any thread.
  [[nodiscard]] std::uint64_t dropped_approx() const noexcept;

  [[nodiscard]] summary_row row() const;
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] const sequence_tracker& sequence() const noexcept { return sequence_; }
  [[nodiscard]] const end_counter& ends() const noexcept { return ends_; }
  [[nodiscard]] herald::subscription_stats stats() const noexcept { return sub_.stats(); }
  [[nodiscard]] std::size_t bound() const noexcept { return bound_; }
  [[nodiscard]] std::chrono::microseconds work() const noexcept { return work_; }

 private:
  std::chrono::microseconds work_;
  std::size_t bound_;
  herald::subscription sub_;
  end_counter ends_;
  // Written by the handler, read after its END.
  std::uint64_t calls_ = 0;
  sequence_tracker sequence_;
  latency_histogram latency_;
};

// ---- queue -----------------------------------------------------------------------------------

/// Queue mode, on the global list, every SERVER event: a herald tasklet (on the bus's
/// workers) drains the queue, keeps a row per server and prints the servers in the worst
/// state about every `every`.
class live_table {
 public:
  live_table(console& out, clock_type::time_point t0, std::chrono::milliseconds every)
      : out_(out), t0_(t0), every_(every) {}
  [[nodiscard]] herald::result<void> subscribe(herald::bus& bus);
  /// No more tables from now on (the run is over; the report follows). Any thread.
  void stop_printing() noexcept { printing_.store(false, std::memory_order_relaxed); }
  /// Waits until the tasklet popped END; false on timeout.
  [[nodiscard]] bool wait_end(std::chrono::milliseconds timeout);
  /// After END: pops once more (the tasklet no longer runs) and tells whether anything came
  /// out; nothing may follow END.
  [[nodiscard]] bool pop_after_end() { return queue_.pop().has_value(); }

  [[nodiscard]] summary_row row() const;
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] std::uint64_t popped() const noexcept { return popped_; }
  [[nodiscard]] const sequence_tracker& sequence() const noexcept { return sequence_; }
  [[nodiscard]] int ends() const noexcept { return ends_.load(std::memory_order_acquire); }
  [[nodiscard]] herald::end_reason end_reason() const noexcept { return reason_; }
  [[nodiscard]] herald::subscription_stats stats() const noexcept { return queue_.stats(); }

 private:
  struct row_state {
    server_event::safe_part info;
    std::uint32_t flaps = 0;  // DOWN events seen
  };
  void drain();
  void print(clock_type::time_point now);

  console& out_;
  clock_type::time_point t0_;
  std::chrono::milliseconds every_;
  herald::event_queue<server_event> queue_;
  herald::tasklet task_;
  herald::subscription sub_;
  // Touched by the tasklet only (its runs are ordered), read after END.
  std::map<std::uint32_t, row_state> rows_;
  clock_type::time_point next_print_{};
  std::uint64_t popped_ = 0;
  sequence_tracker sequence_;
  unsigned tables_printed_ = 0;
  latency_histogram latency_;
  herald::end_reason reason_ = herald::end_reason::unsubscribed;
  std::atomic<bool> printing_{true};  // relaxed: a hint, nothing is published through it
  std::atomic<int> ends_{0};          // release by the tasklet, acquire by readers
  std::mutex end_mu_;
  std::condition_variable end_cv_;
};

// ---- late, stateful --------------------------------------------------------------------------

/// Joins late: start() subscribes (async) to the list of every server alive, and a sync
/// watcher on the global list's ADD events subscribes to the servers added later. SERVER is
/// a stateful family, so each new subscription first receives the last event of each subtype
/// of that server: the view knows every server's state at once, without waiting for it to
/// change. Each event carries the server's version; the view keeps the newest.
class state_view {
 public:
  state_view(simulation& sim, clock_type::time_point t0) : sim_(sim), t0_(t0) {}
  /// Subscribes the ADD watcher, then follows every server alive. Main thread.
  [[nodiscard]] herald::result<void> start(herald::sub_list& global);
  [[nodiscard]] bool started() const noexcept { return started_at_.has_value(); }
  /// Waits until every subscription's handler was destroyed (after bus shutdown).
  [[nodiscard]] bool wait_end(std::chrono::milliseconds timeout);

  void on_add(herald::sync_event<server_event>& e);
  /// `older`: published before the subscribe call (a last value, or a publish racing the
  /// call); `late`: an older event arriving after a newer one (never expected).
  void on_event(herald::async_event<server_event>& e, bool older, bool late);

  /// Compares the view with the simulation (publishers stopped, view ended): every server
  /// alive is known with its latest version and state, no removed server is shown alive.
  /// Returns the number of differences; fills `detail` with the first few.
  [[nodiscard]] std::size_t compare(const simulation& sim, std::string& detail) const;

  [[nodiscard]] summary_row row() const;
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] std::size_t subscriptions() const;
  /// Subscription attempts to server lists (successful or refused). Any thread.
  [[nodiscard]] std::size_t follow_calls() const noexcept {
    return follow_calls_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] const end_counter& ends() const noexcept { return ends_; }
  /// Events published before their subscription was made (last values), and events that
  /// arrived after a newer one of the same server (read after the END).
  [[nodiscard]] std::uint64_t replayed() const {
    std::lock_guard lock(mu_);
    return replayed_;
  }
  [[nodiscard]] std::uint64_t replayed_late() const {
    std::lock_guard lock(mu_);
    return replayed_late_;
  }

 private:
  class handler;
  void follow(server& s);

  simulation& sim_;
  clock_type::time_point t0_;
  std::optional<clock_type::time_point> started_at_;
  herald::subscription watcher_;
  std::atomic<std::uint64_t> watcher_calls_{0};
  std::atomic<std::size_t> follow_calls_{0};
  std::atomic<std::uint64_t> follow_duplicates_{0};  // already followed (refused id)
  std::atomic<std::uint64_t> follow_gone_{0};        // the server's list was already destroyed
  end_counter ends_;

  struct known {
    server_event::safe_part info;
    bool removed = false;
  };
  mutable std::mutex mu_;
  std::unordered_map<std::uint32_t, known> servers_;  // guarded by mu_
  std::vector<herald::subscription> subs_;            // guarded by mu_
  latency_histogram latency_;                         // guarded by mu_ (live events only)
  std::uint64_t calls_ = 0;                           // guarded by mu_
  std::uint64_t replayed_ = 0;                        // guarded by mu_
  std::uint64_t stale_ = 0;                           // guarded by mu_: older than known
  std::uint64_t replayed_late_ = 0;                   // guarded by mu_
};

}  // namespace herald_demo
