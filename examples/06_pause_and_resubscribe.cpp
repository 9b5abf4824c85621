// Example 06: pause and resume, resubscribe within a family, and ending a subscription from
// inside its own handler.
//
// A load balancer reacts to SERVER events. During a maintenance window it pauses its
// subscriptions (a sync one and a queue one): nothing published while they are paused reaches
// them, and they carry on after resume(). Subscriptions then change what they listen to with
// resubscribe(): within the SERVER family only (another family, or no subtype at all, is
// errc::family_mismatch), keeping their place in the subscription order. Finally handlers act
// on themselves through ev.self(): a flap detector that switches between waiting for DOWN and
// waiting for UP, a sync one-shot that unsubscribes itself after three events, and an async
// auditor that unsubscribes itself on a worker thread. The program checks every count and
// exits non-zero on any mismatch.
//
// Usage: herald_example_06_pause_and_resubscribe [--quick]
#include <herald/bus.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { add, del, up, down };
  static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP", "DOWN"};
  struct safe_part {
    std::uint32_t id = 0;
  };
};
using srv = server_event::subtype;

struct listener_event {
  static constexpr std::string_view family_name = "LISTENER";
  enum class subtype : std::uint8_t { open, close };
  static constexpr std::array<std::string_view, 2> subtype_names{"OPEN", "CLOSE"};
  struct safe_part {
    std::uint16_t port = 0;
  };
};

// Handler state that signals its destruction (a moved-from one signals nothing). An atomic,
// since an async handler is destroyed on a worker thread.
class destruction_flag {
 public:
  explicit destruction_flag(std::atomic<int>* count) noexcept : count_(count) {}
  destruction_flag(destruction_flag&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  destruction_flag(const destruction_flag&) = delete;
  destruction_flag& operator=(const destruction_flag&) = delete;
  destruction_flag& operator=(destruction_flag&&) = delete;
  ~destruction_flag() {
    if (count_ != nullptr) {
      count_->fetch_add(1);
      count_->notify_all();
    }
  }

 private:
  std::atomic<int>* count_;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 20 : 20000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 06: %s\n", what);
      ++failures;
    }
  };

  herald::bus bus({.threads = 1});
  herald::sub_list servers(bus);
  auto publish = [&](srv s) { return servers.publish<server_event>(s, {7}); };

  // ---- 1. Pause and resume ---------------------------------------------------------------
  int balanced = 0;
  auto balancer = servers.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::up, srv::down),
      [&balanced](herald::sync_event<server_event>&) { ++balanced; }, {.name = "balancer"});
  herald::event_queue<server_event> history;
  auto recorder = servers.subscribe_queue<server_event>(
      herald::type_of<server_event>(srv::up, srv::down), history, herald::queue_notify::none(),
      {.name = "history"});
  expect(balancer && recorder, "subscribe failed");
  if (!balancer || !recorder) {
    return 1;
  }
  int recorded = 0;
  auto drain_history = [&] {
    while (auto item = history.pop()) {
      if (!item->is_end()) {
        ++recorded;
      }
    }
  };

  for (int i = 0; i < rounds; ++i) {
    (void)publish(srv::down);
  }
  drain_history();
  expect(balanced == rounds && recorded == rounds, "events before the pause were missed");

  // The maintenance window: both subscriptions paused. A paused subscription still counts as
  // a subscriber for has_subscribers(), but publish reaches neither of them.
  expect(balancer->pause() && recorder->pause(), "pause failed");
  expect(balancer->is_paused() && recorder->is_paused(), "the handles do not see the pause");
  expect(servers.has_subscribers(herald::type_of<server_event>(srv::down)),
         "a paused subscription stopped counting as a subscriber");
  for (int i = 0; i < rounds; ++i) {
    auto n = publish(srv::up);
    expect(n && *n == 0, "publish reached a paused subscription");
  }
  expect(history.size_approx() == 0, "events were queued to a paused queue subscription");
  expect(balancer->resume() && recorder->resume(), "resume failed");
  for (int i = 0; i < rounds; ++i) {
    (void)publish(srv::up);
  }
  drain_history();
  expect(balanced == 2 * rounds && recorded == 2 * rounds,
         "events published while paused were delivered, or later ones were lost");
  std::printf("pause: balancer %d, history %d (the %d events of the window were skipped)\n",
              balanced, recorded, rounds);

  // ---- 2. Resubscribe within the family --------------------------------------------------
  std::string order;
  auto first = servers.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::add),
      [&order](herald::sync_event<server_event>&) { order += '1'; });
  auto second = servers.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::add, srv::del),
      [&order](herald::sync_event<server_event>&) { order += '2'; });
  expect(first && second, "subscribe failed");
  if (!first || !second) {
    return 1;
  }
  (void)publish(srv::del);  // only `second` listens to DEL
  // `first` adds DEL to what it listens to, and keeps its place before `second`.
  auto widened = herald::combine(first->type(), herald::type_of<server_event>(srv::del));
  expect(widened && first->resubscribe(*widened), "resubscribe within the family failed");
  (void)publish(srv::del);
  expect(order == "212", "resubscribe changed the subscription order");
  auto narrowed = herald::remove_subtypes(first->type(), herald::type_of<server_event>(srv::add));
  expect(narrowed && first->resubscribe(*narrowed), "narrowing resubscribe failed");
  (void)publish(srv::add);
  expect(order == "2122", "the narrowed subscription still saw ADD");

  auto other_family = first->resubscribe(herald::type_of<listener_event>());
  const herald::event_type no_subtype(herald::family_id_of<server_event>(), 0);
  auto empty = first->resubscribe(no_subtype);
  expect(!other_family && other_family.error() == herald::errc::family_mismatch,
         "resubscribe to another family was accepted");
  expect(!empty && empty.error() == herald::errc::family_mismatch,
         "resubscribe to no subtype was accepted");
  expect(first->type() == herald::type_of<server_event>(srv::del),
         "a refused resubscribe changed the type");
  std::printf("resubscribe: order %s; LISTENER refused (%s), empty refused (%s); now %s\n",
              order.c_str(), herald::to_string(other_family.error()).data(),
              herald::to_string(empty.error()).data(), herald::type_name(first->type()).c_str());
  first->unsubscribe();
  second->unsubscribe();

  // ---- 3. From inside the handler: ev.self() ---------------------------------------------
  // A flap detector: after a DOWN it only waits for the UP that follows, and the other way
  // round. The change applies to publishes that start after resubscribe() returns.
  std::string transitions;
  auto detector = servers.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::down),
      [&transitions](herald::sync_event<server_event>& ev) {
        const bool went_down = ev.subtype() == srv::down;
        transitions += went_down ? 'D' : 'U';
        (void)ev.self().resubscribe(herald::type_of<server_event>(went_down ? srv::up : srv::down));
      });
  // A one-shot that stops itself after three events. Inside a handler unsubscribe() never
  // waits; the handler object is destroyed after the call returns, at the next reclamation.
  int oneshot_calls = 0;
  std::atomic<int> oneshot_destroyed{0};
  auto oneshot = servers.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::up, srv::down),
      [&oneshot_calls, flag = destruction_flag(&oneshot_destroyed)](
          herald::sync_event<server_event>& ev) {
        if (++oneshot_calls == 3) {
          ev.self().unsubscribe();
        }
      });
  expect(detector && oneshot, "subscribe failed");
  if (!detector || !oneshot) {
    return 1;
  }
  for (srv s : {srv::down, srv::down, srv::up, srv::up, srv::down, srv::up}) {
    (void)publish(s);
  }
  expect(transitions == "DUDU", "the flap detector saw the wrong events");
  expect(detector->type() == herald::type_of<server_event>(srv::down),
         "the detector is not waiting for DOWN");
  expect(oneshot_calls == 3 && !oneshot->is_active(), "the one-shot did not end itself");
  bus.reclaim();  // what ended inside handlers is freed here (or by any later unsubscribe)
  expect(oneshot_destroyed.load() == 1, "the one-shot handler was not destroyed exactly once");
  std::printf("self: detector saw %s; one-shot ran %d times, destroyed %d time(s)\n",
              transitions.c_str(), oneshot_calls, oneshot_destroyed.load());

  // An async auditor that ends itself on a worker after `limit` events. Each publish waits
  // for the auditor to handle it, so the count is exact: once the handler has unsubscribed,
  // no later publish queues to it.
  const int limit = quick ? 5 : 500;
  std::atomic<int> audited{0};
  std::atomic<int> auditor_destroyed{0};
  auto auditor = servers.subscribe_async<server_event>(
      herald::type_of<server_event>(srv::add),
      [&audited, limit, flag = destruction_flag(&auditor_destroyed)](
          herald::async_event<server_event>& ev) {
        if (audited.load() + 1 == limit) {
          ev.self().unsubscribe();
        }
        audited.fetch_add(1);
        audited.notify_all();
      },
      {.name = "auditor"});
  expect(auditor.has_value(), "async subscribe failed");
  int reached = 0;
  for (int i = 0; i < 2 * limit; ++i) {
    auto n = publish(srv::add);
    if (n && *n == 1) {
      ++reached;
      for (int now = audited.load(); now < reached; now = audited.load()) {
        audited.wait(now);  // the handler notifies after each event
      }
    }
  }
  // The handler is destroyed on its worker, after its last call (the END of the queue).
  for (int d = auditor_destroyed.load(); d == 0; d = auditor_destroyed.load()) {
    auditor_destroyed.wait(d);
  }
  expect(reached == limit && audited.load() == limit, "the auditor saw the wrong number");
  expect(auditor_destroyed.load() == 1 && !auditor->is_active(),
         "the auditor's handler was not destroyed exactly once");
  std::printf("async self-unsubscribe: %d events reached the auditor, then it ended\n",
              audited.load());

  history.reset();  // ends the queue subscription
  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("pause, resubscribe and self-unsubscribe behaved as documented\n");
  return 0;
}
