// Example 01: herald::mt_list as a shared work queue.
//
// Producers append jobs, workers pop them, and a "janitor" walks the queue with
// for_each_locked() and cancels (erases) jobs that were marked cancelled, all at the same time
// on one list. Every job object is reused many times: a job erased by the janitor or popped by
// a worker comes out detached and goes straight back to its producer's free list, which is
// itself an mt_list. At the end the program checks that every job is accounted for.
//
// Usage: herald_example_01_mt_list_work_queue [--quick] [--producers N] [--workers N]
//                                            [--jobs N]
#include <herald/herald.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct queue_tag {};  // hook for the shared work queue
struct free_tag {};   // hook for a producer's free list

struct job : herald::mt_list_hook<queue_tag>, herald::mt_list_hook<free_tag> {
  std::uint64_t payload = 0;
  std::atomic<bool> cancelled{false};
};

struct options {
  unsigned producers = 2;
  unsigned workers = 2;
  std::uint64_t jobs_per_producer = 2'000'000;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> unsigned long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", argv[i]);
        std::exit(2);
      }
      return std::strtoul(argv[++i], nullptr, 10);
    };
    if (arg == "--quick") {
      o.jobs_per_producer = 50'000;
    } else if (arg == "--producers") {
      o.producers = static_cast<unsigned>(value());
    } else if (arg == "--workers") {
      o.workers = static_cast<unsigned>(value());
    } else if (arg == "--jobs") {
      o.jobs_per_producer = value();
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--producers N] [--workers N] [--jobs N-per-producer]\n",
                   argv[0]);
      std::exit(2);
    }
  }
  if (o.producers == 0 || o.workers == 0) {
    std::fprintf(stderr, "need at least one producer and one worker\n");
    std::exit(2);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  constexpr std::size_t jobs_in_flight = 256;  // job objects per producer, reused

  herald::mt_list<job, queue_tag> queue;
  std::vector<std::vector<job>> pools(opt.producers);
  std::vector<herald::mt_list<job, free_tag>> free_lists(opt.producers);
  for (unsigned p = 0; p < opt.producers; ++p) {
    pools[p] = std::vector<job>(jobs_in_flight);
    for (job& j : pools[p]) {
      free_lists[p].append(j);
    }
  }

  std::atomic<std::uint64_t> processed{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> checksum{0};
  std::atomic<unsigned> producers_left{opt.producers};
  // Which producer owns a job: its index in `pools`.
  auto owner_of = [&](const job& j) -> unsigned {
    for (unsigned p = 0; p < opt.producers; ++p) {
      const job* first = pools[p].data();
      if (&j >= first && &j < first + jobs_in_flight) {
        return p;
      }
    }
    std::abort();
  };
  auto recycle = [&](job& j) { free_lists[owner_of(j)].append(j); };

  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (unsigned p = 0; p < opt.producers; ++p) {
    threads.emplace_back([&, p] {
      for (std::uint64_t n = 1; n <= opt.jobs_per_producer; ++n) {
        job* j = nullptr;
        while ((j = free_lists[p].pop()) == nullptr) {
          std::this_thread::yield();  // all our jobs are in flight: wait for workers
        }
        j->payload = n;
        // Every 64th job is cancelled before anyone runs it; the janitor removes it.
        j->cancelled.store(n % 64 == 0, std::memory_order_relaxed);
        queue.append(*j);
      }
      producers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (unsigned w = 0; w < opt.workers; ++w) {
    threads.emplace_back([&] {
      for (;;) {
        job* j = queue.pop();
        if (j == nullptr) {
          if (producers_left.load(std::memory_order_acquire) == 0 && queue.is_empty_approx()) {
            return;
          }
          std::this_thread::yield();
          continue;
        }
        if (j->cancelled.load(std::memory_order_relaxed)) {
          cancelled.fetch_add(1, std::memory_order_relaxed);  // the janitor missed it
        } else {
          checksum.fetch_add(j->payload, std::memory_order_relaxed);
          processed.fetch_add(1, std::memory_order_relaxed);
        }
        recycle(*j);
      }
    });
  }
  threads.emplace_back([&] {  // the janitor
    while (producers_left.load(std::memory_order_acquire) != 0) {
      for (auto& cur : queue.for_each_locked()) {
        if (cur->cancelled.load(std::memory_order_relaxed)) {
          recycle(cur.erase());  // detached at once: safe to put on another list
          cancelled.fetch_add(1, std::memory_order_relaxed);
        }
      }
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) {
    t.join();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Census: every job object is back on its free list, each exactly once.
  std::size_t on_free_lists = 0;
  for (auto& fl : free_lists) {
    for (auto& cur : fl.for_each_unlocked()) {
      (void)cur;
      ++on_free_lists;
    }
  }
  const std::uint64_t total = opt.jobs_per_producer * opt.producers;
  const std::uint64_t expected_cancelled = (opt.jobs_per_producer / 64) * opt.producers;
  const std::uint64_t n = opt.jobs_per_producer;
  const std::uint64_t sum_all = n * (n + 1) / 2;
  const std::uint64_t sum_cancelled = 64 * (n / 64) * (n / 64 + 1) / 2;
  const std::uint64_t expected_checksum = (sum_all - sum_cancelled) * opt.producers;

  std::printf("herald %s: mt_list work queue\n", herald::version_string);
  std::printf("  producers %u, workers %u, janitor 1, job objects %zu (reused)\n", opt.producers,
              opt.workers, jobs_in_flight * opt.producers);
  std::printf("  jobs published  %12llu\n", static_cast<unsigned long long>(total));
  std::printf("  jobs processed  %12llu\n",
              static_cast<unsigned long long>(processed.load()));
  std::printf("  jobs cancelled  %12llu (expected %llu)\n",
              static_cast<unsigned long long>(cancelled.load()),
              static_cast<unsigned long long>(expected_cancelled));
  std::printf("  checksum        %12s\n",
              checksum.load() == expected_checksum ? "ok" : "MISMATCH");
  std::printf("  job objects home %11zu of %zu\n", on_free_lists,
              jobs_in_flight * opt.producers);
  std::printf("  %.2f s, %.1f M jobs/s through one shared list\n", seconds,
              static_cast<double>(total) / seconds / 1e6);

  const bool ok = processed.load() + cancelled.load() == total &&
                  cancelled.load() == expected_cancelled &&
                  checksum.load() == expected_checksum &&
                  on_free_lists == jobs_in_flight * opt.producers && queue.is_empty_approx();
  std::printf("  census: %s\n", ok ? "every job accounted for" : "FAILED");
  return ok ? 0 : 1;
}
