// herald-demo: the simulated load balancer.
//
// Backends hold servers. Each publisher thread owns a share of the servers and is the only
// thread that changes them: it runs their health checks (which flap: a server falls sick now
// and then, fails most checks while sick, goes DOWN after `fall` failures and UP again after
// `rise` successes), changes their admin state and address now and then, and replaces a
// server by a new one once in a while (DEL then ADD). Every change is published as a SERVER
// event, as HAProxy does: first to the server's own list, then to the bus's global list.
//
// Threads: the publisher threads change servers; any thread may read the registry (under its
// mutex) and a server's immutable fields and list; a server's mutable state is read by other
// threads only after the publishers stopped (stop() joins them).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "herald/bus.hpp"
#include "options.hpp"
#include "server_event.hpp"

namespace herald_demo {

/// One server: its own subscription list, the state its owner thread changes, and a live
/// connection count that a sync handler may read through the event's unsafe part.
class server {
 public:
  server(herald::bus& bus, std::uint32_t id, std::string_view backend, std::string_view name,
         std::string_view address);
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  [[nodiscard]] std::uint32_t id() const noexcept { return info_.server_id; }
  /// The server's own list (HAProxy's per-server subscription list). Any thread.
  [[nodiscard]] herald::sub_list& events() noexcept { return events_; }
  /// The current public state. Owner thread only, or after the publishers stopped.
  [[nodiscard]] const server_event::safe_part& info() const noexcept { return info_; }
  /// Open connections (made up). Any thread; written by the owner thread.
  [[nodiscard]] int connections() const noexcept {
    return connections_.load(std::memory_order_relaxed);
  }

 private:
  friend class simulation;
  server_event::safe_part info_;
  herald::sub_list events_;
  std::atomic<int> connections_{0};
  // Health-check state, owner thread only.
  bool sick_ = false;
  unsigned failures_in_row_ = 0;
  unsigned successes_in_row_ = 0;
};

/// Counters of what the publishers published to the global list (each event also went to its
/// server's list). Any thread; relaxed counters.
struct published_counts {
  std::array<std::uint64_t, server_event::subtype_count> by_subtype{};
  std::uint64_t publish_errors = 0;
  [[nodiscard]] std::uint64_t total() const noexcept {
    std::uint64_t t = 0;
    for (auto n : by_subtype) {
      t += n;
    }
    return t;
  }
};

class simulation {
 public:
  /// Builds the backends; no server exists before start().
  simulation(herald::bus& bus, const options& opt);
  ~simulation();
  simulation(const simulation&) = delete;
  simulation& operator=(const simulation&) = delete;

  /// Starts the publisher threads; each first adds its servers (ADD events), then runs.
  void start();
  /// Stops and joins the publisher threads. Idempotent.
  void stop();

  /// The servers alive now (a copy, taken under the registry mutex). Any thread.
  [[nodiscard]] std::vector<std::shared_ptr<server>> servers() const;
  /// The server with this id, if alive. Any thread.
  [[nodiscard]] std::shared_ptr<server> find(std::uint32_t id) const;
  /// Events published so far (racy while the publishers run). Any thread.
  [[nodiscard]] published_counts counts() const noexcept;
  [[nodiscard]] std::size_t backend_count() const noexcept { return backends_.size(); }
  [[nodiscard]] unsigned publisher_threads() const noexcept { return threads_; }

 private:
  struct alignas(64) thread_counts {
    std::array<std::atomic<std::uint64_t>, server_event::subtype_count> by_subtype{};
    std::atomic<std::uint64_t> publish_errors{0};
  };
  struct publisher;

  void run(unsigned index, std::uint64_t seed);
  std::shared_ptr<server> add_server(publisher& p, std::size_t backend);
  void remove_server(publisher& p, std::size_t slot);
  void step(publisher& p);
  void publish(publisher& p, server& s, server_subtype what);

  herald::bus& bus_;
  options opt_;
  unsigned threads_;
  std::vector<std::string> backends_;
  std::vector<std::unique_ptr<thread_counts>> counts_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> next_id_{1};
  std::vector<std::thread> workers_;

  mutable std::mutex mu_;
  std::map<std::uint32_t, std::shared_ptr<server>> registry_;  // guarded by mu_
  std::vector<std::size_t> per_backend_next_;                  // guarded by mu_
};

}  // namespace herald_demo
