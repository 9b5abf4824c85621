// src/core/internal.hpp - state of the bus shared by the core's .cpp files (private to herald).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "herald/bus.hpp"
#include "herald/scheduler.hpp"

namespace herald::detail {

struct bus_core {
  std::atomic<std::uint32_t> refs{1};
  std::atomic<std::uint64_t> exceptions{0};
  std::mutex hook_mutex;
  std::shared_ptr<const error_hook> hook;  // guarded by hook_mutex
  std::shared_ptr<const diagnostic_hook> diag_hook;  // guarded by hook_mutex

  bus_options options;  // immutable after construction

  // Shutdown: set once (under lists_mutex); read by subscribes (under their list mutex).
  std::atomic<bool> shutting_down{false};
  // Set by a shutdown that discards: drain tasks and queue pops drop events instead of
  // delivering them. Memory ordering: release store, acquire loads.
  std::atomic<bool> discard_pending{false};

  std::mutex lists_mutex;
  std::vector<list_core*> lists;  // every live sub_list object of the bus; guarded by lists_mutex

  std::mutex shutdown_mutex;   // one shutdown at a time
  bool shutdown_done = false;  // guarded by shutdown_mutex

  // The bus's own workers, started by the first async subscription that names no executor,
  // and the tasklet that reclaims on them when a subscription ended inside a publish.
  std::mutex scheduler_mutex;
  std::unique_ptr<scheduler> workers;  // guarded by scheduler_mutex
  tasklet reclaimer;                   // set with `workers`

  // Emitter presence (src/core/presence.cpp): the declared emitters by token, and the
  // condition variable wait_for_emitter() waits on, notified (under presence_mutex) by every
  // declaration and by shutdown (after shutting_down is set).
  std::mutex presence_mutex;
  std::condition_variable presence_cv;
  std::unordered_map<std::uint64_t, event_type> emitters;  // guarded by presence_mutex
  std::uint64_t next_emitter = 1;                          // guarded by presence_mutex

  // Introspection (src/core/introspect.cpp): the number given to each live list the first
  // time introspection saw it (the label "list-N" of unnamed lists), with the pass that last
  // saw it; each pass prunes the entries of lists gone. Guarded by lists_mutex.
  std::unordered_map<const list_core*, std::pair<std::uint64_t, std::uint64_t>> list_numbers;
  std::uint64_t next_list_number = 1;  // guarded by lists_mutex
  std::uint64_t introspect_pass = 0;   // guarded by lists_mutex
};

// Writer-side state of a list (list_core::state); guarded by `mutex` unless said otherwise.
struct list_state {
  std::string name;  // immutable after construction
  std::mutex mutex;
  std::uint64_t next_seq = 1;
  std::vector<sub_core*> members;                     // not ended, subscription order
  std::unordered_map<std::uint64_t, sub_core*> by_id;  // members with an id
  // Ended subscriptions still referenced by a published snapshot because rebuilding it ran
  // out of memory; chained through retire.next, retired by the next rebuild of their family.
  sub_core* stale = nullptr;

  // Last-value events. Publishes of stateful subtypes and every subscribe hold lv_mutex, so a
  // new subscription's replay and the publishes around it happen in one order (docs/
  // last_value.md). Recursive: a handler may publish or subscribe on its own list. Taken
  // before `mutex`, never after it.
  std::recursive_mutex lv_mutex;
  // The last event of each stateful subtype, per family (one reference each); guarded by
  // lv_mutex.
  std::unordered_map<family_id, std::array<event_block*, max_subtypes>> last;

  ~list_state() { drop_last_values(); }
  void drop_last_values() noexcept {
    for (auto& [family, blocks] : last) {
      for (event_block*& b : blocks) {
        if (b != nullptr) {
          release_block(std::exchange(b, nullptr));
        }
      }
    }
    last.clear();
  }
};

inline list_state& state_of(list_core& l) noexcept {
  return *static_cast<list_state*>(l.state);
}

/// The bus's workers, started on first use. Errors: what starting them throws.
scheduler& bus_workers(bus_core& b);
/// Has the bus's workers run a reclamation soon (from inside a publish, where nothing waits).
void request_reclaim(bus_core& b) noexcept;
/// Ends `s` (idempotent) and, outside a read section, waits until it is reclaimed.
void unsubscribe_core(sub_core* s) noexcept;

void bus_release(bus_core* b) noexcept;
void list_release(list_core* l) noexcept;
void sub_release(sub_core* s) noexcept;

/// Calls the bus's diagnostic hook (if any) with `diag`. Thread safety: any thread.
void report_diagnostic(bus_core& b, const diagnostic& diag) noexcept;

/// Wakes every wait_for_emitter() on `b` (src/core/presence.cpp); bus::shutdown() calls it
/// after setting shutting_down. Thread safety: any thread. Blocking: presence_mutex, briefly.
void wake_emitter_waiters(bus_core& b) noexcept;

/// The drain task of async subscriptions (deferred_core's run function).
bool run_async(task& t) noexcept;

}  // namespace herald::detail
