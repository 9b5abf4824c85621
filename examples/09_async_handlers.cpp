// Example 09: asynchronous handlers in detail.
//
// A health checker publishes HEALTH events; the subscribers react later, off the publisher's
// thread. The program shows:
//   1. one snapshot per publish: two async handlers on herald's workers and one queue share a
//      single copy of the safe part (its copy constructor runs once per publish, and its
//      destructor, the cleanup hook, once, after the last of them let go); each sees the
//      list's sequence() (1, 2, ... from this one publisher, in order) and when();
//   2. an async handler on the program's own executor: a small inbox of tasks that main runs,
//      so the handler runs on main's thread, only when main lets it; events_per_run splits
//      ten queued events into runs of 4, 4 and 2;
//   3. pending_on_end: ending a subscription with events still queued delivers them first
//      (deliver, the default) or drops them (discard); either way END follows and the handler
//      is destroyed on its executor, after its last call;
//   4. shutdown: the handlers on herald's workers handle everything queued, are destroyed on
//      a worker, and the queue gets END.
// Every count is checked; the program exits non-zero on any mismatch.
//
// Usage: herald_example_09_async_handlers [--quick]
#include <herald/bus.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

// Counts the copies herald makes of the safe part and their destruction.
std::atomic<int> snapshots_made{0};
std::atomic<int> snapshots_destroyed{0};

struct health_event {
  static constexpr std::string_view family_name = "HEALTH";
  enum class subtype : std::uint8_t { check, alert };
  static constexpr std::array<std::string_view, 2> subtype_names{"CHECK", "ALERT"};
  struct safe_part {
    safe_part(std::uint32_t server_, int latency_ms_) : server(server_), latency_ms(latency_ms_) {}
    safe_part(const safe_part& o) : server(o.server), latency_ms(o.latency_ms), snapshot(true) {
      snapshots_made.fetch_add(1);
    }
    safe_part& operator=(const safe_part&) = delete;
    ~safe_part() {
      if (snapshot) {
        snapshots_destroyed.fetch_add(1);  // the cleanup hook of one published event
      }
    }
    std::uint32_t server;
    int latency_ms;
    bool snapshot = false;  // true in herald's copies only
  };
};
using health = health_event::subtype;

// What one subscriber of part 1 saw, event by event (indexed by sequence number). Written by
// its handler only (one event at a time), read by main after shutdown.
struct observer {
  std::vector<const void*> snapshot_at;  // address of the safe part seen for each sequence
  std::uint64_t last_sequence = 0;
  std::chrono::steady_clock::time_point last_when{};
  bool in_order = true;

  void see(std::uint64_t seq, const void* safe, std::chrono::steady_clock::time_point when) {
    in_order = in_order && seq == last_sequence + 1 && when >= last_when;
    last_sequence = seq;
    last_when = when;
    if (seq < snapshot_at.size()) {
      snapshot_at[seq] = safe;
    }
  }
};

// Handler state that records where and how often it is destroyed (a moved-from one records
// nothing).
struct destruction_record {
  std::atomic<int> count{0};
  std::thread::id thread;  // written before the count is raised, read after
};
class destruction_probe {
 public:
  explicit destruction_probe(destruction_record* r) noexcept : record_(r) {}
  destruction_probe(destruction_probe&& o) noexcept : record_(std::exchange(o.record_, nullptr)) {}
  destruction_probe(const destruction_probe&) = delete;
  destruction_probe& operator=(const destruction_probe&) = delete;
  destruction_probe& operator=(destruction_probe&&) = delete;
  ~destruction_probe() {
    if (record_ != nullptr) {
      record_->thread = std::this_thread::get_id();
      record_->count.fetch_add(1);
    }
  }

 private:
  destruction_record* record_;
};

// The program's own executor: tasks posted from any thread wait in an inbox until the thread
// that owns it runs them (a real program would use its event loop; herald/asio.hpp adapts
// asio's io_context). post() must not throw: a real loop would preallocate its queue.
class inbox {
 public:
  herald::executor_ref executor() noexcept { return {this, &inbox::post}; }
  // Runs the oldest posted task; false if none was waiting.
  bool run_one() {
    herald::task* t = nullptr;
    {
      std::lock_guard lock(mutex_);
      if (ready_.empty()) {
        return false;
      }
      t = ready_.front();
      ready_.pop_front();
    }
    herald::task::execute(*t);  // may end the task's life: not touched afterwards
    return true;
  }
  int run_all() {
    int n = 0;
    while (run_one()) {
      ++n;
    }
    return n;
  }

 private:
  static void post(void* self, herald::task& t, herald::run_on) noexcept {
    auto& in = *static_cast<inbox*>(self);
    std::lock_guard lock(in.mutex_);
    in.ready_.push_back(&t);
  }
  std::mutex mutex_;
  std::deque<herald::task*> ready_;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int checks = quick ? 500 : 100000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 09: %s\n", what);
      ++failures;
    }
  };
  const std::thread::id main_thread = std::this_thread::get_id();

  inbox loop;  // outlives the bus: tasks bound to it must not be posted after it is gone
  observer stats_seen;
  observer alerts_seen;
  stats_seen.snapshot_at.resize(static_cast<std::size_t>(checks) + 1);
  alerts_seen.snapshot_at.resize(static_cast<std::size_t>(checks) + 1);
  std::vector<const void*> queue_saw(static_cast<std::size_t>(checks) + 1);
  destruction_record stats_end;
  int queued_popped = 0;
  int queue_ends = 0;
  {
    herald::bus bus({.threads = 2});
    herald::sub_list servers(bus);

    // ---- 1. One snapshot per publish, shared by every async and queue subscriber ---------
    long latency_sum = 0;  // written by the `stats` handler, read after shutdown
    auto stats = servers.subscribe_async<health_event>(
        herald::type_of<health_event>(health::check),
        [&stats_seen, &latency_sum, probe = destruction_probe(&stats_end)](
            herald::async_event<health_event>& e) {
          stats_seen.see(e.sequence(), &e.safe(), e.when());
          latency_sum += e.safe().latency_ms;
        },
        {.name = "stats"});
    auto alerts = servers.subscribe_async<health_event>(
        herald::type_of<health_event>(health::check),
        [&alerts_seen](herald::async_event<health_event>& e) {
          alerts_seen.see(e.sequence(), &e.safe(), e.when());
        },
        {.name = "alerts"});
    herald::event_queue<health_event> table;
    auto tq = servers.subscribe_queue<health_event>(herald::type_of<health_event>(health::check),
                                                    table);
    expect(stats && alerts && tq, "subscribe failed");
    auto drain_table = [&] {
      while (auto item = table.pop()) {
        if (item->is_end()) {
          ++queue_ends;
          continue;
        }
        ++queued_popped;
        if (item->sequence() < queue_saw.size()) {
          queue_saw[item->sequence()] = &item->safe();
        }
      }
    };
    for (int i = 0; i < checks; ++i) {
      auto n = servers.publish<health_event>(health::check,
                                             {static_cast<std::uint32_t>(i % 16), i % 40});
      expect(n && *n == 3, "a CHECK did not reach its three subscribers");
      if (i % 64 == 63) {
        drain_table();
      }
    }
    expect(snapshots_made.load() == checks, "herald made more than one copy per publish");

    // ---- 2. A handler on the program's own executor; events_per_run ----------------------
    int logged = 0;  // main's own variable: the handler runs on main's thread
    bool on_main = true;
    destruction_record log_end;
    auto alert_log = servers.subscribe_async<health_event>(
        herald::type_of<health_event>(health::alert),
        [&logged, &on_main, main_thread, probe = destruction_probe(&log_end)](
            herald::async_event<health_event>&) {
          ++logged;
          on_main = on_main && std::this_thread::get_id() == main_thread;
        },
        {.name = "alert-log", .events_per_run = 4, .executor = loop.executor()});
    expect(alert_log.has_value(), "subscribe on the inbox failed");
    for (int i = 0; i < 10; ++i) {
      (void)servers.publish<health_event>(health::alert, {1, 0});
    }
    expect(logged == 0, "the handler ran before its executor ran it");
    const int runs = loop.run_all();
    expect(logged == 10 && runs == 3, "events_per_run = 4 did not split 10 events into 3 runs");
    expect(on_main, "the handler did not run on the inbox's thread");
    std::printf("own executor: 10 events handled in %d runs of at most 4\n", runs);
    // Its end: unsubscribe() queues END; the handler is destroyed when the inbox runs it.
    alert_log->unsubscribe();
    expect(log_end.count.load() == 0, "the handler was destroyed before its executor ran END");
    (void)loop.run_all();
    expect(log_end.count.load() == 1 && log_end.thread == main_thread,
           "the handler was not destroyed once, on its executor");

    // ---- 3. pending_on_end: deliver or discard what is still queued ----------------------
    int kept = 0;
    int dropped = 0;
    destruction_record keep_end;
    destruction_record drop_end;
    auto keep = servers.subscribe_async<health_event>(
        herald::type_of<health_event>(health::alert),
        [&kept, probe = destruction_probe(&keep_end)](herald::async_event<health_event>&) {
          ++kept;
        },
        {.on_end = herald::pending_on_end::deliver, .executor = loop.executor()});
    auto drop = servers.subscribe_async<health_event>(
        herald::type_of<health_event>(health::alert),
        [&dropped, probe = destruction_probe(&drop_end)](herald::async_event<health_event>&) {
          ++dropped;
        },
        {.on_end = herald::pending_on_end::discard, .executor = loop.executor()});
    expect(keep && drop, "subscribe failed");
    for (int i = 0; i < 5; ++i) {
      (void)servers.publish<health_event>(health::alert, {2, 0});
    }
    keep->unsubscribe();  // 5 events queued to each, not handled yet
    drop->unsubscribe();
    (void)loop.run_all();
    expect(kept == 5 && dropped == 0, "pending_on_end was not honoured");
    expect(keep_end.count.load() == 1 && drop_end.count.load() == 1,
           "an ended handler was not destroyed exactly once");
    std::printf("pending_on_end: deliver handled %d queued events, discard handled %d\n", kept,
                dropped);

    // ---- 4. Shutdown: the workers finish what is queued, then END -------------------------
    bus.shutdown();
    drain_table();
    expect(stats_end.count.load() == 1 && stats_end.thread != main_thread,
           "the stats handler was not destroyed once, on a worker");
    long expected_sum = 0;
    for (int i = 0; i < checks; ++i) {
      expected_sum += i % 40;
    }
    expect(latency_sum == expected_sum &&
               stats_seen.last_sequence == static_cast<std::uint64_t>(checks),
           "the stats handler did not see every CHECK");
  }

  // Every subscriber saw the same copy for each publish, in publish order.
  bool shared = true;
  for (std::size_t seq = 1; seq < queue_saw.size(); ++seq) {
    shared = shared && queue_saw[seq] != nullptr && stats_seen.snapshot_at[seq] == queue_saw[seq] &&
             alerts_seen.snapshot_at[seq] == queue_saw[seq];
  }
  expect(shared, "the subscribers of one publish did not share one snapshot");
  expect(stats_seen.in_order && alerts_seen.in_order,
         "sequence() or when() went backwards for one subscription");
  expect(queued_popped == checks && queue_ends == 1, "the queue missed events or END");
  // The ALERT publishes made copies too (15, for parts 2 and 3); every copy was destroyed.
  expect(snapshots_made.load() == checks + 15 && snapshots_destroyed.load() == snapshots_made.load(),
         "a snapshot was not destroyed exactly once");
  std::printf("%d CHECK events: %d snapshots for 3 subscribers, all shared and destroyed; "
              "sequences 1..%llu in order\n",
              checks, checks, static_cast<unsigned long long>(stats_seen.last_sequence));
  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("async handlers behaved as documented\n");
  return 0;
}
