// herald-demo: the SERVER event family, modelled on HAProxy's EVENT_HDL_SUB_SERVER_* events.
//
// Every event carries a full copy of the server's public state (the safe part), so whichever
// event a subscriber sees last tells it everything; `version` counts the events of one server
// and orders them. The unsafe part points to the live server object: only a sync handler may
// follow it, while the publish that carries it is running.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>

#include "herald/event_type.hpp"

namespace herald_demo {

class server;  // simulation.hpp

/// Operational state, driven by health checks (rise/fall, as HAProxy's).
enum class op_state : std::uint8_t { up, down };
/// Administrative state, set by an operator.
enum class admin_state : std::uint8_t { ready, drain, maint };

[[nodiscard]] constexpr std::string_view to_string(op_state s) noexcept {
  return s == op_state::up ? "UP" : "DOWN";
}
[[nodiscard]] constexpr std::string_view to_string(admin_state s) noexcept {
  switch (s) {
    case admin_state::ready:
      return "ready";
    case admin_state::drain:
      return "DRAIN";
    case admin_state::maint:
      return "MAINT";
  }
  return "?";
}

/// A short string stored inline, so that copying a safe part never allocates.
class short_text {
 public:
  static constexpr std::size_t capacity = 23;
  constexpr short_text() noexcept = default;
  explicit short_text(std::string_view s) noexcept { assign(s); }
  void assign(std::string_view s) noexcept {
    len_ = static_cast<std::uint8_t>(std::min(s.size(), capacity));
    std::copy_n(s.data(), len_, chars_.data());
  }
  [[nodiscard]] std::string_view view() const noexcept { return {chars_.data(), len_}; }
  [[nodiscard]] bool operator==(const short_text& o) const noexcept { return view() == o.view(); }

 private:
  std::array<char, capacity> chars_{};
  std::uint8_t len_ = 0;
};

/// The SERVER family: the eight event kinds of HAProxy's server events.
struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { add, del, up, down, state, admin, check, inetaddr };
  static constexpr std::array<std::string_view, 8> subtype_names{
      "ADD", "DEL", "UP", "DOWN", "STATE", "ADMIN", "CHECK", "INETADDR"};
  static constexpr std::size_t subtype_count = subtype_names.size();
  /// Last-value events: each list keeps the last event of every subtype, and a subscription
  /// made later receives those first. Since every event carries the whole server state, a
  /// late subscriber to a server's list learns that server's current state at once.
  static constexpr bool stateful = true;

  /// Copied once per publish into the snapshot that async and queue subscribers share.
  struct safe_part {
    std::uint32_t server_id = 0;
    std::uint32_t version = 0;  ///< 1, 2, ... per server: its events in the order they happened
    short_text backend;
    short_text name;
    short_text address;  ///< "10.1.0.7:8080"
    op_state state = op_state::up;
    admin_state admin = admin_state::ready;
    bool check_ok = true;        ///< the last health check's result
    std::uint16_t check_ms = 0;  ///< and its duration
  };
  /// Valid only during the publish (sync handlers).
  struct unsafe_part {
    server* live = nullptr;
  };
};

using server_subtype = server_event::subtype;

[[nodiscard]] constexpr std::size_t index_of(server_subtype s) noexcept {
  return static_cast<std::size_t>(s);
}
[[nodiscard]] constexpr std::string_view name_of(server_subtype s) noexcept {
  return server_event::subtype_names[index_of(s)];
}

}  // namespace herald_demo
