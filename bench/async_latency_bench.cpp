// Asynchronous delivery latency: how long an event takes from publish() to the start of a
// subscriber's handler on another thread, for herald's async mode (AsyncLatency_Herald)
// against the async peers of async_publish_bench.cpp (bench/peers/): one moodycamel
// ConcurrentQueue per subscriber (ConcurrentQueue) and one std::mutex + std::deque per
// subscriber (MutexDeque). async_publish_bench.cpp measures throughput with the publisher
// running flat out; this file measures the delay of single events on a lightly loaded bus.
//
// Scenario (Args: subs, gap_us)
//   `subs` subscribers (1, 16) of one event type; ONE dispatcher thread (herald: one worker)
//   runs every handler, the benchmark thread publishes. Each iteration publishes one 32-byte
//   event that carries the steady_clock time read just before publish(); the handler reads the
//   clock again and records the difference (one sample per delivery, so with 16 subscribers an
//   event gives 16 samples, the later ones including the handlers that ran before them on the
//   same thread). Publishes are paced: event i is due `gap_us` x i after the first; the
//   publisher sleeps while the event is more than 80 us away, then spins (pause hints) until
//   it is due, so the bus is never saturated.
//     gap_us 10    the dispatcher never idles long enough to sleep (every peer, herald
//                  included, spins 50 us before it blocks): the latency of a busy bus.
//     gap_us 200   the dispatcher is asleep when each event arrives: the latency includes
//                  the wake-up (a futex or condition-variable wake and a context switch).
//   A publisher that falls more than one gap behind its schedule (a preempted thread on a
//   shared machine) counts the event in `late` and restarts the schedule from now instead of
//   publishing a burst.
//
// Counters (ns; over every delivery of the run)
//   p50_ns, p99_ns, p999_ns, max_ns, mean_ns   exact, from the recorded samples
//   samples, late                             deliveries recorded, publishes behind schedule
//   hist_ge_<ns> (only when the environment variable HERALD_BENCH_HISTOGRAM is set, as
//   tools/herald-bench sets it): deliveries whose latency lies in [<ns>, next bucket's
//   bound); four linear buckets per power of two from 64 ns to 67 ms, hist_ge_00000000 holds
//   everything under 64 ns and the last bucket everything from 67108864 ns on. Off by
//   default: 82 counters make the console table unreadable.
//   The time columns (ns per iteration) are the pacing gap and mean nothing here.
//
// Why it is fair
//   The same payload, handler (record()), pacing and single dispatcher thread for every
//   library; the peers are the ones of the throughput benchmark, unchanged (same idle policy
//   as herald's workers: spin 50 us, then block). The samples live in vectors reserved before
//   the timed loop, so a handler never allocates. After the loop the driver waits until every
//   subscriber handled every event, stops the bus, and checks the counts (a miss or a
//   duplicate aborts).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "herald/bus.hpp"
#include "peers/async_common.hpp"
#include "peers/concurrent_queue.hpp"
#include "peers/mutex_deque.hpp"

namespace {

constexpr std::size_t dispatcher_threads = 1;  // publisher + 1 worker on a 2-core machine
// Most samples kept per subscriber (4 bytes each); deliveries beyond are counted, not kept.
constexpr std::size_t max_samples_per_subscriber = std::size_t{1} << 24;
// A publisher more than this early sleeps until this much before the event is due, then spins:
// sleeps overshoot by tens of microseconds, and a spinning publisher would take the core a
// shared machine's dispatcher thread may need.
constexpr std::int64_t sleep_margin_ns = 80'000;

[[noreturn]] void fail(const char* what) noexcept {
  std::fprintf(stderr, "async_latency_bench: %s\n", what);
  std::abort();
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---- Event, handler work -----------------------------------------------------------------------

// 32 bytes, like the throughput benchmark's event.
struct latency_event {
  std::int64_t published_ns = 0;  // steady_clock, read just before publish()
  std::uint64_t id = 0;           // 1, 2, 3, ...
  std::uint64_t server = 0;
  std::uint64_t state = 0;
};
static_assert(sizeof(latency_event) == 32);

// What one subscriber owns. `samples` and `dropped` are written by the dispatcher thread only
// (reserved before the bus starts, read after it stopped); `handled` is read by the publisher.
struct alignas(64) recorder {
  std::vector<std::uint32_t> samples;
  std::uint64_t dropped = 0;  // deliveries past the reserved capacity
  std::uint64_t last_id = 0;  // for the order check
  bool out_of_order = false;
  std::atomic<std::uint64_t> handled{0};
};

// The handler of every library: one clock read, one store into reserved memory.
void record(void* ctx, const latency_event& e) noexcept {
  const std::int64_t now = now_ns();
  recorder& r = *static_cast<recorder*>(ctx);
  const std::int64_t delta = now - e.published_ns;
  const auto sample = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(delta, 0, std::numeric_limits<std::uint32_t>::max()));
  if (r.samples.size() < r.samples.capacity()) {
    r.samples.push_back(sample);  // within capacity: no allocation
  } else {
    ++r.dropped;
  }
  r.out_of_order = r.out_of_order || e.id != r.last_id + 1;
  r.last_id = e.id;
  // Single writer. release: pairs with the acquire load in wait_handled().
  r.handled.store(r.handled.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void wait_handled(const recorder& r, std::uint64_t target) noexcept {
  while (r.handled.load(std::memory_order_acquire) < target) {
    for (int i = 0; i < 64; ++i) {
      herald::bench::async_pause();
    }
  }
}

// ---- Histogram ---------------------------------------------------------------------------------

// Bucket 0: [0, 64). Then four linear buckets per power of two: for 2^e <= v < 2^(e+1), bucket
// 1 + 4 (e - 6) + (the two bits of v below its top bit). The last bucket takes everything from
// 2^26 ns (67 ms) on.
constexpr unsigned hist_first_exp = 6;
constexpr unsigned hist_last_exp = 25;  // last full octave: [2^25, 2^26)
constexpr std::size_t hist_buckets = 1 + 4 * (hist_last_exp - hist_first_exp + 1) + 1;

std::size_t hist_bucket(std::uint32_t v) noexcept {
  if (v < (1U << hist_first_exp)) {
    return 0;
  }
  const auto e = static_cast<unsigned>(std::bit_width(v)) - 1;
  if (e > hist_last_exp) {
    return hist_buckets - 1;
  }
  const unsigned sub = (v >> (e - 2)) & 3U;
  return 1 + 4 * (e - hist_first_exp) + sub;
}

std::uint64_t hist_lower_bound(std::size_t bucket) noexcept {
  if (bucket == 0) {
    return 0;
  }
  if (bucket == hist_buckets - 1) {
    return std::uint64_t{1} << (hist_last_exp + 1);
  }
  const std::size_t e = hist_first_exp + (bucket - 1) / 4;
  const std::size_t sub = (bucket - 1) % 4;
  return (4 + sub) << (e - 2);
}

// ---- Driver ------------------------------------------------------------------------------------

// The value at quantile q (0 < q <= 1) of `v` (reordered): the smallest sample with at least
// q of the samples at or below it.
double quantile(std::vector<std::uint32_t>& v, double q) {
  const auto n = v.size();
  auto rank = static_cast<std::size_t>(q * static_cast<double>(n) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, n);
  const auto it = v.begin() + static_cast<std::ptrdiff_t>(rank - 1);
  std::nth_element(v.begin(), it, v.end());
  return static_cast<double>(*it);
}

// Runs one AsyncLatency benchmark over `Bus` (the interface of run_async_publish() in
// async_publish_bench.cpp: Bus(consumers), subscribe(fn, ctx), start(), publish(), stop()).
template <class Bus>
void run_async_latency(benchmark::State& state) {
  const auto subs = static_cast<std::size_t>(state.range(0));
  const std::int64_t gap_ns = state.range(1) * 1000;
  const auto reserve = std::min<std::size_t>(static_cast<std::size_t>(state.max_iterations),
                                             max_samples_per_subscriber);
  const auto recorders = std::make_unique<recorder[]>(subs);
  for (std::size_t i = 0; i < subs; ++i) {
    recorders[i].samples.reserve(reserve);
  }

  std::uint64_t published = 0;
  std::int64_t late = 0;
  {
    Bus bus(dispatcher_threads);
    for (std::size_t i = 0; i < subs; ++i) {
      bus.subscribe(&record, &recorders[i]);
    }
    bus.start();
    std::int64_t due = now_ns();
    for (auto _ : state) {
      std::int64_t now = now_ns();
      if (now - due > gap_ns) {  // behind schedule: count it, restart from now
        ++late;
        due = now;
      }
      if (due - now > sleep_margin_ns) {  // long gaps: leave the core to the dispatcher
        std::this_thread::sleep_for(std::chrono::nanoseconds(due - now - sleep_margin_ns));
        now = now_ns();
      }
      while (now < due) {
        herald::bench::async_pause();
        now = now_ns();
      }
      ++published;
      latency_event e{};
      e.id = published;
      e.server = published % 64;
      e.state = published % 3;
      e.published_ns = now_ns();
      bus.publish(e);
      due += gap_ns;
    }
    for (std::size_t i = 0; i < subs; ++i) {
      wait_handled(recorders[i], published);
    }
    bus.stop();
  }

  std::vector<std::uint32_t> all;
  std::uint64_t dropped = 0;
  for (std::size_t i = 0; i < subs; ++i) {
    const recorder& r = recorders[i];
    if (r.handled.load(std::memory_order_relaxed) != published || r.last_id != published) {
      fail("AsyncLatency: a subscriber missed or repeated an event");
    }
    if (r.out_of_order) {
      fail("AsyncLatency: a subscriber got events out of publish order");
    }
    dropped += r.dropped;
    all.insert(all.end(), r.samples.begin(), r.samples.end());
  }
  if (all.empty()) {
    fail("AsyncLatency: no sample recorded");
  }

  double sum = 0;
  std::uint32_t most = 0;
  std::array<std::uint64_t, hist_buckets> hist{};
  for (const std::uint32_t v : all) {
    sum += static_cast<double>(v);
    most = std::max(most, v);
    ++hist[hist_bucket(v)];
  }
  state.counters["mean_ns"] = sum / static_cast<double>(all.size());
  state.counters["max_ns"] = static_cast<double>(most);
  state.counters["p50_ns"] = quantile(all, 0.50);
  state.counters["p99_ns"] = quantile(all, 0.99);
  state.counters["p999_ns"] = quantile(all, 0.999);
  state.counters["samples"] = static_cast<double>(all.size());
  state.counters["late"] = static_cast<double>(late);
  if (dropped != 0) {
    state.counters["dropped"] = static_cast<double>(dropped);
  }
  if (std::getenv("HERALD_BENCH_HISTOGRAM") != nullptr) {
    for (std::size_t b = 0; b < hist_buckets; ++b) {
      char name[32];
      std::snprintf(name, sizeof name, "hist_ge_%08llu",
                    static_cast<unsigned long long>(hist_lower_bound(b)));
      state.counters[name] = static_cast<double>(hist[b]);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(published));
}

// ---- Herald ------------------------------------------------------------------------------------

struct latency_family {
  static constexpr std::string_view family_name = "LATENCYBENCH";
  enum class subtype : std::uint8_t { change };
  static constexpr std::array<std::string_view, 1> subtype_names{"CHANGE"};
  using safe_part = latency_event;
};

// Async mode: one async subscription per subscriber on a bus with `consumers` workers.
class herald_async_bus {
 public:
  explicit herald_async_bus(std::size_t consumers)
      : bus_(herald::bus_options{.threads = static_cast<unsigned>(consumers)}), list_(bus_) {}
  void subscribe(herald::bench::async_handler_fn<latency_event> fn, void* ctx) {
    auto s = list_.subscribe_async<latency_family>(
        herald::type_of<latency_family>(),
        [fn, ctx](herald::async_event<latency_family>& e) { fn(ctx, e.safe()); });
    if (!s) {
      fail("Herald: subscribe_async failed");
    }
  }
  void start() noexcept {}
  void publish(const latency_event& e) noexcept {
    if (!list_.publish<latency_family>(latency_family::subtype::change, e)) {
      fail("Herald: publish failed");
    }
  }
  void stop() noexcept { bus_.shutdown(); }

 private:
  herald::bus bus_;
  herald::sub_list list_;
};

void BM_AsyncLatency_Herald(benchmark::State& state) { run_async_latency<herald_async_bus>(state); }
void BM_AsyncLatency_ConcurrentQueue(benchmark::State& state) {
  run_async_latency<herald::bench::concurrent_queue_bus<latency_event>>(state);
}
void BM_AsyncLatency_MutexDeque(benchmark::State& state) {
  run_async_latency<herald::bench::mutex_deque_bus<latency_event>>(state);
}

void latency_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"subs", "gap_us"});
  for (const std::int64_t gap : {10, 200}) {
    for (const std::int64_t subs : {1, 16}) {
      b->Args({subs, gap});
    }
  }
  b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_AsyncLatency_Herald)->Apply(latency_args);
BENCHMARK(BM_AsyncLatency_ConcurrentQueue)->Apply(latency_args);
BENCHMARK(BM_AsyncLatency_MutexDeque)->Apply(latency_args);
