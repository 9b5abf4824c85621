// Example 04: asynchronous delivery and queue subscriptions, with END and shutdown.
//
// A health checker publishes SERVER events to a per-server list. A statistics aggregator runs
// asynchronously on herald's workers (it sees an immutable snapshot of the safe part); a
// "live table" task drains an event_queue, woken through a herald tasklet, and frees itself
// when it pops END; a poll()-based consumer waits on the queue's eventfd. Shutting the bus
// down ends every subscription: the async handler's pending events are delivered first, each
// queue gets END exactly once. The program checks the counts and exits non-zero if anything
// differs.
#include <poll.h>

#include <herald/bus.hpp>
#include <herald/scheduler.hpp>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { up, down, check };
  static constexpr std::array<std::string_view, 3> subtype_names{"UP", "DOWN", "CHECK"};
  struct safe_part {
    std::uint32_t id = 0;
    std::string name;
    int latency_ms = 0;
  };
};
using server_sub = server_event::subtype;

// Counted by the aggregator on a worker, read by main after shutdown.
struct stats {
  std::atomic<int> checks{0};
  std::atomic<int> downs{0};
  std::atomic<long> latency_sum{0};
};

// A consumer that owns its queue and its tasklet, and deletes itself when it pops END.
struct live_table {
  herald::event_queue<server_event> queue;
  herald::tasklet drain;
  std::atomic<int>* rows_out = nullptr;
  std::atomic<bool>* ended_out = nullptr;
  int rows = 0;

  void run() {
    while (auto item = queue.pop()) {
      if (item->is_end()) {
        rows_out->store(rows);
        std::atomic<bool>* ended = ended_out;
        delete this;  // the queue and the tasklet handle go with it; herald keeps its own
        ended->store(true);
        return;
      }
      ++rows;  // a real table would redraw the row of item->safe().id
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 200 : 20000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 04: %s\n", what);
      ++failures;
    }
  };

  stats st;
  std::atomic<int> table_rows{-1};
  std::atomic<bool> table_ended{false};
  int polled = 0;
  int poll_ends = 0;
  {
    herald::bus bus({.threads = 2});
    herald::sub_list srv(bus);  // one server's list

    // 1. Async: runs on herald's workers with a snapshot of the safe part.
    auto agg = srv.subscribe_async<server_event>(
        herald::type_of<server_event>(server_sub::down, server_sub::check),
        [&st](herald::async_event<server_event>& e) {
          if (e.subtype() == server_sub::down) {
            st.downs.fetch_add(1);
          } else {
            st.checks.fetch_add(1);
            st.latency_sum.fetch_add(e.safe().latency_ms);
          }
        },
        {.name = "stats"});
    expect(agg.has_value(), "async subscribe failed");

    // 2. Queue woken through a tasklet; the consumer frees itself on END.
    auto* table = new live_table;
    table->rows_out = &table_rows;
    table->ended_out = &table_ended;
    table->drain = bus.workers().make_tasklet([table] { table->run(); });
    auto tq = srv.subscribe_queue<server_event>(herald::type_of<server_event>(), table->queue,
                                                herald::queue_notify::wake(table->drain),
                                                {.name = "live-table"});
    expect(tq.has_value(), "queue subscribe (tasklet) failed");

    // 3. Queue with an eventfd, drained here with poll().
    herald::event_queue<server_event> pq;
    auto fq = srv.subscribe_queue<server_event>(herald::type_of<server_event>(server_sub::up,
                                                                              server_sub::down),
                                                pq, herald::queue_notify::fd());
    expect(fq.has_value(), "queue subscribe (fd) failed");

    auto drain_polled = [&] {
      pollfd p{pq.fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) == 1) {
        while (auto item = pq.pop()) {
          item->is_end() ? ++poll_ends : ++polled;
        }
      }
    };

    for (int i = 0; i < rounds; ++i) {
      const auto id = static_cast<std::uint32_t>(i % 8);
      (void)srv.publish<server_event>(server_sub::check, {id, "srv" + std::to_string(id), i % 50});
      if (i % 10 == 9) {
        (void)srv.publish<server_event>(server_sub::down, {id, "srv", 0});
        (void)srv.publish<server_event>(server_sub::up, {id, "srv", 0});
      }
      if (i % 64 == 0) {
        drain_polled();
      }
    }
    bus.shutdown();  // END everywhere; the async handler's pending events are delivered first
    drain_polled();  // the rest, then END
  }

  const int downs = rounds / 10;
  long expected_latency = 0;
  for (int i = 0; i < rounds; ++i) {
    expected_latency += i % 50;
  }
  expect(st.checks.load() == rounds, "the aggregator missed a CHECK");
  expect(st.downs.load() == downs, "the aggregator missed a DOWN");
  expect(st.latency_sum.load() == expected_latency, "the latency sum is off");
  expect(table_ended.load(), "the live table never saw END");
  expect(table_rows.load() == rounds + 2 * downs, "the live table missed rows");
  expect(polled == 2 * downs, "the polled queue missed events");
  expect(poll_ends == 1, "the polled queue did not get END exactly once");
  std::printf("aggregator: %d checks (mean latency %.1f ms), %d downs; live table: %d rows; "
              "polled: %d events + END\n",
              st.checks.load(), static_cast<double>(st.latency_sum.load()) / rounds,
              st.downs.load(), table_rows.load(), polled);
  return failures == 0 ? 0 : 1;
}
