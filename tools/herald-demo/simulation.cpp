#include "simulation.hpp"

#include <algorithm>
#include <cstdio>
#include <random>

namespace herald_demo {
namespace {

constexpr std::array<std::string_view, 4> backend_names{"web", "api", "static", "auth"};

// Health checks, HAProxy style: `fall` failures in a row take a server DOWN, `rise` successes
// bring it back UP.
constexpr unsigned fall = 3;
constexpr unsigned rise = 2;

// What a step does, by probability (the rest are health checks).
constexpr double p_replace = 0.003;      // DEL a server, ADD a new one in its backend
constexpr double p_admin_leave = 0.005;  // ADMIN: a ready server is drained or put in maintenance
constexpr double p_admin_back = 0.05;    // ADMIN: a drained or maintained server is ready again
constexpr double p_address = 0.01;       // INETADDR: the server moved

std::string make_address(std::size_t backend, unsigned host, unsigned port) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "10.%zu.%u.%u:%u", backend + 1, host / 250, host % 250 + 1, port);
  return buf;
}

}  // namespace

server::server(herald::bus& bus, std::uint32_t id, std::string_view backend, std::string_view name,
               std::string_view address)
    : events_(bus) {
  info_.server_id = id;
  info_.backend.assign(backend);
  info_.name.assign(name);
  info_.address.assign(address);
}

// The state of one publisher thread.
struct simulation::publisher {
  unsigned index = 0;
  std::mt19937_64 rng;
  std::vector<std::shared_ptr<server>> owned;
  std::vector<std::size_t> backend_of;  // parallel to owned
  std::vector<bool> flappy;             // parallel to owned: falls sick more often
  std::uint64_t events = 0;
  thread_counts* counts = nullptr;

  bool chance(double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < p; }
  unsigned below(unsigned n) { return std::uniform_int_distribution<unsigned>(0, n - 1)(rng); }
};

simulation::simulation(herald::bus& bus, const options& opt)
    : bus_(bus), opt_(opt), threads_(std::max(1U, std::min(opt.threads, opt.servers))) {
  const std::size_t nb = std::clamp<std::size_t>(opt.servers / 4, 1, backend_names.size());
  for (std::size_t b = 0; b < nb; ++b) {
    backends_.emplace_back(backend_names[b]);
  }
  per_backend_next_.assign(nb, 1);
  for (unsigned t = 0; t < threads_; ++t) {
    counts_.push_back(std::make_unique<thread_counts>());
  }
}

simulation::~simulation() { stop(); }

void simulation::start() {
  std::uint64_t seed = opt_.seed;
  if (seed == 0) {
    seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  for (unsigned t = 0; t < threads_; ++t) {
    workers_.emplace_back([this, t, seed] { run(t, seed + 0x9e3779b97f4a7c15ULL * (t + 1)); });
  }
}

void simulation::stop() {
  stopping_.store(true, std::memory_order_relaxed);
  for (auto& w : workers_) {
    w.join();
  }
  workers_.clear();
}

std::vector<std::shared_ptr<server>> simulation::servers() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<server>> out;
  out.reserve(registry_.size());
  for (const auto& [id, s] : registry_) {
    out.push_back(s);
  }
  return out;
}

std::shared_ptr<server> simulation::find(std::uint32_t id) const {
  std::lock_guard lock(mu_);
  const auto it = registry_.find(id);
  return it == registry_.end() ? nullptr : it->second;
}

published_counts simulation::counts() const noexcept {
  published_counts c;
  for (const auto& t : counts_) {
    for (std::size_t i = 0; i < c.by_subtype.size(); ++i) {
      c.by_subtype[i] += t->by_subtype[i].load(std::memory_order_relaxed);
    }
    c.publish_errors += t->publish_errors.load(std::memory_order_relaxed);
  }
  return c;
}

void simulation::publish(publisher& p, server& s, server_subtype what) {
  ++s.info_.version;
  server_event::unsafe_part live{&s};
  // HAProxy's order: the server's own list first, then the global list.
  const auto local = s.events_.publish<server_event>(what, s.info_, live);
  const auto global = bus_.global().publish<server_event>(what, s.info_, live);
  if (global) {
    p.counts->by_subtype[index_of(what)].fetch_add(1, std::memory_order_relaxed);
  }
  if (!local || !global) {
    p.counts->publish_errors.fetch_add(1, std::memory_order_relaxed);
  }
  ++p.events;
}

std::shared_ptr<server> simulation::add_server(publisher& p, std::size_t backend) {
  const std::uint32_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<server> s;
  {
    std::lock_guard lock(mu_);
    const std::string name = backends_[backend] + std::to_string(per_backend_next_[backend]++);
    s = std::make_shared<server>(bus_, id, backends_[backend], name,
                                 make_address(backend, p.below(60000), 8080));
    // In the registry before the ADD is published: whoever lists the servers after
    // subscribing to ADD misses none.
    registry_.emplace(id, s);
  }
  publish(p, *s, server_subtype::add);
  return s;
}

void simulation::remove_server(publisher& p, std::size_t slot) {
  const std::shared_ptr<server> s = p.owned[slot];
  publish(p, *s, server_subtype::del);  // sync handlers still see its open connections
  s->events_.destroy();  // ends every subscription to this server (HAProxy frees the list)
  std::lock_guard lock(mu_);
  registry_.erase(s->id());
}

void simulation::step(publisher& p) {
  const std::size_t slot = p.below(static_cast<unsigned>(p.owned.size()));
  server& s = *p.owned[slot];
  auto& info = s.info_;

  // Traffic: connections wander while the server takes traffic, drain otherwise.
  int conns = s.connections_.load(std::memory_order_relaxed);
  if (info.state == op_state::up && info.admin == admin_state::ready) {
    conns = std::clamp(conns + static_cast<int>(p.below(11)) - 5, 0, 500);
  } else {
    conns = conns / 2;
  }
  s.connections_.store(conns, std::memory_order_relaxed);

  if (p.chance(p_replace)) {
    const std::size_t backend = p.backend_of[slot];
    remove_server(p, slot);
    p.owned[slot] = add_server(p, backend);
    p.flappy[slot] = p.chance(0.25);
    return;
  }
  if (p.chance(info.admin == admin_state::ready ? p_admin_leave : p_admin_back)) {
    info.admin = info.admin != admin_state::ready ? admin_state::ready
                 : p.chance(0.6)                  ? admin_state::drain
                                                  : admin_state::maint;
    publish(p, s, server_subtype::admin);
    return;
  }
  if (p.chance(p_address)) {
    info.address.assign(
        make_address(p.backend_of[slot], p.below(60000), p.chance(0.5) ? 8080 : 8443));
    publish(p, s, server_subtype::inetaddr);
    return;
  }

  // A health check. A server falls sick now and then (flappy ones more often) and fails most
  // checks while sick.
  if (!s.sick_ && p.chance(p.flappy[slot] ? 0.02 : 0.002)) {
    s.sick_ = true;
  } else if (s.sick_ && p.chance(0.05)) {
    s.sick_ = false;
  }
  const bool ok = !p.chance(s.sick_ ? 0.7 : 0.01);
  info.check_ok = ok;
  info.check_ms = static_cast<std::uint16_t>(ok              ? 1 + p.below(30)
                                             : p.chance(0.5) ? 2000          // timeout
                                                             : p.below(3));  // refused
  publish(p, s, server_subtype::check);
  if (ok) {
    ++s.successes_in_row_;
    s.failures_in_row_ = 0;
  } else {
    ++s.failures_in_row_;
    s.successes_in_row_ = 0;
  }
  if (info.state == op_state::up && s.failures_in_row_ >= fall) {
    info.state = op_state::down;
    publish(p, s, server_subtype::down);
    publish(p, s, server_subtype::state);
  } else if (info.state == op_state::down && s.successes_in_row_ >= rise) {
    info.state = op_state::up;
    publish(p, s, server_subtype::up);
    publish(p, s, server_subtype::state);
  }
}

void simulation::run(unsigned index, std::uint64_t seed) {
  publisher p;
  p.index = index;
  p.rng.seed(seed);
  p.counts = counts_[index].get();
  // Servers are dealt to the publishers round robin, and to the backends in turn.
  for (unsigned i = index; i < opt_.servers; i += threads_) {
    const std::size_t backend = i % backends_.size();
    p.owned.push_back(add_server(p, backend));
    p.backend_of.push_back(backend);
    p.flappy.push_back(p.chance(0.25));
  }

  // Pace: a budget of events grows with time at this thread's share of the rate; the thread
  // spends it in bursts and sleeps a millisecond in between. After a stall it catches up at
  // most a tenth of a second's worth.
  using clock = std::chrono::steady_clock;
  const double per_second = opt_.rate / threads_;
  const double max_budget = std::max(1.0, per_second / 10);
  double budget = 0;
  auto last = clock::now();
  while (!stopping_.load(std::memory_order_relaxed)) {
    const auto now = clock::now();
    budget = std::min(max_budget,
                      budget + std::chrono::duration<double>(now - last).count() * per_second);
    last = now;
    while (budget >= 1 && !stopping_.load(std::memory_order_relaxed)) {
      const std::uint64_t before = p.events;
      step(p);
      budget -= static_cast<double>(p.events - before);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace herald_demo
