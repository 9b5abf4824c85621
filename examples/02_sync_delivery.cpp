// Example 02: synchronous delivery on a global list and a per-server list.
//
// A health checker publishes SERVER events; an audit logger reads the live (unsafe) part, a
// one-shot watcher unsubscribes itself after the first DOWN, an identified subscription is
// paused and resubscribed by id, and a throwing handler is reported to the error hook without
// disturbing the others. The program checks what each subscriber saw and exits non-zero if
// anything differs.
#include <herald/bus.hpp>

#include <array>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

namespace {

struct server {
  std::uint32_t id;
  std::string name;
  bool up = true;
};

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { add, del, up, down };
  static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP", "DOWN"};
  struct safe_part {
    std::uint32_t id = 0;
    std::string name;
  };
  struct unsafe_part {
    server* live = nullptr;  // valid only during a sync call
  };
};
using sub = server_event::subtype;

}  // namespace

int main() {
  herald::bus bus;
  herald::sub_list per_server(bus);  // one list per server in a real program
  server srv{12, "web12"};

  int audited = 0;
  int oneshot_calls = 0;
  int counted = 0;
  int errors_seen = 0;
  bus.set_error_hook([&](const herald::handler_error& e) {
    ++errors_seen;
    std::printf("  error hook: subscription '%.*s' (%s:%u) threw: %.*s\n",
                static_cast<int>(e.subscription_name.size()), e.subscription_name.data(),
                e.file, e.line, static_cast<int>(e.what.size()), e.what.data());
  });

  // 1. An audit logger on the whole family, reading the live server.
  auto audit = per_server.subscribe_sync<server_event>(
      herald::type_of<server_event>(), [&](herald::sync_event<server_event>& ev) {
        ++audited;
        std::printf("  audit: %s id=%u live.up=%d\n", herald::type_name(ev.type()).c_str(),
                    ev.safe().id, ev.unsafe() != nullptr ? ev.unsafe()->live->up : -1);
      });
  // 2. A watcher that wants the first DOWN only.
  auto oneshot = per_server.subscribe_sync<server_event>(
      herald::type_of<server_event>(sub::down), [&](herald::sync_event<server_event>& ev) {
        ++oneshot_calls;
        ev.self().unsubscribe();  // from inside: no wait, no deadlock
      });
  // 3. An identified counter, managed by id from elsewhere.
  const std::uint64_t counter_id = herald::make_id("stats", "up-down-counter");
  auto counter = per_server.subscribe_sync<server_event>(
      herald::type_of<server_event>(sub::up), [&](herald::sync_event<server_event>&) { ++counted; },
      {.id = counter_id, .name = "up-down-counter"});
  // 4. A faulty plugin.
  auto faulty = per_server.subscribe_sync<server_event>(
      herald::type_of<server_event>(sub::down),
      [](herald::sync_event<server_event>&) { throw std::runtime_error("plugin bug"); },
      {.name = "faulty-plugin"});
  if (!audit || !oneshot || !counter || !faulty) {
    std::printf("subscribe failed\n");
    return 1;
  }
  // A second subscription with the same id is refused with its own error.
  auto dup = per_server.subscribe_sync<server_event>(
      herald::type_of<server_event>(sub::up), [](herald::sync_event<server_event>&) {},
      {.id = counter_id});
  std::printf("duplicate id refused: %s\n",
              dup ? "NO" : std::string(herald::to_string(dup.error())).c_str());

  auto flap = [&](bool up) {
    srv.up = up;
    server_event::unsafe_part live{&srv};
    auto n = per_server.publish<server_event>(up ? sub::up : sub::down, {srv.id, srv.name}, live);
    std::printf("published %s to %zu handlers\n", up ? "SERVER_UP" : "SERVER_DOWN", n.value());
  };

  flap(false);  // audit, oneshot (then gone), faulty
  flap(true);   // audit, counter
  (void)per_server.lookup_pause(counter_id);
  flap(false);  // audit, faulty
  flap(true);   // audit only: the counter is paused
  (void)per_server.lookup_resume(counter_id);
  // Count DOWN events too from now on, by id; the family stays SERVER.
  (void)per_server.lookup_resubscribe(counter_id, herald::type_of<server_event>(sub::up, sub::down));
  flap(false);  // audit, counter, faulty
  std::printf("counter now subscribed to %s\n", herald::type_name(counter->type()).c_str());

  per_server.destroy();  // ends everything; handlers destroyed before it returns
  const bool refused = !per_server.publish<server_event>(sub::up, {srv.id, srv.name});

  std::printf("audit=%d oneshot=%d counter=%d errors=%d refused-after-destroy=%d\n", audited,
              oneshot_calls, counted, errors_seen, refused);
  const bool ok = audited == 5 && oneshot_calls == 1 && counted == 2 && errors_seen == 3 &&
                  refused && !audit->is_active() && bus.handler_exceptions() == 3;
  std::printf("%s\n", ok ? "all subscribers saw what they should" : "MISMATCH");
  return ok ? 0 : 1;
}
