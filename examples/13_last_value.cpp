// Example 13 (last value): stateful events, replayed to subscriptions made later.
//
// A load balancer publishes the state of its servers: UP and DOWN (is the server serving?)
// and WEIGHT (its share of the traffic) are *stateful*, so each list keeps the last event of
// each of them; CHECK (one health-check result) is not. A dashboard that starts late learns
// the current state at once, without waiting for the next change. The program shows:
//   1. the declaration: `stateful_subtypes` lists the stateful subtypes of a family;
//   2. a sync subscription made late receives the last value of each stateful subtype it
//      subscribed to inside subscribe(), before it returns, without the unsafe part; the
//      non-stateful CHECK is not replayed;
//   3. async and queue subscriptions get the replay queued first, before any newer event,
//      with the sequence() and when() of the publish they repeat;
//   4. last values belong to a list: the global list and a server's own list keep their own;
//   5. under load: a thread publishes increasing weights while dashboards come and go; each
//      one's first WEIGHT is the last value at its subscribe or newer, and the weights after
//      it arrive one by one, none skipped, none twice;
//   6. destroying a list drops its last values; subscribing to it then fails.
// Every count is checked; the program exits non-zero on any mismatch.
//
// Usage: herald_example_13_last_value [--quick]
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <herald/bus.hpp>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

// [declaration]
struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { up, down, weight, check };
  static constexpr std::array<std::string_view, 4> subtype_names{"UP", "DOWN", "WEIGHT", "CHECK"};
  // The last UP, DOWN and WEIGHT of each list are kept and replayed; CHECK is not.
  // (`static constexpr bool stateful = true;` would make every subtype stateful.)
  static constexpr std::array<subtype, 3> stateful_subtypes{subtype::up, subtype::down,
                                                            subtype::weight};
  struct safe_part {
    std::uint32_t server = 0;
    std::int64_t value = 0;  // WEIGHT: the weight; UP/DOWN/CHECK: a version number
  };
  struct unsafe_part {
    const char* live_note = nullptr;  // valid only during a sync call
  };
};
// [declaration]
using srv = server_event::subtype;
static_assert(herald::stateful_mask_v<server_event> == 0b0111);

const char* name_of(srv s) {
  return server_event::subtype_names[static_cast<std::size_t>(s)].data();
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::int64_t weights = quick ? 2000 : 200000;
  const int dashboards = quick ? 20 : 400;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 13 (last value): %s\n", what);
      ++failures;
    }
  };

  herald::bus bus;
  herald::sub_list web1(bus);  // the list of server 1

  // ---- 1, 2: state published before anyone listens; a late sync subscriber -----------------
  const char* note = "live only during the publish";
  server_event::unsafe_part unsafe{note};
  (void)web1.publish<server_event>(srv::down, {1, 1}, unsafe);
  (void)web1.publish<server_event>(srv::up, {1, 2}, unsafe);
  (void)web1.publish<server_event>(srv::weight, {1, 10});
  (void)web1.publish<server_event>(srv::weight, {1, 20});
  auto nobody = web1.publish<server_event>(srv::check, {1, 3});
  expect(nobody && *nobody == 0, "a publish nobody listens to reached someone");

  // [sync replay]
  bool returned = false;
  std::vector<std::string> seen;
  auto late = web1.subscribe_sync<server_event>(
      herald::type_of<server_event>(),  // UP, DOWN, WEIGHT and CHECK
      [&](herald::sync_event<server_event>& ev) {
        // The replay runs here, inside subscribe_sync(), before it returns. It has no unsafe
        // part: the references it held were valid only during the original publish.
        seen.push_back(std::string(returned ? "live " : "replay ") + name_of(ev.subtype()) + "=" +
                       std::to_string(ev.safe().value) +
                       (ev.unsafe() != nullptr ? " (with unsafe part)" : ""));
      });
  returned = true;
  // seen: "replay UP=2", "replay DOWN=1", "replay WEIGHT=20" (in subtype order; no CHECK)
  // [sync replay]
  expect(late.has_value(), "late subscribe failed");
  expect(seen == std::vector<std::string>{"replay UP=2", "replay DOWN=1", "replay WEIGHT=20"},
         "the sync replay is not the last UP, DOWN and WEIGHT");
  (void)web1.publish<server_event>(srv::weight, {1, 30}, unsafe);
  expect(seen.size() == 4 && seen[3] == "live WEIGHT=30 (with unsafe part)",
         "the live event after the replay is wrong");
  for (const auto& line : seen) {
    std::printf("late sync subscriber: %s\n", line.c_str());
  }

  // ---- 3: async and queue: the replay is queued first ----------------------------------------
  std::mutex m;
  std::vector<std::int64_t> async_weights;
  std::vector<std::uint64_t> async_sequences;
  std::atomic<int> async_calls{0};
  // [async replay]
  auto view = web1.subscribe_async<server_event>(herald::type_of<server_event>(srv::weight),
                                                 [&](herald::async_event<server_event>& ev) {
                                                   // First the replay (WEIGHT=30, with the
                                                   // sequence() and when() of its publish), then
                                                   // every newer WEIGHT, in order.
                                                   std::lock_guard lock(m);
                                                   async_weights.push_back(ev.safe().value);
                                                   async_sequences.push_back(ev.sequence());
                                                   async_calls.fetch_add(1);
                                                 });
  herald::event_queue<server_event> q;
  auto table = web1.subscribe_queue<server_event>(herald::type_of<server_event>(srv::weight), q);
  // Both replays were queued before subscribe returned; WEIGHT=40 is queued behind them.
  (void)web1.publish<server_event>(srv::weight, {1, 40});
  // [async replay]
  expect(view && table, "async or queue subscribe failed");
  std::vector<std::int64_t> popped;
  std::vector<std::uint64_t> popped_sequences;
  while (auto item = q.pop()) {
    popped.push_back(item->safe().value);
    popped_sequences.push_back(item->sequence());
  }
  expect(popped == std::vector<std::int64_t>{30, 40}, "the queue did not pop the replay first");
  while (async_calls.load() < 2) {
    std::this_thread::yield();
  }
  {
    std::lock_guard lock(m);
    expect(async_weights == std::vector<std::int64_t>{30, 40},
           "the async handler did not get the replay first");
    expect(async_sequences == popped_sequences,
           "the replay does not carry the sequence number of its publish");
    std::printf(
        "async and queue: WEIGHT %lld (replay, sequence %llu), then %lld (sequence "
        "%llu)\n",
        static_cast<long long>(popped[0]), static_cast<unsigned long long>(popped_sequences[0]),
        static_cast<long long>(popped[1]), static_cast<unsigned long long>(popped_sequences[1]));
  }

  // ---- 4: last values belong to a list -------------------------------------------------------
  (void)bus.global().publish<server_event>(srv::weight, {0, 99});
  std::vector<std::int64_t> global_seen;
  auto cluster = bus.global().subscribe_sync<server_event>(
      herald::type_of<server_event>(),
      [&](herald::sync_event<server_event>& ev) { global_seen.push_back(ev.safe().value); });
  expect(cluster && global_seen == std::vector<std::int64_t>{99},
         "the global list replayed values of another list");
  herald::sub_list web2(bus);  // nothing published there yet: nothing to replay
  int web2_calls = 0;
  auto web2_view = web2.subscribe_sync<server_event>(
      herald::type_of<server_event>(), [&](herald::sync_event<server_event>&) { ++web2_calls; });
  expect(web2_view && web2_calls == 0, "a fresh list replayed something");

  // ---- 5: under load: dashboards come and go while weights change -----------------------------
  std::atomic<std::int64_t> published{0};  // the last weight whose publish returned
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    for (std::int64_t w = 1000; w < 1000 + weights && !stop.load(); ++w) {
      (void)web2.publish<server_event>(srv::weight, {2, w});
      published.store(w);
    }
  });
  int checked = 0;
  for (int d = 0; d < dashboards; ++d) {
    const std::int64_t before = published.load();  // returned before subscribe: not older
    std::mutex dm;
    std::vector<std::int64_t> got;
    auto dash = web2.subscribe_sync<server_event>(
        herald::type_of<server_event>(srv::weight), [&](herald::sync_event<server_event>& ev) {
          std::lock_guard lock(dm);  // the replay runs here, live events in the publisher
          got.push_back(ev.safe().value);
        });
    expect(dash.has_value(), "dashboard subscribe failed");
    std::this_thread::yield();  // let a few weights through
    dash->unsubscribe();        // the handler has returned for good when this returns
    std::lock_guard lock(dm);
    if (before != 0) {
      expect(!got.empty() && got.front() >= before, "a dashboard's first weight was older");
    }
    for (std::size_t i = 1; i < got.size(); ++i) {
      expect(got[i] == got[i - 1] + 1, "a dashboard saw weights skipped, repeated or reordered");
    }
    ++checked;
  }
  stop.store(true);
  publisher.join();
  std::printf(
      "%d dashboards joined while weights changed: each saw the current weight first, "
      "then every change in order\n",
      checked);

  // ---- 6: destroying a list drops its last values ---------------------------------------------
  web1.destroy();
  auto refused = web1.subscribe_sync<server_event>(herald::type_of<server_event>(),
                                                   [](herald::sync_event<server_event>&) {});
  expect(!refused && refused.error() == herald::errc::list_destroyed,
         "subscribe to a destroyed list was not refused");
  auto after = web1.publish<server_event>(srv::weight, {1, 50});
  expect(!after && after.error() == herald::errc::list_destroyed,
         "publish to a destroyed list did not report list_destroyed");
  std::printf("server 1 removed: its last values are gone; subscribe reports %s\n",
              herald::to_string(refused.error()).data());

  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("last-value events behaved as documented\n");
  return 0;
}
