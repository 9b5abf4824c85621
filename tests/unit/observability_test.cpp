// Unit tests of introspection (herald/introspect.hpp) and emitter presence
// (herald/presence.hpp).
//
// What the tests show:
//   - describe() gives, for sync, async and queue subscriptions and their wildcard forms, the
//     id, seq, name, origin, mode, family, type, paused flag, exceptions and counters; the
//     counters after a bounded queue dropped events equal subscription_stats.
//   - describe_lists() skips destroyed lists and labels every live list uniquely and stably
//     (unnamed lists: "list-N"; a repeated name: "#N" appended); describe_families() and
//     wildcard_subscribers() count over every live list of the bus.
//   - dump_text() names lists, subscriptions, types and families.
//   - dump_prometheus() parses back with a small parser of the text exposition format 0.0.4
//     (every line a comment or a sample; HELP and TYPE before the samples of each metric;
//     samples of a metric contiguous; every series unique; label values escaped and valid
//     UTF-8); a subscription name with quotes, backslashes and newlines round-trips; values
//     equal the stats.
//   - Presence: emitters and subscribers counted by intersection; destroying (or moving, or
//     resetting) a handle undeclares; wait_for_emitter() returns true once another thread
//     declares, false on timeout, false when the bus shuts down (a waiter is woken); handles
//     outlive their bus.
//   - The snapshots race cleanly with subscribes, unsubscribes, publishes and lists made and
//     destroyed on other threads (run under ThreadSanitizer and AddressSanitizer).
//
// Waiting: wait_for polls a condition with a generous deadline and fails the test instead of
// hanging; nothing asserts on time.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "herald/bus.hpp"
#include "herald/introspect.hpp"
#include "herald/presence.hpp"
#include "herald/source_location.hpp"

namespace {

struct obs_event {
  static constexpr std::string_view family_name = "OBSEVENT";
  enum class subtype : std::uint8_t { up, down, add };
  static constexpr std::array<std::string_view, 3> subtype_names{"UP", "DOWN", "ADD"};
  struct safe_part {
    int id = 0;
  };
};

struct obs_other {
  static constexpr std::string_view family_name = "OBSOTHER";
  enum class subtype : std::uint8_t { ping };
  static constexpr std::array<std::string_view, 1> subtype_names{"PING"};
  struct safe_part {
    int n = 0;
  };
};

using sub = obs_event::subtype;

template <class Pred>
bool wait_for(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

const herald::subscription_info* find_named(const std::vector<herald::subscription_info>& v,
                                            std::string_view name) {
  for (const auto& s : v) {
    if (s.name == name) {
      return &s;
    }
  }
  return nullptr;
}

const herald::family_info* find_family(const std::vector<herald::family_info>& v,
                                       herald::family_id id) {
  for (const auto& f : v) {
    if (f.id == id) {
      return &f;
    }
  }
  return nullptr;
}

// ---- A parser of the Prometheus text exposition format 0.0.4 ------------------------------

struct prom_sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct prom_text {
  std::map<std::string, std::string> help;
  std::map<std::string, std::string> type;
  std::vector<prom_sample> samples;

  // The samples of `name` whose labels include every pair of `match`.
  [[nodiscard]] std::vector<const prom_sample*> find(
      std::string_view name, const std::map<std::string, std::string>& match) const {
    std::vector<const prom_sample*> out;
    for (const auto& s : samples) {
      if (s.name != name) {
        continue;
      }
      bool all = true;
      for (const auto& [k, v] : match) {
        auto it = s.labels.find(k);
        all = all && it != s.labels.end() && it->second == v;
      }
      if (all) {
        out.push_back(&s);
      }
    }
    return out;
  }
  // The value of the one sample that matches (fails the test unless exactly one does).
  [[nodiscard]] double value(std::string_view name,
                             const std::map<std::string, std::string>& match) const {
    const auto found = find(name, match);
    EXPECT_EQ(found.size(), 1U) << name;
    return found.size() == 1 ? found[0]->value : -1;
  }
};

bool metric_name_ok(std::string_view n) {
  if (n.empty()) {
    return false;
  }
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) {
      return false;
    }
  }
  return true;
}

bool label_name_ok(std::string_view n) {
  return metric_name_ok(n) && n.find(':') == std::string_view::npos;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 1;
    std::uint32_t cp = c;
    std::uint32_t min = 0;
    if (c >= 0x80) {
      if ((c & 0xE0U) == 0xC0U) {
        len = 2, cp = c & 0x1FU, min = 0x80;
      } else if ((c & 0xF0U) == 0xE0U) {
        len = 3, cp = c & 0x0FU, min = 0x800;
      } else if ((c & 0xF8U) == 0xF0U) {
        len = 4, cp = c & 0x07U, min = 0x10000;
      } else {
        return false;
      }
      if (i + len > s.size()) {
        return false;
      }
      for (std::size_t k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0U) != 0x80U) {
          return false;
        }
        cp = (cp << 6U) | (b & 0x3FU);
      }
      if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return false;
      }
    }
    i += len;
  }
  return true;
}

// Parses `text`, failing the test (ADD_FAILURE) on every violation of the format.
prom_text parse_prometheus(const std::string& text) {
  prom_text out;
  EXPECT_TRUE(!text.empty() && text.back() == '\n') << "the exposition must end with a newline";
  std::set<std::string> closed;  // metrics whose samples are over
  std::set<std::string> series;
  std::string current;
  std::size_t pos = 0;
  int line_no = 0;
  while (pos < text.size()) {
    const std::size_t eol = text.find('\n', pos);
    const std::string line = text.substr(pos, eol == std::string::npos ? eol : eol - pos);
    pos = eol == std::string::npos ? text.size() : eol + 1;
    ++line_no;
    const std::string where = "line " + std::to_string(line_no) + ": " + line;
    if (line.empty()) {
      continue;
    }
    if (line[0] == '#') {
      const bool is_help = line.rfind("# HELP ", 0) == 0;
      const bool is_type = line.rfind("# TYPE ", 0) == 0;
      if (!is_help && !is_type) {
        continue;  // a comment
      }
      const std::string rest = line.substr(7);
      const std::size_t sp = rest.find(' ');
      const std::string name = rest.substr(0, sp);
      EXPECT_TRUE(metric_name_ok(name)) << where;
      EXPECT_NE(sp, std::string::npos) << where;
      const std::string arg = sp == std::string::npos ? "" : rest.substr(sp + 1);
      EXPECT_FALSE(closed.contains(name) || name == current)
          << "HELP/TYPE after samples: " << where;
      auto& table = is_help ? out.help : out.type;
      EXPECT_FALSE(table.contains(name)) << "repeated: " << where;
      if (is_type) {
        static const std::set<std::string> types{"counter", "gauge", "histogram", "summary",
                                                 "untyped"};
        EXPECT_TRUE(types.contains(arg)) << where;
      }
      table[name] = arg;
      continue;
    }
    // A sample: name, optional {labels}, a space, the value (no timestamp expected).
    prom_sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') {
      ++i;
    }
    s.name = line.substr(0, i);
    EXPECT_TRUE(metric_name_ok(s.name)) << where;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const std::size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') {
          ADD_FAILURE() << "malformed label: " << where;
          return out;
        }
        const std::string lname = line.substr(i, eq - i);
        EXPECT_TRUE(label_name_ok(lname)) << where;
        std::string value;
        std::size_t j = eq + 2;
        bool closed_quote = false;
        while (j < line.size()) {
          const char c = line[j];
          if (c == '\\') {
            if (j + 1 >= line.size()) {
              break;
            }
            const char e = line[j + 1];
            if (e == '\\') {
              value += '\\';
            } else if (e == '"') {
              value += '"';
            } else if (e == 'n') {
              value += '\n';
            } else {
              ADD_FAILURE() << "unknown escape \\" << e << ": " << where;
            }
            j += 2;
          } else if (c == '"') {
            closed_quote = true;
            ++j;
            break;
          } else {
            value += c;
            ++j;
          }
        }
        if (!closed_quote) {
          ADD_FAILURE() << "unterminated label value: " << where;
          return out;
        }
        EXPECT_TRUE(valid_utf8(value)) << where;
        EXPECT_FALSE(s.labels.contains(lname)) << "repeated label: " << where;
        s.labels[lname] = value;
        if (j < line.size() && line[j] == ',') {
          ++j;
        }
        i = j;
      }
      if (i >= line.size()) {
        ADD_FAILURE() << "unterminated labels: " << where;
        return out;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      ADD_FAILURE() << "no value: " << where;
      return out;
    }
    const std::string value = line.substr(i + 1);
    std::size_t used = 0;
    try {
      s.value = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    EXPECT_TRUE(!value.empty() && used == value.size()) << "bad value: " << where;
    EXPECT_TRUE(out.help.contains(s.name)) << "no HELP before: " << where;
    EXPECT_TRUE(out.type.contains(s.name)) << "no TYPE before: " << where;
    if (s.name != current) {
      EXPECT_FALSE(closed.contains(s.name)) << "samples of a metric not contiguous: " << where;
      if (!current.empty()) {
        closed.insert(current);
      }
      current = s.name;
    }
    std::string key = s.name;
    for (const auto& [k, v] : s.labels) {
      key += '\0' + k + '\0' + v;
    }
    EXPECT_TRUE(series.insert(key).second) << "duplicate series: " << where;
    out.samples.push_back(std::move(s));
  }
  return out;
}

std::string hex16(std::uint64_t id) {
  std::array<char, 24> buf{};
  std::snprintf(buf.data(), buf.size(), "%016llx", static_cast<unsigned long long>(id));
  return buf.data();
}

// ---- describe ------------------------------------------------------------------------------

TEST(Introspection, DescribeReportsEveryModeWithItsFields) {
  herald::bus_options bo;
  bo.threads = 1;
  herald::bus b(bo);
  herald::sub_list list(b, "servers");
  const auto up_down = herald::type_of<obs_event>(sub::up, sub::down);
  const auto all = herald::type_of<obs_event>();

  std::vector<std::uint32_t> lines;
  const auto here = [&](herald::source_location l = herald::source_location::current()) {
    lines.push_back(l.line());
    return l;
  };
  herald::subscribe_options o;
  o.id = herald::make_id("obs", "sync");
  o.name = "sync-sub";
  auto s1 = list.subscribe_sync<obs_event>(
      up_down, [](herald::sync_event<obs_event>&) {}, o, here());
  ASSERT_TRUE(s1);
  o.id = 0;
  o.name = "async-sub";
  auto s2 = list.subscribe_async<obs_event>(
      all, [](herald::async_event<obs_event>&) {}, o, here());
  ASSERT_TRUE(s2);
  herald::event_queue<obs_event> q;
  o.name = "queue-sub";
  auto s3 = list.subscribe_queue<obs_event>(herald::type_of<obs_event>(sub::add), q,
                                            herald::queue_notify::none(), o, here());
  ASSERT_TRUE(s3);
  o.name = "wild-sync";
  auto s4 = list.subscribe_wildcard_sync([](herald::wildcard_event&) {}, o, here());
  ASSERT_TRUE(s4);
  o.name = "wild-async";
  auto s5 = list.subscribe_wildcard_async([](herald::wildcard_event&) {}, o, here());
  ASSERT_TRUE(s5);
  herald::wildcard_queue wq;
  o.name = "wild-queue";
  auto s6 = list.subscribe_wildcard_queue(wq, herald::queue_notify::none(), o, here());
  ASSERT_TRUE(s6);

  const auto d = herald::describe(list);
  ASSERT_EQ(d.size(), 6U);
  const std::array<std::string_view, 6> names{"sync-sub",  "async-sub",  "queue-sub",
                                              "wild-sync", "wild-async", "wild-queue"};
  const std::array<herald::delivery_mode, 6> modes{
      herald::delivery_mode::sync, herald::delivery_mode::async, herald::delivery_mode::queue,
      herald::delivery_mode::sync, herald::delivery_mode::async, herald::delivery_mode::queue};
  for (std::size_t i = 0; i < d.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_EQ(d[i].name, names[i]);
    EXPECT_EQ(d[i].mode, modes[i]);
    EXPECT_EQ(d[i].wildcard, i >= 3);
    EXPECT_EQ(d[i].line, lines[i]);
    EXPECT_EQ(d[i].file, herald::source_location::current().file_name());
    EXPECT_FALSE(d[i].paused);
    EXPECT_EQ(d[i].exceptions, 0U);
    if (i > 0) {
      EXPECT_GT(d[i].seq, d[i - 1].seq);  // subscription order
    }
  }
  EXPECT_EQ(d[0].id, herald::make_id("obs", "sync"));
  EXPECT_EQ(d[1].id, 0U);
  EXPECT_EQ(d[0].type, up_down);
  EXPECT_EQ(d[0].type_name, "OBSEVENT_UP|OBSEVENT_DOWN");
  EXPECT_EQ(d[0].family_name, "OBSEVENT");
  EXPECT_EQ(d[1].type, all);
  EXPECT_EQ(d[1].type_name, "OBSEVENT");
  EXPECT_EQ(d[2].type_name, "OBSEVENT_ADD");
  for (std::size_t i = 3; i < 6; ++i) {
    EXPECT_TRUE(d[i].type.is_empty());
    EXPECT_EQ(d[i].type_name, "*");
    EXPECT_EQ(d[i].family_name, "*");
  }
  EXPECT_EQ(herald::to_string(herald::delivery_mode::sync), "sync");
  EXPECT_EQ(herald::to_string(herald::delivery_mode::async), "async");
  EXPECT_EQ(herald::to_string(herald::delivery_mode::queue), "queue");

  // A resubscribe shows; an unsubscribe removes the entry.
  ASSERT_TRUE(s1->resubscribe(herald::type_of<obs_event>(sub::down)));
  s2->unsubscribe();
  const auto d2 = herald::describe(list);
  ASSERT_EQ(d2.size(), 5U);
  EXPECT_EQ(d2[0].type_name, "OBSEVENT_DOWN");
  EXPECT_EQ(find_named(d2, "async-sub"), nullptr);
}

TEST(Introspection, PausedFlagAndExceptionsShow) {
  herald::bus b;
  auto s = b.global().subscribe_sync<obs_event>(herald::type_of<obs_event>(),
                                                [](herald::sync_event<obs_event>& e) {
                                                  if (e.safe().id < 0) {
                                                    throw std::runtime_error("negative");
                                                  }
                                                });
  ASSERT_TRUE(s);
  EXPECT_FALSE(herald::describe(b.global()).at(0).paused);
  ASSERT_TRUE(s->pause());
  EXPECT_TRUE(herald::describe(b.global()).at(0).paused);
  ASSERT_TRUE(s->resume());
  EXPECT_FALSE(herald::describe(b.global()).at(0).paused);
  ASSERT_TRUE(b.global().publish<obs_event>(sub::up, {-1}));
  ASSERT_TRUE(b.global().publish<obs_event>(sub::up, {1}));
  const auto d = herald::describe(b.global());
  EXPECT_EQ(d.at(0).exceptions, 1U);
  EXPECT_EQ(d.at(0).stats.published, 0U);  // sync subscriptions keep no counters
}

TEST(Introspection, CountersAfterABoundedDropEqualTheStats) {
  herald::bus b;
  herald::event_queue<obs_event> q;
  herald::subscribe_options o;
  o.name = "bounded";
  o.backpressure.bound = 2;
  o.backpressure.policy = herald::overflow_policy::drop_newest;
  auto s = b.global().subscribe_queue<obs_event>(herald::type_of<obs_event>(), q,
                                                 herald::queue_notify::none(), o);
  ASSERT_TRUE(s);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(b.global().publish<obs_event>(sub::up, {i}));
  }
  auto d = herald::describe(b.global());
  ASSERT_EQ(d.size(), 1U);
  EXPECT_EQ(d[0].stats.published, 5U);
  EXPECT_EQ(d[0].stats.dropped_newest, 3U);
  EXPECT_EQ(d[0].stats.queued, 2U);
  EXPECT_EQ(d[0].stats.high_water, 2U);
  EXPECT_EQ(d[0].stats.delivered, 0U);
  ASSERT_TRUE(q.pop());
  d = herald::describe(b.global());
  const herald::subscription_stats st = s->stats();
  EXPECT_EQ(d[0].stats.delivered, 1U);
  EXPECT_EQ(d[0].stats.queued, 1U);
  EXPECT_EQ(d[0].stats.published, st.published);
  EXPECT_EQ(d[0].stats.delivered, st.delivered);
  EXPECT_EQ(d[0].stats.dropped(), st.dropped());
  EXPECT_EQ(d[0].stats.queued, st.queued);
  EXPECT_EQ(d[0].stats.high_water, st.high_water);
}

TEST(Introspection, DestroyedListsAreEmptyAndSkipped) {
  herald::bus b;
  herald::sub_list gone(b, "gone");
  herald::sub_list kept(b, "kept");
  ASSERT_TRUE(gone.subscribe_sync<obs_event>(herald::type_of<obs_event>(),
                                             [](herald::sync_event<obs_event>&) {}));
  gone.destroy();
  EXPECT_TRUE(herald::describe(gone).empty());
  std::vector<std::string> labels;
  for (const auto& l : herald::describe_lists(b)) {
    labels.push_back(l.label);
  }
  EXPECT_EQ(labels, (std::vector<std::string>{"global", "kept"}));
  b.shutdown();
  EXPECT_TRUE(herald::describe_lists(b).empty());  // every list ended by the shutdown
}

TEST(Introspection, ListLabelsAreUniqueAndStable) {
  herald::bus b;
  herald::sub_list a(b);
  herald::sub_list c(b);
  herald::sub_list d1(b, "dup");
  herald::sub_list d2(b, "dup");
  const auto first = herald::describe_lists(b);
  ASSERT_EQ(first.size(), 5U);
  std::set<std::string> labels;
  for (const auto& l : first) {
    labels.insert(l.label);
  }
  EXPECT_EQ(labels.size(), 5U);
  EXPECT_EQ(first[0].label, "global");
  EXPECT_EQ(first[1].label.rfind("list-", 0), 0U) << first[1].label;
  EXPECT_EQ(first[2].label.rfind("list-", 0), 0U) << first[2].label;
  EXPECT_TRUE(first[1].name.empty());
  EXPECT_EQ(first[3].label, "dup");
  EXPECT_EQ(first[4].label.rfind("dup#", 0), 0U) << first[4].label;
  EXPECT_EQ(first[4].name, "dup");
  {
    herald::sub_list extra(b);  // a new list does not renumber the others
    const auto second = herald::describe_lists(b);
    ASSERT_EQ(second.size(), 6U);
    for (std::size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(second[i].label, first[i].label);
    }
    EXPECT_EQ(second[5].label.rfind("list-", 0), 0U);
    EXPECT_NE(second[5].label, first[1].label);
    EXPECT_NE(second[5].label, first[2].label);
  }
  const auto third = herald::describe_lists(b);
  ASSERT_EQ(third.size(), 5U);
  for (std::size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(third[i].label, first[i].label);
  }
}

// Turns the per-family publish counters on for the test (process-wide; off by default).
class family_counting_on {
 public:
  family_counting_on() noexcept { herald::set_family_counting(true); }
  ~family_counting_on() { herald::set_family_counting(false); }
  family_counting_on(const family_counting_on&) = delete;
  family_counting_on& operator=(const family_counting_on&) = delete;
};

TEST(Introspection, FamiliesCountSubscribersOverEveryLiveList) {
  const family_counting_on counting;
  herald::bus b;
  herald::sub_list other(b, "other");
  const herald::family_id ev = herald::family_id_of<obs_event>();
  const herald::family_id ot = herald::family_id_of<obs_other>();
  const auto before = herald::describe_families(b);
  ASSERT_NE(find_family(before, ev), nullptr);
  ASSERT_NE(find_family(before, ot), nullptr);
  EXPECT_EQ(find_family(before, ev)->name, "OBSEVENT");
  EXPECT_EQ(find_family(before, ev)->subscribers, 0U);
  const std::uint64_t published_before = find_family(before, ev)->published;

  auto a = b.global().subscribe_sync<obs_event>(herald::type_of<obs_event>(sub::up),
                                                [](herald::sync_event<obs_event>&) {});
  auto c = other.subscribe_sync<obs_event>(herald::type_of<obs_event>(),
                                           [](herald::sync_event<obs_event>&) {});
  herald::event_queue<obs_event> q;
  auto d = other.subscribe_queue<obs_event>(herald::type_of<obs_event>(sub::down), q);
  auto e = other.subscribe_sync<obs_other>(herald::type_of<obs_other>(),
                                           [](herald::sync_event<obs_other>&) {});
  auto w = other.subscribe_wildcard_sync([](herald::wildcard_event&) {});
  ASSERT_TRUE(a && c && d && e && w);
  ASSERT_TRUE(d->pause());  // paused subscriptions still count
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(other.publish<obs_event>(sub::up, {i}));
  }
  const auto after = herald::describe_families(b);
  EXPECT_EQ(after.size(), herald::family_count());
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].id, i);  // in id order
  }
  EXPECT_EQ(find_family(after, ev)->subscribers, 3U);
  EXPECT_EQ(find_family(after, ot)->subscribers, 1U);
  EXPECT_GE(find_family(after, ev)->published, published_before + 3);  // process-wide
  EXPECT_EQ(herald::wildcard_subscribers(b), 1U);

  other.destroy();  // its subscriptions no longer count
  const auto later = herald::describe_families(b);
  EXPECT_EQ(find_family(later, ev)->subscribers, 1U);
  EXPECT_EQ(find_family(later, ot)->subscribers, 0U);
  EXPECT_EQ(herald::wildcard_subscribers(b), 0U);
}

TEST(Introspection, DumpTextNamesListsSubscriptionsAndFamilies) {
  herald::bus b;
  herald::sub_list web(b, "server/web1");
  herald::subscribe_options o;
  o.name = "health-logger";
  o.id = herald::make_id("obs", "logger");
  ASSERT_TRUE(web.subscribe_sync<obs_event>(
      herald::type_of<obs_event>(sub::up, sub::down), [](herald::sync_event<obs_event>&) {}, o));
  herald::event_queue<obs_event> q;
  o.name = "line\nbreak";
  o.id = 0;
  ASSERT_TRUE(web.subscribe_queue<obs_event>(herald::type_of<obs_event>(), q,
                                             herald::queue_notify::none(), o));
  ASSERT_TRUE(web.publish<obs_event>(sub::up, {1}));
  const std::string text = herald::dump_text(b);
  const std::vector<std::string> wanted{"\"global\"",
                                        "\"server/web1\"",
                                        "health-logger",
                                        "OBSEVENT_UP|OBSEVENT_DOWN",
                                        "OBSEVENT",
                                        "line\\nbreak",
                                        "queue",
                                        "sync",
                                        "observability_test.cpp:",
                                        hex16(herald::make_id("obs", "logger"))};
  for (const std::string& s : wanted) {
    EXPECT_NE(text.find(s), std::string::npos) << "missing " << s << " in\n" << text;
  }
  EXPECT_EQ(text.find("line\nbreak"), std::string::npos);  // escaped: one row per line
}

// ---- dump_prometheus -------------------------------------------------------------------------

TEST(Prometheus, OutputParsesBackAndMatchesTheStats) {
  const family_counting_on counting;
  herald::bus_options bo;
  bo.threads = 1;
  herald::bus b(bo);
  herald::sub_list web(b, "server/\"web\"\\1");
  herald::sub_list anon(b);
  const std::string tricky = "say \"hi\"\\ back\nslash";
  herald::subscribe_options o;
  o.name = tricky;
  o.id = herald::make_id("obs", "tricky");
  o.backpressure.bound = 2;
  o.backpressure.policy = herald::overflow_policy::drop_newest;
  herald::event_queue<obs_event> q;
  auto sq = web.subscribe_queue<obs_event>(herald::type_of<obs_event>(), q,
                                           herald::queue_notify::none(), o);
  ASSERT_TRUE(sq);
  std::atomic<int> handled{0};
  herald::subscribe_options ao;
  ao.name = "async";
  auto sa = web.subscribe_async<obs_event>(
      herald::type_of<obs_event>(sub::up),
      [&handled](herald::async_event<obs_event>&) { handled.fetch_add(1); }, ao);
  ASSERT_TRUE(sa);
  auto ss = anon.subscribe_sync<obs_other>(
      herald::type_of<obs_other>(),
      [](herald::sync_event<obs_other>&) { throw std::runtime_error("x"); });
  ASSERT_TRUE(ss);
  auto sw = anon.subscribe_wildcard_sync([](herald::wildcard_event&) {});
  ASSERT_TRUE(sw);
  // Two identical anonymous subscriptions: still two series (seq tells them apart).
  auto ss2 = anon.subscribe_sync<obs_other>(herald::type_of<obs_other>(),
                                            [](herald::sync_event<obs_other>&) {});
  ASSERT_TRUE(ss2);
  ASSERT_TRUE(ss2->pause());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(web.publish<obs_event>(sub::up, {i}));
  }
  ASSERT_TRUE(anon.publish<obs_other>(obs_other::subtype::ping, {1}));
  ASSERT_TRUE(wait_for([&] { return handled.load() == 5; }));
  ASSERT_TRUE(wait_for([&] { return sa->stats().delivered == 5; }));
  ASSERT_TRUE(q.pop());

  const std::string text = herald::dump_prometheus(b);
  const prom_text p = parse_prometheus(text);
  ASSERT_FALSE(::testing::Test::HasFailure()) << text;

  for (const std::string_view m :
       {"herald_subscription_info", "herald_subscription_paused",
        "herald_subscription_exceptions_total", "herald_subscription_published_total",
        "herald_subscription_delivered_total", "herald_subscription_dropped_total",
        "herald_subscription_discarded_total", "herald_subscription_queued",
        "herald_subscription_high_water", "herald_list_subscriptions",
        "herald_family_published_total", "herald_family_subscribers", "herald_wildcard_subscribers",
        "herald_handler_exceptions_total"}) {
    EXPECT_TRUE(p.type.contains(std::string(m))) << m;
  }
  EXPECT_EQ(p.type.at("herald_subscription_published_total"), "counter");
  EXPECT_EQ(p.type.at("herald_subscription_queued"), "gauge");

  // The tricky names round-trip through the escaping.
  const auto labels = herald::describe_lists(b);
  ASSERT_EQ(labels.size(), 3U);
  EXPECT_EQ(labels[1].label, "server/\"web\"\\1");
  const std::map<std::string, std::string> tq{{"list", labels[1].label}, {"name", tricky}};
  const herald::subscription_stats st = sq->stats();
  EXPECT_EQ(p.value("herald_subscription_published_total", tq), double(st.published));
  EXPECT_EQ(p.value("herald_subscription_delivered_total", tq), double(st.delivered));
  EXPECT_EQ(st.published, 5U);
  EXPECT_EQ(st.delivered, 1U);
  auto with = [](std::map<std::string, std::string> m, std::string k, std::string v) {
    m[std::move(k)] = std::move(v);
    return m;
  };
  EXPECT_EQ(p.value("herald_subscription_dropped_total", with(tq, "cause", "newest")),
            double(st.dropped_newest));
  EXPECT_EQ(st.dropped_newest, 3U);
  EXPECT_EQ(p.value("herald_subscription_dropped_total", with(tq, "cause", "oldest")), 0.0);
  EXPECT_EQ(p.value("herald_subscription_queued", tq), double(st.queued));
  EXPECT_EQ(p.value("herald_subscription_high_water", tq), double(st.high_water));
  EXPECT_EQ(p.value("herald_subscription_discarded_total", tq), 0.0);
  const auto info = p.find("herald_subscription_info", tq);
  ASSERT_EQ(info.size(), 1U);
  EXPECT_EQ(info[0]->labels.at("id"), hex16(herald::make_id("obs", "tricky")));
  EXPECT_EQ(info[0]->labels.at("mode"), "queue");
  EXPECT_EQ(info[0]->labels.at("family"), "OBSEVENT");
  EXPECT_EQ(info[0]->labels.at("type"), "OBSEVENT");
  EXPECT_NE(info[0]->labels.at("origin").find("observability_test.cpp:"), std::string::npos);
  EXPECT_EQ(info[0]->value, 1.0);

  const std::map<std::string, std::string> am{{"list", labels[1].label}, {"name", "async"}};
  const herald::subscription_stats ast = sa->stats();
  EXPECT_EQ(p.value("herald_subscription_published_total", am), double(ast.published));
  EXPECT_EQ(p.value("herald_subscription_delivered_total", am), 5.0);
  EXPECT_EQ(p.value("herald_subscription_queued", am), 0.0);

  // Sync subscriptions: info, paused and exceptions only.
  const std::string anon_label = labels[2].label;
  EXPECT_EQ(anon_label.rfind("list-", 0), 0U);
  const auto sync_info =
      p.find("herald_subscription_info", {{"list", anon_label}, {"family", "OBSOTHER"}});
  ASSERT_EQ(sync_info.size(), 2U);
  EXPECT_NE(sync_info[0]->labels.at("seq"), sync_info[1]->labels.at("seq"));
  EXPECT_EQ(sync_info[0]->labels.at("mode"), "sync");
  EXPECT_EQ(sync_info[0]->labels.at("id"), hex16(0));
  EXPECT_TRUE(
      p.find("herald_subscription_published_total", {{"list", anon_label}, {"mode", "sync"}})
          .empty());
  const auto paused = p.find("herald_subscription_paused", {{"list", anon_label}});
  ASSERT_EQ(paused.size(), 3U);  // two sync subscriptions and the wildcard
  double paused_sum = 0;
  double exceptions_sum = 0;
  for (const auto* s : paused) {
    paused_sum += s->value;
  }
  for (const auto* s : p.find("herald_subscription_exceptions_total", {{"list", anon_label}})) {
    exceptions_sum += s->value;
  }
  EXPECT_EQ(paused_sum, 1.0);
  EXPECT_EQ(exceptions_sum, 1.0);
  const auto wild =
      p.find("herald_subscription_info", {{"list", anon_label}, {"family", "*"}, {"type", "*"}});
  EXPECT_EQ(wild.size(), 1U);

  // Per list and per family.
  EXPECT_EQ(p.value("herald_list_subscriptions", {{"list", "global"}}), 0.0);
  EXPECT_EQ(p.value("herald_list_subscriptions", {{"list", labels[1].label}}), 2.0);
  EXPECT_EQ(p.value("herald_list_subscriptions", {{"list", anon_label}}), 3.0);
  EXPECT_EQ(p.value("herald_family_subscribers", {{"family", "OBSEVENT"}}), 2.0);
  EXPECT_EQ(p.value("herald_family_subscribers", {{"family", "OBSOTHER"}}), 2.0);
  EXPECT_EQ(p.value("herald_family_published_total", {{"family", "OBSEVENT"}}),
            double(herald::family_published(herald::family_id_of<obs_event>())));
  EXPECT_EQ(p.value("herald_wildcard_subscribers", {}), 1.0);
  EXPECT_EQ(p.value("herald_handler_exceptions_total", {}), double(b.handler_exceptions()));
  EXPECT_EQ(b.handler_exceptions(), 1U);
}

TEST(Prometheus, FamilyPublishesAppearOnlyWhileCounted) {
  herald::bus b;
  ASSERT_TRUE(b.global().subscribe_sync<obs_event>(herald::type_of<obs_event>(),
                                                   [](herald::sync_event<obs_event>&) {}));
  herald::set_family_counting(false);
  ASSERT_TRUE(b.global().publish<obs_event>(sub::up, {1}));
  const prom_text off = parse_prometheus(herald::dump_prometheus(b));
  EXPECT_FALSE(off.type.contains("herald_family_published_total"));
  EXPECT_TRUE(off.find("herald_family_published_total", {}).empty());
  EXPECT_EQ(off.value("herald_family_subscribers", {{"family", "OBSEVENT"}}), 1.0);
  EXPECT_NE(herald::dump_text(b).find("publishes not counted"), std::string::npos);
  {
    const family_counting_on counting;
    const std::uint64_t before = herald::family_published(herald::family_id_of<obs_event>());
    ASSERT_TRUE(b.global().publish<obs_event>(sub::up, {2}));
    const prom_text on = parse_prometheus(herald::dump_prometheus(b));
    EXPECT_EQ(on.type.at("herald_family_published_total"), "counter");
    EXPECT_GE(on.value("herald_family_published_total", {{"family", "OBSEVENT"}}),
              double(before + 1));
  }
}

TEST(Prometheus, InvalidUtf8InANameBecomesTheReplacementCharacter) {
  herald::bus b;
  herald::subscribe_options o;
  o.name = std::string_view("ok-\xC3\xA9-bad-\xFF-cut-\xE2\x82", 18);  // é, then invalid bytes
  ASSERT_TRUE(b.global().subscribe_sync<obs_event>(
      herald::type_of<obs_event>(), [](herald::sync_event<obs_event>&) {}, o));
  const prom_text p = parse_prometheus(herald::dump_prometheus(b));
  const auto info = p.find("herald_subscription_info", {{"list", "global"}});
  ASSERT_EQ(info.size(), 1U);
  EXPECT_EQ(info[0]->labels.at("name"),
            "ok-\xC3\xA9-bad-\xEF\xBF\xBD-cut-\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---- presence --------------------------------------------------------------------------------

TEST(Presence, CountsEmittersAndSubscribersByIntersection) {
  herald::bus b;
  herald::sub_list other(b, "other");
  const auto up = herald::type_of<obs_event>(sub::up);
  const auto down = herald::type_of<obs_event>(sub::down);
  const auto all = herald::type_of<obs_event>();
  EXPECT_EQ(herald::presence(b, all).emitters, 0U);

  auto e1 = herald::declare_emitter(b, down);
  ASSERT_TRUE(e1);
  EXPECT_TRUE(*e1);
  EXPECT_EQ(e1->type(), down);
  auto e2 = herald::declare_emitter(b, herald::type_of<obs_event>(sub::down, sub::add));
  ASSERT_TRUE(e2);
  auto e3 = herald::declare_emitter(b, herald::type_of<obs_other>());
  ASSERT_TRUE(e3);
  EXPECT_EQ(herald::presence(b, up).emitters, 0U);
  EXPECT_EQ(herald::presence(b, down).emitters, 2U);
  EXPECT_EQ(herald::presence(b, all).emitters, 2U);
  EXPECT_EQ(herald::presence(b, herald::type_of<obs_event>(sub::add)).emitters, 1U);
  EXPECT_EQ(herald::presence(b, herald::type_of<obs_other>()).emitters, 1U);

  auto s1 = b.global().subscribe_sync<obs_event>(up, [](herald::sync_event<obs_event>&) {});
  auto s2 = other.subscribe_sync<obs_event>(all, [](herald::sync_event<obs_event>&) {});
  auto s3 = other.subscribe_wildcard_sync([](herald::wildcard_event&) {});
  ASSERT_TRUE(s1 && s2 && s3);
  const herald::type_presence pu = herald::presence(b, up);
  EXPECT_EQ(pu.subscribers, 2U);
  EXPECT_EQ(pu.wildcard_subscribers, 1U);
  EXPECT_EQ(herald::presence(b, down).subscribers, 1U);
  EXPECT_EQ(herald::presence(b, herald::type_of<obs_other>()).subscribers, 0U);
  EXPECT_EQ(herald::presence(b, herald::event_type()).wildcard_subscribers, 0U);  // empty type

  // Moving keeps one declaration; destroying or resetting removes it.
  herald::emitter moved = std::move(*e1);
  EXPECT_FALSE(*e1);
  EXPECT_EQ(herald::presence(b, down).emitters, 2U);
  moved.reset();
  EXPECT_FALSE(moved);
  EXPECT_EQ(moved.type(), herald::event_type());
  EXPECT_EQ(herald::presence(b, down).emitters, 1U);
  { herald::emitter scoped = std::move(*e2); }
  EXPECT_EQ(herald::presence(b, down).emitters, 0U);
  EXPECT_EQ(herald::presence(b, herald::type_of<obs_other>()).emitters, 1U);
}

TEST(Presence, DeclareRefusesEmptyUndeclaredAndLateTypes) {
  herald::bus b;
  const herald::family_id ev = herald::family_id_of<obs_event>();
  auto empty = herald::declare_emitter(b, herald::event_type(ev, 0));
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error(), herald::errc::family_mismatch);
  auto beyond = herald::declare_emitter(b, herald::event_type(ev, 1U << 5));
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error(), herald::errc::family_mismatch);
  auto unknown = herald::declare_emitter(b, herald::event_type(herald::max_families - 1, 1));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error(), herald::errc::family_mismatch);
  b.shutdown();
  auto late = herald::declare_emitter(b, herald::type_of<obs_event>());
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error(), herald::errc::shutting_down);
}

TEST(Presence, WaitForEmitterReturnsTrueOnceAnotherThreadDeclares) {
  herald::bus b;
  const auto up = herald::type_of<obs_event>(sub::up);
  std::optional<herald::emitter> kept;
  std::thread declarer([&] {
    auto e = herald::declare_emitter(b, herald::type_of<obs_event>(sub::up, sub::down));
    ASSERT_TRUE(e);
    kept.emplace(std::move(*e));
  });
  EXPECT_TRUE(herald::wait_for_emitter(b, up, std::chrono::hours(1)));
  declarer.join();
  // Already declared: at once, also with a zero timeout.
  EXPECT_TRUE(herald::wait_for_emitter(b, up, std::chrono::milliseconds(0)));
  EXPECT_FALSE(herald::wait_for_emitter(b, herald::type_of<obs_event>(sub::add),
                                        std::chrono::milliseconds(0)));
}

TEST(Presence, WaitForEmitterTimesOutWithoutOne) {
  herald::bus b;
  auto other = herald::declare_emitter(b, herald::type_of<obs_event>(sub::down));
  ASSERT_TRUE(other);
  EXPECT_FALSE(herald::wait_for_emitter(b, herald::type_of<obs_event>(sub::up),
                                        std::chrono::milliseconds(20)));
  EXPECT_FALSE(herald::wait_for_emitter(b, herald::event_type(), std::chrono::hours(1)));
}

TEST(Presence, ShutdownWakesAWaiter) {
  herald::bus b;
  std::atomic<bool> waiting{false};
  std::atomic<int> result{-1};
  std::thread waiter([&] {
    waiting.store(true);
    // An hour: if shutdown did not wake it, the test would time out (ctest) and fail.
    result.store(
        herald::wait_for_emitter(b, herald::type_of<obs_event>(), std::chrono::hours(1)) ? 1 : 0);
  });
  ASSERT_TRUE(wait_for([&] { return waiting.load(); }));
  b.shutdown();
  waiter.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT_FALSE(herald::wait_for_emitter(b, herald::type_of<obs_event>(), std::chrono::hours(1)));
}

TEST(Presence, EmitterHandlesOutliveTheirBus) {
  auto b = std::make_unique<herald::bus>();
  auto e = herald::declare_emitter(*b, herald::type_of<obs_event>());
  ASSERT_TRUE(e);
  herald::emitter kept = std::move(*e);
  b.reset();
  EXPECT_TRUE(kept);
  kept.reset();  // frees the bus's shared state (AddressSanitizer checks)
  EXPECT_FALSE(kept);
}

// ---- Concurrency -----------------------------------------------------------------------------

TEST(Introspection, SnapshotsRaceCleanlyWithSubscribesPublishesAndLists) {
  herald::bus_options bo;
  bo.threads = 2;
  herald::bus b(bo);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> work{0};
  std::vector<std::thread> threads;
  // Subscribes and unsubscribes in every mode on the global list.
  threads.emplace_back([&] {
    int i = 0;
    while (!stop.load()) {
      herald::subscribe_options o;
      const std::string name = "churn-" + std::to_string(i++);
      o.name = name;
      o.backpressure.bound = 4;
      auto s1 = b.global().subscribe_sync<obs_event>(
          herald::type_of<obs_event>(sub::up), [](herald::sync_event<obs_event>&) {}, o);
      auto s2 = b.global().subscribe_async<obs_event>(
          herald::type_of<obs_event>(), [](herald::async_event<obs_event>&) {}, o);
      herald::event_queue<obs_event> q;
      auto s3 = b.global().subscribe_queue<obs_event>(herald::type_of<obs_event>(), q,
                                                      herald::queue_notify::none(), o);
      auto s4 = b.global().subscribe_wildcard_sync([](herald::wildcard_event&) {}, o);
      if (s1) {
        (void)s1->pause();
        s1->unsubscribe();
      }
      if (s2) {
        s2->unsubscribe();
      }
      while (q.pop()) {
      }
      q.reset();
      if (s4) {
        s4->unsubscribe();
      }
      work.fetch_add(1);
    }
  });
  // Publishes.
  threads.emplace_back([&] {
    int i = 0;
    while (!stop.load()) {
      (void)b.global().publish<obs_event>(i % 2 == 0 ? sub::up : sub::down, {i});
      (void)b.global().publish<obs_other>(obs_other::subtype::ping, {i});
      ++i;
      work.fetch_add(1);
    }
  });
  // Makes and destroys lists (named and unnamed), with subscriptions, and emitters.
  threads.emplace_back([&] {
    int i = 0;
    while (!stop.load()) {
      herald::sub_list l(b, i % 2 == 0 ? std::string_view{} : std::string_view{"tmp"});
      auto s = l.subscribe_sync<obs_other>(herald::type_of<obs_other>(),
                                           [](herald::sync_event<obs_other>&) {});
      (void)l.publish<obs_other>(obs_other::subtype::ping, {i});
      auto e = herald::declare_emitter(b, herald::type_of<obs_other>());
      if (i % 3 == 0) {
        l.destroy();
      }
      ++i;
      work.fetch_add(1);
    }
  });

  std::size_t dumps = 0;
  while (dumps < 200 || work.load() < 600) {
    const auto d = herald::describe(b.global());
    for (const auto& s : d) {
      EXPECT_FALSE(s.name.empty());
    }
    const auto lists = herald::describe_lists(b);
    std::set<std::string> labels;
    for (const auto& l : lists) {
      EXPECT_TRUE(labels.insert(l.label).second) << l.label;
    }
    const std::string prom = herald::dump_prometheus(b);
    if (dumps % 20 == 0) {
      (void)parse_prometheus(prom);
    }
    (void)herald::dump_text(b);
    (void)herald::describe_families(b);
    (void)herald::presence(b, herald::type_of<obs_other>());
    ++dumps;
    if (::testing::Test::HasFailure()) {
      break;
    }
  }
  stop.store(true);
  for (auto& t : threads) {
    t.join();
  }
}

}  // namespace
