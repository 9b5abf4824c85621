// Example 11: observability - introspection, the Prometheus text format, emitter presence.
//
// A health checker publishes SERVER events (UP, DOWN) to the list of server web1. Before it
// starts, a dashboard thread waits until someone declares that it publishes SERVER events
// (emitter presence, herald/presence.hpp): the health checker declares itself with
// declare_emitter() and keeps the handle while it publishes. Four subscriptions listen:
//   1. "logger", sync, with an id, to SERVER_DOWN only;
//   2. "alerts", async on herald's workers, to the whole family;
//   3. "dashboard", a queue bounded to 8 events with drop_oldest, popped only at the end, so
//      that most events are dropped (and counted);
//   4. "audit", a wildcard sync subscription on the bus's global list (it sees nothing here:
//      nobody publishes there).
// When the checker is done the program prints dump_text() (for humans) and dump_prometheus()
// (what a scrape would return), then checks that describe() and the Prometheus samples agree
// with subscription::stats(), that presence() counts the checker and the subscribers, and that
// the declaration goes away with the handle. It exits non-zero on any mismatch.
//
// Usage: herald_example_11_observability [--quick]
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <herald/bus.hpp>
#include <herald/introspect.hpp>
#include <herald/presence.hpp>
#include <initializer_list>
#include <string>
#include <string_view>
#include <thread>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  struct safe_part {
    int server = 0;
    std::uint64_t n = 0;
  };
};

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "MISMATCH: %s\n", what);
    ++failures;
  }
}

// The value of the one Prometheus sample of `metric` whose line contains every fragment of
// `must` (e.g. `name="dashboard"`), or -1 if there is not exactly one.
double prometheus_value(const std::string& text, std::string_view metric,
                        std::initializer_list<std::string_view> must) {
  double found = -1;
  int matches = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t eol = text.find('\n', pos);
    const std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    if (line.substr(0, metric.size()) != metric ||
        (line.size() > metric.size() && line[metric.size()] != '{' && line[metric.size()] != ' ')) {
      continue;
    }
    bool all = true;
    for (std::string_view m : must) {
      all = all && line.find(m) != std::string_view::npos;
    }
    if (all) {
      ++matches;
      found = std::stod(std::string(line.substr(line.rfind(' ') + 1)));
    }
  }
  return matches == 1 ? found : -1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::uint64_t events = quick ? 200 : 20000;

  // Per-family publish counters are off by default (they cost about 1 ns per publish).
  herald::set_family_counting(true);
  herald::bus_options bo;
  bo.threads = 2;
  herald::bus bus(bo);
  herald::sub_list web1(bus, "server/web1");
  const auto server = herald::type_of<server_event>();
  const auto down = herald::type_of<server_event>(server_event::subtype::down);

  // The dashboard waits for a SERVER publisher before it subscribes (it would be pointless
  // without one). wait_for_emitter() returns false on timeout or when the bus shuts down.
  std::atomic<bool> publisher_seen{false};
  std::thread dashboard_wait(
      [&] { publisher_seen = herald::wait_for_emitter(bus, server, std::chrono::seconds(30)); });

  // The subscriptions.
  std::atomic<std::uint64_t> downs{0};
  herald::subscribe_options logger_opt;
  logger_opt.id = herald::make_id("web1", "logger");
  logger_opt.name = "logger";
  auto logger = web1.subscribe_sync<server_event>(
      down, [&downs](herald::sync_event<server_event>&) { downs.fetch_add(1); }, logger_opt);

  std::atomic<std::uint64_t> alerts_seen{0};
  herald::subscribe_options alerts_opt;
  alerts_opt.name = "alerts";
  auto alerts = web1.subscribe_async<server_event>(
      server, [&alerts_seen](herald::async_event<server_event>&) { alerts_seen.fetch_add(1); },
      alerts_opt);

  herald::event_queue<server_event> dashboard_queue;
  herald::subscribe_options dash_opt;
  dash_opt.name = "dashboard";
  dash_opt.backpressure.bound = 8;
  dash_opt.backpressure.policy = herald::overflow_policy::drop_oldest;
  auto dashboard = web1.subscribe_queue<server_event>(server, dashboard_queue,
                                                      herald::queue_notify::none(), dash_opt);

  herald::subscribe_options audit_opt;
  audit_opt.name = "audit";
  auto audit = bus.global().subscribe_wildcard_sync([](herald::wildcard_event&) {}, audit_opt);
  if (!logger || !alerts || !dashboard || !audit) {
    std::fprintf(stderr, "subscribe failed\n");
    return 1;
  }

  // The health checker: declares itself, then publishes.
  std::atomic<bool> checker_may_leave{false};
  std::thread checker([&] {
    auto me = herald::declare_emitter(bus, server);
    if (!me) {
      std::fprintf(stderr, "declare_emitter failed\n");
      return;
    }
    for (std::uint64_t n = 1; n <= events; ++n) {
      const auto sub = n % 4 == 0 ? server_event::subtype::down : server_event::subtype::up;
      (void)web1.publish<server_event>(sub, {1, n});
    }
    // Declared until the end of this scope: the dashboard may not have looked yet.
    checker_may_leave.wait(false);
  });
  dashboard_wait.join();
  checker_may_leave = true;
  checker_may_leave.notify_one();
  checker.join();
  check(publisher_seen, "the dashboard saw the health checker's declaration");

  // Let the async handler finish (no timing: wait until it has seen every event).
  while (alerts->stats().delivered + alerts->stats().dropped() < events) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  (void)dashboard_queue.pop();  // the dashboard takes one event

  const std::string text = herald::dump_text(bus);
  const std::string prom = herald::dump_prometheus(bus);
  std::printf("---- dump_text() ----\n%s\n---- dump_prometheus() ----\n%s", text.c_str(),
              prom.c_str());

  // describe() agrees with the handles' stats.
  const auto subs = herald::describe(web1);
  check(subs.size() == 3, "three subscriptions on server/web1");
  for (const auto& s : subs) {
    if (s.name == "dashboard") {
      const herald::subscription_stats st = dashboard->stats();
      check(s.mode == herald::delivery_mode::queue, "dashboard is a queue subscription");
      check(s.stats.published == events && st.published == events, "dashboard: published");
      check(s.stats.queued == 7 && s.stats.delivered == 1, "dashboard: 7 queued, 1 popped");
      check(s.stats.dropped_oldest == events - 8, "dashboard: the oldest events were dropped");
      check(s.stats.published ==
                s.stats.delivered + s.stats.dropped() + s.stats.discarded + s.stats.queued,
            "dashboard: published = delivered + dropped + discarded + queued");
    } else if (s.name == "logger") {
      check(s.mode == herald::delivery_mode::sync && s.type_name == "SERVER_DOWN" &&
                s.id == herald::make_id("web1", "logger"),
            "logger: sync, SERVER_DOWN, its id");
    } else if (s.name == "alerts") {
      check(s.mode == herald::delivery_mode::async && s.stats.delivered == events,
            "alerts: async, every event delivered");
    }
  }
  check(downs == events / 4, "the logger saw every DOWN");

  // The Prometheus samples agree too.
  const std::string_view web = "list=\"server/web1\"";
  const std::string_view dash = "name=\"dashboard\"";
  check(prometheus_value(prom, "herald_subscription_published_total", {web, dash}) ==
            static_cast<double>(events),
        "prometheus: dashboard published");
  check(prometheus_value(prom, "herald_subscription_dropped_total",
                         {web, dash, "cause=\"oldest\""}) == static_cast<double>(events - 8),
        "prometheus: dashboard dropped (oldest)");
  check(prometheus_value(prom, "herald_subscription_queued", {web, dash}) == 7,
        "prometheus: dashboard queued");
  check(prometheus_value(prom, "herald_subscription_high_water", {web, dash}) >= 8,
        "prometheus: dashboard high water");
  check(prometheus_value(prom, "herald_family_published_total", {"family=\"SERVER\""}) ==
            static_cast<double>(events),
        "prometheus: SERVER publishes (counted since set_family_counting(true))");
  check(prometheus_value(prom, "herald_family_subscribers", {"family=\"SERVER\""}) == 3,
        "prometheus: SERVER has three subscribers");
  check(prometheus_value(prom, "herald_wildcard_subscribers", {}) == 1,
        "prometheus: one wildcard subscriber");
  check(prom.find("# TYPE herald_subscription_published_total counter\n") != std::string::npos,
        "prometheus: TYPE line");

  // Presence: the checker's handle is gone, so no emitter is declared any more.
  const herald::type_presence p = herald::presence(bus, down);
  check(p.emitters == 0, "presence: the checker undeclared itself");
  check(p.subscribers == 3 && p.wildcard_subscribers == 1, "presence: subscribers of DOWN");
  {
    auto again = herald::declare_emitter(bus, down);
    check(again && herald::presence(bus, server).emitters == 1, "presence: a new declaration");
  }
  check(!herald::wait_for_emitter(bus, server, std::chrono::milliseconds(0)),
        "presence: none left");

  bus.shutdown();
  if (failures != 0) {
    std::fprintf(stderr, "%d mismatch(es)\n", failures);
    return 1;
  }
  std::printf("observability: all checks passed (%llu events)\n",
              static_cast<unsigned long long>(events));
  return 0;
}
