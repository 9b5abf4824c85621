#include "subscribers.hpp"

#include <algorithm>
#include <cstdio>
#include <thread>

namespace herald_demo {
namespace {

herald::result<void> as_void(const herald::result<herald::subscription>& r) {
  if (!r) {
    return herald::unexpected(r.error());
  }
  return {};
}

double seconds_since(clock_type::time_point t0, clock_type::time_point t) {
  return std::chrono::duration<double>(t - t0).count();
}

// Worst first: DOWN, then in maintenance, draining, and UP and ready last.
int severity(const server_event::safe_part& s) {
  if (s.state == op_state::down) {
    return 0;
  }
  if (s.admin == admin_state::maint) {
    return 1;
  }
  if (s.admin == admin_state::drain) {
    return 2;
  }
  return 3;
}

}  // namespace

// ---- end_counter ------------------------------------------------------------------------------

void end_counter::ended(herald::end_reason why) {
  std::lock_guard lock(mu_);
  ++ends_.at(static_cast<std::size_t>(why));
}

void end_counter::destroyed() {
  // Notified under the lock: the waiter may destroy this object as soon as it sees the count.
  std::lock_guard lock(mu_);
  ++destroyed_;
  cv_.notify_all();
}

bool end_counter::wait_destroyed(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return destroyed_ >= n; });
}

std::size_t end_counter::ends() const {
  std::lock_guard lock(mu_);
  std::size_t n = 0;
  for (auto e : ends_) {
    n += e;
  }
  return n;
}

std::size_t end_counter::ends_for(herald::end_reason why) const {
  std::lock_guard lock(mu_);
  return ends_.at(static_cast<std::size_t>(why));
}

std::size_t end_counter::destructions() const {
  std::lock_guard lock(mu_);
  return destroyed_;
}

// ---- sequence_tracker -------------------------------------------------------------------------

void sequence_tracker::saw(std::uint64_t n) {
  if (n < base_) {
    ++anomalies_;  // 0, or a number settled long ago
    return;
  }
  const auto i = static_cast<std::size_t>(n - base_);
  if (i >= seen_.size()) {
    seen_.resize(std::max(i + 1, seen_.size() * 2));
  }
  if (seen_[i]) {
    ++anomalies_;  // received twice
    return;
  }
  seen_[i] = true;
  ++received_;
  if (n < highest_) {
    ++out_of_order_;
  }
  highest_ = std::max(highest_, n);
  if (highest_ - base_ >= 4 * window) {
    settle();
  }
}

// Settles every number more than `window` below the highest: counts the missing ones and
// their runs, then drops them from the bitmap.
void sequence_tracker::settle() {
  const auto count = static_cast<std::size_t>(highest_ - window - base_);
  for (std::size_t i = 0; i < count; ++i) {
    const bool absent = !seen_[i];
    if (absent) {
      ++settled_missing_;
      if (!settled_ends_missing_) {
        ++settled_runs_;
      }
    }
    settled_ends_missing_ = absent;
  }
  seen_.erase(seen_.begin(), seen_.begin() + static_cast<std::ptrdiff_t>(count));
  base_ += count;
}

std::uint64_t sequence_tracker::missing(std::uint64_t last) const noexcept {
  std::uint64_t m = settled_missing_;
  for (std::uint64_t n = base_; n <= last; ++n) {
    const std::uint64_t i = n - base_;
    if (i >= seen_.size() || !seen_[static_cast<std::size_t>(i)]) {
      ++m;
    }
  }
  return m;
}

std::uint64_t sequence_tracker::missing_runs(std::uint64_t last) const noexcept {
  std::uint64_t runs = settled_runs_;
  bool in_run = settled_ends_missing_;
  for (std::uint64_t n = base_; n <= last; ++n) {
    const std::uint64_t i = n - base_;
    const bool absent = i >= seen_.size() || !seen_[static_cast<std::size_t>(i)];
    if (absent && !in_run) {
      ++runs;
    }
    in_run = absent;
  }
  return runs;
}

// ---- audit_logger -----------------------------------------------------------------------------

herald::result<void> audit_logger::subscribe(herald::sub_list& global) {
  auto r = global.subscribe_sync<server_event>(
      herald::type_of<server_event>(), [this](herald::sync_event<server_event>& e) { on_event(e); },
      {.name = "audit"});
  if (r) {
    sub_ = *r;
  }
  return as_void(r);
}

void audit_logger::on_event(herald::sync_event<server_event>& e) {
  calls_.fetch_add(1, std::memory_order_relaxed);
  const auto what = e.subtype();
  if (what == server_subtype::check || what == server_subtype::state ||
      what == server_subtype::up) {
    return;  // routine; the audit trail keeps the rest
  }
  const server* live = e.unsafe() != nullptr ? e.unsafe()->live : nullptr;
  if (live == nullptr) {
    without_live_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The live object, read inside the publish: the connections open right now.
  const int conns = live->connections();
  const auto& s = e.safe();
  if (conns > 0 && (what == server_subtype::down || what == server_subtype::del ||
                    (what == server_subtype::admin && s.admin == admin_state::maint))) {
    cuts_.fetch_add(1, std::memory_order_relaxed);
    connections_cut_.fetch_add(static_cast<std::uint64_t>(conns), std::memory_order_relaxed);
  }
  std::string detail;
  if (what == server_subtype::admin) {
    detail = std::string("admin ") + std::string(to_string(s.admin));
  } else if (what == server_subtype::inetaddr) {
    detail = std::string("now at ") + std::string(s.address.view());
  } else {
    detail = std::string(s.address.view());
  }
  std::string line = strprintf(
      "%6.2f s  SERVER_%-8s %s/%s  %s, %d connections open", seconds_since(t0_, clock_type::now()),
      std::string(name_of(what)).c_str(), std::string(s.backend.view()).c_str(),
      std::string(s.name.view()).c_str(), detail.c_str(), conns);
  std::lock_guard lock(mu_);
  ++notable_;
  recent_.push_back(std::move(line));
  if (recent_.size() > 4) {
    recent_.pop_front();
  }
}

summary_row audit_logger::row(std::uint64_t published) const {
  summary_row r;
  r.name = "audit";
  r.mode = "sync";
  r.stats.published = published;
  r.stats.delivered = calls();
  return r;
}

std::string audit_logger::describe() const {
  std::string out = strprintf(
      "  audit (sync): read the live server in %s publishes; %s DOWN, MAINT or DEL events cut "
      "%s open connections; %s events came without the live object\n",
      with_commas(calls()).c_str(), with_commas(cuts_.load()).c_str(),
      with_commas(connections_cut_.load()).c_str(), with_commas(without_live_.load()).c_str());
  std::lock_guard lock(mu_);
  out += strprintf("    last %zu of %s audit entries:\n", recent_.size(),
                   with_commas(notable_).c_str());
  for (const auto& line : recent_) {
    out += "      " + line + "\n";
  }
  return out;
}

// ---- stats_aggregator -------------------------------------------------------------------------

herald::result<void> stats_aggregator::subscribe(herald::sub_list& global) {
  auto r = global.subscribe_async<server_event>(herald::type_of<server_event>(),
                                                forwarding_handler<stats_aggregator>(this, &ends_),
                                                {.name = "stats"});
  if (r) {
    sub_ = *r;
  }
  return as_void(r);
}

void stats_aggregator::on_event(herald::async_event<server_event>& e) {
  latency_.record(clock_type::now() - e.when());
  ++calls_;
  ++by_subtype_[index_of(e.subtype())];
  const auto& s = e.safe();
  if (e.subtype() == server_subtype::check) {
    checks_failed_ += s.check_ok ? 0 : 1;
    check_ms_sum_ += s.check_ms;
  } else if (e.subtype() == server_subtype::down) {
    const auto backend = s.backend.view();
    auto it = downs_by_backend_.find(backend);
    if (it == downs_by_backend_.end()) {
      it = downs_by_backend_.emplace(std::string(backend), 0).first;
    }
    ++it->second;
  }
}

summary_row stats_aggregator::row() const { return {"stats", "async", sub_.stats(), latency_}; }

std::string stats_aggregator::describe() const {
  const auto n = [&](server_subtype s) { return with_commas(by_subtype_[index_of(s)]); };
  const std::uint64_t checks = by_subtype_[index_of(server_subtype::check)];
  std::string out = strprintf(
      "  stats (async): %s checks (%.1f%% failed, %.1f ms on average), %s DOWN and %s UP, "
      "%s admin and %s address changes, %s servers added and %s removed\n",
      with_commas(checks).c_str(),
      checks == 0 ? 0.0 : 100.0 * static_cast<double>(checks_failed_) / static_cast<double>(checks),
      checks == 0 ? 0.0 : static_cast<double>(check_ms_sum_) / static_cast<double>(checks),
      n(server_subtype::down).c_str(), n(server_subtype::up).c_str(),
      n(server_subtype::admin).c_str(), n(server_subtype::inetaddr).c_str(),
      n(server_subtype::add).c_str(), n(server_subtype::del).c_str());
  out += "    DOWN per backend:";
  for (const auto& [backend, downs] : downs_by_backend_) {
    out += strprintf(" %s %s", backend.c_str(), with_commas(downs).c_str());
  }
  out += "\n";
  return out;
}

// ---- slow_consumer ----------------------------------------------------------------------------

herald::result<void> slow_consumer::subscribe(herald::sub_list& global, herald::executor_ref ex) {
  herald::subscribe_options opt{.name = "slow-consumer", .executor = ex};
  opt.backpressure.bound = bound_;
  opt.backpressure.policy = herald::overflow_policy::drop_oldest;
  auto r = global.subscribe_async<server_event>(
      herald::type_of<server_event>(), forwarding_handler<slow_consumer>(this, &ends_), opt);
  if (r) {
    sub_ = *r;
  }
  return as_void(r);
}

void slow_consumer::on_event(herald::async_event<server_event>& e) {
  latency_.record(clock_type::now() - e.when());
  ++calls_;
  sequence_.saw(e.sub_sequence());
  std::this_thread::sleep_for(work_);  // the slow part
}

std::uint64_t slow_consumer::dropped_approx() const noexcept {
  return sub_ ? sub_.stats().dropped() : 0;
}

summary_row slow_consumer::row() const {
  return {"slow-consumer", strprintf("async, bound %zu", bound_), sub_.stats(), latency_};
}

std::string slow_consumer::describe() const {
  const auto st = sub_.stats();
  return strprintf(
      "  slow-consumer (async, %s us per event on its own thread, queue bound %zu, drop "
      "oldest): handled %s of %s events; %s dropped: %s of the oldest queued, %s new ones "
      "when no queued event could be taken (queue high water %s); %s of its sub_sequence() "
      "numbers never arrived, in %s gaps\n",
      std::to_string(work_.count()).c_str(), bound_, with_commas(calls_).c_str(),
      with_commas(st.published).c_str(), with_commas(st.dropped()).c_str(),
      with_commas(st.dropped_oldest).c_str(), with_commas(st.dropped_newest).c_str(),
      with_commas(st.high_water).c_str(), with_commas(sequence_.missing(st.published)).c_str(),
      with_commas(sequence_.missing_runs(st.published)).c_str());
}

// ---- live_table -------------------------------------------------------------------------------

herald::result<void> live_table::subscribe(herald::bus& bus) {
  task_ = bus.workers().make_tasklet([this] { drain(); });
  next_print_ = clock_type::now() + every_;
  auto r = bus.global().subscribe_queue<server_event>(herald::type_of<server_event>(), queue_,
                                                      herald::queue_notify::wake(task_),
                                                      {.name = "live-table"});
  if (r) {
    sub_ = *r;
  }
  return as_void(r);
}

void live_table::drain() {
  while (auto item = queue_.pop()) {
    if (item->is_end()) {
      reason_ = item->end_reason();
      // The last touch of this object: once the main thread sees END it may destroy it.
      // (herald wakes the tasklet no more after END; it holds its own references.)
      std::lock_guard lock(end_mu_);  // notified under the lock, as in end_counter
      ends_.fetch_add(1, std::memory_order_release);
      end_cv_.notify_all();
      return;
    }
    const auto now = clock_type::now();
    latency_.record(now - item->when());
    ++popped_;
    sequence_.saw(item->sub_sequence());
    const auto& s = item->safe();
    if (item->subtype() == server_subtype::del) {
      rows_.erase(s.server_id);
      continue;
    }
    auto& row = rows_[s.server_id];
    if (s.version > row.info.version) {
      row.info = s;
    }
    if (item->subtype() == server_subtype::down) {
      ++row.flaps;
    }
  }
  const auto now = clock_type::now();
  if (now >= next_print_ && printing_.load(std::memory_order_relaxed)) {
    print(now);
    next_print_ = now + every_;
  }
}

void live_table::print(clock_type::time_point now) {
  std::array<std::size_t, 4> by_severity{};
  std::vector<const row_state*> order;
  for (const auto& [id, row] : rows_) {
    ++by_severity.at(static_cast<std::size_t>(severity(row.info)));
    order.push_back(&row);
  }
  std::sort(order.begin(), order.end(), [](const row_state* a, const row_state* b) {
    const int sa = severity(a->info);
    const int sb = severity(b->info);
    if (sa != sb) {
      return sa < sb;
    }
    if (a->flaps != b->flaps) {
      return a->flaps > b->flaps;
    }
    return a->info.server_id < b->info.server_id;
  });
  constexpr std::size_t shown = 6;
  std::string out = strprintf(
      "\n[%5.1f s] live table (queue subscriber, %s events so far): %zu servers: %zu UP, "
      "%zu DOWN, %zu MAINT, %zu DRAIN\n",
      seconds_since(t0_, now), with_commas(popped_).c_str(), rows_.size(), by_severity[3],
      by_severity[0], by_severity[1], by_severity[2]);
  out += strprintf("    %-10s %-8s %-5s %-6s %-22s %5s  %s\n", "server", "backend", "state",
                   "admin", "address", "flaps", "last check");
  for (std::size_t i = 0; i < order.size() && i < shown; ++i) {
    const auto& s = order[i]->info;
    out += strprintf("    %-10s %-8s %-5s %-6s %-22s %5u  %s %u ms\n",
                     std::string(s.name.view()).c_str(), std::string(s.backend.view()).c_str(),
                     std::string(to_string(s.state)).c_str(),
                     std::string(to_string(s.admin)).c_str(), std::string(s.address.view()).c_str(),
                     order[i]->flaps, s.check_ok ? "ok" : "FAILED", unsigned{s.check_ms});
  }
  if (order.size() > shown) {
    out += strprintf("    ... and %zu more\n", order.size() - shown);
  }
  ++tables_printed_;
  out_.block(out);
}

bool live_table::wait_end(std::chrono::milliseconds timeout) {
  std::unique_lock lock(end_mu_);
  return end_cv_.wait_for(lock, timeout, [&] { return ends_.load(std::memory_order_acquire) > 0; });
}

summary_row live_table::row() const { return {"live-table", "queue", queue_.stats(), latency_}; }

std::string live_table::describe() const {
  const char* why = "?";
  switch (reason_) {
    case herald::end_reason::unsubscribed:
      why = "unsubscribed";
      break;
    case herald::end_reason::list_destroyed:
      why = "list destroyed";
      break;
    case herald::end_reason::shutdown:
      why = "shutdown";
      break;
    case herald::end_reason::overflow:
      why = "overflow";
      break;
  }
  return strprintf(
      "  live-table (queue, drained by a tasklet): popped %s events and END x%d (reason: %s); "
      "printed %u tables; %zu servers at the end; %s events arrived after one with a higher "
      "sub_sequence() (publishers racing)\n",
      with_commas(popped_).c_str(), ends(), why, tables_printed_, rows_.size(),
      with_commas(sequence_.out_of_order()).c_str());
}

// ---- state_view -------------------------------------------------------------------------------

// The handler of one per-server subscription.
//
// It checks the order promised for last values: they come before any newer event. A server's
// list has one publisher (its owner thread) and delivery is FIFO, so events published after
// the subscribe call returned ("surely live") carry versions above every replayed value;
// once one of them arrived, an event with a version not above every version seen so far would
// be a last value delivered too late. (Events published while the subscribe call runs may be
// replayed or delivered live, so only those stamped after it returned are used.)
class state_view::handler {
 public:
  handler(state_view* view, clock_type::time_point subscribed_at,
          std::shared_ptr<std::atomic<clock_type::rep>> returned_at) noexcept
      : view_(view), subscribed_at_(subscribed_at), returned_at_(std::move(returned_at)) {}
  handler(handler&& o) noexcept
      : view_(std::exchange(o.view_, nullptr)),
        subscribed_at_(o.subscribed_at_),
        returned_at_(std::move(o.returned_at_)) {}
  handler(const handler&) = delete;
  handler& operator=(const handler&) = delete;
  handler& operator=(handler&&) = delete;
  ~handler() {
    if (view_ != nullptr) {
      view_->ends_.destroyed();
    }
  }
  void operator()(herald::async_event<server_event>& e) {
    const std::uint32_t version = e.safe().version;
    const bool late = live_seen_ && version <= max_version_;
    view_->on_event(e, e.when() < subscribed_at_, late);
    // acquire: pairs with the release store in follow(); 0 until the subscribe call returned.
    const clock_type::rep returned = returned_at_->load(std::memory_order_acquire);
    live_seen_ = live_seen_ || (returned != 0 && e.when().time_since_epoch().count() > returned);
    max_version_ = std::max(max_version_, version);
  }
  void on_end(herald::end_reason why) { view_->ends_.ended(why); }

 private:
  state_view* view_;
  clock_type::time_point subscribed_at_;
  std::shared_ptr<std::atomic<clock_type::rep>> returned_at_;
  bool live_seen_ = false;         // an event published after the subscribe call arrived
  std::uint32_t max_version_ = 0;  // the highest version seen
};

herald::result<void> state_view::start(herald::sub_list& global) {
  started_at_ = clock_type::now();
  // The watcher first, then the servers alive: a server added meanwhile is found by one or
  // both (the second subscription to its list is refused by id).
  auto w = global.subscribe_sync<server_event>(
      herald::type_of<server_event>(server_subtype::add),
      [this](herald::sync_event<server_event>& e) { on_add(e); }, {.name = "state-view-add"});
  if (!w) {
    return herald::unexpected(w.error());
  }
  watcher_ = *w;
  for (const auto& s : sim_.servers()) {
    follow(*s);
  }
  return {};
}

void state_view::on_add(herald::sync_event<server_event>& e) {
  watcher_calls_.fetch_add(1, std::memory_order_relaxed);
  if (e.unsafe() != nullptr && e.unsafe()->live != nullptr) {
    follow(*e.unsafe()->live);  // alive for the duration of this publish
  } else if (auto s = sim_.find(e.safe().server_id)) {
    follow(*s);  // a replayed ADD carries no live object
  }
}

void state_view::follow(server& s) {
  follow_calls_.fetch_add(1, std::memory_order_relaxed);
  // Never under mu_: subscribing may wait for publishes to finish, and a publish may be
  // running on_add(), which ends up here.
  auto returned_at = std::make_shared<std::atomic<clock_type::rep>>(0);
  const std::uint64_t id = herald::make_id("state-view", std::to_string(s.id()));
  auto r = s.events().subscribe_async<server_event>(herald::type_of<server_event>(),
                                                    handler(this, clock_type::now(), returned_at),
                                                    {.id = id, .name = "state-view"});
  // release: pairs with the handler's acquire load.
  returned_at->store(clock_type::now().time_since_epoch().count(), std::memory_order_release);
  if (!r) {
    if (r.error() == herald::errc::duplicate_id) {
      follow_duplicates_.fetch_add(1, std::memory_order_relaxed);
    } else {
      follow_gone_.fetch_add(1, std::memory_order_relaxed);  // list_destroyed, shutting_down
    }
    return;
  }
  std::lock_guard lock(mu_);
  subs_.push_back(std::move(*r));
}

void state_view::on_event(herald::async_event<server_event>& e, bool older, bool late) {
  const auto now = clock_type::now();
  const auto& s = e.safe();
  std::lock_guard lock(mu_);
  ++calls_;
  replayed_late_ += late ? 1 : 0;
  if (older) {
    ++replayed_;  // published before the subscribe call: a last value (or racing it)
  } else {
    latency_.record(now - e.when());
  }
  auto [it, fresh] = servers_.try_emplace(s.server_id);
  if (!fresh && s.version <= it->second.info.version) {
    ++stale_;  // a replayed value older than one already seen
    return;
  }
  it->second.info = s;
  it->second.removed = e.subtype() == server_subtype::del;
}

bool state_view::wait_end(std::chrono::milliseconds timeout) {
  // One handler object per follow() call, destroyed once: with its subscription, or at once
  // when the subscription was refused.
  return ends_.wait_destroyed(follow_calls(), timeout);
}

std::size_t state_view::subscriptions() const {
  std::lock_guard lock(mu_);
  return subs_.size();
}

std::size_t state_view::compare(const simulation& sim, std::string& detail) const {
  std::lock_guard lock(mu_);
  std::size_t differences = 0;
  auto note = [&](const std::string& what) {
    if (++differences <= 3) {
      detail += "    " + what + "\n";
    }
  };
  std::unordered_map<std::uint32_t, bool> alive;
  for (const auto& srv : sim.servers()) {
    const auto& truth = srv->info();
    alive.emplace(truth.server_id, true);
    const auto it = servers_.find(truth.server_id);
    const std::string name(truth.name.view());
    if (it == servers_.end() || it->second.removed) {
      note(name + ": alive, but the view does not show it");
      continue;
    }
    const auto& seen = it->second.info;
    if (seen.version != truth.version || seen.state != truth.state || seen.admin != truth.admin ||
        !(seen.address == truth.address)) {
      note(strprintf(
          "%s: the view has version %u (%s, %s, %s), the server is at version %u "
          "(%s, %s, %s)",
          name.c_str(), seen.version, std::string(to_string(seen.state)).c_str(),
          std::string(to_string(seen.admin)).c_str(), std::string(seen.address.view()).c_str(),
          truth.version, std::string(to_string(truth.state)).c_str(),
          std::string(to_string(truth.admin)).c_str(), std::string(truth.address.view()).c_str()));
    }
  }
  for (const auto& [id, k] : servers_) {
    if (!k.removed && !alive.contains(id)) {
      note(std::string(k.info.name.view()) + ": removed, but the view shows it alive");
    }
  }
  return differences;
}

summary_row state_view::row() const {
  summary_row r;
  r.name = "state-view";
  std::lock_guard lock(mu_);
  r.mode = strprintf("async x%zu, late", subs_.size());
  for (const auto& sub : subs_) {
    const auto st = sub.stats();
    r.stats.published += st.published;
    r.stats.delivered += st.delivered;
    r.stats.dropped_newest += st.dropped_newest;
    r.stats.dropped_oldest += st.dropped_oldest;
    r.stats.dropped_ended += st.dropped_ended;
    r.stats.dropped_notify += st.dropped_notify;
    r.stats.discarded += st.discarded;
    r.stats.queued += st.queued;
    r.stats.high_water = std::max(r.stats.high_water, st.high_water);
  }
  r.latency = latency_;
  return r;
}

std::string state_view::describe() const {
  std::lock_guard lock(mu_);
  std::size_t alive = 0;
  for (const auto& [id, k] : servers_) {
    alive += k.removed ? 0 : 1;
  }
  return strprintf(
      "  state-view (async, joined at %.2f s): followed %zu server lists (%s more already "
      "followed, %s already gone); received %s events published before it subscribed (last "
      "values), "
      "%s events in all (%s older than what it knew); shows %zu servers alive; its ADD "
      "watcher (sync) ran %s times\n",
      started_at_ ? seconds_since(t0_, *started_at_) : 0.0, subs_.size(),
      with_commas(follow_duplicates_.load()).c_str(), with_commas(follow_gone_.load()).c_str(),
      with_commas(replayed_).c_str(), with_commas(calls_).c_str(), with_commas(stale_).c_str(),
      alive, with_commas(watcher_calls_.load()).c_str());
}

}  // namespace herald_demo
