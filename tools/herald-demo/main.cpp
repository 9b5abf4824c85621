// herald-demo: a simulated load balancer publishing HAProxy-style SERVER events through herald
// to subscribers in every delivery mode, then a summary per subscription that must add up.
//
//   simulation.*   backends, servers, flapping health checks, the publisher threads
//   subscribers.*  one class per subscriber (sync, async, queue, bounded, late + stateful)
//   report.*       console, latency histograms, the summary table and the checks
//   main.cpp       options, wiring, the progress line, shutdown, the report
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "herald/bus.hpp"
#include "herald/scheduler.hpp"
#include "options.hpp"
#include "report.hpp"
#include "simulation.hpp"
#include "subscribers.hpp"

namespace herald_demo {
namespace {

using namespace std::chrono_literals;

constexpr auto progress_every = 250ms;
constexpr auto end_timeout = 20s;  // for ENDs after shutdown; only a bug makes it expire
constexpr std::chrono::microseconds slow_work{500};
constexpr std::size_t slow_bound = 16;

std::string progress_line(double elapsed, std::uint64_t total, double rate_now, double rate_avg,
                          std::uint64_t dropped) {
  return strprintf(
      "%6.2f s  published %s events  %s/s now  %s/s average  slow-consumer "
      "dropped %s",
      elapsed, with_commas(total).c_str(),
      with_commas(static_cast<std::uint64_t>(rate_now)).c_str(),
      with_commas(static_cast<std::uint64_t>(rate_avg)).c_str(), with_commas(dropped).c_str());
}

int run(const options& opt) {
  console out(::isatty(STDOUT_FILENO) == 1);
  const auto duration = std::chrono::duration<double>(opt.duration_s);
  const double view_joins_at = opt.duration_s * 0.4;  // seconds after the start
  const auto table_every = opt.duration_s >= 3 ? 1000ms : 400ms;

  // The slow consumer's own thread, outside the bus: its sleeps hold up nobody else. Declared
  // first: it must outlive every task bound to it, so the bus and its subscriptions go first.
  herald::scheduler_options slow_options;
  slow_options.threads = 1;
  slow_options.name = "slow";
  herald::scheduler slow_thread(std::move(slow_options));
  herald::bus bus({.threads = 2});
  simulation sim(bus, opt);

  const auto t0 = clock_type::now();
  audit_logger audit(t0);
  stats_aggregator stats;
  live_table table(out, t0, table_every);
  slow_consumer slow(slow_work, slow_bound);
  state_view view(sim, t0);

  out.block(strprintf(
      "herald-demo: a load balancer with %zu backends and %u servers; %u publisher threads, "
      "%s events/s for %.1f s\n"
      "SERVER events go to each server's own list and to the global list. Subscribers:\n"
      "  audit          sync    global    reads the live server (unsafe part) inside publish\n"
      "  stats          async   global    aggregates on herald's worker threads\n"
      "  live-table     queue   global    a tasklet drains the queue, prints a table\n"
      "  slow-consumer  async   global    %lld us per event on its own thread; queue bound "
      "%zu, drops the oldest\n"
      "  state-view     async   per server  joins at %.1f s; last values (stateful family) "
      "tell it the current state\n\n",
      sim.backend_count(), opt.servers, sim.publisher_threads(),
      with_commas(static_cast<std::uint64_t>(opt.rate)).c_str(), opt.duration_s,
      static_cast<long long>(slow_work.count()), slow_bound, view_joins_at));

  auto fail_subscribe = [&](const char* who, herald::errc e) {
    std::fprintf(stderr, "herald-demo: %s could not subscribe: %.*s\n", who,
                 static_cast<int>(herald::to_string(e).size()), herald::to_string(e).data());
    return 1;
  };
  if (auto r = audit.subscribe(bus.global()); !r) {
    return fail_subscribe("audit", r.error());
  }
  if (auto r = stats.subscribe(bus.global()); !r) {
    return fail_subscribe("stats", r.error());
  }
  if (auto r = table.subscribe(bus); !r) {
    return fail_subscribe("live-table", r.error());
  }
  if (auto r = slow.subscribe(bus.global(), slow_thread.executor()); !r) {
    return fail_subscribe("slow-consumer", r.error());
  }

  // ---- run: publishers go, the main thread shows progress and brings in the late view.
  check_list checks;
  sim.start();
  const auto start = clock_type::now();
  const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(duration);
  const auto view_time = start + std::chrono::duration_cast<clock_type::duration>(
                                     std::chrono::duration<double>(view_joins_at));
  auto next = start + progress_every;
  auto last = start;
  std::uint64_t last_total = 0;
  unsigned tick = 0;
  for (;;) {
    std::this_thread::sleep_until(
        std::min({next, deadline, view.started() ? deadline : view_time}));
    const auto now = clock_type::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    if (!view.started() && now >= view_time) {
      const auto r = view.start(bus.global());
      checks.expect(r.has_value(), "state-view subscribed to the global list's ADD events");
      out.block(
          strprintf("\n[%5.1f s] state-view joins late: it follows %zu server lists and "
                    "gets their last values first\n",
                    elapsed, view.subscriptions()));
    }
    if (now >= deadline) {
      break;
    }
    if (now < next) {
      continue;
    }
    const std::uint64_t total = sim.counts().total();
    const double interval = std::chrono::duration<double>(now - last).count();
    ++tick;
    // On a terminal the line is redrawn every tick; in a log, one line a second.
    if (out.is_tty() || tick % 4 == 0) {
      out.progress(progress_line(
          elapsed, total, interval > 0 ? static_cast<double>(total - last_total) / interval : 0.0,
          elapsed > 0 ? static_cast<double>(total) / elapsed : 0.0, slow.dropped_approx()));
    }
    last = now;
    last_total = total;
    next += progress_every;
  }
  table.stop_printing();
  sim.stop();
  const double ran_for = std::chrono::duration<double>(clock_type::now() - start).count();
  const published_counts published = sim.counts();
  out.progress(strprintf(
      "%6.2f s  published %s events in all (%s/s on average); publishers "
      "stopped, shutting the bus down",
      ran_for, with_commas(published.total()).c_str(),
      with_commas(static_cast<std::uint64_t>(static_cast<double>(published.total()) / ran_for))
          .c_str()));
  out.end_progress();

  // ---- shutdown: END everywhere, pending events delivered; wait for every consumer's end.
  bus.shutdown();
  const bool table_ended = table.wait_end(end_timeout);
  const bool stats_ended = stats.wait_end(end_timeout);
  const bool slow_ended = slow.wait_end(end_timeout);
  const bool view_ended = !view.started() || view.wait_end(end_timeout);

  // ---- report
  const std::uint64_t total = published.total();
  checks.expect(published.publish_errors == 0,
                strprintf("every publish succeeded (%s failed)",
                          with_commas(published.publish_errors).c_str()));
  std::vector<summary_row> rows{audit.row(total), stats.row(), table.row(), slow.row()};
  if (view.started()) {
    rows.push_back(view.row());
  }
  std::string report = "\nsummary per subscription (latency: publish to handling)\n";
  report += render_summary(rows, checks);
  for (const auto& r : rows) {
    checks.expect(r.stats.queued == 0 && r.stats.discarded == 0,
                  r.name + ": nothing left queued or discarded after a draining shutdown");
  }

  const auto st = stats.stats();
  checks.expect(st.published == total,
                strprintf("stats: herald counted %s events published to it, the simulation "
                          "published %s to the global list",
                          with_commas(st.published).c_str(), with_commas(total).c_str()));
  checks.expect(stats.by_subtype() == published.by_subtype,
                "stats: its count of each event kind matches the simulation's");
  checks.expect(stats_ended && stats.ends().ends() == 1 && stats.ends().destructions() == 1,
                strprintf("stats: END heard %zu time(s), handler destroyed %zu time(s)",
                          stats.ends().ends(), stats.ends().destructions()));
  checks.expect(stats.calls() == st.delivered, "stats: handler calls = herald's delivered counter");

  const auto tq = table.stats();
  checks.expect(tq.published == total, "live-table: every event published reached its queue");
  checks.expect(table.popped() == tq.delivered, "live-table: items popped = delivered counter");
  const bool after_end = table_ended && table.pop_after_end();
  checks.expect(table_ended && table.ends() == 1 && !after_end &&
                    table.end_reason() == herald::end_reason::shutdown,
                strprintf("live-table: END popped %d time(s), reason shutdown, nothing after it",
                          table.ends()));
  checks.expect(table.sequence().missing(tq.published) == 0 && table.sequence().anomalies() == 0 &&
                    table.sequence().highest() == tq.published,
                "live-table: received each sub_sequence() number from 1 to published once "
                "(unbounded queue)");

  const auto sq = slow.stats();
  checks.expect(sq.published == total, "slow-consumer: every event published reached it");
  const std::uint64_t never_arrived = slow.sequence().missing(sq.published);
  // drop_oldest drops the new event instead when no queued one can be taken (the consumer
  // holds them all, or a push is half done): both counters, no other.
  checks.expect(
      never_arrived == sq.dropped() && sq.dropped_oldest + sq.dropped_newest == sq.dropped() &&
          slow.sequence().anomalies() == 0 && slow.sequence().highest() <= sq.published,
      strprintf("slow-consumer: sub_sequence() numbers that never arrived (%s) = "
                "dropped (%s oldest + %s newest)",
                with_commas(never_arrived).c_str(), with_commas(sq.dropped_oldest).c_str(),
                with_commas(sq.dropped_newest).c_str()));
  checks.expect(sq.high_water <= slow.bound(),
                strprintf("slow-consumer: its queue never held more than %zu events (high "
                          "water %s)",
                          slow.bound(), with_commas(sq.high_water).c_str()));
  checks.expect(slow_ended && slow.ends().ends() == 1 && slow.ends().destructions() == 1,
                strprintf("slow-consumer: END heard %zu time(s), handler destroyed %zu time(s)",
                          slow.ends().ends(), slow.ends().destructions()));

  std::string view_detail;
  if (view.started()) {
    checks.expect(view_ended && view.ends().ends() == view.subscriptions() &&
                      view.ends().destructions() == view.follow_calls(),
                  strprintf("state-view: END heard by each of its %zu subscriptions, each of its "
                            "%zu handlers destroyed once",
                            view.subscriptions(), view.follow_calls()));
    checks.expect(
        view.replayed() > 0 && view.replayed_late() == 0,
        strprintf("state-view: received %s last values, none after a newer event "
                  "of its server (%s did)",
                  with_commas(view.replayed()).c_str(), with_commas(view.replayed_late()).c_str()));
    const std::size_t diff = view.compare(sim, view_detail);
    checks.expect(diff == 0, strprintf("state-view: matches the simulation's final state of "
                                       "every server (%zu differences)",
                                       diff));
  }

  report += "\nwhat the subscribers saw\n";
  report += audit.describe();
  report += stats.describe();
  report += table.describe();
  report += slow.describe();
  if (view.started()) {
    report += view.describe();
    report += view_detail;
  }
  report += "\nchecks\n";
  report += checks.render();
  report += checks.all_passed() ? strprintf("all %zu checks passed\n", checks.size())
                                : std::string("SOME CHECKS FAILED\n");
  out.block(report);
  return checks.all_passed() ? 0 : 1;
}

}  // namespace
}  // namespace herald_demo

int main(int argc, char** argv) {
  herald_demo::options opt;
  std::string error;
  if (!herald_demo::parse_options(argc, argv, opt, error)) {
    std::fprintf(stderr, "herald-demo: %s\nTry '%s --help'.\n", error.c_str(), argv[0]);
    return 2;
  }
  if (opt.help) {
    std::fputs(herald_demo::usage(argv[0]).c_str(), stdout);
    return 0;
  }
  return herald_demo::run(opt);
}
