// Example 08: queue subscriptions drained by the program's own epoll loop.
//
// A program that already runs an event loop on its own thread (epoll here; poll, libuv or any
// reactor works the same way) wants herald's events there, not on herald's workers. It
// subscribes two event_queues (one per family) with herald::queue_notify::fd(): each queue then
// has an eventfd that is readable while items wait. The loop thread adds both fds to its epoll
// set and, each time one is readable, pops that queue until pop() returns nothing (which also
// resets the fd). Two publisher threads publish to the same list meanwhile. When they are done,
// main shuts the bus down: every queue gets END behind its pending events; the loop pops them,
// then END, removes that fd from its epoll set (after END the fd is not reset any more), and
// returns once both queues have ended.
//
// The loop checks what herald promises: per queue and per publishing thread, events arrive in
// publish order (each publisher numbers its events); every event carries its list's sequence
// number, and across both queues the numbers are 1..N, each once; END comes exactly once per
// queue, last. The program exits non-zero on any mismatch.
//
// Usage: herald_example_08_fd_polling [--quick]
#include <sys/epoll.h>
#include <unistd.h>

#include <herald/bus.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr unsigned publishers = 2;

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  struct safe_part {
    unsigned publisher = 0;
    std::uint64_t n = 0;  // the publisher's own count of SERVER events, from 0
  };
};

struct listener_event {
  static constexpr std::string_view family_name = "LISTENER";
  enum class subtype : std::uint8_t { open, close };
  static constexpr std::array<std::string_view, 2> subtype_names{"OPEN", "CLOSE"};
  struct safe_part {
    unsigned publisher = 0;
    std::uint64_t n = 0;  // the publisher's own count of LISTENER events, from 0
    std::uint16_t port = 0;
  };
};

// What the loop learned about one queue.
struct queue_report {
  std::array<std::uint64_t, publishers> next{};  // the next n expected from each publisher
  std::uint64_t events = 0;
  int ends = 0;
  bool out_of_order = false;
  bool after_end = false;
};

// Pops `q` until it is empty (which resets its eventfd) or END. Returns true on END.
template <class F>
bool drain(herald::event_queue<F>& q, queue_report& r, std::vector<std::uint64_t>& sequences) {
  while (auto item = q.pop()) {
    if (r.ends != 0) {
      r.after_end = true;
    }
    if (item->is_end()) {
      ++r.ends;
      continue;  // pop() returns nothing after END; the loop ends here
    }
    const auto& e = item->safe();
    if (e.publisher >= publishers || e.n != r.next[e.publisher]) {
      r.out_of_order = true;
    } else {
      ++r.next[e.publisher];
    }
    ++r.events;
    sequences.push_back(item->sequence());
  }
  return r.ends != 0;
}

// The program's event loop: epoll over the two queues' eventfds, until both queues ended.
// Returns false if epoll failed or nothing happened for a long time (a safety net: the
// program fails instead of hanging).
bool run_loop(herald::event_queue<server_event>& servers,
              herald::event_queue<listener_event>& listeners, queue_report& server_report,
              queue_report& listener_report, std::vector<std::uint64_t>& sequences,
              std::uint64_t& wakeups) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    return false;
  }
  // The fds belong to herald: watch them, never read or close them.
  epoll_event watch{};
  watch.events = EPOLLIN;  // level-triggered: readable while items wait
  watch.data.u32 = 0;
  bool ok = ::epoll_ctl(ep, EPOLL_CTL_ADD, servers.fd(), &watch) == 0;
  watch.data.u32 = 1;
  ok = ok && ::epoll_ctl(ep, EPOLL_CTL_ADD, listeners.fd(), &watch) == 0;
  int open_queues = 2;
  while (ok && open_queues > 0) {
    std::array<epoll_event, 2> ready{};
    const int n = ::epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 60000);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      ok = false;  // an error, or a minute without any event
      break;
    }
    ++wakeups;
    for (int i = 0; i < n; ++i) {
      const bool is_server = ready[static_cast<std::size_t>(i)].data.u32 == 0;
      const bool ended = is_server ? drain(servers, server_report, sequences)
                                   : drain(listeners, listener_report, sequences);
      if (ended) {
        // After END nothing resets the fd any more: stop watching it.
        (void)::epoll_ctl(ep, EPOLL_CTL_DEL, is_server ? servers.fd() : listeners.fd(), nullptr);
        --open_queues;
      }
    }
  }
  ::close(ep);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::uint64_t per_publisher = quick ? 500 : 100000;  // SERVER events per publisher
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 08: %s\n", what);
      ++failures;
    }
  };

  queue_report server_report;
  queue_report listener_report;
  std::vector<std::uint64_t> sequences;
  std::uint64_t wakeups = 0;
  bool loop_ok = false;
  {
    herald::bus bus;
    herald::sub_list frontend(bus);
    herald::event_queue<server_event> server_queue;
    herald::event_queue<listener_event> listener_queue;
    auto s1 = frontend.subscribe_queue<server_event>(herald::type_of<server_event>(), server_queue,
                                                     herald::queue_notify::fd(),
                                                     {.name = "loop/servers"});
    auto s2 = frontend.subscribe_queue<listener_event>(herald::type_of<listener_event>(),
                                                       listener_queue, herald::queue_notify::fd(),
                                                       {.name = "loop/listeners"});
    expect(s1 && s2 && server_queue.fd() >= 0 && listener_queue.fd() >= 0,
           "queue subscribe with an eventfd failed");
    if (!s1 || !s2) {
      return 1;
    }

    // The loop thread owns both queues from now on (one consumer at a time).
    std::thread loop([&] {
      loop_ok = run_loop(server_queue, listener_queue, server_report, listener_report, sequences,
                         wakeups);
    });

    std::vector<std::thread> threads;
    for (unsigned p = 0; p < publishers; ++p) {
      threads.emplace_back([&frontend, p, per_publisher] {
        std::uint64_t listener_n = 0;
        for (std::uint64_t i = 0; i < per_publisher; ++i) {
          const auto what = i % 2 == 0 ? server_event::subtype::down : server_event::subtype::up;
          (void)frontend.publish<server_event>(what, {p, i});
          if (i % 2 == 1) {  // one LISTENER event every two SERVER events
            const auto lwhat = listener_n % 2 == 0 ? listener_event::subtype::close
                                                   : listener_event::subtype::open;
            (void)frontend.publish<listener_event>(lwhat, {p, listener_n, 8080});
            ++listener_n;
          }
        }
      });
    }
    for (auto& t : threads) {
      t.join();
    }
    // END behind the pending events of every queue; the loop pops them, then END.
    bus.shutdown();
    auto refused = frontend.publish<server_event>(server_event::subtype::up, {0, 0});
    expect(!refused && refused.error() == herald::errc::shutting_down,
           "publish after shutdown was not refused with shutting_down");
    loop.join();
    expect(!server_queue.is_open() && !listener_queue.is_open(), "a queue is still open");
    expect(server_queue.delivered() == server_report.events &&
               listener_queue.delivered() == listener_report.events,
           "delivered() disagrees with what the loop popped");
  }

  const std::uint64_t listener_per_publisher = per_publisher / 2;
  expect(loop_ok, "the epoll loop failed or waited a minute for nothing");
  expect(server_report.events == publishers * per_publisher, "SERVER events were lost");
  expect(listener_report.events == publishers * listener_per_publisher,
         "LISTENER events were lost");
  expect(!server_report.out_of_order && !listener_report.out_of_order,
         "events of one publisher arrived out of publish order");
  expect(server_report.ends == 1 && listener_report.ends == 1 && !server_report.after_end &&
             !listener_report.after_end,
         "END did not come exactly once and last");
  // Each publish reached exactly one queue: the list's sequence numbers are 1..N, each once.
  std::sort(sequences.begin(), sequences.end());
  bool dense = true;
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    dense = dense && sequences[i] == i + 1;
  }
  expect(dense, "the list's sequence numbers are not 1..N, each once");
  std::printf("epoll loop: %llu SERVER + %llu LISTENER events from %u publishers in %llu "
              "wake-ups, sequences 1..%zu, END once per queue\n",
              static_cast<unsigned long long>(server_report.events),
              static_cast<unsigned long long>(listener_report.events), publishers,
              static_cast<unsigned long long>(wakeups), sequences.size());
  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("fd polling behaved as documented\n");
  return 0;
}
