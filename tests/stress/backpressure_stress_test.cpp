// Multi-threaded stress tests of backpressure (herald/backpressure.hpp): bounded async and queue
// subscriptions under every overflow policy, fed by several publisher threads faster than their
// consumers, while another thread pauses and resumes them at random; then every subscription is
// ended (by its handle, or by the bus's shutdown) and its accounting is checked exactly. They run
// under ThreadSanitizer and AddressSanitizer.
//
// What is checked, per subscription, once it reached END
//   - END exactly once (async: on_end once, nothing delivered after it; queue: END popped once,
//     last), with the right reason: overflow exactly when the end_subscription policy dropped an
//     event (and then one ended_on_overflow diagnostic for it), else how the test ended it (the
//     test ends subscriptions after the publishers stopped, so no publish races the end here).
//   - The identity, exactly: queued == 0 and published == delivered + dropped() + discarded.
//   - delivered == the events the consumer saw; the sub_sequence values seen are distinct and
//     within 1..published, so that with the dropped and discarded ones they cover 1..published
//     exactly (seen + dropped() + discarded == published, no duplicates, nothing out of range).
//   - Per publisher thread, delivery order is publish order: both the publisher's own counter and
//     sub_sequence strictly increase (sub_sequence is taken at publish, so across publishers the
//     arrival order may differ from it; within one publisher it may not).
//   - Each policy counts under its own counter only (drop_oldest may also count dropped_newest:
//     its documented fallback when no queued event can be taken), notify calls its hook exactly
//     dropped_notify times, and high_water never exceeds the bound.
//   - Unbounded subscriptions drop nothing; the one that is never paused was published every
//     event, and saw sub_sequence 1..N exactly.
//   - The overflow hook's info: the subscription's bound, and a length within it.
//
// And, racing end_subscription against every other ending path (handle, id, list destroy, bus
// shutdown) at random moments while publishers overflow: END exactly once; the ended_on_overflow
// diagnostic reported exactly when END says overflow; the same exact accounting.
//
// How the threads meet
//   Publishers and consumers never wait for each other except through herald (the block policy);
//   the end waits on flags (spin then yield). Nothing asserts on time.
//
// Scale
//   HERALD_STRESS_SCALE (a positive number, default 1) multiplies the work. The base counts are
//   sized for sanitizer builds; the optimised build does more.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "herald/backoff.hpp"
#include "herald/backpressure.hpp"
#include "herald/bus.hpp"
#include "herald/scheduler.hpp"
#include "stress_support.hpp"

namespace {

using herald::end_reason;
using herald::overflow_policy;
using herald::type_of;
using herald::test::optimised_build;
using herald::test::spin_until;
using herald::test::stress_scale;
using namespace std::chrono_literals;

struct bp_payload {
  std::uint32_t pub = 0;    // the publisher thread
  std::uint64_t count = 0;  // per publisher, from 1
};

struct tbps_event {
  static constexpr std::string_view family_name = "TBPSTRESS";
  enum class subtype : std::uint8_t { up, down };
  static constexpr std::array<std::string_view, 2> subtype_names{"UP", "DOWN"};
  using safe_part = bp_payload;
};

[[maybe_unused]] const auto tbps_family = herald::family_id_of<tbps_event>();

constexpr std::size_t max_publishers = 4;

std::size_t scaled(std::size_t sanitized, std::size_t optimised, double scale) {
  const double n = static_cast<double>(optimised_build ? optimised : sanitized) * scale;
  return n < 1.0 ? std::size_t{1} : static_cast<std::size_t>(n);
}

std::string policy_name(overflow_policy p) {
  switch (p) {
    case overflow_policy::block:
      return "block";
    case overflow_policy::drop_newest:
      return "drop_newest";
    case overflow_policy::drop_oldest:
      return "drop_oldest";
    case overflow_policy::end_subscription:
      return "end_subscription";
    case overflow_policy::notify:
      return "notify";
  }
  return "?";
}

enum class mode { async, queue };
enum class ended_by { handle, shutdown };

// One subscription of a round.
struct spec {
  mode how = mode::async;
  std::size_t bound = 0;  // 0: unbounded
  overflow_policy policy = overflow_policy::drop_newest;
  overflow_policy after = overflow_policy::drop_newest;  // block only
  bool pausable = true;
  ended_by end = ended_by::shutdown;
  herald::pending_on_end pending = herald::pending_on_end::deliver;
  std::size_t slow_threshold = 0;
};

// What one subscription's consumer saw. Written by its consumer only (the async handler, which
// never runs on two threads at once, or the queue consumer thread); read by the test after END.
struct record {
  std::vector<std::uint64_t> seqs;  // sub_sequence, in delivery order
  std::array<std::uint64_t, max_publishers> last_count{};
  std::array<std::uint64_t, max_publishers> last_seq{};
  std::uint64_t order_errors = 0;
  std::uint64_t after_end = 0;
  int ends = 0;
  std::optional<end_reason> reason;
  // release: written after everything above; the test's acquire load then sees all of it.
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> hook_calls{0};  // notify hook (publisher threads)
  std::atomic<std::uint64_t> bad_info{0};    // hook calls with a wrong bound or length

  void see(const bp_payload& p, std::uint64_t sub_seq) {
    if (ends != 0) {
      ++after_end;
    }
    seqs.push_back(sub_seq);
    if (p.pub >= max_publishers) {
      ++order_errors;
      return;
    }
    if (p.count <= last_count[p.pub] || sub_seq <= last_seq[p.pub]) {
      ++order_errors;
    }
    last_count[p.pub] = p.count;
    last_seq[p.pub] = sub_seq;
  }
  void end(end_reason why) {
    ++ends;
    reason = why;
    done.store(true, std::memory_order_release);
  }
};

// A slow async handler: a little work per event.
struct slow_handler {
  record* rec;
  unsigned work;
  void operator()(herald::async_event<tbps_event>& e) {
    for (unsigned i = 0; i < work; ++i) {
      herald::cpu_relax();
    }
    rec->see(e.safe(), e.sub_sequence());
  }
  void on_end(end_reason why) { rec->end(why); }
};

// Counts the bus's diagnostics per subscription id (publisher threads).
struct diag_counts {
  std::mutex m;
  std::map<std::uint64_t, int> ended_on_overflow;    // guarded by m
  std::map<std::uint64_t, int> slow;                 // guarded by m
  std::map<std::uint64_t, std::size_t> worst_depth;  // guarded by m
};

struct round_config {
  std::size_t publishers = 3;
  std::size_t events_per_publisher = 1000;
  unsigned handler_work = 24;  // pause hints per event: consumers slower than publishers
  std::chrono::microseconds block_timeout{100};
  std::uint32_t seed = 1;
};

// One round: subscribe `specs`, publish, churn, end, check.
void run_round(const std::vector<spec>& specs, const round_config& cfg) {
  ASSERT_LE(cfg.publishers, max_publishers);
  SCOPED_TRACE("seed " + std::to_string(cfg.seed));
  const std::size_t n = specs.size();
  std::vector<std::unique_ptr<record>> recs;
  for (std::size_t i = 0; i < n; ++i) {
    recs.push_back(std::make_unique<record>());
  }
  diag_counts diags;
  std::vector<std::unique_ptr<herald::event_queue<tbps_event>>> queues(n);
  std::vector<herald::subscription> handles(n);
  std::vector<std::uint64_t> ids(n);
  {
    herald::bus b({.threads = 2});
    b.set_diagnostic_hook([&](const herald::diagnostic& d) {
      std::lock_guard lock(diags.m);
      if (d.kind == herald::diagnostic_kind::ended_on_overflow) {
        ++diags.ended_on_overflow[d.info.subscription_id];
      } else {
        ++diags.slow[d.info.subscription_id];
      }
      auto& worst = diags.worst_depth[d.info.subscription_id];
      worst = std::max(worst, d.info.queued);
    });
    herald::sub_list& list = b.global();
    for (std::size_t i = 0; i < n; ++i) {
      const spec& sp = specs[i];
      ids[i] = herald::make_id("bp-stress", std::to_string(i));
      herald::subscribe_options opt;
      opt.id = ids[i];
      opt.on_end = sp.pending;
      opt.backpressure.bound = sp.bound;
      opt.backpressure.policy = sp.policy;
      opt.backpressure.after_timeout = sp.after;
      opt.backpressure.block_timeout = cfg.block_timeout;
      opt.backpressure.slow_threshold = sp.slow_threshold;
      opt.backpressure.slow_after = 1ms;
      record* rec = recs[i].get();
      opt.backpressure.on_overflow = [rec, bound = sp.bound](const herald::overflow_info& info) {
        rec->hook_calls.fetch_add(1, std::memory_order_relaxed);
        if (info.bound != bound || info.queued > info.bound) {
          rec->bad_info.fetch_add(1, std::memory_order_relaxed);
        }
      };
      if (sp.how == mode::queue) {
        queues[i] = std::make_unique<herald::event_queue<tbps_event>>();
      }
      auto s = sp.how == mode::async
                   ? list.subscribe_async<tbps_event>(type_of<tbps_event>(),
                                                      slow_handler{rec, cfg.handler_work}, opt)
                   : list.subscribe_queue<tbps_event>(type_of<tbps_event>(), *queues[i],
                                                      herald::queue_notify::none(), opt);
      ASSERT_TRUE(s) << "subscription " << i;
      handles[i] = std::move(*s);
    }

    std::atomic<bool> stop_churn{false};
    std::atomic<std::uint64_t> publish_errors{0};

    // The queue consumer: one thread for every queue, slower than the publishers (it pops a
    // few items per queue per pass), until every queue popped END.
    std::thread consumer([&] {
      std::minstd_rand rng(cfg.seed * 7919u + 1u);
      std::size_t open = 0;
      for (std::size_t i = 0; i < n; ++i) {
        open += queues[i] ? std::size_t{1} : std::size_t{0};
      }
      while (open > 0) {
        bool any = false;
        for (std::size_t i = 0; i < n; ++i) {
          if (!queues[i] || recs[i]->ends != 0) {
            continue;
          }
          const auto burst = static_cast<unsigned>(1 + rng() % 4);
          for (unsigned k = 0; k < burst; ++k) {
            auto e = queues[i]->pop();
            if (!e) {
              break;
            }
            any = true;
            if (e->is_end()) {
              recs[i]->end(e->end_reason());
              --open;
              // Nothing may follow END.
              if (queues[i]->pop()) {
                ++recs[i]->after_end;
              }
              break;
            }
            recs[i]->see(e->safe(), e->sub_sequence());
            for (unsigned w = 0; w < cfg.handler_work; ++w) {
              herald::cpu_relax();
            }
          }
        }
        if (!any) {
          std::this_thread::yield();
        }
      }
    });

    // Pauses and resumes pausable subscriptions at random while the publishers run.
    std::thread churn([&] {
      std::minstd_rand rng(cfg.seed * 104729u + 3u);
      std::vector<std::size_t> pausable;
      for (std::size_t i = 0; i < n; ++i) {
        if (specs[i].pausable) {
          pausable.push_back(i);
        }
      }
      if (pausable.empty()) {
        return;
      }
      while (!stop_churn.load(std::memory_order_acquire)) {
        const std::size_t i = pausable[rng() % pausable.size()];
        (void)handles[i].pause();  // not_found once ended on overflow
        const auto hold = static_cast<unsigned>(rng() % 200);
        for (unsigned k = 0; k < hold; ++k) {
          std::this_thread::yield();
        }
        (void)handles[i].resume();
        std::this_thread::yield();
      }
    });

    std::vector<std::thread> pubs;
    for (std::size_t p = 0; p < cfg.publishers; ++p) {
      pubs.emplace_back([&, p] {
        std::minstd_rand rng(cfg.seed * 31u + static_cast<std::uint32_t>(p));
        std::uint64_t next_pause = rng() % 500;
        for (std::uint64_t c = 1; c <= cfg.events_per_publisher; ++c) {
          const auto st = (c % 3 == 0) ? tbps_event::subtype::down : tbps_event::subtype::up;
          if (!list.publish<tbps_event>(st, bp_payload{static_cast<std::uint32_t>(p), c})) {
            publish_errors.fetch_add(1, std::memory_order_relaxed);
          }
          // Now and then let the consumers catch up (so that episodes close and open again).
          if (c == next_pause) {
            const auto yields = static_cast<unsigned>(rng() % 64);
            for (unsigned k = 0; k < yields; ++k) {
              std::this_thread::yield();
            }
            next_pause = c + 1 + rng() % 500;
          }
        }
      });
    }
    for (auto& t : pubs) {
      t.join();
    }
    stop_churn.store(true, std::memory_order_release);
    churn.join();
    for (std::size_t i = 0; i < n; ++i) {
      (void)handles[i].resume();
    }
    EXPECT_EQ(publish_errors.load(), 0u);

    // The end: some by their handle, the rest by the bus's shutdown (which drains).
    for (std::size_t i = 0; i < n; ++i) {
      if (specs[i].end == ended_by::handle) {
        handles[i].unsubscribe();
      }
    }
    b.shutdown();
    consumer.join();
    for (std::size_t i = 0; i < n; ++i) {
      spin_until([&] { return recs[i]->done.load(std::memory_order_acquire); });
    }

    // ---- Checks ----
    const std::uint64_t total = cfg.publishers * cfg.events_per_publisher;
    std::uint64_t all_dropped = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const spec& sp = specs[i];
      const record& r = *recs[i];
      const herald::subscription_stats st = handles[i].stats();
      SCOPED_TRACE(
          "subscription " + std::to_string(i) + " (" + (sp.how == mode::async ? "async" : "queue") +
          ", bound " + std::to_string(sp.bound) + ", " + policy_name(sp.policy) +
          (sp.policy == overflow_policy::block ? " then " + policy_name(sp.after) : "") + ")");
      const std::string counters =
          " published " + std::to_string(st.published) + ", delivered " +
          std::to_string(st.delivered) + ", dropped_newest " + std::to_string(st.dropped_newest) +
          ", dropped_oldest " + std::to_string(st.dropped_oldest) + ", dropped_ended " +
          std::to_string(st.dropped_ended) + ", dropped_notify " +
          std::to_string(st.dropped_notify) + ", discarded " + std::to_string(st.discarded) +
          ", queued " + std::to_string(st.queued) + ", high_water " +
          std::to_string(st.high_water) + ", seen " + std::to_string(r.seqs.size());

      // END once, last, with its reason.
      EXPECT_EQ(r.ends, 1) << counters;
      EXPECT_EQ(r.after_end, 0u) << "items after END";
      all_dropped += st.dropped();
      const bool ended_on_overflow = st.dropped_ended > 0;
      ASSERT_TRUE(r.reason);
      if (ended_on_overflow) {
        EXPECT_EQ(*r.reason, end_reason::overflow) << counters;
      } else {
        EXPECT_EQ(*r.reason,
                  sp.end == ended_by::handle ? end_reason::unsubscribed : end_reason::shutdown)
            << counters;
      }
      {
        std::lock_guard lock(diags.m);
        EXPECT_EQ(diags.ended_on_overflow[ids[i]], ended_on_overflow ? 1 : 0) << counters;
      }

      // The identity, exactly (no clamp hiding an over-count).
      EXPECT_EQ(st.queued, 0u) << counters;
      EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded) << counters;
      EXPECT_EQ(st.delivered, r.seqs.size()) << counters;
      EXPECT_LE(st.published, total) << counters;

      // The sub_sequences seen: distinct, within 1..published; with the dropped and discarded
      // ones they cover 1..published exactly.
      std::vector<bool> hit(st.published + 1, false);
      std::uint64_t out_of_range = 0;
      std::uint64_t duplicates = 0;
      for (std::uint64_t q : r.seqs) {
        if (q == 0 || q > st.published) {
          ++out_of_range;
        } else if (hit[q]) {
          ++duplicates;
        } else {
          hit[q] = true;
        }
      }
      EXPECT_EQ(out_of_range, 0u) << counters;
      EXPECT_EQ(duplicates, 0u) << counters;
      const auto unseen = static_cast<std::uint64_t>(std::count(hit.begin() + 1, hit.end(), false));
      EXPECT_EQ(unseen, st.dropped() + st.discarded) << counters;
      EXPECT_EQ(r.order_errors, 0u) << "events of one publisher out of publish order";

      // Each policy counts under its own counter.
      const overflow_policy effective = sp.policy == overflow_policy::block ? sp.after : sp.policy;
      if (sp.bound == 0) {
        EXPECT_EQ(st.dropped(), 0u) << counters;
      } else {
        EXPECT_LE(st.high_water, sp.bound) << counters;
        if (effective != overflow_policy::drop_oldest) {
          EXPECT_EQ(st.dropped_oldest, 0u) << counters;
        }
        if (effective != overflow_policy::drop_newest &&
            effective != overflow_policy::drop_oldest) {
          EXPECT_EQ(st.dropped_newest, 0u) << counters;
        }
        if (effective != overflow_policy::end_subscription) {
          EXPECT_EQ(st.dropped_ended, 0u) << counters;
        }
        if (effective != overflow_policy::notify) {
          EXPECT_EQ(st.dropped_notify, 0u) << counters;
        }
      }
      EXPECT_EQ(r.hook_calls.load(), st.dropped_notify) << counters;
      EXPECT_EQ(r.bad_info.load(), 0u) << "overflow_info with a wrong bound or length";
      if (sp.pending == herald::pending_on_end::deliver) {
        EXPECT_EQ(st.discarded, 0u) << counters;
      }
      // The reference: unbounded, never paused, ended after the publishers: every event.
      if (sp.bound == 0 && !sp.pausable) {
        EXPECT_EQ(st.published, total) << counters;
        EXPECT_EQ(st.delivered, total) << counters;
      }
    }
    // The consumers are slower than the publishers: the policies had work to do.
    EXPECT_GT(all_dropped, 0u) << "nothing was dropped: the consumers kept up";
    b.set_diagnostic_hook({});
  }
}

// The references: unbounded, never paused, ended after the publishers.
void add_references(std::vector<spec>& s) {
  s.push_back({.how = mode::async, .pausable = false});
  s.push_back({.how = mode::queue, .pausable = false, .end = ended_by::handle});
}

// Every policy that drops: the publishers run free, the consumers lag far behind.
std::vector<spec> drop_policies() {
  std::vector<spec> s;
  add_references(s);
  for (mode how : {mode::async, mode::queue}) {
    s.push_back(
        {.how = how, .bound = 8, .policy = overflow_policy::drop_newest, .slow_threshold = 6});
    s.push_back(
        {.how = how, .bound = 16, .policy = overflow_policy::drop_oldest, .end = ended_by::handle});
    s.push_back({.how = how, .bound = 8, .policy = overflow_policy::notify});
    s.push_back(
        {.how = how, .bound = 16, .policy = overflow_policy::end_subscription, .pausable = false});
    s.push_back({.how = how,
                 .bound = 16,
                 .policy = overflow_policy::drop_newest,
                 .end = ended_by::handle,
                 .pending = herald::pending_on_end::discard});
  }
  return s;
}

// overflow_policy::block with each fallback: the publishers wait for the consumers, and give up
// after block_timeout now and then; a drop_newest subscription beside them.
std::vector<spec> block_policies() {
  std::vector<spec> s;
  add_references(s);
  for (mode how : {mode::async, mode::queue}) {
    s.push_back({.how = how,
                 .bound = 4,
                 .policy = overflow_policy::block,
                 .after = overflow_policy::drop_newest,
                 .end = ended_by::handle});
    s.push_back({.how = how,
                 .bound = 8,
                 .policy = overflow_policy::block,
                 .after = overflow_policy::drop_oldest,
                 .slow_threshold = 6});
    s.push_back(
        {.how = how,
         .bound = 8,
         .policy = overflow_policy::block,
         .after = how == mode::queue ? overflow_policy::notify : overflow_policy::end_subscription,
         .pausable = how == mode::queue,
         .end = ended_by::handle});
    s.push_back({.how = how, .bound = 2, .policy = overflow_policy::drop_newest});
  }
  return s;
}

TEST(BackpressureStress, DropPoliciesCountExactlyUnderFastPublishersPausesAndEnds) {
  const double scale = stress_scale();
  for (std::uint32_t round = 0; round < 2; ++round) {
    round_config cfg;
    cfg.publishers = 3;
    cfg.events_per_publisher = scaled(10000, 30000, scale);
    cfg.seed = round + 1;
    run_round(drop_policies(), cfg);
    if (HasFatalFailure()) {
      return;
    }
  }
}

TEST(BackpressureStress, BlockPolicyCountsExactlyAcrossItsFallbacksPausesAndEnds) {
  const double scale = stress_scale();
  round_config cfg;
  cfg.publishers = 3;
  cfg.events_per_publisher = scaled(3000, 6000, scale);
  cfg.seed = 17;
  run_round(block_policies(), cfg);
}

// drop_oldest at the smallest bounds: publishers pop the queue (under its pop lock) as often as
// the consumer does, and the intrusive queue's stub goes in and out on every pop of its last node.
TEST(BackpressureStress, DropOldestAtBoundOneAndTwoUnderManyPublishers) {
  const double scale = stress_scale();
  std::vector<spec> specs;
  for (mode how : {mode::async, mode::queue}) {
    for (std::size_t bound : {1u, 2u}) {
      specs.push_back({.how = how,
                       .bound = bound,
                       .policy = overflow_policy::drop_oldest,
                       .pausable = bound == 2});
    }
    specs.push_back({.how = how,
                     .bound = 1,
                     .policy = overflow_policy::block,
                     .after = overflow_policy::drop_oldest,
                     .end = ended_by::handle});
  }
  specs.push_back({.how = mode::async, .pausable = false});
  round_config cfg;
  cfg.publishers = 4;
  cfg.events_per_publisher = scaled(2500, 6000, scale);
  cfg.handler_work = 4;
  cfg.block_timeout = 50us;
  cfg.seed = 99;
  run_round(specs, cfg);
}

// end_subscription racing with every other ending path: publishers overflow small bounded
// subscriptions while another thread ends them by handle, by id, by destroying their list or by
// shutting the bus down, at random moments. Whoever wins, each subscription gets END exactly
// once; the reason is overflow exactly when the ended_on_overflow diagnostic was reported for
// it (once); and the accounting is exact.
TEST(BackpressureStress, EndSubscriptionRacesEveryOtherEndingPath) {
  const std::size_t rounds = scaled(60, 600, stress_scale());
  constexpr std::size_t subs = 4;  // async, queue, async, queue
  std::minstd_rand rng(2024);
  for (std::size_t round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::array<std::unique_ptr<record>, subs> recs;
    for (auto& r : recs) {
      r = std::make_unique<record>();
    }
    std::array<herald::event_queue<tbps_event>, subs> queues;
    std::array<herald::subscription, subs> handles;
    std::array<std::uint64_t, subs> ids{};
    diag_counts diags;
    const std::size_t bound = std::array<std::size_t, 3>{2, 64, 4096}[rng() % 3];
    const auto delay = static_cast<unsigned>(rng() % 200);
    const auto ender_plan = static_cast<unsigned>(rng());
    std::uint64_t published_total = 0;
    {
      herald::bus b({.threads = 2});
      b.set_diagnostic_hook([&](const herald::diagnostic& d) {
        std::lock_guard lock(diags.m);
        if (d.kind == herald::diagnostic_kind::ended_on_overflow) {
          ++diags.ended_on_overflow[d.info.subscription_id];
        }
      });
      auto list = std::make_unique<herald::sub_list>(b);
      for (std::size_t i = 0; i < subs; ++i) {
        ids[i] = herald::make_id("bp-race", std::to_string(i));
        herald::subscribe_options opt;
        opt.id = ids[i];
        opt.backpressure.bound = bound;
        opt.backpressure.policy = overflow_policy::end_subscription;
        auto sub = i % 2 == 0
                       ? list->subscribe_async<tbps_event>(type_of<tbps_event>(),
                                                           slow_handler{recs[i].get(), 50}, opt)
                       : list->subscribe_queue<tbps_event>(type_of<tbps_event>(), queues[i],
                                                           herald::queue_notify::none(), opt);
        ASSERT_TRUE(sub);
        handles[i] = std::move(*sub);
      }
      std::atomic<bool> stop{false};
      std::atomic<std::uint64_t> published{0};
      std::vector<std::thread> pubs;
      for (std::uint32_t p = 0; p < 2; ++p) {
        pubs.emplace_back([&, p] {
          for (std::uint64_t c = 1; !stop.load(std::memory_order_acquire) && c <= 5000; ++c) {
            if (list->publish<tbps_event>(tbps_event::subtype::up, bp_payload{p, c})) {
              published.fetch_add(1, std::memory_order_relaxed);
            }
          }
        });
      }
      std::thread consumer([&] {
        std::size_t open = subs / 2;
        while (open > 0) {
          bool any = false;
          for (std::size_t i = 1; i < subs; i += 2) {
            if (recs[i]->ends != 0) {
              continue;
            }
            if (auto e = queues[i].pop()) {
              any = true;
              if (e->is_end()) {
                recs[i]->end(e->end_reason());
                --open;
              } else {
                recs[i]->see(e->safe(), e->sub_sequence());
              }
            }
          }
          if (!any) {
            std::this_thread::yield();
          }
        }
      });
      // The ender: waits a little, then ends each subscription by a path of the plan.
      for (unsigned k = 0; k < delay; ++k) {
        std::this_thread::yield();
      }
      for (std::size_t i = 0; i < subs; ++i) {
        switch ((ender_plan >> (2 * i)) & 3u) {
          case 0:
            handles[i].unsubscribe();
            break;
          case 1:
            (void)list->lookup_unsubscribe(ids[i]);  // not_found if it already ended
            break;
          default:
            break;  // left to the list or the bus
        }
      }
      if ((ender_plan >> 8) & 1u) {
        list->destroy();
      } else {
        b.shutdown();
      }
      stop.store(true, std::memory_order_release);
      for (auto& t : pubs) {
        t.join();
      }
      b.shutdown();
      consumer.join();
      for (auto& r : recs) {
        spin_until([&] { return r->done.load(std::memory_order_acquire); });
      }
      published_total = published.load();
      b.set_diagnostic_hook({});
    }
    for (std::size_t i = 0; i < subs; ++i) {
      SCOPED_TRACE("subscription " + std::to_string(i));
      const record& r = *recs[i];
      const herald::subscription_stats st = handles[i].stats();
      EXPECT_EQ(r.ends, 1);
      EXPECT_EQ(r.after_end, 0u);
      ASSERT_TRUE(r.reason);
      int reported = 0;
      {
        std::lock_guard lock(diags.m);
        reported = diags.ended_on_overflow[ids[i]];
      }
      EXPECT_EQ(reported, *r.reason == end_reason::overflow ? 1 : 0)
          << "reason " << static_cast<int>(*r.reason);
      if (*r.reason == end_reason::overflow) {
        EXPECT_GE(st.dropped_ended, 1u);
      }
      EXPECT_EQ(st.dropped_newest + st.dropped_oldest + st.dropped_notify, 0u);
      EXPECT_EQ(st.queued, 0u);
      EXPECT_EQ(st.published, st.delivered + st.dropped() + st.discarded);
      EXPECT_EQ(st.delivered, r.seqs.size());
      EXPECT_LE(st.published, published_total);
      EXPECT_LE(st.high_water, bound);
      std::vector<bool> hit(st.published + 1, false);
      std::uint64_t bad = 0;
      for (std::uint64_t q : r.seqs) {
        if (q == 0 || q > st.published || hit[q]) {
          ++bad;
        } else {
          hit[q] = true;
        }
      }
      EXPECT_EQ(bad, 0u) << "sub_sequence out of range or repeated";
      EXPECT_EQ(r.order_errors, 0u);
    }
    if (HasFailure()) {
      return;
    }
  }
}

}  // namespace
