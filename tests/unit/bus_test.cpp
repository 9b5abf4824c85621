// Unit tests of herald/bus.hpp, single-threaded: sync delivery, subscription lists, handles,
// identified subscriptions and lookups, operations from inside handlers, handler exceptions,
// the lifetime of handler objects on every ending path, allocation-free publishing and
// behaviour when memory runs out.
//
// How the checks see inside
//   - `probe` is a piece of handler state that counts, in a `life` record owned by the test,
//     how many live instances were made and destroyed (a moved-from probe counts for nothing).
//     A handler that captures one by value is destroyed exactly once when life.made == 1 and
//     life.destroyed == 1.
//   - This binary replaces the global operator new/delete (every variant) with malloc-based
//     versions that count allocations and can fail the n-th allocation of the calling thread.
//     The counter checks that a warm publish allocates nothing; the failure injection sweeps
//     every allocation of subscribe, unsubscribe and resubscribe.
//
// The family registry is process-global: the families of this file have names of their own.
// Death tests run in a re-executed child ("threadsafe" style).
#include "herald/bus.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "herald/error.hpp"
#include "herald/event_type.hpp"

// ---- Counting, failure-injecting operator new/delete ----------------------------------------

namespace {

// Every allocation made through operator new, by any thread (this binary runs one thread).
constinit std::atomic<std::uint64_t> g_allocations{0};
// -1: no injection; n >= 0: the n-th next allocation of this thread fails (then back to -1).
constinit thread_local std::int64_t t_fail_in = -1;

void* counted_alloc(std::size_t size, std::size_t align) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (t_fail_in >= 0 && t_fail_in-- == 0) {
    return nullptr;
  }
  if (size == 0) {
    size = 1;
  }
  if (align <= alignof(std::max_align_t)) {
    return std::malloc(size);  // NOLINT(cppcoreguidelines-no-malloc)
  }
  return std::aligned_alloc(align, (size + align - 1) / align * align);
}

void* throwing_alloc(std::size_t size, std::size_t align) {
  void* p = counted_alloc(size, align);
  if (p == nullptr) {
    throw std::bad_alloc();
  }
  return p;
}

std::size_t to_size(std::align_val_t a) noexcept { return static_cast<std::size_t>(a); }

// Arms the failure of the n-th next allocation of this thread (0: the very next one).
void fail_allocation(std::int64_t n) noexcept { t_fail_in = n; }
// Disarms; true if the armed failure happened.
bool injection_fired() noexcept {
  const bool fired = t_fail_in < 0;
  t_fail_in = -1;
  return fired;
}

}  // namespace

void* operator new(std::size_t n) { return throwing_alloc(n, 0); }
void* operator new[](std::size_t n) { return throwing_alloc(n, 0); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return throwing_alloc(n, to_size(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return throwing_alloc(n, to_size(a)); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(n, to_size(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_alloc(n, to_size(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using herald::errc;
using herald::event_type;
using herald::make_id;
using herald::sub_list;
using herald::subscribe_options;
using herald::subscription;
using herald::type_of;

// ---- Families --------------------------------------------------------------------------------

struct tbus_event {
  static constexpr std::string_view family_name = "TBUS";
  enum class subtype : std::uint8_t { add, del, up, down };
  static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP", "DOWN"};
  struct safe_part {
    int id = 0;
    std::string name;
  };
  struct unsafe_part {
    int* live = nullptr;
  };
};
using tbus = tbus_event::subtype;
using ev = herald::sync_event<tbus_event>;

struct tpeer_event {
  static constexpr std::string_view family_name = "TBUSPEER";
  enum class subtype : std::uint8_t { connect, identify };
  static constexpr std::array<std::string_view, 2> subtype_names{"CONNECT", "IDENTIFY"};
  struct safe_part {
    std::uint64_t peer = 0;
  };
};
using tpeer = tpeer_event::subtype;

// Families are declared on first use. CTest runs each test in its own process, so declare them
// before any test runs: names must resolve, and the allocation tests must not count (or fail)
// the registry's one-time allocations.
[[maybe_unused]] const bool families_declared =
    (static_cast<void>(herald::family_id_of<tbus_event>()),
     static_cast<void>(herald::family_id_of<tpeer_event>()), true);

event_type of(tbus s) { return type_of<tbus_event>(s); }
event_type of(tbus a, tbus b) { return type_of<tbus_event>(a, b); }
event_type whole_tbus() { return type_of<tbus_event>(); }

// ---- Helpers ---------------------------------------------------------------------------------

// Live instances of a probe made and destroyed (moved-from probes do not count).
struct life {
  int made = 0;
  int destroyed = 0;
};

class probe {
 public:
  explicit probe(life& l) noexcept : life_(&l) { ++l.made; }
  probe(const probe& o) noexcept : life_(o.life_) {
    if (life_ != nullptr) {
      ++life_->made;
    }
  }
  probe(probe&& o) noexcept : life_(std::exchange(o.life_, nullptr)) {}
  probe& operator=(const probe&) = delete;
  probe& operator=(probe&&) = delete;
  ~probe() {
    if (life_ != nullptr) {
      ++life_->destroyed;
    }
  }
  // The record of this probe (a live one).
  [[nodiscard]] const life& record() const noexcept { return *life_; }

 private:
  life* life_;
};

// The subscription of a successful subscribe; a test failure (and an empty handle) otherwise.
subscription must(herald::result<subscription> r) {
  EXPECT_TRUE(r.has_value()) << "subscribe failed: " << herald::to_string(r.error());
  return r ? std::move(*r) : subscription{};
}

// Publishes one TBUS event (safe part only) and returns how many handlers ran.
std::size_t pub(const sub_list& l, tbus s, int id = 0) {
  const tbus_event::safe_part safe{id, "payload"};
  auto r = l.publish<tbus_event>(s, safe);
  EXPECT_TRUE(r.has_value()) << "publish failed: " << herald::to_string(r.error());
  return r.value_or(std::size_t{0});
}

auto noop() {
  return [](ev&) {};
}

// ---- Publish -----------------------------------------------------------------------------------

TEST(Publish, RunsHandlersInSubscriptionOrder) {
  herald::bus b;
  std::vector<int> order;
  std::vector<subscription> subs;
  for (int i = 0; i < 6; ++i) {
    // Alternate masks that all contain UP: the order holds across masks.
    const event_type t = i % 3 == 0   ? of(tbus::up)
                         : i % 3 == 1 ? whole_tbus()
                                      : of(tbus::up, tbus::down);
    subs.push_back(
        must(b.global().subscribe_sync<tbus_event>(t, [&order, i](ev&) { order.push_back(i); })));
  }
  EXPECT_EQ(pub(b.global(), tbus::up), 6u);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  order.clear();
  EXPECT_EQ(pub(b.global(), tbus::down), 4u);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 4, 5}));
}

TEST(Publish, HandlersSeeTheSafeAndUnsafeParts) {
  herald::bus b;
  int seen_id = 0;
  std::string seen_name;
  event_type seen_type;
  tbus seen_subtype = tbus::add;
  auto s = must(b.global().subscribe_sync<tbus_event>(whole_tbus(), [&](ev& e) {
    seen_id = e.safe().id;
    seen_name = e.safe().name;
    seen_type = e.type();
    seen_subtype = e.subtype();
    ASSERT_NE(e.unsafe(), nullptr);
    *e.unsafe()->live = 42;  // a live reference into the publisher's frame
  }));
  int live = 0;
  tbus_event::unsafe_part unsafe{&live};
  const tbus_event::safe_part safe{12, "srv12"};
  auto r = b.global().publish<tbus_event>(tbus::down, safe, unsafe);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 1u);
  EXPECT_EQ(seen_id, 12);
  EXPECT_EQ(seen_name, "srv12");
  EXPECT_EQ(seen_type, of(tbus::down));
  EXPECT_EQ(seen_subtype, tbus::down);
  EXPECT_EQ(live, 42);
}

TEST(Publish, UnsafePartIsNullWhenThePublisherGaveNone) {
  herald::bus b;
  bool called = false;
  bool was_null = false;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev& e) {
    called = true;
    was_null = e.unsafe() == nullptr;
  }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_TRUE(called);
  EXPECT_TRUE(was_null);
}

TEST(Publish, ReturnsTheNumberOfHandlersThatRan) {
  herald::bus b;
  auto& l = b.global();
  EXPECT_EQ(pub(l, tbus::up), 0u);
  auto a = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop()));
  auto c = must(l.subscribe_sync<tbus_event>(of(tbus::up, tbus::down), noop()));
  auto d = must(l.subscribe_sync<tbus_event>(of(tbus::down), noop()));
  auto paused = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop()));
  ASSERT_TRUE(paused.pause());
  EXPECT_EQ(pub(l, tbus::up), 2u);
  EXPECT_EQ(pub(l, tbus::down), 2u);
  EXPECT_EQ(pub(l, tbus::add), 0u);
}

TEST(Publish, SubscriptionToOneSubtypeDoesNotSeeTheOthers) {
  herald::bus b;
  std::vector<tbus> seen;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                      [&](ev& e) { seen.push_back(e.subtype()); }));
  EXPECT_EQ(pub(b.global(), tbus::down), 0u);
  EXPECT_EQ(pub(b.global(), tbus::add), 0u);
  EXPECT_EQ(pub(b.global(), tbus::del), 0u);
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(seen, (std::vector<tbus>{tbus::up}));
}

TEST(Publish, WholeFamilySubscriptionSeesEverySubtype) {
  herald::bus b;
  std::vector<tbus> seen;
  auto s = must(b.global().subscribe_sync<tbus_event>(whole_tbus(),
                                                      [&](ev& e) { seen.push_back(e.subtype()); }));
  for (tbus t : {tbus::add, tbus::del, tbus::up, tbus::down}) {
    EXPECT_EQ(pub(b.global(), t), 1u);
  }
  EXPECT_EQ(seen, (std::vector<tbus>{tbus::add, tbus::del, tbus::up, tbus::down}));
}

TEST(Publish, EventsOfAnotherFamilyAreNotDelivered) {
  herald::bus b;
  int tbus_calls = 0;
  int peer_calls = 0;
  auto s = must(b.global().subscribe_sync<tbus_event>(whole_tbus(), [&](ev&) { ++tbus_calls; }));
  auto p = must(b.global().subscribe_sync<tpeer_event>(
      type_of<tpeer_event>(tpeer::identify),
      [&](herald::sync_event<tpeer_event>& e) { peer_calls += e.safe().peer == 7 ? 1 : 100; }));
  auto r = b.global().publish<tpeer_event>(tpeer::identify, tpeer_event::safe_part{7});
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, 1u);
  EXPECT_EQ(tbus_calls, 0);
  EXPECT_EQ(peer_calls, 1);
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(peer_calls, 1);
}

TEST(Publish, ToADestroyedListReportsListDestroyed) {
  herald::bus b;
  sub_list l(b);
  int calls = 0;
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++calls; }));
  l.destroy();
  auto r = l.publish<tbus_event>(tbus::up, tbus_event::safe_part{});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::list_destroyed);
  EXPECT_EQ(calls, 0);
}

TEST(Publish, IsNoexcept) {
  herald::bus b;
  const tbus_event::safe_part safe{};
  tbus_event::unsafe_part unsafe{};
  static_assert(noexcept(b.global().publish<tbus_event>(tbus::up, safe)));
  static_assert(noexcept(b.global().publish<tbus_event>(tbus::up, safe, unsafe)));
}

TEST(Publish, ListsAreIndependent) {
  herald::bus b;
  sub_list one(b);
  sub_list two(b);
  int global_calls = 0;
  int one_calls = 0;
  int two_calls = 0;
  auto g = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++global_calls; }));
  auto s1 = must(one.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++one_calls; }));
  auto s2 = must(two.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++two_calls; }));
  EXPECT_EQ(pub(one, tbus::up), 1u);
  EXPECT_EQ(one_calls, 1);
  EXPECT_EQ(global_calls + two_calls, 0);
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(global_calls, 1);
  EXPECT_EQ(two_calls, 0);
}

// ---- Subscription lists ----------------------------------------------------------------------

TEST(SubList, HasSubscribersReflectsTheSubscribedSubtypes) {
  herald::bus b;
  sub_list l(b);
  EXPECT_FALSE(l.has_subscribers(of(tbus::up)));
  EXPECT_FALSE(l.has_subscribers(whole_tbus()));
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop()));
  EXPECT_TRUE(l.has_subscribers(of(tbus::up)));
  EXPECT_FALSE(l.has_subscribers(of(tbus::down)));
  EXPECT_TRUE(l.has_subscribers(whole_tbus()));  // any subtype of the query
  EXPECT_TRUE(l.has_subscribers(of(tbus::down, tbus::up)));
  EXPECT_FALSE(l.has_subscribers(type_of<tpeer_event>()));
}

TEST(SubList, HasSubscribersStaysTrueWhilePaused) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  ASSERT_TRUE(s.pause());
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::up)));
  ASSERT_TRUE(s.resume());
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::up)));
}

TEST(SubList, HasSubscribersTurnsFalseAfterUnsubscribe) {
  herald::bus b;
  auto a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  auto c = must(b.global().subscribe_sync<tbus_event>(of(tbus::up, tbus::down), noop()));
  a.unsubscribe();
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::up)));
  c.unsubscribe();
  EXPECT_FALSE(b.global().has_subscribers(of(tbus::up)));
  EXPECT_FALSE(b.global().has_subscribers(of(tbus::down)));
}

TEST(SubList, HasSubscribersFollowsResubscribe) {
  herald::bus b;
  auto a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  ASSERT_TRUE(a.resubscribe(of(tbus::down)));
  EXPECT_FALSE(b.global().has_subscribers(of(tbus::up)));
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::down)));
}

TEST(SubList, HasSubscribersIsFalseAfterDestroy) {
  herald::bus b;
  sub_list l(b);
  auto s = must(l.subscribe_sync<tbus_event>(whole_tbus(), noop()));
  l.destroy();
  EXPECT_FALSE(l.has_subscribers(whole_tbus()));
}

TEST(SubList, DestroyEndsEverySubscription) {
  herald::bus b;
  sub_list l(b);
  auto a = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop()));
  auto c = must(l.subscribe_sync<tpeer_event>(type_of<tpeer_event>(),
                                              [](herald::sync_event<tpeer_event>&) {}));
  auto d = must(l.subscribe_sync<tbus_event>(of(tbus::down), noop(), {.id = make_id("t", "d")}));
  ASSERT_TRUE(d.pause());
  EXPECT_FALSE(l.is_destroyed());
  l.destroy();
  EXPECT_TRUE(l.is_destroyed());
  EXPECT_FALSE(a.is_active());
  EXPECT_FALSE(c.is_active());
  EXPECT_FALSE(d.is_active());
  EXPECT_EQ(l.size_approx(), 0u);
  EXPECT_EQ(l.lookup_take(make_id("t", "d")).error(), errc::not_found);
}

TEST(SubList, SubscribeAfterDestroyFailsWithListDestroyed) {
  herald::bus b;
  sub_list l(b);
  l.destroy();
  life h;
  auto r = l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::list_destroyed);
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);  // the refused handler is not leaked
  EXPECT_EQ(l.size_approx(), 0u);
}

TEST(SubList, DestroyIsIdempotent) {
  herald::bus b;
  sub_list l(b);
  life h;
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
  l.destroy();
  l.destroy();
  EXPECT_TRUE(l.is_destroyed());
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_FALSE(s.is_active());
}

TEST(SubList, SizeApproxCountsSubscriptionsNotEnded) {
  herald::bus b;
  sub_list l(b);
  EXPECT_EQ(l.size_approx(), 0u);
  auto a = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop()));
  auto c = must(l.subscribe_sync<tbus_event>(of(tbus::down), noop()));
  EXPECT_EQ(l.size_approx(), 2u);
  ASSERT_TRUE(c.pause());
  EXPECT_EQ(l.size_approx(), 2u);
  a.unsubscribe();
  EXPECT_EQ(l.size_approx(), 1u);
}

TEST(SubList, DestructorEndsEverySubscriptionAndHandlesOutliveIt) {
  herald::bus b;
  life h;
  subscription s;
  {
    sub_list l(b);
    s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}, {.name = "kept"}));
    EXPECT_TRUE(s.is_active());
  }
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_FALSE(s.is_active());
  EXPECT_EQ(s.pause().error(), errc::not_found);
  EXPECT_EQ(s.resume().error(), errc::not_found);
  EXPECT_EQ(s.resubscribe(of(tbus::down)).error(), errc::not_found);
  s.unsubscribe();
  EXPECT_EQ(s.name(), "kept");
  EXPECT_EQ(s.type(), of(tbus::up));
}

TEST(SubList, ListOutlivingItsBusIsEndedByTheBusShutdown) {
  auto b = std::make_unique<herald::bus>();
  auto l = std::make_unique<sub_list>(*b);
  life h;
  auto s = must(l->subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
  b.reset();  // shuts down: ends every list of the bus, this one included
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_FALSE(s.is_active());
  auto r = l->publish<tbus_event>(tbus::up, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), herald::errc::shutting_down);
  EXPECT_EQ(l->subscribe_sync<tbus_event>(of(tbus::up), noop()).error(),
            herald::errc::shutting_down);
  l.reset();  // the list (and the bus state it holds) goes last, safely
}

TEST(SubList, SameIdInTwoListsIsAllowed) {
  herald::bus b;
  sub_list l(b);
  const auto id = make_id("server", "checks");
  auto a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = id}));
  auto c = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = id}));
  ASSERT_TRUE(l.lookup_unsubscribe(id));
  EXPECT_TRUE(a.is_active());
  EXPECT_FALSE(c.is_active());
}

// ---- Subscribe
// -----------------------------------------------------------------------------------

TEST(SubscribeSync, TypeOfAnotherFamilyIsRefusedWithFamilyMismatch) {
  herald::bus b;
  life h;
  auto r = b.global().subscribe_sync<tbus_event>(type_of<tpeer_event>(tpeer::connect),
                                                 [p = probe(h)](ev&) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::family_mismatch);
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(b.global().size_approx(), 0u);
}

TEST(SubscribeSync, EmptyOrUndeclaredSubtypesAreRefusedWithFamilyMismatch) {
  herald::bus b;
  const herald::family_id f = herald::family_id_of<tbus_event>();
  life h;
  auto empty = b.global().subscribe_sync<tbus_event>(event_type(f, 0), [p = probe(h)](ev&) {});
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error(), errc::family_mismatch);
  auto beyond =
      b.global().subscribe_sync<tbus_event>(event_type(f, 1u << 9), [p = probe(h)](ev&) {});
  ASSERT_FALSE(beyond.has_value());
  EXPECT_EQ(beyond.error(), errc::family_mismatch);
  auto mixed =
      b.global().subscribe_sync<tbus_event>(event_type(f, 0b10010), [p = probe(h)](ev&) {});
  ASSERT_FALSE(mixed.has_value());
  EXPECT_EQ(mixed.error(), errc::family_mismatch);
  EXPECT_EQ(h.made, 3);
  EXPECT_EQ(h.destroyed, 3);
  EXPECT_EQ(b.global().size_approx(), 0u);
}

TEST(SubscribeSync, DuplicateIdInOneListIsRefused) {
  herald::bus b;
  const auto id = make_id("server", "watch");
  life first;
  life second;
  int first_calls = 0;
  auto a = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(first), &first_calls](ev&) { ++first_calls; }, {.id = id}));
  auto r = b.global().subscribe_sync<tbus_event>(of(tbus::down), [p = probe(second)](ev&) {},
                                                 {.id = id});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::duplicate_id);
  EXPECT_EQ(second.destroyed, 1);  // the refused handler is destroyed, not leaked
  EXPECT_EQ(first.destroyed, 0);
  EXPECT_EQ(b.global().size_approx(), 1u);
  EXPECT_FALSE(b.global().has_subscribers(of(tbus::down)));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(first_calls, 1);
}

TEST(SubscribeSync, IdIsFreeAgainAfterItsSubscriptionEnded) {
  herald::bus b;
  const auto id = make_id("server", "watch");
  auto a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = id}));
  a.unsubscribe();
  auto c = b.global().subscribe_sync<tbus_event>(of(tbus::down), noop(), {.id = id});
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(b.global().lookup_unsubscribe(id));
  auto d = b.global().subscribe_sync<tbus_event>(of(tbus::add), noop(), {.id = id});
  ASSERT_TRUE(d.has_value());
  auto taken = b.global().lookup_take(id);
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->type(), of(tbus::add));
}

TEST(SubscribeSync, AnonymousSubscriptionsNeverCollide) {
  herald::bus b;
  auto a = b.global().subscribe_sync<tbus_event>(of(tbus::up), noop());
  auto c = b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = 0});
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(a->id(), 0u);
  EXPECT_EQ(c->id(), 0u);
}

TEST(SubscribeSync, RecordsNameAndOrigin) {
  herald::bus b;
  const auto id = make_id("scope", "named");
  const subscribe_options opt{.id = id, .name = "watcher"};
  // The line of the subscribe call is captured on that very line.
  // clang-format off
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), opt)); const std::uint32_t line = __LINE__;
  // clang-format on
  EXPECT_EQ(s.name(), "watcher");
  EXPECT_EQ(s.id(), id);
  EXPECT_STREQ(s.origin_file(), __FILE__);
  EXPECT_EQ(s.origin_line(), line);
}

TEST(SubscribeSync, NameIsCopied) {
  herald::bus b;
  auto name = std::make_unique<std::string>("a name long enough to live on the heap, surely");
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.name = *name}));
  const std::string expected = *name;
  name->assign(expected.size(), 'x');
  name.reset();
  EXPECT_EQ(s.name(), expected);
}

TEST(SubscribeSync, NameDefaultsToEmptyAndIdToZero) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  EXPECT_TRUE(s.name().empty());
  EXPECT_EQ(s.id(), 0u);
  EXPECT_TRUE(s.is_active());
  EXPECT_FALSE(s.is_paused());
  EXPECT_EQ(s.exceptions(), 0u);
}

TEST(SubscribeSync, TypeNamesRoundTripThroughASubscription) {
  herald::bus b;
  auto t = herald::type_from_name("TBUS_UP|TBUS_DOWN");
  ASSERT_TRUE(t.has_value());
  int calls = 0;
  auto s = must(b.global().subscribe_sync<tbus_event>(*t, [&](ev&) { ++calls; }));
  EXPECT_EQ(s.type(), of(tbus::up, tbus::down));
  EXPECT_EQ(herald::type_name(s.type()), "TBUS_UP|TBUS_DOWN");
  EXPECT_EQ(pub(b.global(), tbus::down), 1u);
  EXPECT_EQ(pub(b.global(), tbus::add), 0u);
  EXPECT_EQ(calls, 1);
  auto whole = must(b.global().subscribe_sync<tbus_event>(*herald::type_from_name("TBUS"), noop()));
  EXPECT_EQ(whole.type(), whole_tbus());
  EXPECT_EQ(herald::type_name(whole.type()), "TBUS");
}

// ---- make_id
// -------------------------------------------------------------------------------------

TEST(MakeId, WhereScopeEndsAndNameBeginsMatters) {
  EXPECT_NE(make_id("ab", "c"), make_id("a", "bc"));
  EXPECT_NE(make_id("", "abc"), make_id("abc", ""));
  EXPECT_NE(make_id("", "abc"), make_id("a", "bc"));
  EXPECT_NE(make_id("server", "1"), make_id("server", "2"));
  EXPECT_NE(make_id("server", "1"), make_id("peer", "1"));
}

TEST(MakeId, IsDeterministic) {
  EXPECT_EQ(make_id("ab", "c"), make_id("ab", "c"));
  const std::string scope = "scope";
  const std::string name = "name";
  EXPECT_EQ(make_id(scope, name), make_id("scope", "name"));
}

TEST(MakeId, IsNeverZero) {
  EXPECT_NE(make_id("", ""), 0u);
  EXPECT_NE(make_id("a", ""), 0u);
  EXPECT_NE(make_id("", "a"), 0u);
  for (int i = 0; i < 1000; ++i) {
    const std::string n = std::to_string(i);
    ASSERT_NE(make_id("scope", n), 0u) << n;
  }
}

// ---- Handles
// ---------------------------------------------------------------------------------------

TEST(Subscription, CopiesAndTakeReferToTheSameSubscription) {
  herald::bus b;
  int calls = 0;
  subscription a = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [&](ev&) { ++calls; }, {.id = make_id("h", "a"), .name = "a"}));
  subscription copy = a;  // NOLINT(performance-unnecessary-copy-initialization)
  subscription taken = a.take();
  EXPECT_TRUE(copy);
  EXPECT_TRUE(taken);
  EXPECT_EQ(copy.id(), a.id());
  EXPECT_EQ(taken.name(), "a");
  ASSERT_TRUE(copy.pause());
  EXPECT_TRUE(a.is_paused());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  ASSERT_TRUE(taken.resume());
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  taken.unsubscribe();
  EXPECT_FALSE(a.is_active());
  EXPECT_FALSE(copy.is_active());
  EXPECT_EQ(calls, 1);
}

TEST(Subscription, DroppingEveryHandleDoesNotEndTheSubscription) {
  herald::bus b;
  life h;
  int calls = 0;
  const auto id = make_id("h", "dropped");
  {
    auto s = must(b.global().subscribe_sync<tbus_event>(
        of(tbus::up), [p = probe(h), &calls](ev&) { ++calls; }, {.id = id}));
    subscription extra = s.take();
    extra.drop();
    EXPECT_FALSE(extra);
    EXPECT_TRUE(s);
  }
  EXPECT_EQ(h.destroyed, 0);
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(calls, 1);
  auto again = b.global().lookup_take(id);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->is_active());
  again->unsubscribe();
  EXPECT_EQ(h.destroyed, 1);
}

TEST(Subscription, AnonymousSubscriptionWithoutHandlesLivesUntilItsListIsDestroyed) {
  herald::bus b;
  sub_list l(b);
  life h;
  int calls = 0;
  must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h), &calls](ev&) { ++calls; })).drop();
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(h.destroyed, 0);
  l.destroy();
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(calls, 1);
}

TEST(Subscription, MovedFromAndDefaultHandlesAreEmpty) {
  herald::bus b;
  subscription empty;
  EXPECT_FALSE(empty);
  EXPECT_FALSE(empty.is_active());
  EXPECT_FALSE(empty.is_paused());
  EXPECT_EQ(empty.exceptions(), 0u);
  empty.drop();  // dropping an empty handle is harmless
  subscription a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  subscription moved = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from handles are empty by contract
  EXPECT_TRUE(moved);
  EXPECT_TRUE(moved.is_active());
  subscription assigned;
  assigned = std::move(moved);
  EXPECT_FALSE(moved);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(assigned.is_active());
  assigned = subscription{};
  EXPECT_FALSE(assigned);
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::up)));  // dropping never ends it
}

TEST(Subscription, PauseStopsDeliveryAndResumeRestoresIt) {
  herald::bus b;
  std::vector<int> ids;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                      [&](ev& e) { ids.push_back(e.safe().id); }));
  EXPECT_EQ(pub(b.global(), tbus::up, 1), 1u);
  ASSERT_TRUE(s.pause());
  EXPECT_TRUE(s.is_paused());
  EXPECT_TRUE(s.is_active());
  EXPECT_EQ(pub(b.global(), tbus::up, 2), 0u);
  EXPECT_EQ(pub(b.global(), tbus::up, 3), 0u);
  ASSERT_TRUE(s.resume());
  EXPECT_FALSE(s.is_paused());
  EXPECT_EQ(pub(b.global(), tbus::up, 4), 1u);
  EXPECT_EQ(ids, (std::vector<int>{1, 4}));  // nothing published while paused is delivered
}

TEST(Subscription, PauseAndResumeAreIdempotent) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  ASSERT_TRUE(s.resume());
  ASSERT_TRUE(s.pause());
  ASSERT_TRUE(s.pause());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  ASSERT_TRUE(s.resume());
  ASSERT_TRUE(s.resume());
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
}

TEST(Subscription, ResubscribeWithinTheFamilyChangesWhatIsReceived) {
  herald::bus b;
  std::vector<tbus> seen;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                      [&](ev& e) { seen.push_back(e.subtype()); }));
  ASSERT_TRUE(s.resubscribe(of(tbus::down, tbus::add)));
  EXPECT_EQ(s.type(), of(tbus::down, tbus::add));
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(pub(b.global(), tbus::down), 1u);
  EXPECT_EQ(pub(b.global(), tbus::add), 1u);
  ASSERT_TRUE(s.resubscribe(whole_tbus()));
  EXPECT_EQ(pub(b.global(), tbus::del), 1u);
  EXPECT_EQ(seen, (std::vector<tbus>{tbus::down, tbus::add, tbus::del}));
}

TEST(Subscription, ResubscribeKeepsThePlaceInTheSubscriptionOrder) {
  herald::bus b;
  std::vector<char> order;
  auto a =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { order.push_back('a'); }));
  auto m = must(
      b.global().subscribe_sync<tbus_event>(of(tbus::down), [&](ev&) { order.push_back('m'); }));
  auto z =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { order.push_back('z'); }));
  ASSERT_TRUE(m.resubscribe(of(tbus::up)));
  EXPECT_EQ(pub(b.global(), tbus::up), 3u);
  EXPECT_EQ(order, (std::vector<char>{'a', 'm', 'z'}));
  order.clear();
  ASSERT_TRUE(a.resubscribe(of(tbus::down)));
  ASSERT_TRUE(a.resubscribe(of(tbus::up)));
  EXPECT_EQ(pub(b.global(), tbus::up), 3u);
  EXPECT_EQ(order, (std::vector<char>{'a', 'm', 'z'}));
}

TEST(Subscription, ResubscribeToAnotherFamilyIsRefused) {
  herald::bus b;
  int calls = 0;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++calls; }));
  auto r = s.resubscribe(type_of<tpeer_event>(tpeer::connect));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::family_mismatch);
  EXPECT_EQ(s.type(), of(tbus::up));
  EXPECT_FALSE(b.global().has_subscribers(type_of<tpeer_event>()));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(calls, 1);
}

TEST(Subscription, ResubscribeToAnEmptyOrUndeclaredMaskIsRefused) {
  herald::bus b;
  const herald::family_id f = herald::family_id_of<tbus_event>();
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  EXPECT_EQ(s.resubscribe(event_type(f, 0)).error(), errc::family_mismatch);
  EXPECT_EQ(s.resubscribe(event_type(f, 1u << 4)).error(), errc::family_mismatch);
  EXPECT_EQ(s.resubscribe(event_type{}).error(), errc::family_mismatch);
  EXPECT_EQ(s.type(), of(tbus::up));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
}

TEST(Subscription, OperationsAfterTheSubscriptionEndedReportNotFound) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), noop(), {.id = make_id("h", "ended"), .name = "ended"}));
  subscription other = s;
  other.unsubscribe();
  EXPECT_FALSE(s.is_active());
  EXPECT_EQ(s.pause().error(), errc::not_found);
  EXPECT_EQ(s.resume().error(), errc::not_found);
  EXPECT_EQ(s.resubscribe(of(tbus::down)).error(), errc::not_found);
  EXPECT_EQ(s.resubscribe(type_of<tpeer_event>()).error(), errc::not_found);
  s.unsubscribe();  // a no-op
  s.unsubscribe();
  EXPECT_FALSE(s.is_active());
  // What was recorded stays readable.
  EXPECT_EQ(s.type(), of(tbus::up));
  EXPECT_EQ(s.name(), "ended");
  EXPECT_EQ(s.id(), make_id("h", "ended"));
  EXPECT_FALSE(b.global().has_subscribers(of(tbus::up)));
}

TEST(Subscription, UnsubscribeIsIdempotent) {
  herald::bus b;
  life h;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
  s.unsubscribe();
  s.unsubscribe();
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(b.global().size_approx(), 0u);
}

TEST(Subscription, HandleOutlivesTheBus) {
  auto b = std::make_unique<herald::bus>();
  life h;
  auto s = must(b->global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {},
                                                       {.name = "survivor"}));
  subscription copy = s;
  b.reset();
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_FALSE(s.is_active());
  EXPECT_EQ(s.pause().error(), errc::not_found);
  s.unsubscribe();
  EXPECT_EQ(copy.name(), "survivor");
  s.drop();
  EXPECT_FALSE(copy.is_active());
}

// ---- Lookups by id
// ----------------------------------------------------------------------------------

TEST(Lookup, UnknownIdReportsNotFound) {
  herald::bus b;
  auto& l = b.global();
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = make_id("l", "known")}));
  for (std::uint64_t id : {make_id("l", "unknown"), std::uint64_t{0}}) {
    EXPECT_EQ(l.lookup_unsubscribe(id).error(), errc::not_found);
    EXPECT_EQ(l.lookup_pause(id).error(), errc::not_found);
    EXPECT_EQ(l.lookup_resume(id).error(), errc::not_found);
    EXPECT_EQ(l.lookup_resubscribe(id, of(tbus::down)).error(), errc::not_found);
    EXPECT_EQ(l.lookup_take(id).error(), errc::not_found);
  }
  EXPECT_TRUE(s.is_active());
  EXPECT_FALSE(s.is_paused());
  EXPECT_EQ(s.type(), of(tbus::up));
}

TEST(Lookup, IdsAreLookedUpInTheirOwnListOnly) {
  herald::bus b;
  sub_list other(b);
  const auto id = make_id("l", "elsewhere");
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = id}));
  EXPECT_EQ(other.lookup_unsubscribe(id).error(), errc::not_found);
  EXPECT_EQ(other.lookup_take(id).error(), errc::not_found);
  EXPECT_TRUE(s.is_active());
}

TEST(Lookup, UnsubscribeEndsTheSubscription) {
  herald::bus b;
  life h;
  const auto id = make_id("l", "unsub");
  auto s =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}, {.id = id}));
  ASSERT_TRUE(b.global().lookup_unsubscribe(id));
  EXPECT_FALSE(s.is_active());
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(b.global().lookup_unsubscribe(id).error(), errc::not_found);
  EXPECT_EQ(b.global().lookup_take(id).error(), errc::not_found);
}

TEST(Lookup, PauseAndResumeWork) {
  herald::bus b;
  const auto id = make_id("l", "pause");
  int calls = 0;
  auto s =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++calls; }, {.id = id}));
  ASSERT_TRUE(b.global().lookup_pause(id));
  EXPECT_TRUE(s.is_paused());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  ASSERT_TRUE(b.global().lookup_resume(id));
  EXPECT_FALSE(s.is_paused());
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(calls, 1);
}

TEST(Lookup, ResubscribeWorksWithinTheFamilyOnly) {
  herald::bus b;
  const auto id = make_id("l", "resub");
  std::vector<char> order;
  auto a = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [&](ev&) { order.push_back('a'); }, {.id = id}));
  auto z = must(
      b.global().subscribe_sync<tbus_event>(of(tbus::down), [&](ev&) { order.push_back('z'); }));
  ASSERT_TRUE(b.global().lookup_resubscribe(id, of(tbus::down)));
  EXPECT_EQ(a.type(), of(tbus::down));
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(pub(b.global(), tbus::down), 2u);
  EXPECT_EQ(order, (std::vector<char>{'a', 'z'}));
  EXPECT_EQ(b.global().lookup_resubscribe(id, type_of<tpeer_event>()).error(),
            errc::family_mismatch);
  EXPECT_EQ(a.type(), of(tbus::down));
}

TEST(Lookup, TakeReturnsAWorkingHandle) {
  herald::bus b;
  const auto id = make_id("l", "take");
  life h;
  int calls = 0;
  must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h), &calls](ev&) { ++calls; },
                                             {.id = id, .name = "taken"}))
      .drop();
  auto t = b.global().lookup_take(id);
  ASSERT_TRUE(t.has_value());
  subscription s = std::move(*t);
  EXPECT_EQ(s.id(), id);
  EXPECT_EQ(s.name(), "taken");
  EXPECT_EQ(s.type(), of(tbus::up));
  EXPECT_TRUE(s.is_active());
  ASSERT_TRUE(s.pause());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  ASSERT_TRUE(s.resume());
  ASSERT_TRUE(s.resubscribe(of(tbus::up, tbus::down)));
  EXPECT_EQ(pub(b.global(), tbus::down), 1u);
  s.unsubscribe();
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(calls, 1);
}

TEST(Lookup, EndedSubscriptionsAreNotFound) {
  herald::bus b;
  const auto id = make_id("l", "gone");
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop(), {.id = id}));
  s.unsubscribe();
  EXPECT_EQ(b.global().lookup_pause(id).error(), errc::not_found);
  EXPECT_EQ(b.global().lookup_resume(id).error(), errc::not_found);
  EXPECT_EQ(b.global().lookup_resubscribe(id, of(tbus::up)).error(), errc::not_found);
  EXPECT_EQ(b.global().lookup_take(id).error(), errc::not_found);
  EXPECT_EQ(b.global().lookup_unsubscribe(id).error(), errc::not_found);
}

// ---- Handler objects: destroyed exactly once, on every ending path
// -------------------------------

TEST(HandlerLifetime, NotDestroyedWhileSubscribed) {
  herald::bus b;
  life h;
  const auto id = make_id("life", "kept");
  auto s =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}, {.id = id}));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  }
  ASSERT_TRUE(s.pause());
  ASSERT_TRUE(s.resubscribe(of(tbus::down)));
  ASSERT_TRUE(s.resume());
  s.drop();
  auto other = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  other.unsubscribe();
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 0);
  ASSERT_TRUE(b.global().lookup_unsubscribe(id));
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceByHandleUnsubscribe) {
  herald::bus b;
  life h;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  s.unsubscribe();
  EXPECT_EQ(h.destroyed, 1);  // before unsubscribe() returned
  s.unsubscribe();
  s.drop();
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceByLookupUnsubscribe) {
  herald::bus b;
  life h;
  const auto id = make_id("life", "lookup");
  auto s =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}, {.id = id}));
  ASSERT_TRUE(b.global().lookup_unsubscribe(id));
  EXPECT_EQ(h.destroyed, 1);
  s.unsubscribe();
  b.global().destroy();
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceBySelfUnsubscribeAfterTheCall) {
  herald::bus b;
  life h;
  int calls = 0;
  int destroyed_inside = -1;
  auto s = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h), &calls, &destroyed_inside](ev& e) {
        ++calls;
        e.self().unsubscribe();
        e.self().unsubscribe();                   // idempotent inside the handler too
        destroyed_inside = p.record().destroyed;  // the running handler is still alive
      }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(destroyed_inside, 0);
  EXPECT_FALSE(s.is_active());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(calls, 1);
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
  b.global().destroy();
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceByListDestroy) {
  herald::bus b;
  sub_list l(b);
  life h1;
  life h2;
  auto s1 = must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h1)](ev&) {}));
  auto s2 = must(l.subscribe_sync<tpeer_event>(
      type_of<tpeer_event>(), [p = probe(h2)](herald::sync_event<tpeer_event>&) {}));
  l.destroy();
  EXPECT_EQ(h1.destroyed, 1);  // before destroy() returned
  EXPECT_EQ(h2.destroyed, 1);
  s1.unsubscribe();
  EXPECT_EQ(l.lookup_unsubscribe(1).error(), errc::not_found);
  b.reclaim();
  EXPECT_EQ(h1.destroyed, 1);
  EXPECT_EQ(h2.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceByListDestructor) {
  herald::bus b;
  life h;
  subscription s;
  {
    sub_list l(b);
    s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
    EXPECT_EQ(h.destroyed, 0);
  }
  EXPECT_EQ(h.destroyed, 1);
  s.unsubscribe();
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceByBusDestructor) {
  life h;
  life u;
  subscription s;
  {
    herald::bus b;
    s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {}));
    // A handler that unsubscribed itself and was never reclaimed before the bus went away.
    must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(u)](ev& e) {
      e.self().unsubscribe();
    })).drop();
    EXPECT_EQ(pub(b.global(), tbus::up), 2u);
    EXPECT_EQ(h.destroyed, 0);
  }
  EXPECT_EQ(h.destroyed, 1);
  EXPECT_EQ(u.destroyed, 1);
  EXPECT_FALSE(s.is_active());
  s.unsubscribe();
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerLifetime, DestroyedOnceWhenEveryPathIsTriedInTurn) {
  herald::bus b;
  sub_list l(b);
  life h;
  const auto id = make_id("life", "all");
  auto s = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h)](ev& e) { e.self().unsubscribe(); }, {.id = id}));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  s.unsubscribe();
  EXPECT_EQ(l.lookup_unsubscribe(id).error(), errc::not_found);
  l.destroy();
  b.reclaim();
  EXPECT_EQ(h.made, 1);
  EXPECT_EQ(h.destroyed, 1);
}

// The handle's unsubscribe() contract: called outside a handler, the handler is destroyed
// before it returns, whatever path ended the subscription first.
TEST(HandlerLifetime, HandleUnsubscribeAfterSelfUnsubscribeDestroysTheHandlerBeforeReturning) {
  herald::bus b;
  life h;
  auto s = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h)](ev& e) { e.self().unsubscribe(); }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  s.unsubscribe();
  EXPECT_EQ(h.destroyed, 1) << "unsubscribe() outside a handler returned before the handler, "
                               "ended earlier from inside its own call, was destroyed";
}

// destroy()'s contract: called outside a handler, every handler of the list is destroyed before
// it returns, also when an earlier destroy() ran inside a handler.
TEST(HandlerLifetime, DestroyAfterADestroyInsideAHandlerDestroysTheHandlersBeforeReturning) {
  herald::bus b;
  sub_list l(b);
  life h;
  auto s =
      must(l.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h), &l](ev&) { l.destroy(); }));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_TRUE(l.is_destroyed());
  l.destroy();
  EXPECT_EQ(h.destroyed, 1) << "destroy() outside a handler returned before the handlers of the "
                               "list, destroyed earlier from inside a handler, were destroyed";
}

// ---- Operations from inside a handler, on the same list
// ---------------------------------------------

TEST(HandlerContext, NestedPublishOnTheSameListRunsInline) {
  herald::bus b;
  auto& l = b.global();
  std::vector<std::string> order;
  std::size_t inner = 0;
  auto up = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    order.emplace_back("up-begin");
    inner = pub(l, tbus::down);
    order.emplace_back("up-end");
  }));
  auto down =
      must(l.subscribe_sync<tbus_event>(of(tbus::down), [&](ev&) { order.emplace_back("down"); }));
  auto up2 =
      must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { order.emplace_back("up2"); }));
  EXPECT_EQ(pub(l, tbus::up), 2u);
  EXPECT_EQ(inner, 1u);
  EXPECT_EQ(order, (std::vector<std::string>{"up-begin", "down", "up-end", "up2"}));
}

TEST(HandlerContext, RecursivePublishOfTheSameTypeWorks) {
  herald::bus b;
  auto& l = b.global();
  std::vector<int> depths;
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev& e) {
    depths.push_back(e.safe().id);
    if (e.safe().id < 3) {
      (void)pub(l, tbus::up, e.safe().id + 1);
    }
  }));
  EXPECT_EQ(pub(l, tbus::up, 0), 1u);
  EXPECT_EQ(depths, (std::vector<int>{0, 1, 2, 3}));
}

TEST(HandlerContext, SubscriptionMadeDuringAPublishIsNotCalledByIt) {
  herald::bus b;
  auto& l = b.global();
  std::vector<subscription> made;
  int late_calls = 0;
  auto s = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    if (made.empty()) {
      made.push_back(
          must(l.subscribe_sync<tbus_event>(of(tbus::up), [&late_calls](ev&) { ++late_calls; })));
    }
  }));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(late_calls, 0);
  ASSERT_EQ(made.size(), 1u);
  EXPECT_TRUE(made[0].is_active());
  EXPECT_EQ(pub(l, tbus::up), 2u);
  EXPECT_EQ(late_calls, 1);
}

TEST(HandlerContext, UnsubscribingALaterSubscriptionStopsItInTheSamePublish) {
  herald::bus b;
  auto& l = b.global();
  life later_life;
  subscription later;
  int later_calls = 0;
  auto first = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { later.unsubscribe(); }));
  later = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(later_life), &later_calls](ev&) { ++later_calls; }));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(later_calls, 0);
  EXPECT_FALSE(later.is_active());
  b.reclaim();
  EXPECT_EQ(later_life.destroyed, 1);
}

TEST(HandlerContext, PausingALaterSubscriptionStopsItInTheSamePublish) {
  herald::bus b;
  auto& l = b.global();
  subscription later;
  int later_calls = 0;
  bool pause_ok = false;
  auto first = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [&](ev&) { pause_ok = later.pause().has_value(); }));
  later = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++later_calls; }));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_TRUE(pause_ok);
  EXPECT_EQ(later_calls, 0);
  first.unsubscribe();
  ASSERT_TRUE(later.resume());
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(later_calls, 1);
}

TEST(HandlerContext, LookupOperationsWorkInsideAHandler) {
  herald::bus b;
  auto& l = b.global();
  const auto self_id = make_id("ctx", "self");
  const auto other_id = make_id("ctx", "other");
  life self_life;
  int other_calls = 0;
  std::vector<bool> results;
  auto s = must(l.subscribe_sync<tbus_event>(
      of(tbus::up),
      [&, p = probe(self_life)](ev&) {
        results.push_back(l.lookup_pause(other_id).has_value());
        results.push_back(l.lookup_take(other_id).has_value());
        results.push_back(l.lookup_resubscribe(other_id, of(tbus::up, tbus::down)).has_value());
        results.push_back(
            l.lookup_unsubscribe(self_id).has_value());  // itself: no wait, no deadlock
        results.push_back(p.record().destroyed == 0);
      },
      {.id = self_id}));
  auto o = must(
      l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++other_calls; }, {.id = other_id}));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(results, (std::vector<bool>{true, true, true, true, true}));
  EXPECT_FALSE(s.is_active());
  EXPECT_TRUE(o.is_paused());
  EXPECT_EQ(o.type(), of(tbus::up, tbus::down));
  ASSERT_TRUE(l.lookup_resume(other_id));
  EXPECT_EQ(pub(l, tbus::down), 1u);
  EXPECT_EQ(other_calls, 1);
  b.reclaim();
  EXPECT_EQ(self_life.destroyed, 1);
}

TEST(HandlerContext, HandlerMayUnsubscribeItselfThroughAHandle) {
  herald::bus b;
  subscription s;
  int calls = 0;
  s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    ++calls;
    s.unsubscribe();  // the handle, not self(): must not wait for this very call
  }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(s.is_active());
}

TEST(HandlerContext, DestroyingTheListFromItsOwnHandler) {
  herald::bus b;
  sub_list l(b);
  life h1;
  life h2;
  life h3;
  std::vector<int> order;
  int own_destroyed_inside = -1;
  auto s1 = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h1), &order](ev&) { order.push_back(1); }));
  auto s2 = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h2), &order, &l, &own_destroyed_inside](ev&) {
        order.push_back(2);
        l.destroy();
        own_destroyed_inside = p.record().destroyed;
      }));
  auto s3 = must(l.subscribe_sync<tbus_event>(
      of(tbus::up), [p = probe(h3), &order](ev&) { order.push_back(3); }));
  EXPECT_EQ(pub(l, tbus::up), 2u);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));  // later handlers are not called
  EXPECT_EQ(own_destroyed_inside, 0);
  EXPECT_TRUE(l.is_destroyed());
  EXPECT_FALSE(s1.is_active());
  EXPECT_FALSE(s2.is_active());
  EXPECT_FALSE(s3.is_active());
  auto r = l.publish<tbus_event>(tbus::up, tbus_event::safe_part{});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::list_destroyed);
  EXPECT_EQ(l.subscribe_sync<tbus_event>(of(tbus::up), noop()).error(), errc::list_destroyed);
  b.reclaim();
  EXPECT_EQ(h1.destroyed, 1);
  EXPECT_EQ(h2.destroyed, 1);
  EXPECT_EQ(h3.destroyed, 1);
}

TEST(HandlerContext, HandlerMayDestroyAnotherListAndSubscribeToIt) {
  herald::bus b;
  sub_list other(b);
  sub_list doomed(b);
  life h;
  must(doomed.subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {})).drop();
  int other_calls = 0;
  std::vector<subscription> made;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    doomed.destroy();
    made.push_back(must(
        other.subscribe_sync<tbus_event>(of(tbus::up), [&other_calls](ev&) { ++other_calls; })));
    (void)pub(other, tbus::up);
  }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_TRUE(doomed.is_destroyed());
  EXPECT_EQ(other_calls, 1);
  b.reclaim();
  EXPECT_EQ(h.destroyed, 1);
}

TEST(HandlerContext, SelfResubscribeChangesTheTypeAndSelfTypeReadsIt) {
  herald::bus b;
  std::vector<event_type> types_inside;
  int calls = 0;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev& e) {
    ++calls;
    types_inside.push_back(e.self().type());
    if (e.subtype() == tbus::up) {
      EXPECT_TRUE(e.self().resubscribe(of(tbus::down)));
      types_inside.push_back(e.self().type());
    }
  }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  EXPECT_EQ(pub(b.global(), tbus::down), 1u);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(types_inside, (std::vector<event_type>{of(tbus::up), of(tbus::down), of(tbus::down)}));
  EXPECT_EQ(s.type(), of(tbus::down));
}

TEST(HandlerContext, SelfResubscribeToAnotherFamilyIsRefused) {
  herald::bus b;
  herald::result<void> r;
  auto s = must(b.global().subscribe_sync<tbus_event>(
      of(tbus::up), [&](ev& e) { r = e.self().resubscribe(type_of<tpeer_event>()); }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::family_mismatch);
  EXPECT_EQ(s.type(), of(tbus::up));
}

TEST(HandlerContext, SelfTakeGivesAHandleThatOutlivesTheCall) {
  herald::bus b;
  const auto id = make_id("ctx", "take");
  subscription kept;
  int calls = 0;
  must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                             [&](ev& e) {
                                               ++calls;
                                               if (!kept) {
                                                 kept = e.self().take();
                                               }
                                             },
                                             {.id = id, .name = "self-taken"}))
      .drop();
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept.id(), id);
  EXPECT_EQ(kept.name(), "self-taken");
  ASSERT_TRUE(kept.pause());
  EXPECT_EQ(pub(b.global(), tbus::up), 0u);
  kept.unsubscribe();
  EXPECT_EQ(b.global().lookup_take(id).error(), errc::not_found);
  EXPECT_EQ(calls, 1);
}

TEST(HandlerContext, SelfUnsubscribeAfterResubscribeInTheSameCall) {
  herald::bus b;
  life h;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev& e) {
    EXPECT_TRUE(e.self().resubscribe(whole_tbus()));
    e.self().unsubscribe();
    EXPECT_EQ(e.self().resubscribe(of(tbus::up)).error(), errc::not_found);
  }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(pub(b.global(), tbus::down), 0u);
  EXPECT_FALSE(s.is_active());
  b.reclaim();
  EXPECT_EQ(h.destroyed, 1);
}

// ---- Handler exceptions
// ---------------------------------------------------------------------------

struct not_a_std_exception {
  int code = 0;
};

TEST(HandlerErrors, ThrowingHandlerDoesNotStopTheOthers) {
  herald::bus b;
  std::vector<int> order;
  auto a =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { order.push_back(1); }));
  auto t = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    order.push_back(2);
    throw std::runtime_error("boom");
  }));
  auto c =
      must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { order.push_back(3); }));
  std::size_t ran = 0;
  EXPECT_NO_THROW(ran = pub(b.global(), tbus::up));
  EXPECT_EQ(ran, 3u);  // the throwing handler ran too
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(t.is_active());  // a throw does not end the subscription
}

TEST(HandlerErrors, ExceptionsAreCountedPerSubscriptionAndPerBus) {
  herald::bus b;
  sub_list l(b);
  EXPECT_EQ(b.handler_exceptions(), 0u);
  auto t1 = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                       [](ev&) { throw std::logic_error("one"); }));
  auto t2 =
      must(l.subscribe_sync<tbus_event>(of(tbus::up), [](ev&) { throw not_a_std_exception{7}; }));
  auto fine = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pub(b.global(), tbus::up), 2u);
  }
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(t1.exceptions(), 3u);
  EXPECT_EQ(t2.exceptions(), 1u);
  EXPECT_EQ(fine.exceptions(), 0u);
  EXPECT_EQ(b.handler_exceptions(), 4u);  // user lists of the bus count too
}

struct hook_record {
  std::uint64_t id = 0;
  std::string name;
  std::string file;
  std::uint32_t line = 0;
  event_type type;
  std::string what;
};

TEST(HandlerErrors, ErrorHookReceivesTheDetails) {
  herald::bus b;
  std::vector<hook_record> seen;
  b.set_error_hook([&seen](const herald::handler_error& e) {
    seen.push_back({e.subscription_id, std::string(e.subscription_name), e.file, e.line, e.type,
                    std::string(e.what)});
  });
  const auto id = make_id("errors", "thrower");
  const subscribe_options opt{.id = id, .name = "thrower"};
  auto thrower = [](ev& e) {
    throw std::runtime_error("server " + std::to_string(e.safe().id) + " broke");
  };
  // The line of the subscribe call is captured on that very line.
  // clang-format off
  auto t = must(b.global().subscribe_sync<tbus_event>(of(tbus::up, tbus::down), thrower, opt)); const std::uint32_t line = __LINE__;
  // clang-format on
  EXPECT_EQ(pub(b.global(), tbus::down, 12), 1u);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].id, id);
  EXPECT_EQ(seen[0].name, "thrower");
  EXPECT_EQ(seen[0].file, __FILE__);
  EXPECT_EQ(seen[0].line, line);
  EXPECT_EQ(seen[0].type, of(tbus::down));
  EXPECT_EQ(seen[0].what, "server 12 broke");
}

TEST(HandlerErrors, NonStdExceptionIsReportedAsUnknown) {
  herald::bus b;
  std::vector<hook_record> seen;
  b.set_error_hook([&seen](const herald::handler_error& e) {
    seen.push_back({e.subscription_id, std::string(e.subscription_name), e.file, e.line, e.type,
                    std::string(e.what)});
  });
  auto t = must(b.global().subscribe_sync<tbus_event>(of(tbus::add),
                                                      [](ev&) { throw not_a_std_exception{3}; }));
  auto i = must(b.global().subscribe_sync<tbus_event>(of(tbus::add), [](ev&) { throw 42; }));
  EXPECT_EQ(pub(b.global(), tbus::add), 2u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].what, "unknown exception");
  EXPECT_EQ(seen[1].what, "unknown exception");
  EXPECT_EQ(seen[0].id, 0u);
  EXPECT_EQ(seen[0].name, "");
  EXPECT_EQ(seen[0].type, of(tbus::add));
}

TEST(HandlerErrors, ThrowingErrorHookIsSwallowed) {
  herald::bus b;
  int hook_calls = 0;
  b.set_error_hook([&hook_calls](const herald::handler_error&) {
    ++hook_calls;
    throw std::runtime_error("the hook broke too");
  });
  int after = 0;
  auto t = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                      [](ev&) { throw std::runtime_error("x"); }));
  auto c = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++after; }));
  std::size_t ran = 0;
  EXPECT_NO_THROW(ran = pub(b.global(), tbus::up));
  EXPECT_EQ(ran, 2u);
  EXPECT_EQ(hook_calls, 1);
  EXPECT_EQ(after, 1);
  EXPECT_EQ(b.handler_exceptions(), 1u);
}

TEST(HandlerErrors, HookCanBeReplacedAndCleared) {
  herald::bus b;
  int first = 0;
  int second = 0;
  b.set_error_hook([&first](const herald::handler_error&) { ++first; });
  auto t = must(b.global().subscribe_sync<tbus_event>(of(tbus::up),
                                                      [](ev&) { throw std::runtime_error("x"); }));
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  b.set_error_hook([&second](const herald::handler_error&) { ++second; });
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  b.set_error_hook({});
  EXPECT_EQ(pub(b.global(), tbus::up), 1u);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(b.handler_exceptions(), 3u);
  EXPECT_EQ(t.exceptions(), 3u);
}

TEST(HandlerErrors, HandlersOfUserListsReportToTheBusHook) {
  herald::bus b;
  sub_list l(b);
  std::vector<hook_record> seen;
  b.set_error_hook([&seen](const herald::handler_error& e) {
    seen.push_back({e.subscription_id, std::string(e.subscription_name), e.file, e.line, e.type,
                    std::string(e.what)});
  });
  auto t = must(l.subscribe_sync<tbus_event>(
      of(tbus::del), [](ev&) { throw std::out_of_range("range"); }, {.name = "on-list"}));
  EXPECT_EQ(pub(l, tbus::del), 1u);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name, "on-list");
  EXPECT_EQ(seen[0].what, "range");
}

TEST(HandlerErrors, ThrowingNestedPublisherStillReportsOnce) {
  herald::bus b;
  auto& l = b.global();
  int down_calls = 0;
  auto up = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) {
    (void)pub(l, tbus::down);
    throw std::runtime_error("after nesting");
  }));
  auto down = must(l.subscribe_sync<tbus_event>(of(tbus::down), [&](ev&) {
    ++down_calls;
    throw std::runtime_error("inner");
  }));
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(down_calls, 1);
  EXPECT_EQ(up.exceptions(), 1u);
  EXPECT_EQ(down.exceptions(), 1u);
  EXPECT_EQ(b.handler_exceptions(), 2u);
}

// ---- Allocation
// -----------------------------------------------------------------------------------

TEST(Allocation, CounterSeesAllocations) {
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  {
    herald::bus b;
    auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  }
  EXPECT_GT(g_allocations.load(std::memory_order_relaxed) - before, 0u);
}

// Allocations made by `publishes` warm publishes of UP to `handlers` matching handlers, next to
// as many subscriptions that do not match.
std::uint64_t allocations_of_warm_publishes(std::size_t handlers, bool with_unsafe) {
  herald::bus b;
  sub_list l(b);
  int calls = 0;
  int live = 0;
  std::vector<subscription> subs;
  for (std::size_t i = 0; i < handlers; ++i) {
    subs.push_back(must(l.subscribe_sync<tbus_event>(of(tbus::up), [&calls](ev& e) {
      calls += e.safe().id;
      if (e.unsafe() != nullptr) {
        ++*e.unsafe()->live;
      }
    })));
    subs.push_back(
        must(l.subscribe_sync<tbus_event>(of(tbus::down), [&calls](ev&) { calls += 1000; })));
    subs.push_back(must(l.subscribe_sync<tpeer_event>(
        type_of<tpeer_event>(), [&calls](herald::sync_event<tpeer_event>&) { calls += 1000; })));
  }
  const tbus_event::safe_part safe{1, "a name long enough to need the heap if it were copied"};
  tbus_event::unsafe_part unsafe{&live};
  constexpr std::size_t publishes = 1000;
  (void)l.publish<tbus_event>(tbus::up, safe);  // warm-up: the thread's first publish
  calls = 0;
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  std::size_t ran = 0;
  for (std::size_t i = 0; i < publishes; ++i) {
    auto r = with_unsafe ? l.publish<tbus_event>(tbus::up, safe, unsafe)
                         : l.publish<tbus_event>(tbus::up, safe);
    ran += r.value_or(std::size_t{0});
  }
  const std::uint64_t after = g_allocations.load(std::memory_order_relaxed);
  EXPECT_EQ(ran, handlers * publishes);
  const int expected_calls = static_cast<int>(handlers * publishes);
  EXPECT_EQ(calls, expected_calls);
  EXPECT_EQ(live, with_unsafe ? expected_calls : 0);
  return after - before;
}

TEST(Allocation, WarmPublishToOneHandlerAllocatesNothing) {
  EXPECT_EQ(allocations_of_warm_publishes(1, false), 0u);
  EXPECT_EQ(allocations_of_warm_publishes(1, true), 0u);
}

TEST(Allocation, WarmPublishToTenHandlersAllocatesNothing) {
  EXPECT_EQ(allocations_of_warm_publishes(10, false), 0u);
  EXPECT_EQ(allocations_of_warm_publishes(10, true), 0u);
}

TEST(Allocation, PublishWithNoMatchingSubscriberAllocatesNothing) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  const tbus_event::safe_part safe{};
  (void)b.global().publish<tbus_event>(tbus::down, safe);
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  std::size_t ran = 0;
  for (int i = 0; i < 1000; ++i) {
    ran += b.global().publish<tbus_event>(tbus::down, safe).value_or(std::size_t{0});
    ran += b.global()
               .publish<tpeer_event>(tpeer::connect, tpeer_event::safe_part{})
               .value_or(std::size_t{0});
  }
  EXPECT_EQ(g_allocations.load(std::memory_order_relaxed) - before, 0u);
  EXPECT_EQ(ran, 0u);
}

TEST(Allocation, HasSubscribersAllocatesNothing) {
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  (void)b.global().has_subscribers(of(tbus::up));
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  int yes = 0;
  for (int i = 0; i < 1000; ++i) {
    yes += b.global().has_subscribers(of(tbus::up)) ? 1 : 0;
    yes += b.global().has_subscribers(of(tbus::down)) ? 1 : 0;
  }
  EXPECT_EQ(g_allocations.load(std::memory_order_relaxed) - before, 0u);
  EXPECT_EQ(yes, 1000);
}

// ---- Out of memory: every allocation of an operation fails in turn ------------------------------

TEST(OutOfMemory, InjectedFailureIsSeen) {
  herald::bus b;
  life h;
  fail_allocation(0);
  auto r = b.global().subscribe_sync<tbus_event>(of(tbus::up), [p = probe(h)](ev&) {});
  EXPECT_TRUE(injection_fired());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), errc::no_memory);
  EXPECT_EQ(h.destroyed, 1);
}

TEST(OutOfMemory, SubscribeReportsNoMemoryAndLeavesTheListUnchanged) {
  herald::bus b;
  sub_list l(b);
  int old_calls = 0;
  auto old = must(l.subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++old_calls; }));
  const auto id = make_id("oom", "subscribe");
  const std::string name(64, 'n');  // long enough for the name's copy to allocate
  int failures = 0;
  bool succeeded = false;
  for (std::int64_t k = 0; !succeeded && k < 100; ++k) {
    life h;
    int calls = 0;
    fail_allocation(k);
    auto r = l.subscribe_sync<tbus_event>(of(tbus::up, tbus::down),
                                          [p = probe(h), &calls](ev&) { ++calls; },
                                          {.id = id, .name = name});
    const bool fired = injection_fired();
    if (!fired) {
      ASSERT_TRUE(r.has_value()) << "allocation " << k;
      succeeded = true;
    } else if (!r.has_value()) {
      ++failures;
      EXPECT_EQ(r.error(), errc::no_memory) << "allocation " << k;
      EXPECT_EQ(h.destroyed, 1) << "allocation " << k;
      EXPECT_EQ(l.size_approx(), 1u) << "allocation " << k;
      EXPECT_FALSE(l.has_subscribers(of(tbus::down))) << "allocation " << k;
      EXPECT_EQ(l.lookup_take(id).error(), errc::not_found) << "allocation " << k;
      EXPECT_EQ(pub(l, tbus::up), 1u) << "allocation " << k;
      continue;
    }
    // It succeeded (the failed allocation, if any, was not needed): a working subscription.
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->name(), name);
    EXPECT_EQ(pub(l, tbus::down), 1u) << "allocation " << k;
    EXPECT_EQ(calls, 1);
    ASSERT_TRUE(l.lookup_unsubscribe(id));
    EXPECT_EQ(h.destroyed, 1);
  }
  EXPECT_TRUE(succeeded);
  EXPECT_GE(failures, 4);  // the handler, the record, the name and the snapshot at least
  EXPECT_EQ(pub(l, tbus::up), 1u);
  EXPECT_EQ(old_calls, failures + 1);
}

// Ends `a` by unsubscribe() while allocation k fails, then ends the rest with `finish`; checks
// that `a` ended at once and that every handler is destroyed exactly once in the end.
template <class Finish>
void unsubscribe_without_memory(Finish finish) {
  bool completed = false;
  int fired_count = 0;
  for (std::int64_t k = 0; !completed && k < 100; ++k) {
    herald::bus b;
    auto l = std::make_unique<sub_list>(b);
    life ha;
    life hb;
    int a_calls = 0;
    int b_calls = 0;
    auto a = must(l->subscribe_sync<tbus_event>(
        of(tbus::up), [p = probe(ha), &a_calls](ev&) { ++a_calls; }, {.id = make_id("oom", "a")}));
    auto c = must(
        l->subscribe_sync<tbus_event>(of(tbus::up), [p = probe(hb), &b_calls](ev&) { ++b_calls; }));
    fail_allocation(k);
    a.unsubscribe();
    const bool fired = injection_fired();
    completed = !fired;
    fired_count += fired ? 1 : 0;
    EXPECT_FALSE(a.is_active()) << "allocation " << k;
    EXPECT_EQ(l->lookup_take(make_id("oom", "a")).error(), errc::not_found);
    EXPECT_EQ(pub(*l, tbus::up), 1u) << "allocation " << k;
    EXPECT_EQ(a_calls, 0) << "allocation " << k;
    EXPECT_EQ(b_calls, 1) << "allocation " << k;
    EXPECT_TRUE(l->has_subscribers(of(tbus::up)));
    EXPECT_LE(ha.destroyed, 1);
    finish(*l, c);
    EXPECT_EQ(ha.destroyed, 1) << "allocation " << k;
    EXPECT_EQ(hb.destroyed, 1) << "allocation " << k;
    l.reset();
    b.reclaim();
    EXPECT_EQ(ha.destroyed, 1) << "allocation " << k;
    EXPECT_EQ(hb.destroyed, 1) << "allocation " << k;
  }
  EXPECT_TRUE(completed);
  EXPECT_GE(fired_count, 1);
}

TEST(OutOfMemory, UnsubscribeEndsTheSubscriptionEvenWithoutMemoryThenUnsubscribeReclaimsIt) {
  unsubscribe_without_memory([](sub_list&, subscription& other) { other.unsubscribe(); });
}

TEST(OutOfMemory, UnsubscribeEndsTheSubscriptionEvenWithoutMemoryThenDestroyReclaimsIt) {
  unsubscribe_without_memory([](sub_list& l, subscription&) { l.destroy(); });
}

TEST(OutOfMemory, ResubscribeReportsNoMemoryAndKeepsTheOldType) {
  bool completed = false;
  int failures = 0;
  for (std::int64_t k = 0; !completed && k < 100; ++k) {
    herald::bus b;
    int calls = 0;
    auto a = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), [&](ev&) { ++calls; }));
    fail_allocation(k);
    auto r = a.resubscribe(of(tbus::down));
    completed = !injection_fired();
    if (r.has_value()) {
      EXPECT_EQ(a.type(), of(tbus::down));
      EXPECT_EQ(pub(b.global(), tbus::up), 0u);
      EXPECT_EQ(pub(b.global(), tbus::down), 1u);
    } else {
      ++failures;
      EXPECT_EQ(r.error(), errc::no_memory);
      EXPECT_EQ(a.type(), of(tbus::up));
      EXPECT_EQ(pub(b.global(), tbus::up), 1u);
      EXPECT_EQ(pub(b.global(), tbus::down), 0u);
      EXPECT_FALSE(b.global().has_subscribers(of(tbus::down)));
    }
    EXPECT_EQ(calls, 1);
  }
  EXPECT_TRUE(completed);
  EXPECT_GE(failures, 1);
}

// ---- Misuse
// -----------------------------------------------------------------------------------------

TEST(SubscriptionDeathTest, UnsubscribeOnAnEmptyHandleAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  subscription empty;
  EXPECT_DEATH(empty.unsubscribe(),
               "herald: misuse at .*: unsubscribe\\(\\) on an empty subscription handle");
}

TEST(SubscriptionDeathTest, PauseAndResumeOnAnEmptyHandleAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  subscription empty;
  EXPECT_DEATH((void)empty.pause(),
               "herald: misuse at .*: pause\\(\\) on an empty subscription handle");
  EXPECT_DEATH((void)empty.resume(),
               "herald: misuse at .*: resume\\(\\) on an empty subscription handle");
}

TEST(SubscriptionDeathTest, ResubscribeOnAnEmptyHandleAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  subscription empty;
  EXPECT_DEATH((void)empty.resubscribe(of(tbus::up)),
               "herald: misuse at .*: resubscribe\\(\\) on an empty subscription handle");
}

TEST(SubscriptionDeathTest, AccessorsOnAnEmptyHandleAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  subscription empty;
  EXPECT_DEATH((void)empty.type(), "misuse at .*: type\\(\\) on an empty subscription handle");
  EXPECT_DEATH((void)empty.id(), "misuse at .*: id\\(\\) on an empty subscription handle");
  EXPECT_DEATH((void)empty.name(), "misuse at .*: name\\(\\) on an empty subscription handle");
  EXPECT_DEATH((void)empty.origin_file(),
               "misuse at .*: origin_file\\(\\) on an empty subscription handle");
  EXPECT_DEATH((void)empty.origin_line(),
               "misuse at .*: origin_line\\(\\) on an empty subscription handle");
}

TEST(SubscriptionDeathTest, DroppedHandleAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  herald::bus b;
  auto s = must(b.global().subscribe_sync<tbus_event>(of(tbus::up), noop()));
  s.drop();
  EXPECT_DEATH(s.unsubscribe(), "misuse at .*: unsubscribe\\(\\) on an empty subscription handle");
  EXPECT_TRUE(b.global().has_subscribers(of(tbus::up)));
}

}  // namespace
