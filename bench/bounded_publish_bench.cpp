// Asynchronous publish to a bounded subscription: what backpressure costs the publisher, and
// what each overflow policy does when the consumer cannot keep up. One publishing thread (the
// benchmark thread) publishes one 32-byte event per iteration to ONE async subscriber whose
// handler runs on herald's single worker (the machine has 2 cores: the publisher and the worker).
//
// Scenario (wall-clock time; one iteration = one published event)
//   AsyncPublish_Herald_Bounded/<policy>/bound:<n>
//     unbounded/bound:0   the reference: the same shape as BM_AsyncPublish_Herald/subs:1
//                          (bench/async_publish_bench.cpp), with its backlog rule (below).
//     drop_newest, drop_oldest   bound 16 and 256: the publisher never waits; whatever does not
//                          fit is dropped (the newest event, or the oldest queued one).
//     block                bound 16 and 256: the publisher waits for room (block_timeout 1 s,
//                          never reached here; after_timeout drop_newest), so nothing is dropped
//                          and the publisher runs at the consumer's pace.
//   Counters: delivered and dropped (events, whole run, from subscription::stats()), dropped_pct
//   (dropped / published), stalls (backlog waits of the unbounded reference).
//
// End to end: the last iteration waits
//   As in async_publish_bench.cpp, the last iteration of the timed loop waits, inside the timed
//   region, until every published event was either handled or dropped (delivered + dropped() ==
//   published): ns/iteration is the cost per published event with its delivery done, not the
//   cost of handing it to a queue.
//
// Bounded backlog
//   The unbounded reference keeps the publisher at most 4096 events ahead of the handler (it
//   waits, polling, until it is 2048 ahead), like async_publish_bench.cpp, so that it does not
//   grow memory without limit. The bounded runs need no such rule: the bound is the backlog.
//   (Waiting for the handled count would never end there anyway: dropped events are never
//   handled.)
//
// Checks (a failure aborts): the handler count equals stats().delivered, the identity
// published == delivered + dropped() holds once the bus has shut down, every iteration was
// counted as published, and without drops the handled ids add up.
//
// The helpers of async_publish_bench.cpp live in its anonymous namespace; the few this file
// needs (the event, its handler work, the wait) are copied here, identical.
#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "herald/backpressure.hpp"
#include "herald/bus.hpp"
#include "peers/async_common.hpp"

namespace {

constexpr std::uint64_t max_backlog = 4096;  // the unbounded reference only; see above
constexpr std::uint64_t resume_backlog = max_backlog / 2;

[[noreturn]] void fail(const char* what) noexcept {
  std::fprintf(stderr, "bounded_publish_bench: %s\n", what);
  std::abort();
}

// A server-state change, 32 bytes (as in async_publish_bench.cpp).
struct server_event {
  std::uint64_t id = 0;
  std::int64_t timestamp_ns = 0;
  std::uint32_t server = 0;
  std::uint32_t state = 0;
  std::uint64_t weight = 0;
};
static_assert(sizeof(server_event) == 32);

server_event make_event(std::uint64_t id) noexcept {
  return server_event{id, static_cast<std::int64_t>(id) * 1000, static_cast<std::uint32_t>(id % 64),
                      static_cast<std::uint32_t>(id % 3), id % 256};
}

// What the subscriber owns, on its own cache line. Written by the worker only.
struct alignas(64) subscriber_state {
  std::uint64_t sum = 0;
  std::atomic<std::uint64_t> handled{0};  // read by the publisher
};

void count_event(subscriber_state& s, const server_event& e) noexcept {
  s.sum += e.id;
  // Single writer: a plain increment. release: pairs with the acquire load in wait_handled().
  s.handled.store(s.handled.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void wait_handled(const subscriber_state& s, std::uint64_t target) noexcept {
  while (s.handled.load(std::memory_order_acquire) < target) {
    for (int i = 0; i < 64; ++i) {
      herald::bench::async_pause();
    }
  }
}

struct bounded_bench_family {
  static constexpr std::string_view family_name = "BOUNDEDBENCH";
  enum class subtype : std::uint8_t { change };
  static constexpr std::array<std::string_view, 1> subtype_names{"CHANGE"};
  using safe_part = server_event;
};

// Waits until every published event was handled or dropped.
void wait_settled(const herald::subscription& sub, std::uint64_t published) noexcept {
  for (;;) {
    const herald::subscription_stats st = sub.stats();
    if (st.delivered + st.dropped() >= published) {
      return;
    }
    for (int i = 0; i < 64; ++i) {
      herald::bench::async_pause();
    }
  }
}

void BM_AsyncPublish_Herald_Bounded(benchmark::State& state, herald::overflow_policy policy) {
  const auto bound = static_cast<std::size_t>(state.range(0));
  subscriber_state sink;
  herald::bus bus(herald::bus_options{.threads = 1});
  herald::sub_list list(bus);
  herald::subscribe_options opt;
  opt.backpressure.bound = bound;
  opt.backpressure.policy = policy;
  opt.backpressure.block_timeout = std::chrono::seconds(1);
  opt.backpressure.after_timeout = herald::overflow_policy::drop_newest;
  auto sub = list.subscribe_async<bounded_bench_family>(
      herald::type_of<bounded_bench_family>(),
      [&sink](herald::async_event<bounded_bench_family>& e) { count_event(sink, e.safe()); }, opt);
  if (!sub) {
    fail("subscribe_async failed");
  }

  const auto last = static_cast<std::uint64_t>(state.max_iterations);
  std::uint64_t published = 0;
  std::uint64_t slowest_seen = 0;
  std::int64_t stalls = 0;
  for (auto _ : state) {
    ++published;
    if (!list.publish<bounded_bench_family>(bounded_bench_family::subtype::change,
                                            make_event(published))) {
      fail("publish failed");
    }
    if (bound == 0 && published - slowest_seen > max_backlog) {
      slowest_seen = sink.handled.load(std::memory_order_acquire);
      if (published - slowest_seen > max_backlog) {
        slowest_seen = published - resume_backlog;
        wait_handled(sink, slowest_seen);
        ++stalls;
      }
    }
    if (published == last) {  // end to end: see the file comment
      wait_settled(*sub, published);
    }
  }
  bus.shutdown();

  if (published != last) {
    fail("the loop did not run max_iterations times");
  }
  const herald::subscription_stats st = sub->stats();
  if (st.published != published) {
    fail("stats().published is not the number of publishes");
  }
  if (st.delivered != sink.handled.load(std::memory_order_relaxed)) {
    fail("stats().delivered is not the number of handler calls");
  }
  if (st.published != st.delivered + st.dropped() || st.queued != 0 || st.discarded != 0) {
    fail("published != delivered + dropped() after shutdown");
  }
  if (st.dropped() == 0 && sink.sum != published * (published + 1) / 2) {
    fail("the handled ids do not add up");
  }
  if (bound != 0 && st.high_water > bound) {
    fail("high_water above the bound");
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["delivered"] = benchmark::Counter(static_cast<double>(st.delivered));
  state.counters["dropped"] = benchmark::Counter(static_cast<double>(st.dropped()));
  state.counters["dropped_pct"] = benchmark::Counter(100.0 * static_cast<double>(st.dropped()) /
                                                     static_cast<double>(published));
  state.counters["stalls"] = benchmark::Counter(static_cast<double>(stalls));
}

void bounds(benchmark::internal::Benchmark* b) {
  b->ArgName("bound")->Arg(16)->Arg(256)->UseRealTime();
}

}  // namespace

BENCHMARK_CAPTURE(BM_AsyncPublish_Herald_Bounded, unbounded, herald::overflow_policy::drop_newest)
    ->ArgName("bound")
    ->Arg(0)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_AsyncPublish_Herald_Bounded, drop_newest, herald::overflow_policy::drop_newest)
    ->Apply(bounds);
BENCHMARK_CAPTURE(BM_AsyncPublish_Herald_Bounded, drop_oldest, herald::overflow_policy::drop_oldest)
    ->Apply(bounds);
BENCHMARK_CAPTURE(BM_AsyncPublish_Herald_Bounded, block, herald::overflow_policy::block)
    ->Apply(bounds);
