// Example 10: backpressure on slow consumers.
//
// A metrics collector publishes SAMPLE events much faster than two of its consumers can take
// them. Each consumer bounds its queue and says what to do when it is full:
//   1. a dashboard reads a bounded queue (16 events) on its own thread, slowly, with
//      overflow_policy::drop_oldest: it only cares about the latest samples, so the oldest
//      queued ones make room for new ones;
//   2. an archiver is an async handler on herald's workers, bounded to 8 events, with
//      overflow_policy::block: the publisher waits for room (up to block_timeout), and after
//      the timeout drops the new event (after_timeout = drop_newest). Halfway through, the
//      archiver stalls on one event (a gate the program opens later): the publishes that find
//      its queue full during the stall wait, time out and are dropped; the bus's diagnostic
//      hook reports the slow consumer. The archiver hears END through its on_end member.
// Both print their subscription_stats. The program checks what docs/backpressure.md promises:
// the survivors arrive in publish order; the numbers missing from their sub_sequence() are
// exactly the dropped events; for every subscription
//     published = delivered + dropped() + discarded + queued;
// the stall drops exactly the events that found no room. It exits non-zero on any mismatch.
//
// Usage: herald_example_10_backpressure [--quick]
#include <herald/bus.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct sample_event {
  static constexpr std::string_view family_name = "SAMPLE";
  enum class subtype : std::uint8_t { cpu, memory };
  static constexpr std::array<std::string_view, 2> subtype_names{"CPU", "MEMORY"};
  struct safe_part {
    std::uint64_t n = 0;  // the collector's count, from 1
    double value = 0;
  };
};

// What a consumer saw, in arrival order.
struct received {
  std::vector<std::uint64_t> n;
  std::vector<std::uint64_t> sub_sequence;
};

// A gate the archiver's handler waits on until main opens it.
class gate {
 public:
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

// The archiver: slow (a few microseconds per sample), and it stalls on sample `stall_at`.
struct archiver {
  received* out;  // written by one handler call at a time; read after END
  std::uint64_t stall_at;
  std::atomic<bool>* stalled;
  gate* resume;
  std::atomic<int>* ended;
  std::atomic<herald::end_reason>* end_why;

  void operator()(herald::async_event<sample_event>& e) {
    out->n.push_back(e.safe().n);
    out->sub_sequence.push_back(e.sub_sequence());
    if (e.safe().n == stall_at) {
      stalled->store(true);
      resume->wait();
    }
    // Archiving takes a while: 5 us of work per sample.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(5);
    while (std::chrono::steady_clock::now() < until) {
    }
  }
  // Called once, on the worker, after the last event and before the handler is destroyed.
  void on_end(herald::end_reason why) {
    end_why->store(why);
    ended->fetch_add(1);
  }
};

void print_stats(const char* who, const herald::subscription_stats& st) {
  std::printf(
      "%-10s published %llu = delivered %llu + dropped %llu (newest %llu, oldest %llu, ended "
      "%llu, notify %llu) + discarded %llu + queued %llu; high water %llu\n",
      who, static_cast<unsigned long long>(st.published),
      static_cast<unsigned long long>(st.delivered), static_cast<unsigned long long>(st.dropped()),
      static_cast<unsigned long long>(st.dropped_newest),
      static_cast<unsigned long long>(st.dropped_oldest),
      static_cast<unsigned long long>(st.dropped_ended),
      static_cast<unsigned long long>(st.dropped_notify),
      static_cast<unsigned long long>(st.discarded), static_cast<unsigned long long>(st.queued),
      static_cast<unsigned long long>(st.high_water));
}

// The checks every bounded subscription passes once it has ended (one publisher): survivors in
// publish order, and as many numbers missing from sub_sequence as events dropped.
bool consistent(const received& r, const herald::subscription_stats& st) {
  std::uint64_t missing = 0;
  std::uint64_t previous = 0;
  for (std::size_t i = 0; i < r.sub_sequence.size(); ++i) {
    if (r.sub_sequence[i] <= previous || (i > 0 && r.n[i] <= r.n[i - 1])) {
      return false;  // out of order
    }
    missing += r.sub_sequence[i] - previous - 1;
    previous = r.sub_sequence[i];
  }
  missing += st.published - previous;  // dropped after the last survivor
  return missing == st.dropped() + st.discarded && r.n.size() == st.delivered &&
         st.published == st.delivered + st.dropped() + st.discarded + st.queued;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::uint64_t samples = quick ? 2000 : 200000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 10: %s\n", what);
      ++failures;
    }
  };

  herald::bus bus({.threads = 2});
  herald::sub_list metrics(bus);
  std::atomic<int> slow_episodes{0};
  bus.set_diagnostic_hook([&slow_episodes](const herald::diagnostic& d) {
    // In the publishing thread: keep it short, never block.
    if (d.kind == herald::diagnostic_kind::slow_consumer) {
      slow_episodes.fetch_add(1);
    }
  });

  // ---- 1. A slow queue consumer keeping the latest samples (drop_oldest) -------------------
  {
    herald::event_queue<sample_event> dashboard;
    herald::subscribe_options opt{.name = "dashboard"};
    opt.backpressure.bound = 16;
    opt.backpressure.policy = herald::overflow_policy::drop_oldest;
    auto sub = metrics.subscribe_queue<sample_event>(herald::type_of<sample_event>(), dashboard,
                                                     herald::queue_notify::none(), opt);
    expect(sub.has_value(), "subscribe_queue failed");
    if (!sub) {
      return 1;
    }
    // The first 100 samples find nobody popping: 16 stay, the 84 oldest are dropped.
    std::uint64_t n = 0;
    for (; n < 100; ++n) {
      (void)metrics.publish<sample_event>(sample_event::subtype::cpu, {n + 1, 0.5});
    }
    expect(dashboard.stats().dropped_oldest == 84, "drop_oldest did not keep the newest 16");

    received seen;
    herald::end_reason why = herald::end_reason::shutdown;
    std::thread reader([&] {  // the dashboard's thread: the only consumer of its queue
      for (;;) {
        auto item = dashboard.pop();
        if (!item) {
          std::this_thread::yield();
          continue;
        }
        if (item->is_end()) {
          why = item->end_reason();
          break;
        }
        seen.n.push_back(item->safe().n);
        seen.sub_sequence.push_back(item->sub_sequence());
        std::this_thread::sleep_for(std::chrono::microseconds(20));  // slow rendering
      }
    });
    for (; n < samples; ++n) {
      (void)metrics.publish<sample_event>(
          n % 2 == 0 ? sample_event::subtype::cpu : sample_event::subtype::memory, {n + 1, 0.5});
    }
    sub->unsubscribe();  // END behind whatever is still queued
    reader.join();
    const herald::subscription_stats st = dashboard.stats();
    print_stats("dashboard", st);
    expect(why == herald::end_reason::unsubscribed, "the dashboard's END has the wrong reason");
    expect(st.published == samples, "the dashboard was not offered every sample");
    expect(st.dropped() == st.dropped_oldest + st.dropped_newest && st.dropped() >= 84,
           "the dashboard's drops went to an unexpected counter");
    expect(consistent(seen, st), "dashboard: order, sub_sequence gaps or the identity is wrong");
  }

  // ---- 2. A slow async handler that blocks the publisher, then drops (block) ---------------
  {
    received seen;
    std::atomic<bool> stalled{false};
    gate resume;
    std::atomic<int> ended{0};
    std::atomic<herald::end_reason> why{herald::end_reason::shutdown};
    const std::uint64_t archived = quick ? 1000 : 50000;  // the archiver is slower: fewer
    const std::uint64_t stall_at = archived / 2;
    constexpr std::uint64_t stall_extra = 20;  // published during the stall: 8 fit, 12 drop

    herald::subscribe_options opt{.name = "archiver"};
    opt.backpressure.bound = 8;
    opt.backpressure.policy = herald::overflow_policy::block;
    opt.backpressure.block_timeout = std::chrono::milliseconds(20);
    opt.backpressure.after_timeout = herald::overflow_policy::drop_newest;
    // A queue that stays full for 5 ms is reported to the bus's diagnostic hook.
    opt.backpressure.slow_threshold = 8;
    opt.backpressure.slow_after = std::chrono::milliseconds(5);
    auto sub = metrics.subscribe_async<sample_event>(
        herald::type_of<sample_event>(), archiver{&seen, stall_at, &stalled, &resume, &ended, &why},
        opt);
    expect(sub.has_value(), "subscribe_async failed");
    if (!sub) {
      return 1;
    }

    const auto started = std::chrono::steady_clock::now();
    std::uint64_t n = 0;
    for (; n < stall_at; ++n) {  // the publisher keeps pace with the archiver
      (void)metrics.publish<sample_event>(sample_event::subtype::cpu, {n + 1, 1.0});
    }
    while (!stalled.load()) {  // the archiver holds sample stall_at; its queue is empty
      std::this_thread::yield();
    }
    const std::uint64_t dropped_before = sub->stats().dropped_newest;
    for (std::uint64_t i = 0; i < stall_extra; ++i, ++n) {
      (void)metrics.publish<sample_event>(sample_event::subtype::cpu, {n + 1, 1.0});
    }
    const std::uint64_t dropped_in_stall = sub->stats().dropped_newest - dropped_before;
    resume.open();
    for (; n < archived + stall_extra; ++n) {
      (void)metrics.publish<sample_event>(sample_event::subtype::memory, {n + 1, 1.0});
    }
    const auto took = std::chrono::steady_clock::now() - started;
    sub->unsubscribe();  // the queued events are still handled, then on_end, then destruction
    while (ended.load() == 0) {
      std::this_thread::yield();
    }
    const herald::subscription_stats st = sub->stats();
    print_stats("archiver", st);
    std::printf(
        "archiver: %llu samples published in %lld ms (the publisher waited for room), "
        "%llu dropped during the stall, %d slow-consumer episode(s) reported\n",
        static_cast<unsigned long long>(st.published),
        static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()),
        static_cast<unsigned long long>(dropped_in_stall), slow_episodes.load());
    expect(dropped_in_stall == stall_extra - 8,
           "the stall did not drop exactly the samples that found no room");
    expect(st.dropped() == st.dropped_newest, "block + drop_newest counted another policy");
    expect(st.published == archived + stall_extra, "the archiver was not offered every sample");
    expect(ended.load() == 1 && why.load() == herald::end_reason::unsubscribed,
           "on_end was not called once with end_reason::unsubscribed");
    expect(consistent(seen, st), "archiver: order, sub_sequence gaps or the identity is wrong");
    expect(slow_episodes.load() >= 1, "the stall was not reported as a slow consumer");
  }

  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("backpressure behaved as documented\n");
  return 0;
}
