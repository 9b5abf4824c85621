// Example 12: wildcard subscriptions — an audit logger and a bridge that see every family.
//
// A load balancer publishes SERVER events (stateful: UP, DOWN), PEER events and TRACE events
// to its list "lb". Three components want every event of that list without naming the
// families:
//   1. an audit logger, a wildcard *async* subscription: on herald's workers it serialises each
//      event with its family's codec (event_view::encode()) and keeps one line per event; TRACE
//      declares no codec, so the logger writes its type name and "<no_codec>";
//   2. a bridge stand-in, a wildcard *queue* drained by its own thread through an eventfd
//      (queue_notify::fd()): it "sends" every event whose family has a codec to a subject
//      "herald.<FAMILY>.<SUBTYPE>" and keeps the others local (counted); its queue is bounded;
//   3. a tap, a wildcard *sync* subscription, which runs after SERVER's own sync handler.
// Both late subscribers first receive the last SERVER_UP and SERVER_DOWN (replayed, in subtype
// order, with their original sequence numbers), then every newer event.
//
// The program checks what docs/wildcard.md promises: the logger's lines after the replays are
// exactly the publishes, in order, each serialised by its family's codec; the bridge sent
// exactly the events with a codec and counted the others; for both,
// published = delivered + dropped() + discarded; the tap runs after the family handler; END
// comes once, with end_reason::shutdown. It exits non-zero on any mismatch.
//
// Usage: herald_example_12_wildcard_logger [--quick]
#include <poll.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <herald/bus.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  static constexpr bool stateful = true;  // late subscribers get the last UP and DOWN
  struct safe_part {
    std::uint32_t server = 0;
    std::int32_t weight = 0;
  };
  // The codec: how bridges and wildcard loggers serialise the safe part.
  struct codec {
    static std::string encode(const safe_part& p) {
      return "server=" + std::to_string(p.server) + " weight=" + std::to_string(p.weight);
    }
  };
};

struct peer_event {
  static constexpr std::string_view family_name = "PEER";
  enum class subtype : std::uint8_t { identified, lost };
  static constexpr std::array<std::string_view, 2> subtype_names{"IDENTIFIED", "LOST"};
  struct safe_part {
    std::string name;
    std::uint64_t n = 0;
  };
  struct codec {
    static std::string encode(const safe_part& p) {
      return "peer=" + p.name + " n=" + std::to_string(p.n);
    }
  };
};

// No codec: a wildcard subscriber still sees it, but cannot serialise it.
struct trace_event {
  static constexpr std::string_view family_name = "TRACE";
  enum class subtype : std::uint8_t { hit };
  static constexpr std::array<std::string_view, 1> subtype_names{"HIT"};
  struct safe_part {
    std::uint64_t n = 0;
  };
};

// One line of the audit log.
struct audit_line {
  std::uint64_t sequence = 0;
  std::string type;
  std::string text;
};

// The audit logger: a wildcard async handler. It runs on herald's workers, one event at a
// time, with the shared snapshot of the event's safe part.
struct audit_logger {
  std::vector<audit_line>* log;  // written by one handler call at a time; read after END
  std::atomic<int>* ends;
  std::atomic<herald::end_reason>* why;

  void operator()(herald::wildcard_event& ev) {
    auto text = ev.encode();  // the family's codec; errc::no_codec without one
    log->push_back({ev.sequence(), ev.type_name(),
                    text ? *text : "<" + std::string(herald::to_string(text.error())) + ">"});
  }
  // Called once, after the last event, before the handler is destroyed.
  void on_end(herald::end_reason r) {
    why->store(r);
    ends->fetch_add(1);
  }
};

// "herald.SERVER.UP" for SERVER_UP; "herald.TRACE" for a family's only subtype (whose type
// name is the family's name).
std::string subject_of(const herald::event_view& ev) {
  const std::string_view family = ev.family_name();
  const std::string type = ev.type_name();
  std::string subject = "herald." + std::string(family);
  if (type.size() > family.size()) {
    subject += "." + type.substr(family.size() + 1);
  }
  return subject;
}

// What the program published after the late subscriptions: the type and the codec's text
// (empty for TRACE).
struct expected_event {
  std::string type;
  std::string text;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::uint64_t events = quick ? 300 : 30000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 12: %s\n", what);
      ++failures;
    }
  };

  herald::bus bus({.threads = 2});
  herald::sub_list lb(bus, "lb");

  // State published before anyone listens: the last SERVER_UP and SERVER_DOWN are kept.
  (void)lb.publish<server_event>(server_event::subtype::up, {1, 10});
  (void)lb.publish<server_event>(server_event::subtype::down, {2, 0});
  (void)lb.publish<server_event>(server_event::subtype::up, {3, 30});  // replaces server 1's

  // ---- 1. The audit logger (wildcard async) ------------------------------------------------
  std::vector<audit_line> log;
  std::atomic<int> logger_ends{0};
  std::atomic<herald::end_reason> logger_why{herald::end_reason::unsubscribed};
  auto logger = lb.subscribe_wildcard_async(audit_logger{&log, &logger_ends, &logger_why},
                                            {.name = "audit-logger"});
  if (!logger) {
    std::fprintf(stderr, "example 12: subscribe_wildcard_async failed\n");
    return 1;
  }

  // ---- 2. The bridge stand-in (wildcard queue, its own thread, an eventfd) ------------------
  herald::wildcard_queue wire;
  herald::subscribe_options bridge_opt{.name = "bridge"};
  bridge_opt.backpressure.bound = 4096;  // a stalled connection must not grow memory forever
  bridge_opt.backpressure.policy = herald::overflow_policy::drop_newest;
  auto bridge_sub = lb.subscribe_wildcard_queue(wire, herald::queue_notify::fd(), bridge_opt);
  if (!bridge_sub) {
    std::fprintf(stderr, "example 12: subscribe_wildcard_queue failed\n");
    return 1;
  }

  std::vector<std::string> sent;  // the bridge thread's; read after it joined
  std::uint64_t kept_local = 0;   // events of families without a codec
  herald::end_reason bridge_why = herald::end_reason::unsubscribed;
  std::thread bridge([&] {
    pollfd p{wire.fd(), POLLIN, 0};
    for (;;) {
      (void)::poll(&p, 1, 1000);  // readable while items wait
      while (auto item = wire.pop()) {
        if (item->is_end()) {
          bridge_why = item->end_reason();
          return;  // nothing follows END
        }
        const herald::event_view ev = item->view();  // valid while `item` lives
        auto payload = ev.encode();
        if (!payload) {
          ++kept_local;  // errc::no_codec: this family cannot leave the process
          continue;
        }
        sent.push_back(subject_of(ev) + " " + *payload);
      }
    }
  });

  // ---- 3. A sync tap, after the family's own sync handler ---------------------------------
  std::vector<std::string> order;  // the publishing thread's (sync handlers run in it)
  auto tap = lb.subscribe_wildcard_sync([&order](herald::wildcard_event& ev) {
    // Inline in the publisher, after SERVER's own sync handlers; sequence() is 0 here.
    if (ev.family_name() == "SERVER") {
      order.push_back("tap " + ev.type_name());
    }
  });
  auto health = lb.subscribe_sync<server_event>(
      herald::type_of<server_event>(), [&order](herald::sync_event<server_event>& ev) {
        order.push_back(std::string("health ") +
                        (ev.subtype() == server_event::subtype::up ? "UP" : "DOWN"));
      });
  expect(tap.has_value() && health.has_value(), "a sync subscription failed");
  // The tap, subscribed before `health`, got the two replays inside subscribe (family by
  // family, in subtype order); `health` got them too, inside its own subscribe.
  expect(order == std::vector<std::string>{"tap SERVER_UP", "tap SERVER_DOWN", "health UP",
                                           "health DOWN"},
         "the sync replays did not come in subtype order");
  order.clear();

  // ---- Publishing ---------------------------------------------------------------------------
  std::vector<expected_event> published;
  for (std::uint64_t i = 0; i < events; ++i) {
    switch (i % 4) {
      case 0: {
        const server_event::safe_part s{static_cast<std::uint32_t>(i % 7),
                                        static_cast<std::int32_t>(i % 100)};
        (void)lb.publish<server_event>(server_event::subtype::up, s);
        published.push_back({"SERVER_UP", server_event::codec::encode(s)});
        break;
      }
      case 1: {
        const peer_event::safe_part pe{"edge" + std::to_string(i % 3), i};
        (void)lb.publish<peer_event>(peer_event::subtype::identified, pe);
        published.push_back({"PEER_IDENTIFIED", peer_event::codec::encode(pe)});
        break;
      }
      case 2:
        (void)lb.publish<trace_event>(trace_event::subtype::hit, {i});
        published.push_back({"TRACE", ""});
        break;
      default: {
        const peer_event::safe_part pe{"edge" + std::to_string(i % 3), i};
        (void)lb.publish<peer_event>(peer_event::subtype::lost, pe);
        published.push_back({"PEER_LOST", peer_event::codec::encode(pe)});
        break;
      }
    }
  }
  // The first publish was SERVER_UP: the family handler ran first, then the tap.
  expect(order.size() >= 2 && order[0] == "health UP" && order[1] == "tap SERVER_UP",
         "the sync wildcard tap did not run after the family's handler");

  // Shutdown: the logger gets its pending events, then on_end; the bridge pops END last.
  bus.shutdown();
  bridge.join();

  // ---- Checks ---------------------------------------------------------------------------------
  const std::size_t replays = 2;
  expect(logger_ends.load() == 1 && logger_why.load() == herald::end_reason::shutdown,
         "the logger did not hear END once, for the shutdown");
  expect(log.size() == replays + published.size(), "the logger missed events");
  if (log.size() == replays + published.size()) {
    expect(log[0].type == "SERVER_UP" && log[0].text == "server=3 weight=30" &&
               log[1].type == "SERVER_DOWN" && log[1].text == "server=2 weight=0",
           "the logger's replays are not the last UP and DOWN, in subtype order");
    // The replays keep the numbers of the publishes they repeat: UP was the third (3), DOWN
    // the second (2); the live events follow from 4.
    expect(log[0].sequence == 3 && log[1].sequence == 2, "the replays lost their original numbers");
    for (std::size_t i = 0; i < published.size(); ++i) {
      const audit_line& line = log[replays + i];
      const std::string want = published[i].text.empty() ? "<no_codec>" : published[i].text;
      if (line.type != published[i].type || line.text != want ||
          line.sequence <= log[replays + i - 1].sequence) {
        expect(false, "a log line differs from its publish, or is out of order");
        break;
      }
    }
  }
  const herald::subscription_stats ls = logger->stats();
  expect(ls.published == ls.delivered + ls.dropped() + ls.discarded && ls.queued == 0,
         "the logger's counters do not add up");

  const herald::subscription_stats bs = bridge_sub->stats();
  expect(bridge_why == herald::end_reason::shutdown, "the bridge's END has the wrong reason");
  expect(bs.published == replays + published.size(), "the bridge was not offered every event");
  expect(bs.published == bs.delivered + bs.dropped() + bs.discarded && bs.queued == 0,
         "the bridge's counters do not add up");
  expect(sent.size() + kept_local == bs.delivered, "the bridge lost events it popped");
  if (bs.dropped() == 0) {
    std::vector<std::string> want{"herald.SERVER.UP server=3 weight=30",
                                  "herald.SERVER.DOWN server=2 weight=0"};
    std::uint64_t local = 0;
    for (const expected_event& e : published) {
      if (e.text.empty()) {
        ++local;
        continue;
      }
      const std::size_t cut = e.type.find('_');
      want.push_back("herald." + e.type.substr(0, cut) + "." + e.type.substr(cut + 1) + " " +
                     e.text);
    }
    expect(sent == want, "the bridge did not send exactly the events with a codec, in order");
    expect(kept_local == local, "the bridge did not keep exactly the TRACE events local");
  }

  std::printf("audit log (%zu lines), the first ones:\n", log.size());
  for (std::size_t i = 0; i < log.size() && i < 6; ++i) {
    std::printf("  #%llu %s %s\n", static_cast<unsigned long long>(log[i].sequence),
                log[i].type.c_str(), log[i].text.c_str());
  }
  std::printf("bridge: %zu sent, %llu kept local (no codec), %llu dropped (bound %zu)\n",
              sent.size(), static_cast<unsigned long long>(kept_local),
              static_cast<unsigned long long>(bs.dropped()), bridge_opt.backpressure.bound);
  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("wildcard subscriptions behaved as documented\n");
  return 0;
}
