// herald/introspect.hpp - what a bus holds, for humans and for scrapers: the subscriptions of
// each list, per-family counters, a text dump and the Prometheus text exposition format.
//
// What it is
//   Read-only snapshots, taken on demand (nothing here runs in the background and nothing here
//   costs the publish path anything). describe() lists the subscriptions of one list;
//   describe_lists() every live list of a bus; describe_families() counts subscriptions and
//   publishes per family; dump_text() and dump_prometheus() format all of it
//   (docs/observability.md has the metric names and an example).
//
// Which lists
//   A bus knows every sub_list object made with it that is still alive (its global list
//   first, then the others in creation order). Lists destroyed by destroy() (and every list
//   once the bus shut down) hold no subscription and are skipped. Each listed list has a
//   `label`, unique among the live lists of the bus at the time of the call: its name; for an
//   unnamed list "list-N", N being a number the bus gives each list the first time
//   introspection sees it (so it stays the same across calls for the list's life); and when
//   two live lists share a name, the later one (in creation order) gets "#N" appended. Name
//   lists uniquely to keep metric series stable. A list made after another was destroyed may
//   take the destroyed one's number if no introspection ran in between.
//
// Counters and their races
//   Every snapshot is taken list by list, each under that list's mutex (the writers' lock:
//   subscribes and unsubscribes on that list wait for it, publishes never do). A list's
//   subscriptions are therefore a consistent set, but two lists are not read at the same
//   instant, and the counters (subscription_stats, exceptions, family_published) are read while
//   events may flow: each value is exact for a quiet bus and approximate otherwise (see
//   subscription_stats). family_published() counts process-wide, over every bus, and only
//   while herald::set_family_counting(true) is in effect (off by default; herald/bus.hpp).
//
// Lifetime
//   Everything returned is a copy (strings included): it stays valid after the subscriptions,
//   the lists or the bus are gone.
//
// Memory ordering
//   The list mutex orders a snapshot after every subscribe, unsubscribe, pause and resume that
//   completed before it on that list; counters are relaxed loads (statistics, not
//   synchronisation points).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "herald/backpressure.hpp"
#include "herald/bus.hpp"
#include "herald/event_type.hpp"

namespace herald {

/// How a subscription receives its events (herald/bus.hpp: subscribe_sync, subscribe_async,
/// subscribe_queue and their wildcard forms).
enum class delivery_mode : std::uint8_t {
  sync,   ///< inline, in the publishing thread
  async,  ///< a handler run later on an executor
  queue,  ///< a queue the user pops
};

/// "sync", "async" or "queue" ("unknown" for a value outside the enumeration).
/// Thread safety: any thread. Handler context: allowed. Blocking: never. Allocation: none.
/// Ownership: the view refers to a string literal. Errors: none.
[[nodiscard]] std::string_view to_string(delivery_mode m) noexcept;

/// One subscription as introspection sees it: a copy, valid after the subscription ended.
struct subscription_info {
  std::uint64_t id = 0;    ///< the id given at subscribe time (0: anonymous)
  std::uint64_t seq = 0;   ///< subscription order within its list (1, 2, ...; unique there)
  std::string name;        ///< the name given at subscribe time (may be empty)
  std::string file;        ///< origin: the file of the subscribe call
  std::uint32_t line = 0;  ///< origin: its line
  delivery_mode mode = delivery_mode::sync;
  bool wildcard = false;    ///< every family of the list (then `type` is the empty type)
  event_type type;          ///< the subscribed type (the latest resubscribe's)
  std::string family_name;  ///< the family's name ("SERVER"); "*" for a wildcard subscription
  std::string type_name;    ///< herald::type_name(type) ("SERVER_UP|SERVER_DOWN"); "*" for one
  bool paused = false;
  std::uint64_t exceptions = 0;  ///< times the handler threw
  /// The subscription's counters (all 0 for a sync subscription, which keeps none).
  subscription_stats stats;
};

/// One live list of a bus and its subscriptions.
struct list_info {
  std::string name;   ///< the name given at construction (may be empty; "global" for the bus's)
  std::string label;  ///< unique among the bus's live lists (see "Which lists" above)
  std::vector<subscription_info> subscriptions;  ///< in subscription order
};

/// Per-family figures of one bus.
struct family_info {
  family_id id = 0;
  std::string name;  ///< "SERVER"
  /// family_published(id): process-wide, every list of every bus, counted only while
  /// set_family_counting(true) is in effect (herald/bus.hpp; off by default).
  std::uint64_t published = 0;
  /// Subscriptions of this family (paused ones included) over every live list of the bus.
  /// Wildcard subscriptions are not counted here: see wildcard_subscribers().
  std::size_t subscribers = 0;
};

/// The subscriptions of `list`, in subscription order, copied under the list's mutex (nothing
/// in the result refers to a subscription). Empty for a destroyed list.
/// Thread safety: any thread, concurrently with publishes, subscribes and unsubscribes on the
/// list. Handler context: allowed (also from a handler of `list`). Blocking: the list's mutex,
/// for the time of the copy. Allocation: the vector and its strings. Ownership: `list` is
/// borrowed for the call. Errors: std::bad_alloc. Ordering: reflects every change to the list
/// that completed before the call; counters are approximate while events flow.
[[nodiscard]] std::vector<subscription_info> describe(const sub_list& list);

/// Every live list of `b` (destroyed ones skipped), the global list first, then in creation
/// order, each with its subscriptions as describe() gives them.
/// Thread safety: any thread, concurrently with lists being made and destroyed. Handler
/// context: allowed. Blocking: the bus's list registry mutex, briefly, then each list's mutex
/// in turn (never two at once). Allocation: the result. Ownership: `b` is borrowed for the
/// call; the lists are kept alive by the call while it reads them. Errors: std::bad_alloc.
/// Ordering: each list is a consistent snapshot; lists are read one after the other.
[[nodiscard]] std::vector<list_info> describe_lists(bus& b);

/// One entry per declared family (ids 0 .. family_count() - 1, in id order): its name, its
/// process-wide publish count and its subscriptions over the live lists of `b`.
/// Thread safety, handler context, blocking, ownership: as describe_lists(). Allocation: the
/// result. Errors: std::bad_alloc. Ordering: as describe_lists().
[[nodiscard]] std::vector<family_info> describe_families(bus& b);

/// Wildcard subscriptions (every family) over the live lists of `b`, paused ones included.
/// Thread safety, handler context, blocking, ownership: as describe_lists(). Allocation: a
/// temporary vector of the lists. Errors: std::bad_alloc.
[[nodiscard]] std::size_t wildcard_subscribers(bus& b);

/// A text dump for humans: one table per live list (seq, id, mode, type, name, paused,
/// exceptions, the counters of async and queue subscriptions, origin), then the families
/// that have a subscriber or a counted publish (publishes shown as "-" while family counting
/// is off), then the wildcard total. Control characters in names are
/// escaped (\n, \t, \\, \xNN) so that every row stays on one line. Not a stable format: parse
/// dump_prometheus() instead.
/// Thread safety, handler context, blocking, ownership: as describe_lists(). Allocation: the
/// string. Errors: std::bad_alloc.
[[nodiscard]] std::string dump_text(bus& b);

/// The same figures in the Prometheus text exposition format, version 0.0.4 (content type
/// "text/plain; version=0.0.4"), ready to be served on a scrape: every metric has its HELP and
/// TYPE lines before its samples, samples of one metric are contiguous, every series is
/// unique, label values are escaped (\\, \", \n) and made valid UTF-8 (an invalid byte becomes
/// U+FFFD), and the text ends with a newline. Metric names and labels:
/// docs/observability.md. No timestamps. herald_family_published_total appears only while
/// set_family_counting(true) is in effect (its counters stand still otherwise).
/// Thread safety, handler context, blocking, ownership: as describe_lists(). Allocation: the
/// string. Errors: std::bad_alloc.
[[nodiscard]] std::string dump_prometheus(bus& b);

}  // namespace herald
