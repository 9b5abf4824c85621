// Example 07: a global list plus one subscription list per server.
//
// In HAProxy every server carries its own event_hdl list next to the global one: a component
// interested in one server subscribes there, one interested in all of them subscribes to the
// global list, and the code that changes a server's state publishes to both. Here each
// `server` object owns a herald::sub_list. The program shows:
//   - publishing one state change to the server's list and to the global list; each list
//     reaches its own subscribers only;
//   - has_subscribers() to skip building a payload nobody would read;
//   - removing a server: destroy() ends every subscription of its list (sync handlers are
//     destroyed before it returns, a queue subscriber pops END), later publishes report
//     errc::list_destroyed and subscribes are refused the same way; the global list and the
//     other servers carry on;
//   - deleting a server object (its sub_list destructor ends the list too);
//   - handles that outlive their list, and even the bus: they still answer (not active,
//     not_found), and unsubscribe() on them does nothing.
// Every count is checked; the program exits non-zero on any mismatch.
//
// Usage: herald_example_07_per_entity_lists [--quick]
#include <herald/bus.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { add, del, up, down };
  static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP", "DOWN"};
  struct safe_part {
    std::uint32_t id = 0;
    std::string name;
  };
};
using srv = server_event::subtype;

// A server of the load balancer, with its own subscription list.
struct server {
  server(herald::bus& bus, std::uint32_t id_, std::string name_)
      : id(id_), name(std::move(name_)), events(bus) {}
  std::uint32_t id;
  std::string name;
  herald::sub_list events;  // ended by its destructor when the server goes away
};

// Handler state that counts its own destruction (a moved-from one counts for nothing).
class destruction_probe {
 public:
  explicit destruction_probe(int* count) noexcept : count_(count) {}
  destruction_probe(destruction_probe&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  destruction_probe(const destruction_probe&) = delete;
  destruction_probe& operator=(const destruction_probe&) = delete;
  destruction_probe& operator=(destruction_probe&&) = delete;
  ~destruction_probe() {
    if (count_ != nullptr) {
      ++*count_;
    }
  }

 private:
  int* count_;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 10 : 50000;
  constexpr std::size_t server_count = 3;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 07: %s\n", what);
      ++failures;
    }
  };

  // Handles kept past the end of the bus (declared before it, so destroyed after it).
  herald::subscription kept_handle;

  {
    herald::bus bus;
    std::vector<std::unique_ptr<server>> servers;
    for (std::uint32_t i = 0; i < server_count; ++i) {
      servers.push_back(std::make_unique<server>(bus, i, "web" + std::to_string(i)));
    }

    // Global: a cluster monitor that hears about every server.
    int cluster_events = 0;
    auto monitor = bus.global().subscribe_sync<server_event>(
        herald::type_of<server_event>(),
        [&cluster_events](herald::sync_event<server_event>&) { ++cluster_events; },
        {.name = "cluster-monitor"});
    // Per server: one checker each, counting the events of its own server only.
    std::array<int, server_count> per_server{};
    std::array<int, server_count> checker_destroyed{};
    std::vector<herald::subscription> checkers;
    for (std::size_t i = 0; i < server_count; ++i) {
      auto s = servers[i]->events.subscribe_sync<server_event>(
          herald::type_of<server_event>(srv::up, srv::down),
          [&count = per_server[i], expected_id = servers[i]->id,
           probe = destruction_probe(&checker_destroyed[i])](herald::sync_event<server_event>& ev) {
            if (ev.safe().id == expected_id) {
              ++count;
            }
          },
          {.name = "checker/" + servers[i]->name});
      expect(s.has_value(), "per-server subscribe failed");
      checkers.push_back(s ? *s : herald::subscription{});
    }
    // Server 1 also has a queue subscriber (a dashboard that drains it later).
    herald::event_queue<server_event> dashboard;
    auto dash = servers[1]->events.subscribe_queue<server_event>(herald::type_of<server_event>(),
                                                                 dashboard);
    expect(monitor && dash, "subscribe failed");

    // The code that changes a server's state publishes to the server's list, then to the
    // global list. has_subscribers() skips building the payload when nobody listens.
    int built = 0;
    auto report = [&](server& s, srv what) {
      const herald::event_type t = herald::type_of<server_event>(what);
      const bool local = s.events.has_subscribers(t);
      const bool global = bus.global().has_subscribers(t);
      if (!local && !global) {
        return;
      }
      ++built;
      const server_event::safe_part payload{s.id, s.name};
      if (local) {
        auto n = s.events.publish<server_event>(what, payload);
        expect(n.has_value(), "publish to a live server list failed");
      }
      if (global) {
        (void)bus.global().publish<server_event>(what, payload);
      }
    };

    for (int r = 0; r < rounds; ++r) {
      for (auto& s : servers) {
        report(*s, srv::down);
        report(*s, srv::up);
      }
    }
    const int per_round = 2 * static_cast<int>(server_count);
    expect(cluster_events == rounds * per_round, "the cluster monitor missed events");
    for (std::size_t i = 0; i < server_count; ++i) {
      expect(per_server[i] == 2 * rounds, "a checker saw events of another server");
    }
    expect(dashboard.size_approx() == static_cast<std::size_t>(2 * rounds),
           "the dashboard queue has the wrong length");

    // has_subscribers() tells whether anyone is subscribed, paused or not: nobody listens to
    // DEL on server 0's list, but the (paused) monitor is subscribed to it globally, so the
    // payload is still built. The publish itself then calls nobody.
    const int built_before = built;
    const int cluster_before_del = cluster_events;
    (void)monitor->pause();
    report(*servers[0], srv::del);
    expect(built == built_before + 1, "has_subscribers() did not count a paused subscriber");
    expect(cluster_events == cluster_before_del, "a paused subscriber was called");
    (void)monitor->resume();

    // ---- Server 1 is removed from the configuration: destroy its list. -------------------
    kept_handle = checkers[1];
    servers[1]->events.destroy();
    expect(checker_destroyed[1] == 1, "destroy() did not destroy the checker's handler");
    expect(!checkers[1].is_active() && !dash->is_active(), "destroy() left a subscription");
    expect(servers[1]->events.is_destroyed(), "the list does not say it is destroyed");
    auto late_publish = servers[1]->events.publish<server_event>(srv::up, {1, "web1"});
    expect(!late_publish && late_publish.error() == herald::errc::list_destroyed,
           "publish to a destroyed list did not report list_destroyed");
    auto late_subscribe = servers[1]->events.subscribe_sync<server_event>(
        herald::type_of<server_event>(), [](herald::sync_event<server_event>&) {});
    expect(!late_subscribe && late_subscribe.error() == herald::errc::list_destroyed,
           "subscribe to a destroyed list was not refused with list_destroyed");
    // The dashboard gets what was queued before, then END, exactly once.
    int dashboard_rows = 0;
    int dashboard_ends = 0;
    while (auto item = dashboard.pop()) {
      item->is_end() ? ++dashboard_ends : ++dashboard_rows;
    }
    expect(dashboard_rows == 2 * rounds && dashboard_ends == 1,
           "the dashboard did not get its events and END exactly once");
    std::printf("server 1 removed: publish reports %s, subscribe reports %s, dashboard popped "
                "%d rows + END\n",
                herald::to_string(late_publish.error()).data(),
                herald::to_string(late_subscribe.error()).data(), dashboard_rows);

    // The others carry on.
    const int cluster_before = cluster_events;
    report(*servers[0], srv::down);
    report(*servers[2], srv::down);
    expect(cluster_events == cluster_before + 2, "the global list stopped working");
    expect(per_server[0] == 2 * rounds + 1 && per_server[2] == 2 * rounds + 1 &&
               per_server[1] == 2 * rounds,
           "the other servers' lists stopped working");

    // ---- Server 2 is deleted: its sub_list destructor ends its list. ---------------------
    servers[2].reset();
    expect(checker_destroyed[2] == 1 && !checkers[2].is_active(),
           "deleting the server did not end its subscriptions");
    // The handle outlives the list: it answers, and ending it again does nothing.
    expect(checkers[2].name() == "checker/web2", "a handle lost its name with its list");
    expect(checkers[2].pause().error() == herald::errc::not_found,
           "pause on a handle of a deleted list did not report not_found");
    checkers[2].unsubscribe();
    expect(checker_destroyed[2] == 1, "the handler was destroyed twice");
    std::printf("server 2 deleted: its checker's handle still answers ('%.*s', active=%d)\n",
                static_cast<int>(checkers[2].name().size()), checkers[2].name().data(),
                checkers[2].is_active() ? 1 : 0);

    std::printf("cluster monitor: %d events; per server: %d %d %d; payloads built: %d\n",
                cluster_events, per_server[0], per_server[1], per_server[2], built);
  }  // leaving the scope: server 0's list is destroyed, then the bus (which shuts down)

  // The bus is gone; the handle kept from server 1's list still answers.
  expect(kept_handle && !kept_handle.is_active(), "the kept handle says active");
  expect(kept_handle.resume().error() == herald::errc::not_found,
         "resume on a handle that outlived its bus did not report not_found");
  kept_handle.unsubscribe();
  std::printf("after the bus: handle '%.*s' still answers, active=%d\n",
              static_cast<int>(kept_handle.name().size()), kept_handle.name().data(),
              kept_handle.is_active() ? 1 : 0);

  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("per-entity lists behaved as documented\n");
  return 0;
}
