// Multi-threaded stress tests for herald::mt_list (herald/mt_list.hpp).
//
// What is checked
//   - Random operations by 2, 4 and 8 threads over a few shared lists, under an ownership
//     protocol (every node is at any instant either in exactly one list or held by exactly one
//     thread), ending with an exact census of every node, forward and backward.
//   - Races with exactly one winner, repeated for many rounds: try_append / try_insert of one
//     detached node, try_append against try_insert into two lists, pop against remove, remove
//     against remove, and a walk's erase() against remove().
//   - try_append / try_insert of a detached node never fail while other threads remove() it.
//   - Walks (locked and unlocked) running beside threads that append, pop and remove.
//   A broken list often hangs (an operation spins on a pointer left busy) rather than failing
//   a check; the ctest timeout catches that, and the first problems a thread found are printed
//   to stderr as soon as it finds them.
//
// How the threads meet
//   Nothing sleeps and nothing is timed. Threads wait for events (a round number, a count of
//   arrivals) by spinning with cpu_relax() and then std::this_thread::yield(): on a machine with
//   fewer cores than threads the yield lets the thread that is awaited run. Every round of a
//   race starts with all racers spinning on the same counter, so that their operations overlap
//   as much as the machine allows.
//
// Ownership checks
//   Each node carries an `owner` atomic used only by the checks (in_list, or the id of the
//   thread that holds it) and two plain fields written only by the thread that holds the node
//   (`token`, `gains`). The plain fields make ThreadSanitizer check the list's own ordering: a
//   thread that takes a node out of a list must see what its previous holder wrote before
//   linking it, through the list's acquire/release pairs alone.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies every operation and round
//   count, e.g. HERALD_STRESS_SCALE=20 for a long soak, 0.1 for a quick smoke run.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/mt_list.hpp"

#include "stress_support.hpp"

namespace {

using herald::mt_ends;
using herald::mt_link;

// ---- Nodes, lists and the helpers every test uses ------------------------------------------

// The value of node::owner while the node is in a list (or on its way into or out of one).
constexpr int in_list = -1;

struct node : herald::mt_list_hook<> {
  node(int node_id, bool is_guarded) noexcept : id(node_id), guarded(is_guarded), token(node_id) {}

  const int id;
  // A guarded node is only ever linked with try_append/try_insert, so that any thread may call
  // remove() on it at any time (remove() touches the node even when it is detached, which the
  // contract of plain append/insert forbids). Plain nodes are never passed to remove() by a
  // thread that does not hold them.
  const bool guarded;
  // For the checks only: in_list, or the id of the thread that holds the node. Relaxed is
  // enough: the list's take/put pairs order the hand-overs, and an exchange always reads the
  // latest value, so a double hand-over shows up as an unexpected previous value.
  std::atomic<int> owner{in_list};
  // Written only by the holder (plain on purpose, see the file comment). token == id while the
  // node is listed, held_token(id) while a thread holds it.
  int token;
  std::uint64_t gains = 0;  // how many times a thread took the node out of a list
};

using list = herald::mt_list<node>;

constexpr int held_token(int id) noexcept { return -1 - id; }

// Work multiplier for the build (see stress_support.hpp).
constexpr std::size_t build_boost = herald::test::optimised_build ? 16 : 1;  // operations
// Race rounds cost thread wake-ups rather than operations: boosted less.
constexpr std::size_t round_boost = herald::test::optimised_build ? 3 : 1;
using herald::test::stress_scale;

std::size_t scaled(std::size_t base) {
  const double n = static_cast<double>(base) * stress_scale();
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

using herald::test::spin_until;

std::size_t pick(std::mt19937& rng, std::size_t n) { return static_cast<std::size_t>(rng() % n); }
bool one_in(std::mt19937& rng, unsigned n) { return rng() % n == 0; }

std::string describe(const std::vector<int>& ids) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < ids.size(); ++i) {
    out << (i == 0 ? "" : " ") << ids[i];
  }
  out << ']';
  return out.str();
}

// The ids of a list from head to tail, by a locked walk. At most `limit` + 1 ids, so that a
// corrupted (cyclic) list cannot hang the test. Single-threaded use (between rounds, census).
std::vector<int> forward_ids(list& l, std::size_t limit) {
  std::vector<int> ids;
  for (auto& cur : l.for_each_locked()) {
    ids.push_back(cur.get().id);
    if (ids.size() > limit) {
      break;
    }
  }
  return ids;
}

// The ids of a list from head to tail, found by following the prev pointers from the head
// (lock_prev + unlock_link reads one prev pointer and puts everything back). Single-threaded.
std::vector<int> backward_ids(list& l, std::size_t limit) {
  std::vector<int> ids;
  mt_link* at = &l.head();
  for (;;) {
    const mt_ends ends = mt_link::lock_prev(*at);
    mt_link::unlock_link(ends);
    if (ends.prev == &l.head()) {
      break;
    }
    ids.push_back(list::elem(ends.prev)->id);
    if (ids.size() > limit) {
      break;
    }
    at = ends.prev;
  }
  std::reverse(ids.begin(), ids.end());
  return ids;
}

// Empty string if the list holds exactly `expected` in that order, read both ways.
std::string list_mismatch(list& l, const std::vector<int>& expected) {
  const std::size_t limit = expected.size() + 8;
  const std::vector<int> fwd = forward_ids(l, limit);
  const std::vector<int> bwd = backward_ids(l, limit);
  if (fwd == expected && bwd == expected) {
    return {};
  }
  return "list should be " + describe(expected) + ", forward walk gives " + describe(fwd) +
         ", backward walk gives " + describe(bwd);
}

void fill(list& l, const std::vector<node*>& nodes) {
  while (l.pop() != nullptr) {
  }
  for (node* n : nodes) {
    l.append(*n);
  }
}

std::vector<int> ids_of(const std::vector<node*>& nodes) {
  std::vector<int> ids;
  ids.reserve(nodes.size());
  for (const node* n : nodes) {
    ids.push_back(n->id);
  }
  return ids;
}

std::vector<std::unique_ptr<node>> make_nodes(std::size_t count, bool guarded) {
  std::vector<std::unique_ptr<node>> nodes;
  nodes.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    nodes.push_back(std::make_unique<node>(static_cast<int>(i), guarded));
  }
  return nodes;
}

// Runs `rounds` rounds of a race between `threads` worker threads. Each round: setup(round) on
// the calling thread; then every worker t calls op(t, round), all released together; then
// check(round, results) on the calling thread, where results[t] is what op(t, round) returned.
// check returns an empty string or the problem; the first problem fails the test and ends it.
template <class Setup, class Op, class Check>
void race_rounds(int threads, std::size_t rounds, Setup setup, Op op, Check check) {
  const auto n = static_cast<std::uint64_t>(threads);
  // round: release store by the coordinator after setup, acquire loads by the workers.
  // arrived/finished: RMWs by the workers; finished's acquire load by the coordinator pairs
  // with the workers' release increments (results[] and their list work are visible).
  std::atomic<std::uint64_t> round{0};
  std::atomic<std::uint64_t> arrived{0};
  std::atomic<std::uint64_t> finished{0};
  std::atomic<bool> stop{false};
  std::vector<int> results(static_cast<std::size_t>(threads), 0);

  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (std::uint64_t r = 1;; ++r) {
        spin_until([&] {
          return stop.load(std::memory_order_acquire) || round.load(std::memory_order_acquire) >= r;
        });
        if (stop.load(std::memory_order_acquire)) {
          return;
        }
        arrived.fetch_add(1, std::memory_order_acq_rel);
        spin_until([&] { return arrived.load(std::memory_order_acquire) >= r * n; });
        results[static_cast<std::size_t>(t)] = op(t, static_cast<std::size_t>(r - 1));
        finished.fetch_add(1, std::memory_order_release);
      }
    });
  }

  for (std::size_t r = 0; r < rounds; ++r) {
    setup(r);
    round.store(r + 1, std::memory_order_release);
    spin_until([&] { return finished.load(std::memory_order_acquire) >= (r + 1) * n; });
    const std::string problem = check(r, results);
    if (!problem.empty()) {
      ADD_FAILURE() << "round " << r << " of " << rounds << " with " << threads
                    << " threads: " << problem;
      break;
    }
  }
  stop.store(true, std::memory_order_release);
  for (std::thread& w : workers) {
    w.join();
  }
}

// ---- Random operations under the ownership protocol -----------------------------------------

// A bounded log of what one thread found wrong; read by the main thread after join(). The
// first few problems also go to stderr at once: a broken list often hangs the run next, and the
// message then tells why.
class problem_log {
 public:
  void add(std::string what) {
    ++count_;
    if (first_.size() < 8) {
      std::fprintf(stderr, "mt_list stress: %s\n", what.c_str());
      first_.push_back(std::move(what));
    }
  }
  [[nodiscard]] std::size_t count() const noexcept { return count_; }
  [[nodiscard]] std::string summary() const {
    std::string out;
    for (const std::string& s : first_) {
      out += "\n  " + s;
    }
    if (count_ > first_.size()) {
      out += "\n  ... and " + std::to_string(count_ - first_.size()) + " more";
    }
    return out;
  }

 private:
  std::size_t count_ = 0;
  std::vector<std::string> first_;
};

struct op_counts {
  std::uint64_t ops = 0;
  std::uint64_t added = 0;
  std::uint64_t popped = 0;
  std::uint64_t popped_empty = 0;
  std::uint64_t walks = 0;
  std::uint64_t visited = 0;
  std::uint64_t erased = 0;
  std::uint64_t removed = 0;        // remove() of another thread's node returned true
  std::uint64_t remove_missed = 0;  // ... returned false
  std::uint64_t gains = 0;          // nodes taken out of a list (pop, erase, remove)

  op_counts& operator+=(const op_counts& o) noexcept {
    ops += o.ops;
    added += o.added;
    popped += o.popped;
    popped_empty += o.popped_empty;
    walks += o.walks;
    visited += o.visited;
    erased += o.erased;
    removed += o.removed;
    remove_missed += o.remove_missed;
    gains += o.gains;
    return *this;
  }
};

// The shared state of a random-operation run: the node pool and the lists.
struct world {
  world(std::size_t node_count, std::size_t list_count) {
    pool.reserve(node_count);
    for (std::size_t i = 0; i < node_count; ++i) {
      // Odd nodes are guarded (try_* only, removable by anyone), even nodes plain.
      pool.push_back(std::make_unique<node>(static_cast<int>(i), i % 2 == 1));
    }
    for (std::size_t i = 0; i < list_count; ++i) {
      lists.push_back(std::make_unique<list>());
    }
  }

  list& random_list(std::mt19937& rng) { return *lists[pick(rng, lists.size())]; }

  std::vector<std::unique_ptr<node>> pool;
  std::vector<std::unique_ptr<list>> lists;  // declared after pool: destroyed (cleared) first
};

enum class role { any, locked_walker, unlocked_walker, mutator };

// One thread of a random-operation run. Everything here belongs to that thread while it runs;
// the main thread reads it after join().
struct worker {
  worker(int worker_id, std::uint32_t seed, std::size_t pool_size) : id(worker_id), rng(seed) {
    owned.reserve(pool_size);
  }

  // Takes a node that this thread just took out of a list.
  void gain(node& n, const char* how) {
    const int before = n.owner.exchange(id, std::memory_order_relaxed);
    if (before != in_list) {
      log.add(std::string(how) + " gave node " + std::to_string(n.id) + " to thread " +
              std::to_string(id) + " while thread " + std::to_string(before) + " held it");
    }
    if (n.token != n.id) {
      log.add(std::string(how) + " gave node " + std::to_string(n.id) + " with token " +
              std::to_string(n.token) + " (its holder had not released it)");
    }
    n.token = held_token(n.id);
    ++n.gains;
    ++counts.gains;
    owned.push_back(&n);
  }

  // Puts a held node into `l`; false (and the node stays held) only if the list refused it.
  bool give(node& n, list& l, bool front) {
    n.token = n.id;
    n.owner.store(in_list, std::memory_order_relaxed);
    bool linked = true;
    if (n.guarded || one_in(rng, 2)) {
      linked = front ? l.try_insert(n) : l.try_append(n);
    } else if (front) {
      l.insert(n);
    } else {
      l.append(n);
    }
    if (!linked) {
      log.add(std::string(front ? "try_insert" : "try_append") + " refused detached node " +
              std::to_string(n.id) + " held by thread " + std::to_string(id));
      n.owner.store(id, std::memory_order_relaxed);
      n.token = held_token(n.id);
      return false;
    }
    ++counts.added;
    return true;
  }

  // Gives a random held node to a random list.
  void give_random(world& w) {
    const std::size_t i = pick(rng, owned.size());
    node& n = *owned[i];
    owned[i] = owned.back();
    owned.pop_back();
    if (!give(n, w.random_list(rng), one_in(rng, 2))) {
      owned.push_back(&n);
    }
  }

  void give_all(world& w) {
    while (!owned.empty()) {
      node& n = *owned.back();
      owned.pop_back();
      if (!give(n, w.random_list(rng), one_in(rng, 2))) {
        return;  // already logged; keep the node (and the rest) held
      }
    }
  }

  void pop(world& w) {
    list& l = w.random_list(rng);
    if (one_in(rng, 4)) {
      herald::mt_locked<node> held = l.pop_locked();
      if (!held) {
        ++counts.popped_empty;
        return;
      }
      ++counts.popped;
      gain(*held, "pop_locked");
      // held's destructor unlocks the node: it comes out detached.
      return;
    }
    node* n = l.pop();
    if (n == nullptr) {
      ++counts.popped_empty;
      return;
    }
    ++counts.popped;
    gain(*n, "pop");
  }

  // remove() of a random guarded node of the whole pool: true means it was listed and is now
  // ours; false means someone held it (or it was on its way into or out of a list).
  void remove_random(world& w) {
    node& n = *w.pool[pick(rng, w.pool.size() / 2) * 2 + 1];
    if (list::remove(n)) {
      ++counts.removed;
      gain(n, "remove");
    } else {
      ++counts.remove_missed;
    }
  }

  // remove() of a node this thread holds: it is detached, so remove() must say so.
  void remove_own() {
    node& n = *owned[pick(rng, owned.size())];
    if (list::remove(n)) {
      log.add("remove() of detached node " + std::to_string(n.id) + " held by thread " +
              std::to_string(id) + " returned true");
    }
  }

  // One walk over a random list. Erases about one element in `erase_one_in`; stops after
  // `max_steps` elements (0: walks to the end). Nothing in the body blocks on another list:
  // a body that waited on a list while holding this walk's links could deadlock with a walker
  // of that list doing the same.
  template <bool Unlocked>
  void walk(world& w, std::size_t max_steps, unsigned erase_one_in) {
    list& l = w.random_list(rng);
    ++counts.walks;
    std::size_t steps = 0;
    auto visit = [&](auto& cur) {
      node& n = cur.get();
      ++counts.visited;
      const int who = n.owner.load(std::memory_order_relaxed);
      if (who != in_list) {
        log.add(std::string(Unlocked ? "unlocked" : "locked") + " walk met node " +
                std::to_string(n.id) + " held by thread " + std::to_string(who));
      }
      if (n.token != n.id) {
        log.add(std::string(Unlocked ? "unlocked" : "locked") + " walk met node " +
                std::to_string(n.id) + " with token " + std::to_string(n.token));
      }
      if (Unlocked && one_in(rng, 4)) {
        // The current element shows as listed: try_append must refuse it at once. The scratch
        // list is this thread's own and stays empty, so this waits on nobody's walk.
        if (scratch.try_append(n)) {
          log.add("try_append took node " + std::to_string(n.id) +
                  " presented by an unlocked walk");
        }
      }
      if (one_in(rng, erase_one_in)) {
        ++counts.erased;
        if (one_in(rng, 4)) {
          herald::mt_locked<node> held = cur.erase_locked();
          gain(*held, "erase_locked");
        } else {
          gain(cur.erase(), "erase");
        }
      }
    };
    if constexpr (Unlocked) {
      for (auto& cur : l.for_each_unlocked()) {
        visit(cur);
        if (++steps == max_steps) {
          break;
        }
      }
    } else {
      for (auto& cur : l.for_each_locked()) {
        visit(cur);
        if (++steps == max_steps) {
          break;
        }
      }
    }
  }

  void step(world& w, role r) {
    ++counts.ops;
    switch (r) {
      case role::any: {
        const std::size_t dice = pick(rng, 100);
        if (dice < 36 && !owned.empty()) {
          give_random(w);
        } else if (dice < 56) {
          pop(w);
        } else if (dice < 64) {
          // Short walks usually, sometimes to the end.
          walk<false>(w, one_in(rng, 4) ? 0 : 1 + pick(rng, 48), 6);
        } else if (dice < 72) {
          walk<true>(w, one_in(rng, 4) ? 0 : 1 + pick(rng, 48), 6);
        } else if (dice < 94 || owned.empty()) {
          remove_random(w);
        } else {
          remove_own();
        }
        return;
      }
      case role::locked_walker:
      case role::unlocked_walker: {
        if (r == role::locked_walker) {
          walk<false>(w, 0, 16);
        } else {
          walk<true>(w, 0, 16);
        }
        give_all(w);  // after the walk, never inside it
        return;
      }
      case role::mutator: {
        const std::size_t dice = pick(rng, 100);
        if (dice < 45 && !owned.empty()) {
          give_random(w);
        } else if (dice < 80) {
          pop(w);
        } else {
          remove_random(w);
        }
        return;
      }
    }
  }

  const int id;
  std::mt19937 rng;
  std::vector<node*> owned;
  problem_log log;
  op_counts counts;
  list scratch;  // always empty; see walk()
};

// After every thread has joined: each node is in exactly one list or held by exactly one
// thread, each list reads the same forward and backward, and popping everything gives back
// the lists' contents in order.
void census(world& w, const std::vector<std::unique_ptr<worker>>& workers) {
  const std::size_t pool_size = w.pool.size();
  std::vector<int> places(pool_size, 0);
  std::vector<std::vector<int>> contents;
  std::size_t listed = 0;
  for (std::size_t li = 0; li < w.lists.size(); ++li) {
    list& l = *w.lists[li];
    std::vector<int> fwd = forward_ids(l, pool_size);
    const std::vector<int> bwd = backward_ids(l, pool_size);
    EXPECT_LE(fwd.size(), pool_size) << "list " << li << " is longer than the pool: a cycle?";
    EXPECT_EQ(fwd, bwd) << "list " << li << " reads differently forward and backward";
    for (const int id : fwd) {
      const node& n = *w.pool[static_cast<std::size_t>(id)];
      ++places[static_cast<std::size_t>(id)];
      EXPECT_EQ(n.owner.load(std::memory_order_relaxed), in_list)
          << "node " << id << " is in list " << li << " but marked as held";
      EXPECT_EQ(n.token, n.id) << "node " << id << " is in list " << li << " with a held token";
      EXPECT_TRUE(n.is_linked_approx()) << "node " << id << " is in list " << li;
    }
    listed += fwd.size();
    contents.push_back(std::move(fwd));
  }

  std::size_t held = 0;
  std::uint64_t gains = 0;
  for (const auto& wk : workers) {
    EXPECT_EQ(wk->log.count(), 0U)
        << "thread " << wk->id << " found problems:" << wk->log.summary();
    EXPECT_FALSE(wk->scratch.head().is_linked_approx()) << "thread " << wk->id;
    gains += wk->counts.gains;
    held += wk->owned.size();
    for (const node* n : wk->owned) {
      ++places[static_cast<std::size_t>(n->id)];
      EXPECT_EQ(n->owner.load(std::memory_order_relaxed), wk->id)
          << "node " << n->id << " is held by thread " << wk->id;
      EXPECT_EQ(n->token, held_token(n->id)) << "node " << n->id;
      EXPECT_FALSE(n->is_linked_approx())
          << "node " << n->id << " is held by thread " << wk->id << " but looks linked";
    }
  }

  std::size_t misplaced = 0;
  std::uint64_t node_gains = 0;
  for (std::size_t i = 0; i < pool_size; ++i) {
    node_gains += w.pool[i]->gains;
    if (places[i] != 1) {
      ++misplaced;
      ADD_FAILURE() << "node " << i << " found in " << places[i] << " places (want exactly 1)";
      if (misplaced > 10) {
        break;
      }
    }
  }
  EXPECT_EQ(listed + held, pool_size) << listed << " listed + " << held << " held";
  EXPECT_EQ(node_gains, gains) << "the nodes' own hand-over counts disagree with the threads'";

  // Empty every list by pop(): the same nodes, in the same order.
  for (std::size_t li = 0; li < w.lists.size(); ++li) {
    list& l = *w.lists[li];
    std::vector<int> popped;
    while (node* n = l.pop()) {
      popped.push_back(n->id);
      if (popped.size() > pool_size) {
        break;
      }
    }
    EXPECT_EQ(popped, contents[li]) << "popping list " << li;
    EXPECT_TRUE(l.is_empty_approx()) << "list " << li;
  }
  for (const auto& n : w.pool) {
    EXPECT_FALSE(n->is_linked_approx()) << "node " << n->id << " still linked after the census";
  }
}

// Runs one random-operation configuration: roles[i] is thread i's role, ops[i] its step count.
void run_world(world& w, const std::vector<role>& roles, const std::vector<std::size_t>& ops,
               std::uint32_t seed_base) {
  const std::size_t threads = roles.size();
  std::vector<std::unique_ptr<worker>> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.push_back(std::make_unique<worker>(
        static_cast<int>(t), seed_base + static_cast<std::uint32_t>(t) * 7919U, w.pool.size()));
  }
  // Deal the pool round-robin: every thread starts holding its share.
  for (std::size_t i = 0; i < w.pool.size(); ++i) {
    worker& wk = *workers[i % threads];
    node& n = *w.pool[i];
    n.owner.store(wk.id, std::memory_order_relaxed);
    n.token = held_token(n.id);
    wk.owned.push_back(&n);
  }

  std::atomic<std::size_t> ready{0};  // start line: everyone spins until all have arrived
  std::vector<std::thread> threads_run;
  for (std::size_t t = 0; t < threads; ++t) {
    threads_run.emplace_back([&, t] {
      ready.fetch_add(1, std::memory_order_acq_rel);
      spin_until([&] { return ready.load(std::memory_order_acquire) == threads; });
      worker& wk = *workers[t];
      for (std::size_t i = 0; i < ops[t]; ++i) {
        wk.step(w, roles[t]);
      }
    });
  }
  for (std::thread& th : threads_run) {
    th.join();
  }

  op_counts total;
  for (const auto& wk : workers) {
    total += wk->counts;
  }
  std::printf(
      "[          ] %zu threads: %llu ops, %llu added, %llu popped (%llu empty), %llu walks "
      "visiting %llu, %llu erased, %llu removed (%llu missed)\n",
      threads, static_cast<unsigned long long>(total.ops),
      static_cast<unsigned long long>(total.added), static_cast<unsigned long long>(total.popped),
      static_cast<unsigned long long>(total.popped_empty),
      static_cast<unsigned long long>(total.walks), static_cast<unsigned long long>(total.visited),
      static_cast<unsigned long long>(total.erased), static_cast<unsigned long long>(total.removed),
      static_cast<unsigned long long>(total.remove_missed));
  if (total.ops >= 10000) {
    // The run must have exercised every way a node changes hands (a tiny
    // HERALD_STRESS_SCALE may legitimately miss one).
    EXPECT_GT(total.added, 0U);
    EXPECT_GT(total.popped, 0U);
    EXPECT_GT(total.erased, 0U);
    EXPECT_GT(total.removed, 0U);
  }
  census(w, workers);
}

class MtListRandomStress : public ::testing::TestWithParam<int> {};

TEST_P(MtListRandomStress, RandomOperationsKeepEveryNodeInExactlyOnePlace) {
  const int threads = GetParam();
  const auto n = static_cast<std::size_t>(threads);
  world w(64 * n, 3);
  // The same total work for every thread count: more threads, more contention per operation.
  const std::vector<std::size_t> ops(n, scaled(240000 * build_boost) / n);
  run_world(w, std::vector<role>(n, role::any), ops, 0x5eed0000U + static_cast<std::uint32_t>(n));
}

INSTANTIATE_TEST_SUITE_P(Threads, MtListRandomStress, ::testing::Values(2, 4, 8),
                         ::testing::PrintToStringParamName());

TEST(MtListStress, WalksBesideAppendPopAndRemoveSeeOnlyListedNodes) {
  // Two walkers (one locked, one unlocked) walk whole lists again and again, erasing now and
  // then, while two mutators pop, append, insert and remove. Every node a walk meets must be
  // marked as listed and carry the token its last holder wrote; the census closes the run.
  world w(192, 2);
  const std::vector<role> roles{role::locked_walker, role::unlocked_walker, role::mutator,
                                role::mutator};
  const std::size_t walks = scaled(300 * build_boost);
  const std::size_t mutations = scaled(60000 * build_boost);
  run_world(w, roles, {walks, walks, mutations, mutations}, 0x3a1c0000U);
}

// ---- Races with exactly one winner ----------------------------------------------------------

class MtListRace : public ::testing::TestWithParam<int> {};

INSTANTIATE_TEST_SUITE_P(Threads, MtListRace, ::testing::Values(2, 4, 8),
                         ::testing::PrintToStringParamName());

std::size_t race_round_count(int threads) {
  // Fewer rounds when more threads share the two cores: each round costs more wake-ups.
  return scaled((threads <= 2 ? 4000 : threads <= 4 ? 3000 : 2000) * round_boost);
}

int winners(const std::vector<int>& results) {
  return static_cast<int>(std::count(results.begin(), results.end(), 1));
}

std::string winner_count_problem(const std::vector<int>& results) {
  const int won = winners(results);
  if (won == 1) {
    return {};
  }
  return std::to_string(won) + " winners (want exactly 1), results " + describe(results);
}

// N threads race to add the same detached node x with try_append (or try_insert). Round r:
// even rounds all target one list, so the racers also meet on that list's end; odd rounds each
// thread targets its own list, so that they meet on x alone. Every other round each list holds
// two nodes already; otherwise x's neighbours are the head on both sides. Exactly one racer must
// win, x must be in the winner's list at the right end, and every other list must be unchanged.
void try_add_one_node_race(int threads, bool append) {
  const auto n = static_cast<std::size_t>(threads);
  auto nodes = make_nodes(2 * n + 1, false);
  node& x = *nodes[2 * n];
  std::vector<std::unique_ptr<list>> lists;
  for (std::size_t i = 0; i < n; ++i) {
    lists.push_back(std::make_unique<list>());
  }
  auto shared = [](std::size_t r) { return r % 2 == 0; };
  auto neighbours = [](std::size_t r) { return (r / 2) % 2 == 0; };
  auto target = [&](std::size_t r, std::size_t t) { return shared(r) ? std::size_t{0} : t; };
  auto before = [&](std::size_t r, std::size_t li) {
    return neighbours(r) ? std::vector<node*>{nodes[2 * li].get(), nodes[2 * li + 1].get()}
                         : std::vector<node*>{};
  };
  race_rounds(
      threads, race_round_count(threads),
      [&](std::size_t r) {
        for (std::size_t li = 0; li < n; ++li) {
          fill(*lists[li], before(r, li));
        }
      },
      [&](int t, std::size_t r) {
        list& l = *lists[target(r, static_cast<std::size_t>(t))];
        return (append ? l.try_append(x) : l.try_insert(x)) ? 1 : 0;
      },
      [&](std::size_t r, const std::vector<int>& results) {
        std::string p = winner_count_problem(results);
        if (!p.empty()) {
          return p;
        }
        const auto winner = static_cast<std::size_t>(std::find(results.begin(), results.end(), 1) -
                                                     results.begin());
        const std::size_t won_list = target(r, winner);
        for (std::size_t li = 0; li < n && p.empty(); ++li) {
          std::vector<int> want = ids_of(before(r, li));
          if (li == won_list) {
            want.insert(append ? want.end() : want.begin(), x.id);
          }
          p = list_mismatch(*lists[li], want);
          if (!p.empty()) {
            p.insert(
                0, "list " + std::to_string(li) + " (thread " + std::to_string(winner) + " won): ");
          }
        }
        if (p.empty() && !list::remove(x)) {
          p = "remove() of the winner's node returned false";
        }
        return p;
      });
}

TEST_P(MtListRace, ConcurrentTryAppendOfOneNodeHasExactlyOneWinner) {
  try_add_one_node_race(GetParam(), true);
}

TEST_P(MtListRace, ConcurrentTryInsertOfOneNodeHasExactlyOneWinner) {
  try_add_one_node_race(GetParam(), false);
}

TEST_P(MtListRace, TryAddOfADetachedNodeSucceedsWhileOthersLockOrRemoveIt) {
  // Thread 0 owns x and adds it again and again (try_append and try_insert in turn); the other
  // threads, in turn, call remove(x) or freeze x for a moment with lock_elem/unlock_elem, so x
  // is often held busy by another thread while it is detached. x is detached whenever its owner
  // adds it, so every add must succeed: a busy element may be on its way out of a list, and is
  // no reason to report it as listed. After each add, exactly one remove() returns true: the
  // owner's own (even adds) or a thief's (odd adds, for which the owner waits until x is seen
  // detached again).
  const int threads = GetParam();
  const auto removers = static_cast<std::size_t>(threads - 1);
  auto nodes = make_nodes(3, false);
  node& a = *nodes[0];
  node& b = *nodes[1];
  node& x = *nodes[2];
  list l;
  fill(l, {&a, &b});
  const std::size_t adds = scaled(4000 * build_boost);
  std::atomic<bool> done{false};  // release store by the owner, acquire loads by the removers
  std::vector<std::uint64_t> stolen(removers, 0);  // [i] written by remover i only

  std::vector<std::thread> thieves;
  for (std::size_t i = 0; i < removers; ++i) {
    thieves.emplace_back([&, i] {
      for (std::uint64_t j = 0; !done.load(std::memory_order_acquire); ++j) {
        if (j % 2 == 0) {
          if (list::remove(x)) {
            ++stolen[i];
            continue;
          }
        } else {
          const mt_ends saved = mt_link::lock_elem(list::link(x));
          for (int k = 0; k < 32; ++k) {
            herald::cpu_relax();
          }
          mt_link::unlock_elem(list::link(x), saved);
        }
        // Let the owner run (there may be more threads than cores).
        std::this_thread::yield();
      }
    });
  }
  std::uint64_t refused = 0;
  std::uint64_t added = 0;
  std::uint64_t kept = 0;  // adds undone by the owner's own remove()
  for (std::size_t i = 0; i < adds; ++i) {
    const bool ok = i % 4 < 2 ? l.try_append(x) : l.try_insert(x);
    if (!ok) {
      ++refused;
      continue;
    }
    ++added;
    if (i % 2 == 0) {
      kept += list::remove(x) ? 1U : 0U;
    } else {
      // Detached again only once a thief's remove() has finished with it (its last store).
      spin_until([&] { return !x.is_linked_approx(); });
    }
  }
  done.store(true, std::memory_order_release);
  for (std::thread& t : thieves) {
    t.join();
  }
  std::uint64_t thefts = 0;
  for (const std::uint64_t s : stolen) {
    thefts += s;
  }
  EXPECT_EQ(refused, 0U) << "try_append/try_insert of a detached node returned false " << refused
                         << " times out of " << adds;
  EXPECT_EQ(kept + thefts, added) << kept << " removed by the owner + " << thefts
                                  << " by the others, for " << added << " adds";
  EXPECT_GT(thefts, 0U) << "no remove() by another thread ever took x: the race did not happen";
  EXPECT_FALSE(list::remove(x));
  EXPECT_EQ(list_mismatch(l, {a.id, b.id}), "");
}

TEST_P(MtListRace, TryAppendRacingTryInsertIntoTwoListsPutsTheNodeInExactlyOne) {
  // Even threads try_append x to `back`, odd threads try_insert x to `front`. try_append locks
  // the node's prev pointer first and try_insert its next pointer first: the two must still
  // agree on a single winner.
  const int threads = GetParam();
  auto nodes = make_nodes(3, false);
  node& a = *nodes[0];
  node& b = *nodes[1];
  node& x = *nodes[2];
  list back;
  list front;
  race_rounds(
      threads, race_round_count(threads),
      [&](std::size_t r) {
        const bool neighbours = r % 2 == 0;
        fill(back, neighbours ? std::vector<node*>{&a} : std::vector<node*>{});
        fill(front, neighbours ? std::vector<node*>{&b} : std::vector<node*>{});
      },
      [&](int t, std::size_t) {
        const bool ok = t % 2 == 0 ? back.try_append(x) : front.try_insert(x);
        return ok ? 1 : 0;
      },
      [&](std::size_t r, const std::vector<int>& results) {
        std::string p = winner_count_problem(results);
        if (!p.empty()) {
          return p;
        }
        const bool neighbours = r % 2 == 0;
        const auto winner = std::find(results.begin(), results.end(), 1) - results.begin();
        std::vector<int> want_back = neighbours ? std::vector<int>{0} : std::vector<int>{};
        std::vector<int> want_front = neighbours ? std::vector<int>{1} : std::vector<int>{};
        if (winner % 2 == 0) {
          want_back.push_back(2);
        } else {
          want_front.insert(want_front.begin(), 2);
        }
        p = list_mismatch(back, want_back);
        if (p.empty()) {
          p = list_mismatch(front, want_front);
        }
        if (p.empty() && !list::remove(x)) {
          p = "remove() of the winner's node returned false";
        }
        return p;
      });
}

TEST_P(MtListRace, PopRacingRemoveHandsTheNodeToExactlyOneThread) {
  // Threads [0, N/2) pop once each; threads [N/2, N) remove(x). The list holds N/2 other nodes
  // plus x at a position that changes every round. x must end up with exactly one thread: a
  // popper that got it, or the one remover that got true. Every node is taken at most once and
  // what is left stays in order.
  const int threads = GetParam();
  const int poppers = threads / 2;
  auto nodes = make_nodes(static_cast<std::size_t>(poppers) + 1, false);
  node& x = *nodes.back();
  list l;
  std::vector<int> setup_ids;
  race_rounds(
      threads, race_round_count(threads),
      [&](std::size_t r) {
        std::vector<node*> order;
        order.reserve(static_cast<std::size_t>(poppers) + 1);
        for (int i = 0; i < poppers; ++i) {
          order.push_back(nodes[static_cast<std::size_t>(i)].get());
        }
        const auto at = static_cast<std::ptrdiff_t>(r % (static_cast<std::size_t>(poppers) + 1));
        order.insert(order.begin() + at, &x);
        setup_ids = ids_of(order);
        fill(l, order);
      },
      [&](int t, std::size_t) {
        if (t < poppers) {
          node* n = l.pop();
          return n == nullptr ? -1 : n->id;
        }
        return list::remove(x) ? 1 : 0;
      },
      [&](std::size_t, const std::vector<int>& results) -> std::string {
        int x_taken = 0;
        std::vector<int> taken;
        for (int t = 0; t < threads; ++t) {
          const int res = results[static_cast<std::size_t>(t)];
          if (t < poppers) {
            if (res >= 0) {
              taken.push_back(res);
              x_taken += res == x.id ? 1 : 0;
            }
          } else if (res == 1) {
            taken.push_back(x.id);
            ++x_taken;
          }
        }
        if (x_taken != 1) {
          return "x taken " + std::to_string(x_taken) + " times (want 1), setup " +
                 describe(setup_ids) + ", results " + describe(results);
        }
        std::vector<int> sorted = taken;
        std::sort(sorted.begin(), sorted.end());
        if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
          return "a node was taken twice: setup " + describe(setup_ids) + ", results " +
                 describe(results);
        }
        std::vector<int> left;
        for (const int id : setup_ids) {
          if (std::find(taken.begin(), taken.end(), id) == taken.end()) {
            left.push_back(id);
          }
        }
        std::string p = list_mismatch(l, left);
        if (!p.empty()) {
          return p + " (setup " + describe(setup_ids) + ", results " + describe(results) + ")";
        }
        if (x.is_linked_approx()) {
          return "x looks linked after it was taken";
        }
        return {};
      });
}

TEST_P(MtListRace, ConcurrentRemoveOfOneNodeHasExactlyOneWinner) {
  const int threads = GetParam();
  auto nodes = make_nodes(3, false);
  node& a = *nodes[0];
  node& b = *nodes[1];
  node& x = *nodes[2];
  list l;
  // Round r % 4 places x: alone, first, middle, last.
  const std::vector<std::vector<node*>> layouts{{&x}, {&x, &a, &b}, {&a, &x, &b}, {&a, &b, &x}};
  race_rounds(
      threads, race_round_count(threads), [&](std::size_t r) { fill(l, layouts[r % 4]); },
      [&](int, std::size_t) { return list::remove(x) ? 1 : 0; },
      [&](std::size_t r, const std::vector<int>& results) {
        std::string p = winner_count_problem(results);
        if (p.empty()) {
          std::vector<int> left = ids_of(layouts[r % 4]);
          left.erase(std::find(left.begin(), left.end(), x.id));
          p = list_mismatch(l, left);
        }
        if (p.empty() && x.is_linked_approx()) {
          p = "x looks linked after its removal";
        }
        return p;
      });
}

TEST_P(MtListRace, ConcurrentRemoveOfNeighboursLeavesTheRestInOrder) {
  // Thread t removes node t; the N removed nodes sit next to each other, so every remove()
  // fights its neighbours' for the links it shares with them. Odd rounds frame them with two
  // nodes that stay; even rounds leave the head as the outer neighbour on both sides.
  const int threads = GetParam();
  const auto n = static_cast<std::size_t>(threads);
  auto nodes = make_nodes(n + 2, false);
  node& first = *nodes[n];
  node& last = *nodes[n + 1];
  list l;
  race_rounds(
      threads, race_round_count(threads),
      [&](std::size_t r) {
        std::vector<node*> order;
        if (r % 2 == 1) {
          order.push_back(&first);
        }
        for (std::size_t i = 0; i < n; ++i) {
          order.push_back(nodes[i].get());
        }
        if (r % 2 == 1) {
          order.push_back(&last);
        }
        fill(l, order);
      },
      [&](int t, std::size_t) { return list::remove(*nodes[static_cast<std::size_t>(t)]) ? 1 : 0; },
      [&](std::size_t r, const std::vector<int>& results) -> std::string {
        if (winners(results) != threads) {
          return "remove() of listed nodes returned false: results " + describe(results);
        }
        return list_mismatch(l,
                             r % 2 == 1 ? std::vector<int>{first.id, last.id} : std::vector<int>{});
      });
}

// ---- A walk's erase() racing remove() of the same element -----------------------------------

// Thread 0 walks the list and erases x when it meets it; thread 1 calls remove(x). Exactly one
// of them must get x. The walk must meet the other nodes in order, and x only if it erased it.
// Round r places x at r % 6 among five other nodes and picks one of eight ways to end the step:
// erase or erase_locked, then go on or break, after waiting or not at x until the remover has
// announced its call (the wait makes erase() overlap remove()'s attempts on x, which take x's
// own pointers and put them back each time they find the walk holding a neighbour link).
template <bool Unlocked>
void walk_erase_racing_remove() {
  auto nodes = make_nodes(6, false);
  node& x = *nodes[5];
  list l;
  std::vector<int> seen;
  std::vector<int> setup_ids;
  seen.reserve(16);
  const std::size_t rounds = scaled(6000 * round_boost);
  // Round number + 1 once the remover is about to call remove(): release store by the remover,
  // acquire load by the walker.
  std::atomic<std::size_t> remover_called{0};

  auto walk_and_erase = [&](std::size_t r) {
    const bool locked_erase = (r / 6) % 2 == 1;
    const bool stop_after = (r / 12) % 2 == 1;
    const bool wait_for_remover = (r / 24) % 2 == 1;
    bool erased = false;
    auto step = [&](auto& cur) {
      node& n = cur.get();
      seen.push_back(n.id);
      if (&n != &x) {
        return false;
      }
      if (wait_for_remover) {
        // Cannot deadlock: the remover announces itself before it calls remove().
        spin_until([&] { return remover_called.load(std::memory_order_acquire) > r; });
      }
      if (locked_erase) {
        herald::mt_locked<node> held = cur.erase_locked();
        erased = held.get() == &x;
      } else {
        erased = &cur.erase() == &x;
      }
      return stop_after;
    };
    if constexpr (Unlocked) {
      for (auto& cur : l.for_each_unlocked()) {
        if (step(cur)) {
          break;
        }
      }
    } else {
      for (auto& cur : l.for_each_locked()) {
        if (step(cur)) {
          break;
        }
      }
    }
    return erased ? 1 : 0;
  };

  race_rounds(
      2, rounds,
      [&](std::size_t r) {
        std::vector<node*> order;
        for (std::size_t i = 0; i < 5; ++i) {
          order.push_back(nodes[i].get());
        }
        order.insert(order.begin() + static_cast<std::ptrdiff_t>(r % 6), &x);
        setup_ids = ids_of(order);
        seen.clear();
        fill(l, order);
      },
      [&](int t, std::size_t r) {
        if (t == 0) {
          return walk_and_erase(r);
        }
        remover_called.store(r + 1, std::memory_order_release);
        return list::remove(x) ? 1 : 0;
      },
      [&](std::size_t r, const std::vector<int>& results) -> std::string {
        const bool erased = results[0] == 1;
        const bool removed = results[1] == 1;
        const std::string where =
            " (setup " + describe(setup_ids) + ", walk saw " + describe(seen) + ")";
        if (erased == removed) {
          return std::string(erased ? "both" : "neither") +
                 " the walk's erase and remove() took x" + where;
        }
        std::vector<int> others = setup_ids;
        others.erase(std::find(others.begin(), others.end(), x.id));
        std::vector<int> want_seen = erased ? setup_ids : others;
        const bool stop_after = (r / 12) % 2 == 1;
        if (erased && stop_after) {
          want_seen.erase(std::find(want_seen.begin(), want_seen.end(), x.id) + 1, want_seen.end());
        }
        if (seen != want_seen) {
          return "walk should have seen " + describe(want_seen) + where;
        }
        std::string p = list_mismatch(l, others);
        if (!p.empty()) {
          return p + where;
        }
        if (x.is_linked_approx()) {
          return "x looks linked after it was taken" + where;
        }
        return {};
      });
}

TEST(MtListStress, LockedWalkEraseRacingRemoveHasExactlyOneWinner) {
  walk_erase_racing_remove<false>();
}

TEST(MtListStress, UnlockedWalkEraseRacingRemoveHasExactlyOneWinner) {
  walk_erase_racing_remove<true>();
}

}  // namespace
