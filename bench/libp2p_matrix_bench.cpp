// The libp2p comparison matrix: the shape of go-libp2p's eventbus BenchmarkEvents
// (subscribers x emitting goroutines x stateful), measured on herald, so that the two can be
// put side by side.
//
// Scenario (BM_Libp2pMatrix_Herald/subs:S/pubs:P/stateful:T; counter ns_per_event)
//   S queue subscriptions (1, 16, 256) of one event type on the bus's global list, each bound
//   to 16 events with overflow_policy::block (a Go channel of capacity 16 blocks its sender
//   the same way; block_timeout 1 s, then drop_newest, which must never happen: every run
//   checks that nothing was dropped). Each subscriber drains its queue on a thread of its own,
//   sleeping in poll() on the queue's eventfd when it is empty.
//   P publishing threads (1, 16, 256) share every round's 4096 events (4096 / P each).
//   T = 1 declares the family stateful (last-value events: every publish also becomes the
//   list's last value, and stateful publishes of a list are serialised).
//
// What is timed (manual time, one round per iteration)
//   From releasing the publishers to the moment every subscriber has popped every event of
//   the round: ns per published event with its whole fan-out done. Thread start-up and the
//   subscriptions are outside the timed region. Publishers and subscribers are all plain
//   threads (on this 2-core machine up to 512 of them), so the figures include the kernel's
//   scheduling of blocked publishers, as Go's include the goroutine scheduler's.
#include <poll.h>

#include <benchmark/benchmark.h>
#include <herald/bus.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr std::uint64_t events_per_round = 4096;

template <bool Stateful>
struct matrix_event {
  static constexpr std::string_view family_name = Stateful ? "BENCHLVEVT" : "BENCHEVT";
  enum class subtype : std::uint8_t { tick };
  static constexpr std::array<std::string_view, 1> subtype_names{"TICK"};
  static constexpr bool stateful = Stateful;
  struct safe_part {
    std::uint64_t publisher = 0;
    std::uint64_t n = 0;
  };
};

template <bool Stateful>
struct subscriber {
  using family = matrix_event<Stateful>;
  herald::event_queue<family> queue;
  std::atomic<std::uint64_t> popped{0};
  std::thread thread;

  // Pops until empty, then polls the queue for up to ~20 us before sleeping in poll() on its
  // eventfd (a Go receiver parks without a system call; a thread that sleeps at every empty
  // queue would measure the kernel's wake-up instead of the bus).
  void run() {
    pollfd p{queue.fd(), POLLIN, 0};
    for (;;) {
      bool any = false;
      for (int spin = 0; spin < 200 && !any; ++spin) {
        while (auto item = queue.pop()) {
          if (item->is_end()) {
            return;
          }
          any = true;
          popped.store(popped.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        }
        if (!any) {
          std::this_thread::yield();
        }
      }
      if (!any) {
        (void)::poll(&p, 1, 100);
      }
    }
  }
};

template <bool Stateful>
void run_matrix(benchmark::State& state) {
  using family = matrix_event<Stateful>;
  const auto subs = static_cast<std::size_t>(state.range(0));
  const auto pubs = static_cast<std::size_t>(state.range(1));
  herald::bus bus({.threads = 1});
  herald::sub_list& list = bus.global();

  herald::subscribe_options opt;
  opt.backpressure.bound = 16;
  opt.backpressure.policy = herald::overflow_policy::block;
  opt.backpressure.block_timeout = std::chrono::seconds(1);
  opt.backpressure.after_timeout = herald::overflow_policy::drop_newest;
  std::vector<std::unique_ptr<subscriber<Stateful>>> subscribers;
  for (std::size_t i = 0; i < subs; ++i) {
    auto s = std::make_unique<subscriber<Stateful>>();
    auto r = list.subscribe_queue<family>(herald::type_of<family>(), s->queue,
                                          herald::queue_notify::fd(), opt);
    if (!r) {
      state.SkipWithError("subscribe_queue failed");
      return;
    }
    subscriber<Stateful>* raw = s.get();
    s->thread = std::thread([raw] { raw->run(); });
    subscribers.push_back(std::move(s));
  }

  // Publishers wait for the next round number, publish their share, and report.
  std::atomic<std::uint64_t> round{0};
  std::atomic<std::uint64_t> finished{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> publishers;
  const std::uint64_t share = events_per_round / pubs;
  const std::uint64_t per_round = share * pubs;
  for (std::size_t p = 0; p < pubs; ++p) {
    publishers.emplace_back([&, p] {
      std::uint64_t seen = 0;
      std::uint64_t n = 0;
      for (;;) {
        round.wait(seen, std::memory_order_acquire);
        seen = round.load(std::memory_order_acquire);
        if (stop.load(std::memory_order_acquire)) {
          return;
        }
        for (std::uint64_t i = 0; i < share; ++i) {
          (void)list.publish<family>(family::subtype::tick, {p, n++});
        }
        finished.fetch_add(1, std::memory_order_release);
        finished.notify_one();
      }
    });
  }

  std::uint64_t rounds = 0;
  double total_ns = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const std::uint64_t target = (rounds + 1) * per_round;
    finished.store(0, std::memory_order_relaxed);
    round.fetch_add(1, std::memory_order_release);
    round.notify_all();
    for (std::uint64_t f = finished.load(std::memory_order_acquire); f < pubs;
         f = finished.load(std::memory_order_acquire)) {
      finished.wait(f, std::memory_order_acquire);
    }
    for (const auto& s : subscribers) {
      while (s->popped.load(std::memory_order_acquire) < target) {
        std::this_thread::yield();
      }
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(std::chrono::duration<double>(elapsed).count());
    total_ns += std::chrono::duration<double, std::nano>(elapsed).count();
    ++rounds;
  }

  stop.store(true, std::memory_order_release);
  round.fetch_add(1, std::memory_order_release);
  round.notify_all();
  for (auto& t : publishers) {
    t.join();
  }
  std::uint64_t dropped = 0;
  for (const auto& s : subscribers) {
    dropped += s->queue.stats().dropped();
  }
  bus.shutdown();  // every queue gets END: the subscriber threads return
  for (auto& s : subscribers) {
    s->thread.join();
  }
  if (dropped != 0) {
    state.SkipWithError("an event was dropped: the block policy timed out");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(rounds * per_round));
  state.counters["ns_per_event"] =
      rounds == 0 ? 0.0 : total_ns / static_cast<double>(rounds * per_round);
  state.counters["dropped"] = static_cast<double>(dropped);
}

void BM_Libp2pMatrix_Herald(benchmark::State& state) {
  if (state.range(2) != 0) {
    run_matrix<true>(state);
  } else {
    run_matrix<false>(state);
  }
}

BENCHMARK(BM_Libp2pMatrix_Herald)
    ->ArgNames({"subs", "pubs", "stateful"})
    ->ArgsProduct({{1, 16, 256}, {1, 16, 256}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.2);

}  // namespace
