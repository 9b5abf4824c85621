// Introspection (herald/introspect.hpp): snapshots of the lists of a bus, per-family counts,
// the text dump and the Prometheus text exposition format.
//
// Walking the lists of a bus: under the bus's lists_mutex, take a reference on every live list
// core (list_core::refs, as bus::shutdown() does) and release the mutex; then read each list
// under its own mutex, one at a time. No two of these mutexes are ever held together, so
// nothing here can take part in a lock-order cycle, and a list destroyed meanwhile stays
// readable (its state is freed by the last reference: ours, at the latest).
#include "herald/introspect.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/internal.hpp"
#include "herald/detail/quiescence.hpp"

namespace herald {

namespace detail {

namespace {

// A counted reference on a list core (adopted: the caller took it).
class list_ref {
 public:
  explicit list_ref(list_core* l) noexcept : l_(l) {}
  list_ref(const list_ref&) = delete;
  list_ref& operator=(const list_ref&) = delete;
  list_ref(list_ref&& o) noexcept : l_(std::exchange(o.l_, nullptr)) {}
  list_ref& operator=(list_ref&& o) noexcept {
    std::swap(l_, o.l_);
    return *this;
  }
  ~list_ref() {
    if (l_ != nullptr) {
      list_release(l_);
    }
  }
  [[nodiscard]] list_core& get() const noexcept { return *l_; }

 private:
  list_core* l_;
};

struct live_list {
  list_ref ref;
  std::uint64_t number;  // the bus's number for it ("list-N")
};

// Every list of `b` still registered (creation order), each with a reference and its number.
// Numbers of lists no longer registered are forgotten.
std::vector<live_list> take_lists(bus_core& b) {
  std::vector<live_list> out;
  std::lock_guard lock(b.lists_mutex);
  out.reserve(b.lists.size());
  const std::uint64_t pass = ++b.introspect_pass;
  for (list_core* l : b.lists) {
    auto [it, fresh] = b.list_numbers.try_emplace(l, std::pair<std::uint64_t, std::uint64_t>{0, 0});
    if (fresh) {
      it->second.first = b.next_list_number++;
    }
    it->second.second = pass;
    // relaxed: taking a reference while the list is registered (its own reference is held
    // until ~sub_list unregisters it, under lists_mutex).
    l->refs.fetch_add(1, std::memory_order_relaxed);
    out.push_back(live_list{list_ref(l), it->second.first});  // no throw: reserved
  }
  std::erase_if(b.list_numbers, [pass](const auto& e) { return e.second.second != pass; });
  return out;
}

// What one walk of the lists collects.
struct walk_result {
  std::vector<list_info> lists;         // live lists (with subscriptions if asked)
  std::vector<std::size_t> per_family;  // subscriptions per family id
  std::size_t wildcard = 0;             // wildcard subscriptions
};

// List mutex held: the type is only written under it.
event_type public_type(const sub_core& s, bool* wildcard) noexcept {
  const event_type t = unpack_type(s.type.load(std::memory_order_relaxed));
  *wildcard = t.family() == wildcard_family;
  return *wildcard ? event_type() : t;
}

delivery_mode mode_of(const sub_core& s) noexcept {
  if (s.deferred == nullptr) {
    return delivery_mode::sync;
  }
  return s.deferred->mode == deferred_mode::queue ? delivery_mode::queue : delivery_mode::async;
}

std::string name_of_family(family_id f) {
  if (auto n = family_name(f)) {
    return std::string(*n);
  }
  return "FAMILY#" + std::to_string(f);
}

// Copies the members of one list (mutex held). Strings are copied here, under the mutex: once
// it is released, an unsubscribe may free the sub_core.
void copy_members(const list_state& st, std::vector<subscription_info>& out) {
  out.reserve(st.members.size());
  for (const sub_core* s : st.members) {
    subscription_info info;
    info.id = s->id;
    info.seq = s->seq;
    info.name = s->name;
    info.file = s->file != nullptr ? s->file : "";
    info.line = s->line;
    info.mode = mode_of(*s);
    info.type = public_type(*s, &info.wildcard);
    // acquire: pairs with the release RMW of set_paused_locked() (also ordered by the mutex).
    info.paused = (s->flags.load(std::memory_order_acquire) & sub_paused) != 0;
    info.exceptions = s->exceptions.load(std::memory_order_relaxed);  // a counter
    if (s->deferred != nullptr) {
      info.stats = s->deferred->stats();
    }
    out.push_back(std::move(info));
  }
}

// Counts the members of one list per family (mutex held).
void count_members(const list_state& st, walk_result& r) {
  for (const sub_core* s : st.members) {
    const family_id f = unpack_type(s->type.load(std::memory_order_relaxed)).family();
    if (f == wildcard_family) {
      ++r.wildcard;
    } else {
      if (f >= r.per_family.size()) {
        r.per_family.resize(std::size_t{f} + 1, 0);
      }
      ++r.per_family[f];
    }
  }
}

// Gives every list a label unique among them (herald/introspect.hpp, "Which lists").
void assign_labels(std::vector<list_info>& lists, const std::vector<std::uint64_t>& numbers) {
  std::unordered_set<std::string> used;
  used.reserve(lists.size());
  for (std::size_t i = 0; i < lists.size(); ++i) {
    std::string label =
        lists[i].name.empty() ? "list-" + std::to_string(numbers[i]) : lists[i].name;
    while (used.contains(label)) {
      label += "#" + std::to_string(numbers[i]);
    }
    used.insert(label);
    lists[i].label = std::move(label);
  }
}

walk_result walk(bus_core& b, bool with_subscriptions) {
  walk_result r;
  std::vector<live_list> lists = take_lists(b);
  std::vector<std::uint64_t> numbers;
  for (live_list& ll : lists) {
    list_core& l = ll.ref.get();
    list_state& st = state_of(l);
    list_info info;
    {
      std::lock_guard lock(st.mutex);
      if (l.destroyed.load(std::memory_order_relaxed)) {  // written under this mutex
        continue;
      }
      count_members(st, r);
      if (with_subscriptions) {
        copy_members(st, info.subscriptions);
      }
    }
    for (subscription_info& s : info.subscriptions) {
      if (s.wildcard) {
        s.family_name = "*";
        s.type_name = "*";
      } else {
        s.family_name = name_of_family(s.type.family());
        s.type_name = type_name(s.type);
      }
    }
    info.name = st.name;  // immutable after construction
    r.lists.push_back(std::move(info));
    numbers.push_back(ll.number);
  }
  assign_labels(r.lists, numbers);
  return r;
}

// Whether publishes are counted per family now (set_family_counting()).
bool counting_families() noexcept {
  // relaxed: a switch for statistics (as count_publish() reads it).
  return family_counting.load(std::memory_order_relaxed);
}

std::vector<family_info> families_of(const walk_result& r) {
  const std::size_t n = family_count();
  std::vector<family_info> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto f = static_cast<family_id>(i);
    family_info fi;
    fi.id = f;
    fi.name = name_of_family(f);
    fi.published = family_published(f);
    fi.subscribers = i < r.per_family.size() ? r.per_family[i] : 0;
    out.push_back(std::move(fi));
  }
  return out;
}

// ---- Text ------------------------------------------------------------------------------------

// `s` with control characters and backslashes escaped, so that it stays on one line.
std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (u < 0x20 || u == 0x7F) {
          std::array<char, 8> buf{};
          std::snprintf(buf.data(), buf.size(), "\\x%02X", u);
          out += buf.data();
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string hex_id(std::uint64_t id) {
  std::array<char, 24> buf{};
  std::snprintf(buf.data(), buf.size(), "%016llx", static_cast<unsigned long long>(id));
  return buf.data();
}

// Appends rows as a table: columns padded to their widest cell, two spaces apart, each row
// indented by `indent`, no trailing spaces.
void append_table(std::string& out, const std::vector<std::vector<std::string>>& rows,
                  std::string_view indent) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  for (const auto& row : rows) {
    std::string line(indent);
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) {
        line.append(widths[c] - row[c].size() + 2, ' ');
      }
    }
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    out += line;
    out += '\n';
  }
}

// ---- Prometheus ------------------------------------------------------------------------------

constexpr std::string_view replacement_char = "\xEF\xBF\xBD";  // U+FFFD

// The length of the valid UTF-8 sequence at the start of `s`, or 0 if it is not one (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view s) noexcept {
  const auto c = static_cast<unsigned char>(s[0]);
  std::size_t len = 0;
  std::uint32_t cp = 0;
  std::uint32_t min = 0;
  if (c < 0x80) {
    return 1;
  }
  if ((c & 0xE0U) == 0xC0U) {
    len = 2;
    cp = c & 0x1FU;
    min = 0x80;
  } else if ((c & 0xF0U) == 0xE0U) {
    len = 3;
    cp = c & 0x0FU;
    min = 0x800;
  } else if ((c & 0xF8U) == 0xF0U) {
    len = 4;
    cp = c & 0x07U;
    min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < len) {
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[k]);
    if ((b & 0xC0U) != 0x80U) {
      return 0;
    }
    cp = (cp << 6U) | (b & 0x3FU);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return len;
}

// Appends `v` as a label value (without the quotes): \\, \" and \n escaped, invalid UTF-8
// replaced by U+FFFD.
void append_label_value(std::string& out, std::string_view v) {
  while (!v.empty()) {
    const std::size_t len = utf8_sequence(v);
    if (len == 0) {
      out += replacement_char;
      v.remove_prefix(1);
      continue;
    }
    if (len == 1) {
      switch (v[0]) {
        case '\\':
          out += "\\\\";
          break;
        case '"':
          out += "\\\"";
          break;
        case '\n':
          out += "\\n";
          break;
        default:
          out += v[0];
      }
    } else {
      out.append(v.substr(0, len));
    }
    v.remove_prefix(len);
  }
}

struct label {
  std::string_view name;
  std::string_view value;
};

class prometheus_writer {
 public:
  explicit prometheus_writer(std::string& out) noexcept : out_(out) {}

  // HELP and TYPE of a metric (the help text is ours: no escaping needed, none done).
  void metric(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  void sample(std::string_view name, const std::vector<label>& labels, std::uint64_t value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      bool first = true;
      for (const label& l : labels) {
        if (!first) {
          out_ += ',';
        }
        first = false;
        out_ += l.name;
        out_ += "=\"";
        append_label_value(out_, l.value);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += std::to_string(value);
    out_ += '\n';
  }

 private:
  std::string& out_;
};

// One subscription with the labels that identify its series.
struct sub_series {
  const subscription_info* info;
  std::vector<label> labels;  // list, seq, id, name, mode, family, type
  std::string seq;
  std::string id;
};

}  // namespace

// Used by presence() (src/core/presence.cpp): the subscriptions of `b`'s live lists of
// `type`'s family whose subtypes intersect it, and the wildcard ones.
std::pair<std::size_t, std::size_t> count_subscribers(bus_core& b, event_type type) {
  std::size_t matching = 0;
  std::size_t wildcard = 0;
  for (live_list& ll : take_lists(b)) {
    list_core& l = ll.ref.get();
    list_state& st = state_of(l);
    std::lock_guard lock(st.mutex);
    if (l.destroyed.load(std::memory_order_relaxed)) {
      continue;
    }
    for (const sub_core* s : st.members) {
      const event_type t = unpack_type(s->type.load(std::memory_order_relaxed));
      if (t.family() == wildcard_family) {
        ++wildcard;
      } else if (t.family() == type.family() && (t.subtypes() & type.subtypes()) != 0) {
        ++matching;
      }
    }
  }
  return {matching, wildcard};
}

}  // namespace detail

std::string_view to_string(delivery_mode m) noexcept {
  switch (m) {
    case delivery_mode::sync:
      return "sync";
    case delivery_mode::async:
      return "async";
    case delivery_mode::queue:
      return "queue";
  }
  return "unknown";
}

std::vector<subscription_info> describe(const sub_list& list) {
  detail::list_core& l = list.core();
  detail::list_state& st = detail::state_of(l);
  std::vector<subscription_info> out;
  {
    std::lock_guard lock(st.mutex);
    detail::copy_members(st, out);  // empty once destroyed: end_all_locked clears members
  }
  for (subscription_info& s : out) {
    if (s.wildcard) {
      s.family_name = "*";
      s.type_name = "*";
    } else {
      s.family_name = detail::name_of_family(s.type.family());
      s.type_name = type_name(s.type);
    }
  }
  return out;
}

std::vector<list_info> describe_lists(bus& b) {
  return detail::walk(b.core(), /*with_subscriptions=*/true).lists;
}

std::vector<family_info> describe_families(bus& b) {
  return detail::families_of(detail::walk(b.core(), /*with_subscriptions=*/false));
}

std::size_t wildcard_subscribers(bus& b) {
  return detail::walk(b.core(), /*with_subscriptions=*/false).wildcard;
}

std::string dump_text(bus& b) {
  const detail::walk_result r = detail::walk(b.core(), /*with_subscriptions=*/true);
  std::size_t subs = 0;
  for (const list_info& l : r.lists) {
    subs += l.subscriptions.size();
  }
  std::string out = "herald bus: " + std::to_string(r.lists.size()) + " live list(s), " +
                    std::to_string(subs) + " subscription(s), " + std::to_string(r.wildcard) +
                    " wildcard, " + std::to_string(b.handler_exceptions()) +
                    " handler exception(s)\n";
  for (const list_info& l : r.lists) {
    out += "\nlist \"" + detail::printable(l.label) + "\"";
    if (l.label != l.name) {
      out += " (name \"" + detail::printable(l.name) + "\")";
    }
    out += ": " + std::to_string(l.subscriptions.size()) + " subscription(s)\n";
    if (l.subscriptions.empty()) {
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"seq", "id", "mode", "type", "name", "paused", "exceptions", "published",
                    "delivered", "dropped", "discarded", "queued", "high_water", "origin"});
    for (const subscription_info& s : l.subscriptions) {
      std::vector<std::string> row{std::to_string(s.seq),
                                   s.id == 0 ? "-" : detail::hex_id(s.id),
                                   std::string(to_string(s.mode)),
                                   s.type_name,
                                   s.name.empty() ? "-" : detail::printable(s.name),
                                   s.paused ? "yes" : "no",
                                   std::to_string(s.exceptions)};
      if (s.mode == delivery_mode::sync) {
        row.insert(row.end(), 6, "-");  // sync subscriptions keep no counters
      } else {
        for (const std::uint64_t v : {s.stats.published, s.stats.delivered, s.stats.dropped(),
                                      s.stats.discarded, s.stats.queued, s.stats.high_water}) {
          row.push_back(std::to_string(v));
        }
      }
      row.push_back(detail::printable(s.file) + ":" + std::to_string(s.line));
      rows.push_back(std::move(row));
    }
    detail::append_table(out, rows, "  ");
  }
  const bool counting = detail::counting_families();
  out += counting ? "\nfamilies (published: process-wide; subscribers: this bus)\n"
                  : "\nfamilies (subscribers: this bus; publishes not counted: "
                    "herald::set_family_counting(true) counts them)\n";
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"id", "family", "published", "subscribers"});
  for (const family_info& f : detail::families_of(r)) {
    if (f.published == 0 && f.subscribers == 0) {
      continue;
    }
    rows.push_back({std::to_string(f.id), f.name, counting ? std::to_string(f.published) : "-",
                    std::to_string(f.subscribers)});
  }
  if (rows.size() == 1) {
    out += "  (none published or subscribed)\n";
  } else {
    detail::append_table(out, rows, "  ");
  }
  out += "wildcard subscribers: " + std::to_string(r.wildcard) + "\n";
  return out;
}

std::string dump_prometheus(bus& b) {
  const detail::walk_result r = detail::walk(b.core(), /*with_subscriptions=*/true);
  std::vector<detail::sub_series> series;
  for (const list_info& l : r.lists) {
    for (const subscription_info& s : l.subscriptions) {
      series.push_back(detail::sub_series{&s, {}, std::to_string(s.seq), detail::hex_id(s.id)});
    }
  }
  // The views point into `series` elements and `r`: built once the vector no longer moves.
  for (std::size_t i = 0, k = 0; i < r.lists.size(); ++i) {
    for (std::size_t j = 0; j < r.lists[i].subscriptions.size(); ++j, ++k) {
      detail::sub_series& ss = series[k];
      const subscription_info& s = *ss.info;
      ss.labels = {{"list", r.lists[i].label},
                   {"seq", ss.seq},
                   {"id", ss.id},
                   {"name", s.name},
                   {"mode", to_string(s.mode)},
                   {"family", s.family_name},
                   {"type", s.type_name}};
    }
  }

  std::string out;
  detail::prometheus_writer w(out);
  const auto each = [&](bool deferred_only, auto&& fn) {
    for (const detail::sub_series& ss : series) {
      if (!deferred_only || ss.info->mode != delivery_mode::sync) {
        fn(ss);
      }
    }
  };

  w.metric("herald_subscription_info", "gauge",
           "A live subscription (always 1); origin is the file:line of the subscribe call.");
  each(false, [&](const detail::sub_series& ss) {
    std::vector<detail::label> labels = ss.labels;
    const std::string origin = ss.info->file + ":" + std::to_string(ss.info->line);
    labels.push_back({"origin", origin});
    w.sample("herald_subscription_info", labels, 1);
  });
  w.metric("herald_subscription_paused", "gauge", "1 if the subscription is paused, else 0.");
  each(false, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_paused", ss.labels, ss.info->paused ? 1 : 0);
  });
  w.metric("herald_subscription_exceptions_total", "counter",
           "Exceptions thrown by the subscription's handler.");
  each(false, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_exceptions_total", ss.labels, ss.info->exceptions);
  });
  w.metric("herald_subscription_published_total", "counter",
           "Events that matched the subscription (async and queue subscriptions).");
  each(true, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_published_total", ss.labels, ss.info->stats.published);
  });
  w.metric("herald_subscription_delivered_total", "counter",
           "Events handled or popped (async and queue subscriptions; END not counted).");
  each(true, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_delivered_total", ss.labels, ss.info->stats.delivered);
  });
  w.metric("herald_subscription_dropped_total", "counter",
           "Events dropped by the overflow policy, by cause (newest, oldest, ended, notify).");
  each(true, [&](const detail::sub_series& ss) {
    const subscription_stats& st = ss.info->stats;
    const std::array<std::pair<std::string_view, std::uint64_t>, 4> causes{
        {{"newest", st.dropped_newest},
         {"oldest", st.dropped_oldest},
         {"ended", st.dropped_ended},
         {"notify", st.dropped_notify}}};
    for (const auto& [cause, value] : causes) {
      std::vector<detail::label> labels = ss.labels;
      labels.push_back({"cause", cause});
      w.sample("herald_subscription_dropped_total", labels, value);
    }
  });
  w.metric("herald_subscription_discarded_total", "counter",
           "Events pending at the end of the subscription and discarded.");
  each(true, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_discarded_total", ss.labels, ss.info->stats.discarded);
  });
  w.metric("herald_subscription_queued", "gauge", "Events waiting in the subscription's queue.");
  each(true, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_queued", ss.labels, ss.info->stats.queued);
  });
  w.metric("herald_subscription_high_water", "gauge",
           "The longest the subscription's queue has been (approximate).");
  each(true, [&](const detail::sub_series& ss) {
    w.sample("herald_subscription_high_water", ss.labels, ss.info->stats.high_water);
  });

  w.metric("herald_list_subscriptions", "gauge", "Subscriptions of a live list.");
  for (const list_info& l : r.lists) {
    w.sample("herald_list_subscriptions", {{"list", l.label}}, l.subscriptions.size());
  }
  const std::vector<family_info> families = detail::families_of(r);
  if (detail::counting_families()) {  // else the counters stand still: no series at all
    w.metric("herald_family_published_total", "counter",
             "Events published of a family, process-wide (every list of every bus).");
    for (const family_info& f : families) {
      w.sample("herald_family_published_total", {{"family", f.name}}, f.published);
    }
  }
  w.metric("herald_family_subscribers", "gauge",
           "Subscriptions of a family over the bus's live lists (wildcards not included).");
  for (const family_info& f : families) {
    w.sample("herald_family_subscribers", {{"family", f.name}}, f.subscribers);
  }
  w.metric("herald_wildcard_subscribers", "gauge",
           "Wildcard subscriptions (every family) over the bus's live lists.");
  w.sample("herald_wildcard_subscribers", {}, r.wildcard);
  w.metric("herald_handler_exceptions_total", "counter",
           "Handler exceptions caught on the bus's lists, in total.");
  w.sample("herald_handler_exceptions_total", {}, b.handler_exceptions());
  return out;
}

}  // namespace herald
