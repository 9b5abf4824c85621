// herald::mt_list against its peers (bench/peers/): one std::mutex around a std::list
// (MutexList) and one test-and-test-and-set spinlock around an intrusive list (SpinList).
//
// Scenarios (each at 1, 2 and 4 threads sharing one list; wall-clock time; items = list
// operations, or elements visited for the walks, summed over the threads):
//   AppendPop      a work queue. Each thread holds one element; every iteration it appends the
//                  element it holds at the back and pops the front one, which it then holds.
//                  `append_pop_backlog` further elements stay queued, so the two ends of the
//                  queue are apart. 2 items per iteration.
//   InsertRemove   each thread inserts its own element at the front of a list that holds
//                  `insert_remove_background` other elements, then removes that element by
//                  direct access (mt_list::remove: no search). 2 items per iteration.
//   Iterate        each thread walks a list of `iterate_length` elements and sums a field.
//                  mt_list walks with for_each_locked (IterateUnlocked: for_each_unlocked);
//                  the peers hold their lock for the whole walk.
//
// Shared state and Google Benchmark's threads
//   Google Benchmark runs a benchmark function in N threads at once (thread 0 in the main
//   thread) and, for every thread, lets `for (auto _ : state)` start only once all N threads
//   have reached it, and end only once all N have finished their iterations (State::
//   StartKeepRunning / FinishKeepRunning, a mutex + condition variable barrier; checked with
//   benchmark 1.7.1). Each run starts new threads and joins them before the next run. So:
//   - every list, and every element that other threads may reach, is a function-local static
//     (`shared_list`), whose address all threads may take at any time;
//   - only thread 0 fills it, before its loop, and only thread 0 empties it, after its loop:
//     the first barrier orders the filling before every other thread's first use, the second
//     orders every use before the emptying;
//   - the other threads touch the shared list only inside their loop; a thread's own element
//     that never leaves it (InsertRemove) is a local, detached whenever the loop body ends.
//   At the end of every run each list must hold exactly what thread 0 put in it (checked:
//   a lost or duplicated element aborts with a message).
#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "herald/mt_list.hpp"
#include "peers/mutex_list.hpp"
#include "peers/spin_list.hpp"

namespace {

constexpr std::size_t max_threads = 64;
constexpr std::size_t append_pop_backlog = 8;
constexpr std::size_t insert_remove_background = 64;
constexpr std::size_t iterate_length = 256;

// One cache line per element for every list, so that the threads' own elements never share a
// line (no false sharing that would favour or penalise one list).
struct alignas(64) mt_node : herald::mt_list_hook<> {
  std::uint64_t value = 0;
};
struct alignas(64) mutex_node : herald::bench::mutex_list_hook<mutex_node> {
  std::uint64_t value = 0;
};
struct alignas(64) spin_node : herald::bench::spin_list_hook {
  std::uint64_t value = 0;
};

using mt_list_t = herald::mt_list<mt_node>;
using mutex_list_t = herald::bench::mutex_list<mutex_node>;
using spin_list_t = herald::bench::spin_list<spin_node>;

// A list and the elements that thread 0 puts in it or hands out. The elements are declared
// first so that they outlive the list (whose destructor detaches whatever it still holds).
template <class List, class Node, std::size_t N>
struct shared_list {
  std::array<Node, N> nodes;
  alignas(64) List list;
};

[[noreturn]] void fail(const char* what) noexcept {
  std::fprintf(stderr, "mt_list_bench: %s\n", what);
  std::abort();
}

std::size_t thread_count(const benchmark::State& state) {
  return static_cast<std::size_t>(state.threads());
}
std::size_t thread_id(const benchmark::State& state) {
  return static_cast<std::size_t>(state.thread_index());
}
void set_items(benchmark::State& state, std::size_t per_iteration) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(per_iteration));
}

// ---- AppendPop ------------------------------------------------------------------------------

template <class List, class Node>
void run_append_pop(benchmark::State& state) {
  // nodes[i] for i < max_threads: the element thread i holds first; the rest: the backlog.
  static shared_list<List, Node, max_threads + append_pop_backlog> shared;
  if (thread_count(state) > max_threads) {
    fail("AppendPop: more threads than max_threads");
  }
  if (thread_id(state) == 0) {
    for (std::size_t i = max_threads; i < shared.nodes.size(); ++i) {
      shared.list.append(shared.nodes[i]);
    }
  }
  // Every element is detached here (the previous run's thread 0 emptied the list, and held
  // elements come out of pop() detached), so nodes[i] is free for thread i.
  Node* held = &shared.nodes[thread_id(state)];
  for (auto _ : state) {
    shared.list.append(*held);
    held = shared.list.pop();
    // Never empty: the other threads hold at most one element each, so the backlog plus the
    // element just appended cannot all be out.
    if (held == nullptr) {
      fail("AppendPop: pop() found the list empty");
    }
  }
  set_items(state, 2);
  if (thread_id(state) == 0 && shared.list.clear() != append_pop_backlog) {
    fail("AppendPop: the list lost or duplicated an element");
  }
}

void BM_MtList_AppendPop(benchmark::State& state) { run_append_pop<mt_list_t, mt_node>(state); }
void BM_MutexList_AppendPop(benchmark::State& state) {
  run_append_pop<mutex_list_t, mutex_node>(state);
}
void BM_SpinList_AppendPop(benchmark::State& state) {
  run_append_pop<spin_list_t, spin_node>(state);
}

// ---- InsertRemove ---------------------------------------------------------------------------

template <class List, class Node>
void run_insert_remove(benchmark::State& state) {
  static shared_list<List, Node, insert_remove_background> shared;
  if (thread_id(state) == 0) {
    for (Node& n : shared.nodes) {
      shared.list.append(n);
    }
  }
  Node own;  // this thread's; detached between iterations, so it may die after the loop
  for (auto _ : state) {
    shared.list.insert(own);
    if (!shared.list.remove(own)) {
      fail("InsertRemove: remove() did not find the element just inserted");
    }
  }
  set_items(state, 2);
  if (thread_id(state) == 0 && shared.list.clear() != insert_remove_background) {
    fail("InsertRemove: the list lost or duplicated an element");
  }
}

void BM_MtList_InsertRemove(benchmark::State& state) {
  run_insert_remove<mt_list_t, mt_node>(state);
}
void BM_MutexList_InsertRemove(benchmark::State& state) {
  run_insert_remove<mutex_list_t, mutex_node>(state);
}
void BM_SpinList_InsertRemove(benchmark::State& state) {
  run_insert_remove<spin_list_t, spin_node>(state);
}

// ---- Iterate --------------------------------------------------------------------------------

struct walk_locked {
  template <class F>
  static void run(mt_list_t& list, F& f) {
    for (auto& cur : list.for_each_locked()) {
      f(*cur);
    }
  }
};
struct walk_unlocked {
  template <class F>
  static void run(mt_list_t& list, F& f) {
    for (auto& cur : list.for_each_unlocked()) {
      f(*cur);
    }
  }
};
struct walk_peer {
  template <class List, class F>
  static void run(List& list, F& f) {
    list.for_each(f);
  }
};

template <class List, class Node, class Walk>
void run_iterate(benchmark::State& state) {
  static shared_list<List, Node, iterate_length> shared;
  constexpr std::uint64_t expected_sum = iterate_length * (iterate_length - 1) / 2;
  if (thread_id(state) == 0) {
    for (std::size_t i = 0; i < shared.nodes.size(); ++i) {
      shared.nodes[i].value = i;
      shared.list.append(shared.nodes[i]);
    }
  }
  std::size_t visited = 0;
  for (auto _ : state) {
    std::uint64_t sum = 0;
    auto add = [&sum, &visited](Node& n) {
      sum += n.value;
      ++visited;
    };
    Walk::run(shared.list, add);
    benchmark::DoNotOptimize(sum);
    if (sum != expected_sum) {
      fail("Iterate: a walk missed or repeated an element");
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(visited));
  if (visited != static_cast<std::size_t>(state.iterations()) * iterate_length) {
    fail("Iterate: a walk visited the wrong number of elements");
  }
  if (thread_id(state) == 0 && shared.list.clear() != iterate_length) {
    fail("Iterate: the list lost or duplicated an element");
  }
}

void BM_MtList_Iterate(benchmark::State& state) {
  run_iterate<mt_list_t, mt_node, walk_locked>(state);
}
void BM_MtList_IterateUnlocked(benchmark::State& state) {
  run_iterate<mt_list_t, mt_node, walk_unlocked>(state);
}
void BM_MutexList_Iterate(benchmark::State& state) {
  run_iterate<mutex_list_t, mutex_node, walk_peer>(state);
}
void BM_SpinList_Iterate(benchmark::State& state) {
  run_iterate<spin_list_t, spin_node, walk_peer>(state);
}

}  // namespace

BENCHMARK(BM_MtList_AppendPop)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_MutexList_AppendPop)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_SpinList_AppendPop)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();

BENCHMARK(BM_MtList_InsertRemove)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_MutexList_InsertRemove)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_SpinList_InsertRemove)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();

BENCHMARK(BM_MtList_Iterate)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_MtList_IterateUnlocked)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_MutexList_Iterate)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_SpinList_Iterate)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
