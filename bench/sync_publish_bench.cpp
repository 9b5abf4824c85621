// Synchronous publish: herald::sub_list::publish against its peers (bench/peers/): a vector of
// function pointers walked without synchronisation (RawLoop, the floor), a std::vector of
// std::function under a std::mutex held while calling (MutexVector), Boost.Signals2
// (BoostSignals2) and libsigc++ 3 (Sigc).
//
// Scenarios (wall-clock time for the 2-thread runs, CPU time otherwise; items = publishes,
// summed over the threads; per_handler = time / (publishes x slots))
//   SyncPublish    `slots` handlers (Arg 1, 10, 100) all match the published event; one publish
//                  per iteration calls each of them once. Every peer runs the same handler body
//                  (count(): add the event's id to a counter owned by that handler), reached
//                  through the peer's own type-erased call. Herald, RawLoop, MutexVector and
//                  BoostSignals2 also run with 2 threads publishing to the same list (Sigc is
//                  not thread-safe).
//   NoMatch        herald only: publish an event nobody subscribed to, to a list that holds
//                  Arg (0 or 1000) subscriptions of 10 other families. The published family is
//                  declared before those, so with 1000 the publish goes through the family
//                  table and finds an empty slot rather than stopping at the table's end. The
//                  two results should be equal: the cost does not grow with other families.
//
// A process that already runs a second thread
//   A static `idle_thread` below starts a std::thread during static initialisation (before
//   benchmark_main's main()) that blocks on a condition variable until static destruction, so
//   every benchmark, the 1-thread ones included, runs in a multi-threaded process. That
//   matters: glibc sets __libc_single_threaded to false for good at the first pthread_create,
//   and from then on libstdc++'s std::shared_ptr (which libsigc++ copies on every emit) counts
//   references with atomic instructions instead of plain ones. A real program that publishes
//   events has threads; measuring the peers in a single-threaded process would flatter them.
//   Each run checks the flag.
//
// Fair handler state with 2 threads
//   Both threads call every handler, so a plain counter per handler would be a data race, and a
//   shared atomic counter would measure cache-line ping-pong instead of the libraries. Instead
//   each handler owns one counter per publishing thread ("lane", its own cache line), and the
//   payload carries the publisher's lane: count() adds `id` to counters[lane] with a plain
//   store. That is identical in every peer and for 1 and 2 threads, touches no line another
//   thread writes, and lets each thread check after its loop that every handler ran exactly
//   once per publish (a miss or a duplicate aborts with a message).
//
// Shared state and Google Benchmark's threads (as in mt_list_bench.cpp)
//   Benchmark 1.7.1 starts `for (auto _ : state)` in every thread only once all threads reached
//   it, and ends it only once all have finished their iterations. So each benchmark keeps its
//   list (and the handler states it points to) in a function-local static; thread 0 fills the
//   list before its loop and empties it after its loop; each thread writes only its own lane
//   of the handler states, before and after the loop and (through the handlers) in it.
#include <benchmark/benchmark.h>

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define HERALD_BENCH_HAS_SINGLE_THREADED 1
#endif

#include "herald/bus.hpp"
#include "herald/event_type.hpp"
#include "peers/boost_signals2.hpp"
#include "peers/mutex_vector.hpp"
#include "peers/raw_loop.hpp"
#include "peers/sigc.hpp"

namespace {

constexpr std::size_t max_lanes = 2;    // most benchmark threads in one run
constexpr std::size_t max_slots = 100;  // largest Arg of the SyncPublish benchmarks
constexpr std::size_t other_families = 10;

[[noreturn]] void fail(const char* what) noexcept {
  std::fprintf(stderr, "sync_publish_bench: %s\n", what);
  std::abort();
}

// ---- The process's second thread -------------------------------------------------------------

// Blocks (no spinning) from static initialisation until static destruction; see the file
// comment. Members are declared so that the thread starts last and is joined first.
class idle_thread {
 public:
  idle_thread()
      : thread_([this] {
          std::unique_lock lock(mutex_);
          wake_.wait(lock, [this] { return stop_; });
        }) {}
  idle_thread(const idle_thread&) = delete;
  idle_thread& operator=(const idle_thread&) = delete;
  ~idle_thread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;  // protected by mutex_
  std::thread thread_;
};

idle_thread second_thread;

void check_multithreaded() noexcept {
#if defined(HERALD_BENCH_HAS_SINGLE_THREADED)
  if (__libc_single_threaded != 0) {
    fail("the process is single-threaded: the idle thread did not start");
  }
#endif
}

// ---- Event, payload, handler work --------------------------------------------------------------

// The published family. `tick` is published and subscribed; `other` is never used.
struct sync_bench_event {
  static constexpr std::string_view family_name = "SYNCBENCH";
  enum class subtype : std::uint8_t { tick, other };
  static constexpr std::array<std::string_view, 2> subtype_names{"TICK", "OTHER"};
  struct safe_part {
    int id = 0;              // what the handlers add up
    std::uint32_t lane = 0;  // the publishing benchmark thread (see the file comment)
  };
};
using payload = sync_bench_event::safe_part;

// The families that fill the list in NoMatch.
constexpr std::array<std::string_view, other_families> other_family_names{
    "SYNCOTHER0", "SYNCOTHER1", "SYNCOTHER2", "SYNCOTHER3", "SYNCOTHER4",
    "SYNCOTHER5", "SYNCOTHER6", "SYNCOTHER7", "SYNCOTHER8", "SYNCOTHER9"};
template <std::size_t I>
struct other_event {
  static constexpr std::string_view family_name = other_family_names[I];
  enum class subtype : std::uint8_t { tick };
  static constexpr std::array<std::string_view, 1> subtype_names{"TICK"};
  struct safe_part {
    int id = 0;
  };
};

// Declares SYNCBENCH before the other families, whatever benchmark runs first, so that its id
// is below theirs (NoMatch relies on it).
template <std::size_t... I>
void declare_families(std::index_sequence<I...>) noexcept {
  const herald::family_id published = herald::family_id_of<sync_bench_event>();
  const std::array<herald::family_id, sizeof...(I)> others{
      herald::family_id_of<other_event<I>>()...};
  for (herald::family_id id : others) {
    if (id <= published) {
      fail("SYNCBENCH was not declared before the other families");
    }
  }
}
void declare_families() noexcept { declare_families(std::make_index_sequence<other_families>{}); }

// One counter per publishing thread, each on its own cache line.
struct alignas(64) lane_counter {
  std::int64_t sum = 0;
};
// What one handler (slot) owns.
struct slot_state {
  std::array<lane_counter, max_lanes> lanes{};
};
using slot_states = std::array<slot_state, max_slots>;

// The work every handler of every peer does.
inline void count(slot_state& s, const payload& p) noexcept { s.lanes[p.lane].sum += p.id; }

// RawLoop's handler: a plain function taking its state as a context pointer.
void raw_handler(void* ctx, const payload& p) noexcept { count(*static_cast<slot_state*>(ctx), p); }

// ---- Common driver -----------------------------------------------------------------------------

std::size_t thread_id(const benchmark::State& state) {
  return static_cast<std::size_t>(state.thread_index());
}

// Runs one SyncPublish benchmark. `Bench` provides:
//   fixture                      the shared list (a function-local static here)
//   connect(fixture&, slot_state&)   subscribe one handler counting into that state
//   publish(const fixture&, const payload&)
//   clear(fixture&)              unsubscribe everything
template <class Bench>
void run_sync_publish(benchmark::State& state) {
  struct shared_state {
    // Declared first: outlives whatever points into it. Page-aligned so that the counters sit
    // at the same offsets within a 4 KiB page for every peer: with 100 slots, the handlers'
    // stores and the list's loads can falsely conflict when their addresses agree in the low
    // 12 bits (4K aliasing), and we measured the RawLoop at 100 slots move by 30% with the
    // relative placement alone.
    alignas(4096) slot_states slots{};
    typename Bench::fixture fixture;
  };
  static shared_state shared;

  check_multithreaded();
  const std::size_t lane = thread_id(state);
  const auto slots = static_cast<std::size_t>(state.range(0));
  if (lane >= max_lanes || static_cast<std::size_t>(state.threads()) > max_lanes) {
    fail("SyncPublish: more threads than max_lanes");
  }
  if (slots > max_slots) {
    fail("SyncPublish: more slots than max_slots");
  }
  if (lane == 0) {
    for (std::size_t i = 0; i < slots; ++i) {
      Bench::connect(shared.fixture, shared.slots[i]);
    }
  }
  for (slot_state& s : shared.slots) {
    s.lanes[lane].sum = 0;  // this thread's lane only
  }
  const payload event{static_cast<int>(lane) + 1, static_cast<std::uint32_t>(lane)};

  for (auto _ : state) {
    Bench::publish(shared.fixture, event);
    benchmark::ClobberMemory();
  }

  const std::int64_t expected = state.iterations() * event.id;
  for (std::size_t i = 0; i < max_slots; ++i) {
    if (shared.slots[i].lanes[lane].sum != (i < slots ? expected : 0)) {
      fail("SyncPublish: a handler missed or repeated a publish");
    }
  }
  state.SetItemsProcessed(state.iterations());
  // Summed over the threads, then divided by the run's time (kIsRate) and inverted: the time
  // per handler call, shown in seconds with an SI prefix ("2.1ns").
  state.counters["per_handler"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(slots),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  if (lane == 0) {
    Bench::clear(shared.fixture);
  }
}

// ---- Herald ------------------------------------------------------------------------------------

struct herald_bench {
  struct fixture {
    herald::bus bus;
    herald::sub_list list{bus};
    std::vector<herald::subscription> subs;
  };
  static void connect(fixture& f, slot_state& s) {
    declare_families();
    auto sub = f.list.subscribe_sync<sync_bench_event>(
        herald::type_of<sync_bench_event>(sync_bench_event::subtype::tick),
        [state = &s](herald::sync_event<sync_bench_event>& e) { count(*state, e.safe()); });
    if (!sub) {
      fail("Herald: subscribe_sync failed");
    }
    f.subs.push_back(std::move(*sub));
  }
  static void publish(const fixture& f, const payload& p) {
    auto called = f.list.publish<sync_bench_event>(sync_bench_event::subtype::tick, p);
    benchmark::DoNotOptimize(called);
  }
  static void clear(fixture& f) {
    for (herald::subscription& s : f.subs) {
      s.unsubscribe();
    }
    f.subs.clear();
  }
};

void BM_SyncPublish_Herald(benchmark::State& state) { run_sync_publish<herald_bench>(state); }

// ---- Peers -------------------------------------------------------------------------------------

struct raw_loop_bench {
  using fixture = herald::bench::raw_loop<payload>;
  static void connect(fixture& f, slot_state& s) { f.connect(&raw_handler, &s); }
  static void publish(const fixture& f, const payload& p) { f.emit(p); }
  static void clear(fixture& f) { f.clear(); }
};

// The peers that take any callable share the same lambda.
template <class Signal>
struct callable_bench {
  using fixture = Signal;
  static void connect(fixture& f, slot_state& s) {
    f.connect([state = &s](const payload& p) { count(*state, p); });
  }
  static void publish(const fixture& f, const payload& p) { f.emit(p); }
  static void clear(fixture& f) { f.clear(); }
};

void BM_SyncPublish_RawLoop(benchmark::State& state) { run_sync_publish<raw_loop_bench>(state); }
void BM_SyncPublish_MutexVector(benchmark::State& state) {
  run_sync_publish<callable_bench<herald::bench::mutex_vector<payload>>>(state);
}
void BM_SyncPublish_BoostSignals2(benchmark::State& state) {
  run_sync_publish<callable_bench<herald::bench::boost_signal<payload>>>(state);
}
void BM_SyncPublish_Sigc(benchmark::State& state) {
  run_sync_publish<callable_bench<herald::bench::sigc_signal<payload>>>(state);
}

// ---- NoMatch -----------------------------------------------------------------------------------

template <std::size_t I>
void subscribe_others(herald::sub_list& list, std::vector<herald::subscription>& subs,
                      std::size_t count_each) {
  for (std::size_t i = 0; i < count_each; ++i) {
    auto sub = list.subscribe_sync<other_event<I>>(
        herald::type_of<other_event<I>>(),
        [](herald::sync_event<other_event<I>>&) { fail("NoMatch: another family's handler ran"); });
    if (!sub) {
      fail("NoMatch: subscribe_sync failed");
    }
    subs.push_back(std::move(*sub));
  }
}
template <std::size_t... I>
void subscribe_others(herald::sub_list& list, std::vector<herald::subscription>& subs,
                      std::size_t count_each, std::index_sequence<I...>) {
  (subscribe_others<I>(list, subs, count_each), ...);
}

void BM_SyncPublish_NoMatch_Herald(benchmark::State& state) {
  check_multithreaded();
  declare_families();
  const auto others = static_cast<std::size_t>(state.range(0));
  herald::bus bus;
  herald::sub_list list(bus);
  std::vector<herald::subscription> subs;
  subscribe_others(list, subs, others / other_families, std::make_index_sequence<other_families>{});
  if (list.size_approx() != others) {
    fail("NoMatch: the list does not hold the expected subscriptions");
  }
  const payload event{1, 0};

  for (auto _ : state) {
    auto called = list.publish<sync_bench_event>(sync_bench_event::subtype::tick, event);
    benchmark::DoNotOptimize(called);
    benchmark::ClobberMemory();
  }

  const auto last = list.publish<sync_bench_event>(sync_bench_event::subtype::tick, event);
  if (!last || *last != 0) {
    fail("NoMatch: a publish reached a handler");
  }
  state.SetItemsProcessed(state.iterations());
  for (herald::subscription& s : subs) {
    s.unsubscribe();
  }
}

void slot_counts(benchmark::internal::Benchmark* b) {
  b->ArgName("slots")->Arg(1)->Arg(10)->Arg(100);
}

}  // namespace

BENCHMARK(BM_SyncPublish_Herald)->Apply(slot_counts);
BENCHMARK(BM_SyncPublish_RawLoop)->Apply(slot_counts);
BENCHMARK(BM_SyncPublish_MutexVector)->Apply(slot_counts);
BENCHMARK(BM_SyncPublish_BoostSignals2)->Apply(slot_counts);
BENCHMARK(BM_SyncPublish_Sigc)->Apply(slot_counts);

BENCHMARK(BM_SyncPublish_NoMatch_Herald)->ArgName("others")->Arg(0)->Arg(1000);

// Two threads publishing to one list (wall-clock time: items/s is the combined throughput).
BENCHMARK(BM_SyncPublish_Herald)->Apply(slot_counts)->Threads(2)->UseRealTime();
BENCHMARK(BM_SyncPublish_RawLoop)->Apply(slot_counts)->Threads(2)->UseRealTime();
BENCHMARK(BM_SyncPublish_MutexVector)->Apply(slot_counts)->Threads(2)->UseRealTime();
BENCHMARK(BM_SyncPublish_BoostSignals2)->Apply(slot_counts)->Threads(2)->UseRealTime();
