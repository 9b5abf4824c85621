// Multi-threaded stress tests of wildcard subscriptions (herald/bus.hpp: subscribe_wildcard_*;
// src/core/sub_list.cpp: publish_rest, publish_unindexed, build_wildcard, replay_last_values).
// They run under ThreadSanitizer and AddressSanitizer.
//
// WildcardStress.ChurnInEveryModeWhilePublishersRun
//   Publisher threads publish to one list (until the churn threads are done), over three families:
//   WSALPHA (with a codec), WSBETA (no codec) and WSGAMMA (stateful, with a codec: its publishes
//   take the last-value lock and new wildcard subscriptions get its last values replayed).
//   Meanwhile churn threads subscribe and end, again and again, wildcard subscriptions in every
//   mode (sync; async and queue, unbounded or bounded with drop_newest, drop_oldest or block, some
//   discarding their pending events at the end), pause and resume them, end them by handle, by
//   id or from inside their own handler, and subscribe and unsubscribe family subscriptions in
//   every mode. Two witnesses (a wildcard sync and an unbounded wildcard async subscription)
//   live for the whole run. Checked:
//   - every async and queue subscription (wildcard or family) reaches END exactly once, last,
//     with the reason of its ending, and then: queued == 0, published == delivered + dropped()
//     + discarded, delivered == the events its consumer saw;
//   - per publisher thread, delivery order is publish order (for the stateful family, per
//     subtype: a replay comes in subtype order), sub_sequence increases with it;
//   - the view is consistent: the payload is read through safe_as<F>() of exactly one family,
//     and encode() succeeds exactly for the families with a codec and gives the codec's text;
//   - a sync wildcard handler never runs after unsubscribe() returned;
//   - the witnesses saw every publish; every publish succeeded.
//
// WildcardStress.ListsDestroyedUnderLoadEndEveryWildcardSubscription
//   Rounds of: a fresh list with wildcard subscriptions in every mode (and a family one),
//   publishers publishing to it, and the list destroyed under load (by the test thread, or from
//   inside a sync wildcard handler). Checked: END with end_reason::list_destroyed and the
//   identity for every async and queue subscription; publishes then report list_destroyed.
//
// WildcardStress.WildcardSubscribesRaceWithReclamationOnOtherThreads
//   One thread subscribes and unsubscribes wildcard subscriptions in a loop while another
//   reclaims (bus::reclaim()) and a third publishes: the snapshot pieces a wildcard subscribe
//   or unsubscribe retires must not be read by it afterwards (ThreadSanitizer, AddressSanitizer).
//
// How the threads meet
//   Waits are on flags and counters (spin then yield); nothing sleeps or asserts on time.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies the work. The base counts are
//   sized for sanitizer builds; the optimised build does more (a few seconds).
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "herald/backpressure.hpp"
#include "herald/bus.hpp"
#include "stress_support.hpp"

namespace {

using herald::end_reason;
using herald::overflow_policy;
using herald::type_of;
using herald::test::optimised_build;
using herald::test::spin_until;
using herald::test::stress_scale;
using namespace std::chrono_literals;

constexpr std::size_t max_publishers = 4;

struct ws_payload {
  std::uint32_t pub = 0;    // the publisher thread
  std::uint64_t count = 0;  // per publisher, from 1, across every family
};

std::string encode_payload(const ws_payload& p) {
  return std::to_string(p.pub) + ":" + std::to_string(p.count);
}

struct ws_alpha {
  static constexpr std::string_view family_name = "WSALPHA";
  enum class subtype : std::uint8_t { one, two };
  static constexpr std::array<std::string_view, 2> subtype_names{"ONE", "TWO"};
  using safe_part = ws_payload;
  struct codec {
    static std::string encode(const safe_part& p) { return encode_payload(p); }
  };
};

struct ws_beta {
  static constexpr std::string_view family_name = "WSBETA";
  enum class subtype : std::uint8_t { only };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONLY"};
  using safe_part = ws_payload;
};

struct ws_gamma {
  static constexpr std::string_view family_name = "WSGAMMA";
  enum class subtype : std::uint8_t { x, y };
  static constexpr std::array<std::string_view, 2> subtype_names{"X", "Y"};
  static constexpr bool stateful = true;
  using safe_part = ws_payload;
  struct codec {
    static std::string encode(const safe_part& p) { return encode_payload(p); }
  };
};

[[maybe_unused]] const bool families_declared =
    herald::family_id_of<ws_alpha>() != herald::family_id_of<ws_beta>() &&
    herald::family_id_of<ws_gamma>() != herald::family_id_of<ws_beta>();

std::size_t scaled(std::size_t sanitized, std::size_t optimised, double scale) {
  const double n = static_cast<double>(optimised_build ? optimised : sanitized) * scale;
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

// Publishes event number `c` of publisher `p`: WSGAMMA (stateful) one time in eight,
// alternating X and Y; else WSALPHA ONE/TWO and WSBETA in turn.
herald::result<std::size_t> publish_one(herald::sub_list& list, std::uint32_t p, std::uint64_t c) {
  const ws_payload payload{p, c};
  if (c % 8 == 0) {
    return list.publish<ws_gamma>((c / 8) % 2 == 0 ? ws_gamma::subtype::x : ws_gamma::subtype::y,
                                  payload);
  }
  switch (c % 3) {
    case 0:
      return list.publish<ws_alpha>(ws_alpha::subtype::one, payload);
    case 1:
      return list.publish<ws_beta>(ws_beta::subtype::only, payload);
    default:
      return list.publish<ws_alpha>(ws_alpha::subtype::two, payload);
  }
}

// What one view says, checked: the payload through exactly one family's safe_as<F>(), and the
// codec's text exactly for the families with a codec. nullopt when the view is inconsistent.
struct view_facts {
  ws_payload payload;
  std::size_t order_class = 0;  // 0: non-stateful; 1 + bit: WSGAMMA's subtype `bit`
};
std::optional<view_facts> read_view(const herald::event_view& v, bool encode) {
  const ws_payload* a = v.safe_as<ws_alpha>();
  const ws_payload* b = v.safe_as<ws_beta>();
  const ws_payload* g = v.safe_as<ws_gamma>();
  const int found = (a != nullptr) + (b != nullptr) + (g != nullptr);
  if (found != 1) {
    return std::nullopt;
  }
  const ws_payload* p = a != nullptr ? a : b != nullptr ? b : g;
  if (p->pub >= max_publishers || p->count == 0) {
    return std::nullopt;
  }
  if (encode) {
    auto text = v.encode();
    if (b != nullptr) {
      if (v.has_codec() || text || text.error() != herald::errc::no_codec) {
        return std::nullopt;
      }
    } else if (!v.has_codec() || !text || *text != encode_payload(*p)) {
      return std::nullopt;
    }
  }
  view_facts f{*p, 0};
  if (g != nullptr) {
    f.order_class = 1 + static_cast<std::size_t>(std::countr_zero(v.type().subtypes()));
  }
  return f;
}

// Per publisher and order class, the last count and sub_sequence seen. Used by one consumer at
// a time (or, for a sync subscription, slot `pub` by publisher `pub`'s thread, and the
// stateful classes under the list's last-value lock).
struct order_check {
  std::array<std::array<std::uint64_t, 3>, max_publishers> last_count{};
  std::array<std::array<std::uint64_t, 3>, max_publishers> last_sub_seq{};
  bool see(const view_facts& f, std::uint64_t sub_seq) {
    auto& count = last_count[f.payload.pub][f.order_class];
    auto& seq = last_sub_seq[f.payload.pub][f.order_class];
    const bool ok = f.payload.count > count && (sub_seq == 0 || sub_seq > seq);
    count = f.payload.count;
    seq = sub_seq;
    return ok;
  }
};

// An async or queue subscription's consumer record. Written by its consumer only (the async
// handler, which never runs on two threads at once, or the churn thread popping a queue);
// read by the churn thread after `done` (release/acquire).
struct consumer_record {
  order_check order;
  std::uint64_t seen = 0;
  std::uint64_t errors = 0;  // disorder or an inconsistent view
  std::uint64_t after_end = 0;
  int ends = 0;
  end_reason reason = end_reason::unsubscribed;
  std::atomic<bool> done{false};

  void see(const herald::event_view& v) {
    if (ends != 0) {
      ++after_end;
    }
    ++seen;
    const auto facts = read_view(v, seen % 8 == 1);
    if (!facts || !order.see(*facts, v.sub_sequence()) || v.sub_sequence() == 0 ||
        v.sequence() == 0) {
      ++errors;
    }
  }
  void end(end_reason why) {
    ++ends;
    reason = why;
    done.store(true, std::memory_order_release);
  }
};

// A wildcard async handler; unsubscribes itself after `self_end_at` events (0: never).
struct wild_async {
  consumer_record* rec;
  std::uint64_t self_end_at = 0;
  void operator()(herald::wildcard_event& e) {
    rec->see(e);
    if (rec->seen == self_end_at) {
      e.self().unsubscribe();
    }
  }
  void on_end(end_reason why) { rec->end(why); }
};

// A family async handler (any of the three families), counting only.
template <class F>
struct family_async {
  consumer_record* rec;
  void operator()(herald::async_event<F>&) { ++rec->seen; }
  void on_end(end_reason why) { rec->end(why); }
};

// A sync wildcard subscription's record: shared with its handler (publisher threads).
struct sync_record {
  order_check order;  // see order_check for who writes what
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> after_end{0};
  std::atomic<bool> ended{false};  // set once unsubscribe() returned
};

// Checks an ended async or queue subscription's record against its counters.
void check_ended(const consumer_record& r, const herald::subscription_stats& st,
                 end_reason expected, const std::string& what) {
  const std::string counters = what + ": published " + std::to_string(st.published) +
                               ", delivered " + std::to_string(st.delivered) + ", dropped " +
                               std::to_string(st.dropped()) + ", discarded " +
                               std::to_string(st.discarded) + ", queued " +
                               std::to_string(st.queued) + ", seen " + std::to_string(r.seen);
  EXPECT_EQ(r.ends, 1) << counters;
  EXPECT_EQ(r.reason, expected) << counters;
  EXPECT_EQ(r.after_end, 0u) << counters;
  EXPECT_EQ(r.errors, 0u) << counters << " (disorder or an inconsistent view)";
  EXPECT_EQ(st.queued, 0u) << counters;
  EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded) << counters;
  EXPECT_EQ(st.delivered, r.seen) << counters;
}

// Random subscribe options of a wildcard (or family) async/queue subscription.
herald::subscribe_options random_options(std::minstd_rand& rng) {
  herald::subscribe_options opt;
  switch (rng() % 5) {
    case 0:
    case 1:
      break;  // unbounded
    case 2:
      opt.backpressure.bound = 1 + rng() % 16;
      opt.backpressure.policy = overflow_policy::drop_newest;
      break;
    case 3:
      opt.backpressure.bound = 1 + rng() % 16;
      opt.backpressure.policy = overflow_policy::drop_oldest;
      break;
    default:
      opt.backpressure.bound = 1 + rng() % 16;
      opt.backpressure.policy = overflow_policy::block;
      opt.backpressure.block_timeout = 20us;
      opt.backpressure.after_timeout = overflow_policy::drop_newest;
      break;
  }
  if (rng() % 4 == 0) {
    opt.on_end = herald::pending_on_end::discard;
  }
  opt.events_per_run = static_cast<unsigned>(1 + rng() % 64);
  return opt;
}

struct churn_totals {
  std::atomic<std::uint64_t> wildcard_sync{0};
  std::atomic<std::uint64_t> wildcard_async{0};
  std::atomic<std::uint64_t> wildcard_queue{0};
  std::atomic<std::uint64_t> family{0};
};

TEST(WildcardStress, ChurnInEveryModeWhilePublishersRun) {
  const double scale = stress_scale();
  const std::size_t publishers = 3;
  const std::size_t churners = 2;
  // Each churn thread makes this many subscriptions; the publishers publish at least
  // `min_per_publisher` events each, and go on until the churn threads are done.
  const std::size_t churn_rounds = scaled(200, 800, scale);
  const std::size_t min_per_publisher = scaled(8000, 100000, scale);

  herald::bus b({.threads = 2});
  herald::sub_list list(b, "wildcard-stress");

  // The witnesses.
  auto witness_sync = std::make_shared<sync_record>();
  auto ws = list.subscribe_wildcard_sync([rec = witness_sync](herald::wildcard_event& e) {
    rec->calls.fetch_add(1, std::memory_order_relaxed);
    const auto facts = read_view(e, false);
    if (!facts || !rec->order.see(*facts, 0)) {
      rec->errors.fetch_add(1, std::memory_order_relaxed);
    }
  });
  consumer_record witness_async;
  auto wa = list.subscribe_wildcard_async(wild_async{&witness_async});
  ASSERT_TRUE(ws && wa);

  std::atomic<std::uint64_t> published{0};  // successful publishes so far, every thread
  std::atomic<std::uint64_t> publish_errors{0};
  std::atomic<std::size_t> publishers_left{publishers};
  std::atomic<std::size_t> churners_left{churners};
  churn_totals made;

  // Waits until `span` more events were published (or the publishers are done), popping `q`
  // meanwhile when given.
  const auto live_for = [&](std::uint64_t span, const auto& on_wait) {
    const std::uint64_t until = published.load(std::memory_order_relaxed) + span;
    spin_until([&] {
      on_wait();
      return published.load(std::memory_order_relaxed) >= until ||
             publishers_left.load(std::memory_order_acquire) == 0;
    });
  };
  const auto nothing = [] {};

  std::vector<std::thread> churn;
  for (std::size_t t = 0; t < churners; ++t) {
    churn.emplace_back([&, t] {
      struct leave {  // also when an ASSERT returns early: the publishers wait for it
        std::atomic<std::size_t>& left;
        ~leave() { left.fetch_sub(1, std::memory_order_release); }
      } on_exit{churners_left};
      std::minstd_rand rng(static_cast<std::uint32_t>(1000 + t));
      for (std::uint64_t round = 1; round <= churn_rounds; ++round) {
        const std::string what = "churn " + std::to_string(t) + " round " + std::to_string(round);
        const std::uint64_t id = herald::make_id("wildcard-stress", what);
        const std::uint64_t span = 1 + rng() % 400;
        switch (rng() % 6) {
          case 0: {  // wildcard sync: pause/resume, then unsubscribe by handle or by id
            auto rec = std::make_shared<sync_record>();
            auto s = list.subscribe_wildcard_sync(
                [rec](herald::wildcard_event& e) {
                  if (rec->ended.load(std::memory_order_acquire)) {
                    rec->after_end.fetch_add(1, std::memory_order_relaxed);
                  }
                  rec->calls.fetch_add(1, std::memory_order_relaxed);
                  const auto facts =
                      read_view(e, rec->calls.load(std::memory_order_relaxed) % 8 == 0);
                  if (!facts || e.sequence() != 0 || e.sub_sequence() != 0 ||
                      !rec->order.see(*facts, 0)) {
                    rec->errors.fetch_add(1, std::memory_order_relaxed);
                  }
                },
                {.id = id});
            ASSERT_TRUE(s) << what;
            live_for(span, nothing);
            if (rng() % 2 == 0) {
              ASSERT_TRUE(s->pause());
              live_for(span / 2, nothing);
              ASSERT_TRUE(s->resume());
            }
            if (rng() % 2 == 0) {
              s->unsubscribe();
            } else {
              ASSERT_TRUE(list.lookup_unsubscribe(id));
            }
            rec->ended.store(true, std::memory_order_release);
            live_for(16, nothing);
            EXPECT_EQ(rec->after_end.load(), 0u) << what << ": called after unsubscribe()";
            EXPECT_EQ(rec->errors.load(), 0u) << what;
            made.wildcard_sync.fetch_add(1);
            break;
          }
          case 1:
          case 2: {  // wildcard async: ended by handle, by id or by itself
            auto rec = std::make_unique<consumer_record>();
            const unsigned how = static_cast<unsigned>(rng() % 3);
            herald::subscribe_options opt = random_options(rng);
            opt.id = id;
            auto s = list.subscribe_wildcard_async(
                wild_async{rec.get(), how == 2 ? 1 + rng() % 200 : 0}, opt);
            ASSERT_TRUE(s) << what;
            live_for(span, nothing);
            if (rng() % 3 == 0) {
              (void)s->pause();  // not_found if it ended itself
              live_for(span / 2, nothing);
              (void)s->resume();
            }
            if (how == 0) {
              s->unsubscribe();
            } else if (how == 1) {
              ASSERT_TRUE(list.lookup_unsubscribe(id));
            } else {
              s->unsubscribe();  // in case it did not reach self_end_at (idempotent)
            }
            spin_until([&] { return rec->done.load(std::memory_order_acquire); });
            check_ended(*rec, s->stats(), end_reason::unsubscribed, what + " wildcard async");
            made.wildcard_async.fetch_add(1);
            break;
          }
          case 3:
          case 4: {  // wildcard queue, popped by this thread while it lives, then to END
            consumer_record rec;
            herald::wildcard_queue q;
            herald::subscribe_options opt = random_options(rng);
            opt.id = id;
            auto s = list.subscribe_wildcard_queue(q, herald::queue_notify::none(), opt);
            ASSERT_TRUE(s) << what;
            const unsigned pop_every = 1 + static_cast<unsigned>(rng() % 4);
            unsigned tick = 0;
            const auto pop_some = [&] {
              if (++tick % pop_every != 0) {
                return;  // a slow consumer: its bound overflows
              }
              for (int k = 0; k < 4; ++k) {
                auto item = q.pop();
                if (!item) {
                  return;
                }
                if (item->is_end()) {
                  rec.end(item->end_reason());
                  return;
                }
                rec.see(item->view());
              }
            };
            live_for(span, pop_some);
            if (rng() % 2 == 0) {
              s->unsubscribe();
            } else {
              ASSERT_TRUE(list.lookup_unsubscribe(id));
            }
            while (rec.ends == 0) {
              auto item = q.pop();
              ASSERT_TRUE(item) << what << ": END missing after unsubscribe";
              if (item->is_end()) {
                rec.end(item->end_reason());
              } else {
                rec.see(item->view());
              }
            }
            EXPECT_FALSE(q.pop()) << what << ": an item after END";
            check_ended(rec, s->stats(), end_reason::unsubscribed, what + " wildcard queue");
            made.wildcard_queue.fetch_add(1);
            break;
          }
          default: {  // a family subscription in a random mode, to a random family
            const unsigned mode = static_cast<unsigned>(rng() % 3);
            const unsigned fam = static_cast<unsigned>(rng() % 3);
            if (mode == 0) {
              std::optional<herald::result<herald::subscription>> s;
              if (fam == 0) {
                s = list.subscribe_sync<ws_alpha>(type_of<ws_alpha>(),
                                                  [](herald::sync_event<ws_alpha>&) {});
              } else if (fam == 1) {
                s = list.subscribe_sync<ws_beta>(type_of<ws_beta>(),
                                                 [](herald::sync_event<ws_beta>&) {});
              } else {
                s = list.subscribe_sync<ws_gamma>(type_of<ws_gamma>(ws_gamma::subtype::y),
                                                  [](herald::sync_event<ws_gamma>&) {});
              }
              ASSERT_TRUE(*s) << what;
              live_for(span, nothing);
              (*s)->unsubscribe();
            } else if (mode == 1) {
              auto rec = std::make_unique<consumer_record>();
              const herald::subscribe_options opt = random_options(rng);
              std::optional<herald::result<herald::subscription>> s;
              if (fam == 0) {
                s = list.subscribe_async<ws_alpha>(type_of<ws_alpha>(),
                                                   family_async<ws_alpha>{rec.get()}, opt);
              } else if (fam == 1) {
                s = list.subscribe_async<ws_beta>(type_of<ws_beta>(),
                                                  family_async<ws_beta>{rec.get()}, opt);
              } else {
                s = list.subscribe_async<ws_gamma>(type_of<ws_gamma>(),
                                                   family_async<ws_gamma>{rec.get()}, opt);
              }
              ASSERT_TRUE(*s) << what;
              live_for(span, nothing);
              (*s)->unsubscribe();
              spin_until([&] { return rec->done.load(std::memory_order_acquire); });
              check_ended(*rec, (*s)->stats(), end_reason::unsubscribed, what + " family async");
            } else {
              herald::event_queue<ws_alpha> q;
              const herald::subscribe_options opt = random_options(rng);
              auto s = list.subscribe_queue<ws_alpha>(type_of<ws_alpha>(ws_alpha::subtype::two), q,
                                                      herald::queue_notify::none(), opt);
              ASSERT_TRUE(s) << what;
              consumer_record rec;
              live_for(span, [&] {
                if (auto item = q.pop()) {
                  ++rec.seen;
                }
              });
              s->unsubscribe();
              while (rec.ends == 0) {
                auto item = q.pop();
                ASSERT_TRUE(item) << what << ": END missing after unsubscribe";
                if (item->is_end()) {
                  rec.end(item->end_reason());
                } else {
                  ++rec.seen;
                }
              }
              check_ended(rec, s->stats(), end_reason::unsubscribed, what + " family queue");
            }
            made.family.fetch_add(1);
            break;
          }
        }
      }
    });
  }

  std::vector<std::thread> pubs;
  for (std::size_t p = 0; p < publishers; ++p) {
    pubs.emplace_back([&, p] {
      for (std::uint64_t c = 1;
           c <= min_per_publisher || churners_left.load(std::memory_order_acquire) != 0; ++c) {
        if (publish_one(list, static_cast<std::uint32_t>(p), c)) {
          published.fetch_add(1, std::memory_order_relaxed);
        } else {
          publish_errors.fetch_add(1, std::memory_order_relaxed);
        }
        if (c % 64 == 0) {
          // Paced: the last-value lock is not fair, and subscribes need it too.
          std::this_thread::yield();
        }
      }
      publishers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (auto& t : pubs) {
    t.join();
  }
  for (auto& t : churn) {
    t.join();
  }
  b.shutdown();  // drains the witness, then its END
  spin_until([&] { return witness_async.done.load(std::memory_order_acquire); });

  const std::uint64_t total = published.load();
  EXPECT_EQ(publish_errors.load(), 0u);
  EXPECT_GE(total, publishers * min_per_publisher);
  EXPECT_EQ(witness_sync->calls.load(), total);
  EXPECT_EQ(witness_sync->errors.load(), 0u);
  const herald::subscription_stats st = wa->stats();
  EXPECT_EQ(st.published, total);
  EXPECT_EQ(st.delivered, total);
  check_ended(witness_async, st, end_reason::shutdown, "witness async");
  EXPECT_EQ(made.wildcard_sync.load() + made.wildcard_async.load() + made.wildcard_queue.load() +
                made.family.load(),
            churners * churn_rounds);
  std::printf(
      "wildcard churn: %llu publishes; %llu wildcard sync, %llu async, %llu queue and "
      "%llu family subscriptions made and ended\n",
      static_cast<unsigned long long>(total),
      static_cast<unsigned long long>(made.wildcard_sync.load()),
      static_cast<unsigned long long>(made.wildcard_async.load()),
      static_cast<unsigned long long>(made.wildcard_queue.load()),
      static_cast<unsigned long long>(made.family.load()));
}

TEST(WildcardStress, ListsDestroyedUnderLoadEndEveryWildcardSubscription) {
  const double scale = stress_scale();
  const std::size_t rounds = scaled(50, 200, scale);
  herald::bus b({.threads = 2});
  for (std::size_t round = 0; round < rounds; ++round) {
    const std::string what = "round " + std::to_string(round);
    std::minstd_rand rng(static_cast<std::uint32_t>(round + 7));
    herald::sub_list list(b);
    consumer_record async_rec;
    consumer_record bounded_rec;
    consumer_record queue_rec;
    consumer_record family_rec;
    herald::wildcard_queue q;
    const bool from_handler = round % 2 == 1;
    const std::uint64_t destroy_at = 50 + rng() % 500;
    std::atomic<std::uint64_t> sync_calls{0};
    auto ws = list.subscribe_wildcard_sync([&](herald::wildcard_event&) {
      if (sync_calls.fetch_add(1, std::memory_order_relaxed) + 1 == destroy_at && from_handler) {
        list.destroy();  // from inside a handler of this very list
      }
    });
    auto wa = list.subscribe_wildcard_async(wild_async{&async_rec});
    herald::subscribe_options bounded;
    bounded.backpressure.bound = 4;
    bounded.backpressure.policy = overflow_policy::drop_oldest;
    auto wb = list.subscribe_wildcard_async(wild_async{&bounded_rec}, bounded);
    auto wq = list.subscribe_wildcard_queue(q);
    auto fa =
        list.subscribe_async<ws_gamma>(type_of<ws_gamma>(), family_async<ws_gamma>{&family_rec});
    ASSERT_TRUE(ws && wa && wb && wq && fa) << what;

    std::atomic<std::uint64_t> unexpected_errors{0};
    std::vector<std::thread> pubs;
    for (std::uint32_t p = 0; p < 2; ++p) {
      pubs.emplace_back([&, p] {
        for (std::uint64_t c = 1;; ++c) {
          auto r = publish_one(list, p, c);
          if (!r) {
            if (r.error() != herald::errc::list_destroyed) {
              unexpected_errors.fetch_add(1, std::memory_order_relaxed);
            }
            break;
          }
        }
      });
    }
    // The consumer of the queue: this thread, until END; it also destroys the list in the
    // rounds where no handler does.
    bool destroyed = false;
    spin_until([&] {
      while (auto item = q.pop()) {
        if (item->is_end()) {
          queue_rec.end(item->end_reason());
          break;
        }
        queue_rec.see(item->view());
      }
      if (!from_handler && !destroyed && sync_calls.load(std::memory_order_relaxed) >= destroy_at) {
        list.destroy();  // while the publishers publish
        destroyed = true;
      }
      return queue_rec.ends != 0;
    });
    for (auto& t : pubs) {
      t.join();
    }
    EXPECT_FALSE(q.pop()) << what << ": an item after END";
    spin_until([&] {
      return async_rec.done.load(std::memory_order_acquire) &&
             bounded_rec.done.load(std::memory_order_acquire) &&
             family_rec.done.load(std::memory_order_acquire);
    });
    EXPECT_EQ(unexpected_errors.load(), 0u) << what;
    EXPECT_TRUE(list.is_destroyed()) << what;
    check_ended(async_rec, wa->stats(), end_reason::list_destroyed, what + " wildcard async");
    check_ended(bounded_rec, wb->stats(), end_reason::list_destroyed, what + " bounded async");
    check_ended(queue_rec, wq->stats(), end_reason::list_destroyed, what + " wildcard queue");
    EXPECT_EQ(family_rec.ends, 1) << what;
    EXPECT_EQ(family_rec.reason, end_reason::list_destroyed) << what;
    EXPECT_FALSE(ws->is_active()) << what;
    auto after = list.publish<ws_beta>(ws_beta::subtype::only, {0, 1});
    ASSERT_FALSE(after) << what;
    EXPECT_EQ(after.error(), herald::errc::list_destroyed) << what;
  }
}

// Wildcard subscribes and unsubscribes rebuild the list's snapshot and retire the old one while
// other threads reclaim retired pieces (their own subscribes' try_collect, bus::reclaim(), the
// bus's reclaimer). A writer outside any publish must not touch a piece after retiring it:
// nothing makes a grace period wait for it. Under ThreadSanitizer this shows any such access.
TEST(WildcardStress, WildcardSubscribesRaceWithReclamationOnOtherThreads) {
  const double scale = stress_scale();
  const std::size_t rounds = scaled(3000, 20000, scale);
  herald::bus b({.threads = 1});
  herald::sub_list list(b);
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> calls{0};
  std::thread reclaimer([&] {
    while (!done.load(std::memory_order_acquire)) {
      b.reclaim();
    }
  });
  std::thread publisher([&] {
    for (std::uint64_t c = 1; !done.load(std::memory_order_acquire); ++c) {
      (void)publish_one(list, 0, c);
    }
  });
  std::thread churn([&] {
    for (std::size_t i = 0; i < rounds; ++i) {
      auto s = list.subscribe_wildcard_sync(
          [&](herald::wildcard_event&) { calls.fetch_add(1, std::memory_order_relaxed); });
      ASSERT_TRUE(s);
      s->unsubscribe();
    }
  });
  churn.join();
  done.store(true, std::memory_order_release);
  publisher.join();
  reclaimer.join();
  EXPECT_EQ(list.size_approx(), 0u);
}

}  // namespace
