// Example 05: identified subscriptions, managed by id from anywhere in the program.
//
// A load balancer's health module subscribes one watcher per server it checks and names each
// with an id computed from (scope, name). The components that later pause, retarget or stop a
// watcher never see its handle: they reach it by id on the list, as HAProxy's
// event_hdl_lookup_* functions do. The program walks through:
//   - herald::make_id: deterministic, never 0, and ("ab", "c") differs from ("a", "bc");
//   - subscribe_options{.id, .name}; a second subscription with the same id in the same list is
//     refused with errc::duplicate_id (its handler is destroyed at once), while the same id in
//     another list is accepted;
//   - lookup_take (a counted handle that shows the id, name, origin and type), lookup_pause and
//     lookup_resume, lookup_resubscribe (within the family; another family is
//     errc::family_mismatch), lookup_unsubscribe (the handler is gone when it returns);
//   - after the end: every lookup reports errc::not_found, the handle taken earlier still works
//     and says the subscription ended, and the id may be used again.
// Every step is checked; the program exits non-zero on the first run that sees a mismatch.
//
// Usage: herald_example_05_ids_and_lookups [--quick]
#include <herald/bus.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

namespace {

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
  enum class subtype : std::uint8_t { add, del, up, down };
  static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP", "DOWN"};
  struct safe_part {
    std::uint32_t id = 0;
  };
};
using srv = server_event::subtype;

// Another family, to show that ids and lookups never mix families up.
struct listener_event {
  static constexpr std::string_view family_name = "LISTENER";
  enum class subtype : std::uint8_t { open, close };
  static constexpr std::array<std::string_view, 2> subtype_names{"OPEN", "CLOSE"};
  struct safe_part {
    std::uint16_t port = 0;
  };
};

// A piece of handler state that counts its own destruction (a moved-from one counts for
// nothing): it shows when herald destroys the handler that captured it.
class destruction_probe {
 public:
  explicit destruction_probe(int* count) noexcept : count_(count) {}
  destruction_probe(destruction_probe&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
  destruction_probe(const destruction_probe&) = delete;
  destruction_probe& operator=(const destruction_probe&) = delete;
  destruction_probe& operator=(destruction_probe&&) = delete;
  ~destruction_probe() {
    if (count_ != nullptr) {
      ++*count_;
    }
  }

 private:
  int* count_;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int rounds = quick ? 10 : 100000;
  int failures = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "example 05: %s\n", what);
      ++failures;
    }
  };
  auto error_name = [](herald::errc e) { return herald::to_string(e).data(); };

  // 1. Ids. The scope and the name are hashed with their lengths.
  const std::uint64_t watch12 = herald::make_id("health", "srv12");
  expect(watch12 == herald::make_id("health", "srv12"), "make_id is not deterministic");
  expect(watch12 != 0, "make_id returned 0 (which means 'no id')");
  expect(herald::make_id("ab", "c") != herald::make_id("a", "bc"),
         "make_id confused where the scope ends");
  std::printf("id of (health, srv12): %016llx\n", static_cast<unsigned long long>(watch12));

  herald::bus bus;
  herald::sub_list& list = bus.global();
  auto publish = [&](srv s) { return list.publish<server_event>(s, {12}); };

  // 2. An identified watcher. Its handle is dropped at once: dropping the last handle does not
  //    end a subscription, and the id is all the other components need.
  int seen = 0;
  int watcher_destroyed = 0;
  {
    auto watcher = list.subscribe_sync<server_event>(
        herald::type_of<server_event>(srv::up, srv::down),
        [&seen, probe = destruction_probe(&watcher_destroyed)](
            herald::sync_event<server_event>&) { ++seen; },
        {.id = watch12, .name = "health/srv12"});
    expect(watcher.has_value(), "the watcher's subscribe failed");
  }
  expect(list.size_approx() == 1, "dropping the handle ended the subscription");

  // 3. The same id again in this list is refused; the refused handler is destroyed before
  //    subscribe returns. In another list the id is free.
  int refused_destroyed = 0;
  auto dup = list.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::up),
      [probe = destruction_probe(&refused_destroyed)](herald::sync_event<server_event>&) {},
      {.id = watch12, .name = "someone-else/srv12"});
  expect(!dup && dup.error() == herald::errc::duplicate_id, "a duplicate id was accepted");
  expect(refused_destroyed == 1, "the refused handler was not destroyed at once");
  std::printf("same id, same list: %s\n", dup ? "accepted" : error_name(dup.error()));
  herald::sub_list other(bus);
  auto elsewhere = other.subscribe_sync<server_event>(
      herald::type_of<server_event>(), [](herald::sync_event<server_event>&) {}, {.id = watch12});
  expect(elsewhere.has_value(), "the same id in another list was refused");

  // 4. lookup_take: a counted handle found by id.
  auto taken = list.lookup_take(watch12);
  expect(taken.has_value(), "lookup_take did not find the watcher");
  if (!taken) {
    return 1;
  }
  herald::subscription handle = *taken;
  expect(handle.id() == watch12 && handle.name() == "health/srv12", "wrong id or name");
  expect(handle.type() == herald::type_of<server_event>(srv::up, srv::down), "wrong type");
  std::printf("lookup_take: '%.*s' on %s, subscribed at %s:%u\n",
              static_cast<int>(handle.name().size()), handle.name().data(),
              herald::type_name(handle.type()).c_str(), handle.origin_file(),
              handle.origin_line());

  for (int i = 0; i < rounds; ++i) {
    (void)publish(srv::down);
    (void)publish(srv::up);
  }
  expect(seen == 2 * rounds, "the watcher missed events");

  // 5. lookup_pause / lookup_resume: nothing published while paused is delivered.
  expect(list.lookup_pause(watch12).has_value(), "lookup_pause failed");
  expect(handle.is_paused(), "the handle does not see the pause");
  for (int i = 0; i < rounds; ++i) {
    auto n = publish(srv::down);
    expect(n && *n == 0, "a paused subscription was called");
  }
  expect(list.lookup_resume(watch12).has_value(), "lookup_resume failed");
  (void)publish(srv::up);
  expect(seen == 2 * rounds + 1, "the resumed watcher missed an event");

  // 6. lookup_resubscribe: other subtypes of the same family; never another family.
  expect(list.lookup_resubscribe(watch12, herald::type_of<server_event>(srv::add, srv::del))
             .has_value(),
         "lookup_resubscribe within the family failed");
  (void)publish(srv::up);   // no longer subscribed
  (void)publish(srv::add);  // now subscribed
  expect(seen == 2 * rounds + 2, "the resubscribed watcher saw the wrong events");
  auto mismatch = list.lookup_resubscribe(watch12, herald::type_of<listener_event>());
  expect(!mismatch && mismatch.error() == herald::errc::family_mismatch,
         "resubscribing to another family was accepted");
  std::printf("resubscribe to LISTENER: %s; still on %s\n",
              mismatch ? "accepted" : error_name(mismatch.error()),
              herald::type_name(handle.type()).c_str());

  // 7. lookup_unsubscribe: outside a handler, the handler is destroyed before it returns.
  expect(list.lookup_unsubscribe(watch12).has_value(), "lookup_unsubscribe failed");
  expect(watcher_destroyed == 1, "the handler was not destroyed by lookup_unsubscribe");
  expect(!handle.is_active(), "the taken handle still says active");
  (void)publish(srv::add);
  expect(seen == 2 * rounds + 2, "an ended subscription was called");

  // 8. After the end: not_found everywhere, by id and by handle; unsubscribe stays harmless.
  const bool all_not_found =
      list.lookup_take(watch12).error() == herald::errc::not_found &&
      list.lookup_pause(watch12).error() == herald::errc::not_found &&
      list.lookup_resume(watch12).error() == herald::errc::not_found &&
      list.lookup_resubscribe(watch12, herald::type_of<server_event>()).error() ==
          herald::errc::not_found &&
      list.lookup_unsubscribe(watch12).error() == herald::errc::not_found &&
      handle.pause().error() == herald::errc::not_found &&
      handle.resubscribe(herald::type_of<server_event>()).error() == herald::errc::not_found;
  expect(all_not_found, "an operation on the ended subscription did not report not_found");
  handle.unsubscribe();  // idempotent
  std::printf("after lookup_unsubscribe: lookups report %s\n",
              error_name(list.lookup_take(watch12).error()));
  expect(other.lookup_take(watch12).has_value(), "the other list lost its own subscription");

  // 9. The id is free again in this list.
  auto again = list.subscribe_sync<server_event>(
      herald::type_of<server_event>(srv::down), [](herald::sync_event<server_event>&) {},
      {.id = watch12, .name = "health/srv12"});
  expect(again.has_value(), "the id of an ended subscription could not be used again");

  std::printf("watcher saw %d events; handler destroyed %d time(s)\n", seen, watcher_destroyed);
  if (failures != 0) {
    std::printf("MISMATCH\n");
    return 1;
  }
  std::printf("ids and lookups behaved as documented\n");
  return 0;
}
