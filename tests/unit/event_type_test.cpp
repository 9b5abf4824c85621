// Unit tests of herald/event_type.hpp: event_type values, combine/remove_subtypes, family
// declarations (C++ and run time), and names both ways.
//
// The family registry is process-global and shared by every test of this binary (and
// families are never forgotten), so each test declares families under names of its own.
// Tests that must fill the registry or abort run in a child process (EXPECT_EXIT /
// EXPECT_DEATH with the "threadsafe" style, which re-executes this binary for that test only).
#include "herald/event_type.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <latch>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using herald::combine;
using herald::errc;
using herald::event_type;
using herald::family_id;
using herald::remove_subtypes;
using herald::subtype_mask;
using herald::type_from_name;
using herald::type_name;
using herald::type_of;

struct server_event {
  static constexpr std::string_view family_name = "SERVER";
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
using server = server_event::subtype;

struct peer_event {
  static constexpr std::string_view family_name = "PEER";
  enum class subtype { connect, identify, addr_change };
  static constexpr std::array<std::string_view, 3> subtype_names{"CONNECT", "IDENTIFY",
                                                                 "ADDR_CHANGE"};
  struct safe_part {
    std::uint64_t peer = 0;
  };
};
using peer = peer_event::subtype;

// 32 subtypes: the last one is bit 31.
struct wide_event {
  static constexpr std::string_view family_name = "WIDE";
  enum class subtype : unsigned { s0 = 0, s1 = 1, s30 = 30, s31 = 31 };
  static constexpr std::array<std::string_view, 32> subtype_names{
      "S0",  "S1",  "S2",  "S3",  "S4",  "S5",  "S6",  "S7",  "S8",  "S9",  "S10",
      "S11", "S12", "S13", "S14", "S15", "S16", "S17", "S18", "S19", "S20", "S21",
      "S22", "S23", "S24", "S25", "S26", "S27", "S28", "S29", "S30", "S31"};
  struct safe_part {};
};

// Declared for the first time by the concurrency test only.
struct race_event {
  static constexpr std::string_view family_name = "RACE";
  enum class subtype { one };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONE"};
  struct safe_part {};
};

// Declared only by death tests (in child processes).
struct lower_case_event {
  static constexpr std::string_view family_name = "bad_family";
  enum class subtype { one };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONE"};
  struct safe_part {};
};
struct clash_event {
  static constexpr std::string_view family_name = "CLASH";
  enum class subtype { a, c };
  static constexpr std::array<std::string_view, 2> subtype_names{"A", "C"};
  struct safe_part {};
};

// Not family declarations.
struct no_safe_part {
  static constexpr std::string_view family_name = "NOSAFE";
  enum class subtype { one };
  [[maybe_unused]] static constexpr std::array<std::string_view, 1> subtype_names{"ONE"};
};
struct too_many_subtypes {
  static constexpr std::string_view family_name = "TOOMANY";
  enum class subtype { one };
  static constexpr std::array<std::string_view, 33> subtype_names{};
  struct safe_part {};
};
struct no_subtypes {
  static constexpr std::string_view family_name = "NONE";
  enum class subtype { one };
  static constexpr std::array<std::string_view, 0> subtype_names{};
  struct safe_part {};
};
struct not_an_enum {
  static constexpr std::string_view family_name = "NOENUM";
  using subtype = int;
  static constexpr std::array<std::string_view, 1> subtype_names{"ONE"};
  struct safe_part {};
};
struct move_only_safe_part {
  static constexpr std::string_view family_name = "MOVEONLY";
  enum class subtype { one };
  static constexpr std::array<std::string_view, 1> subtype_names{"ONE"};
  struct safe_part {
    safe_part() = default;
    safe_part(safe_part&&) = default;
    safe_part(const safe_part&) = delete;
  };
};

static_assert(herald::family_declaration<server_event>);
static_assert(herald::family_declaration<peer_event>);
static_assert(herald::family_declaration<wide_event>);
static_assert(!herald::family_declaration<int>);
static_assert(!herald::family_declaration<no_safe_part>);
static_assert(!herald::family_declaration<too_many_subtypes>);
static_assert(!herald::family_declaration<no_subtypes>);
static_assert(!herald::family_declaration<not_an_enum>);
static_assert(!herald::family_declaration<move_only_safe_part>);
static_assert(herald::has_unsafe_part_v<server_event>);
static_assert(!herald::has_unsafe_part_v<peer_event>);

static_assert(std::is_trivially_copyable_v<event_type>);
static_assert(sizeof(event_type) <= 8);
static_assert(herald::max_families >= 256 && herald::max_subtypes >= 32);

constexpr subtype_mask bit(unsigned i) { return subtype_mask{1} << i; }

herald::result<family_id> declare(std::string_view name,
                                  std::initializer_list<std::string_view> subtypes) {
  return herald::declare_family(
      name, std::span<const std::string_view>(subtypes.begin(), subtypes.size()));
}

// ---- Values -----------------------------------------------------------------------------------

TEST(EventType, TypeOfOneSubtypeIsASingleBit) {
  const family_id id = herald::family_id_of<server_event>();
  const event_type down = type_of<server_event>(server::down);
  EXPECT_EQ(down.family(), id);
  EXPECT_EQ(down.subtypes(), bit(3));
  EXPECT_TRUE(down.is_single());
  EXPECT_FALSE(down.is_empty());
  EXPECT_EQ(type_of<server_event>(server::add).subtypes(), bit(0));
}

TEST(EventType, TypeOfSeveralSubtypesIsTheirUnion) {
  const event_type t = type_of<server_event>(server::up, server::down);
  EXPECT_EQ(t.family(), herald::family_id_of<server_event>());
  EXPECT_EQ(t.subtypes(), bit(2) | bit(3));
  EXPECT_FALSE(t.is_single());
  EXPECT_EQ(type_of<server_event>(server::up, server::up), type_of<server_event>(server::up));
}

TEST(EventType, TypeOfNoSubtypeIsTheWholeFamily) {
  EXPECT_EQ(type_of<server_event>().subtypes(), 0xFu);
  EXPECT_EQ(type_of<peer_event>().subtypes(), 0x7u);
  EXPECT_EQ(type_of<server_event>(),
            type_of<server_event>(server::add, server::del, server::up, server::down));
  EXPECT_NE(type_of<server_event>().family(), type_of<peer_event>().family());
}

TEST(EventType, DefaultTypeIsEmpty) {
  constexpr event_type empty;
  static_assert(empty.family() == 0 && empty.subtypes() == 0);
  EXPECT_TRUE(empty.is_empty());
  EXPECT_FALSE(empty.is_single());
}

TEST(EventType, CombineJoinsSubtypesOfOneFamily) {
  const auto t = combine(type_of<server_event>(server::up), type_of<server_event>(server::down));
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, type_of<server_event>(server::up, server::down));
  const auto same = combine(*t, type_of<server_event>(server::up));
  ASSERT_TRUE(same);
  EXPECT_EQ(*same, *t);
  const family_id id = herald::family_id_of<server_event>();
  const auto from_empty = combine(event_type(id, 0), type_of<server_event>(server::del));
  ASSERT_TRUE(from_empty);
  EXPECT_EQ(*from_empty, type_of<server_event>(server::del));
}

TEST(EventType, CombineRefusesTypesOfDifferentFamilies) {
  const auto t = combine(type_of<server_event>(server::up), type_of<peer_event>(peer::connect));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error(), errc::family_mismatch);
}

TEST(EventType, RemoveSubtypesTakesTheirBitsAway) {
  const auto t = remove_subtypes(type_of<server_event>(), type_of<server_event>(server::add));
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, type_of<server_event>(server::del, server::up, server::down));
  const auto unchanged = remove_subtypes(*t, type_of<server_event>(server::add));
  ASSERT_TRUE(unchanged);
  EXPECT_EQ(*unchanged, *t);
  const auto none = remove_subtypes(*t, type_of<server_event>());
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->is_empty());
  EXPECT_EQ(none->family(), herald::family_id_of<server_event>());
}

TEST(EventType, RemoveSubtypesRefusesTypesOfDifferentFamilies) {
  const auto t = remove_subtypes(type_of<server_event>(), type_of<peer_event>());
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error(), errc::family_mismatch);
}

TEST(EventType, EqualityComparesFamilyAndSubtypes) {
  EXPECT_EQ(event_type(3, 0x5), event_type(3, 0x5));
  EXPECT_NE(event_type(3, 0x5), event_type(3, 0x4));
  EXPECT_NE(event_type(3, 0x5), event_type(4, 0x5));
  EXPECT_EQ(event_type(), event_type(0, 0));
  EXPECT_NE(type_of<server_event>(), type_of<peer_event>());
}

TEST(EventType, ContainsRequiresSameFamilyAndSubset) {
  const event_type all = type_of<server_event>();
  const event_type up_down = type_of<server_event>(server::up, server::down);
  EXPECT_TRUE(all.contains(up_down));
  EXPECT_TRUE(up_down.contains(type_of<server_event>(server::down)));
  EXPECT_TRUE(up_down.contains(up_down));
  EXPECT_FALSE(up_down.contains(all));
  EXPECT_FALSE(up_down.contains(type_of<server_event>(server::add)));
  EXPECT_FALSE(up_down.contains(type_of<server_event>(server::add, server::up)));
  EXPECT_FALSE(type_of<peer_event>().contains(type_of<server_event>(server::up)));
}

TEST(EventType, FamilyOfReturnsTheFamilyId) {
  static_assert(herald::family_of(event_type(7, 1)) == 7);
  EXPECT_EQ(herald::family_of(type_of<peer_event>(peer::identify)),
            herald::family_id_of<peer_event>());
}

// ---- Declarations -------------------------------------------------------------------------------

TEST(EventType, CppAndRuntimeDeclarationsOfTheSameFamilyShareOneId) {
  const family_id id = herald::family_id_of<server_event>();
  EXPECT_EQ(herald::family_id_of<server_event>(), id);
  const auto again = declare("SERVER", {"ADD", "DEL", "UP", "DOWN"});
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, id);
  EXPECT_LT(id, herald::family_count());
}

TEST(EventType, DeclareFamilyIsIdempotent) {
  // A name never declared before in this process, also under --gtest_repeat.
  static int runs = 0;
  const std::string name = "IDEM" + std::to_string(runs++);
  const std::size_t before = herald::family_count();
  const auto first = declare(name, {"A", "B_C", "9"});
  ASSERT_TRUE(first);
  EXPECT_EQ(herald::family_count(), before + 1);
  const auto second = declare(name, {"A", "B_C", "9"});
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(herald::family_count(), before + 1);
  EXPECT_EQ(*first, before);  // ids are dense, in declaration order
}

TEST(EventType, ConflictingRedeclarationIsRefused) {
  ASSERT_TRUE(declare("CONFLICT", {"A", "B"}));
  const std::size_t before = herald::family_count();
  for (auto other : {std::initializer_list<std::string_view>{"A", "C"},
                     std::initializer_list<std::string_view>{"B", "A"},
                     std::initializer_list<std::string_view>{"A"},
                     std::initializer_list<std::string_view>{"A", "B", "C"}}) {
    const auto r = declare("CONFLICT", other);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), errc::invalid_argument);
  }
  EXPECT_EQ(herald::family_count(), before);
}

TEST(EventType, MoreThan32SubtypesAreRefused) {
  std::vector<std::string> names;
  for (int i = 0; i < 33; ++i) {
    names.push_back("S" + std::to_string(i));
  }
  const std::vector<std::string_view> views(names.begin(), names.end());
  const auto r = herald::declare_family("BIG", views);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::too_many);
  EXPECT_EQ(herald::family_from_name("BIG").error(), errc::unknown_name);
}

TEST(EventType, AFamilyWithoutSubtypesIsRefused) {
  const auto r = herald::declare_family("EMPTYFAM", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), errc::invalid_argument);
}

TEST(EventType, MalformedDeclarationsAreRefused) {
  const std::size_t before = herald::family_count();
  EXPECT_EQ(declare("", {"A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BAD_NAME", {"A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("bad", {"A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("1BAD", {"A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BA D", {"A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BADSUB", {"A", ""}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BADSUB", {"_A"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BADSUB", {"up"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BADSUB", {"A|B"}).error(), errc::malformed_name);
  EXPECT_EQ(declare("BADSUB", {"A", "B", "A"}).error(), errc::malformed_name);
  EXPECT_EQ(herald::family_count(), before);
}

TEST(EventType, AtLeast256FamiliesCanBeDeclaredAndFoundByName) {
  std::vector<family_id> ids;
  for (int i = 0; i < 300; ++i) {
    const std::string name = "GEN" + std::to_string(i);
    const auto id = declare(name, {"ON", "OFF"});
    ASSERT_TRUE(id) << name << ": " << herald::to_string(id.error());
    ids.push_back(*id);
  }
  for (int i = 0; i < 300; ++i) {
    const std::string name = "GEN" + std::to_string(i);
    const family_id id = ids[static_cast<std::size_t>(i)];
    EXPECT_EQ(herald::family_name(id).value(), name);
    EXPECT_EQ(herald::family_from_name(name).value(), id);
    EXPECT_EQ(type_from_name(name + "_OFF").value(), event_type(id, bit(1)));
    EXPECT_EQ(type_name(event_type(id, bit(0))), name + "_ON");
  }
  EXPECT_GE(herald::family_count(), 300u);
}

TEST(EventType, TheFamilyTableHoldsMaxFamiliesAndThenRefuses) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // In a child process: filling the table would starve the other tests.
  EXPECT_EXIT(
      {
        bool ok = true;
        std::size_t n = 0;
        while (herald::family_count() < herald::max_families) {
          ok = ok && declare("FULL" + std::to_string(n++), {"X"}).has_value();
        }
        const auto refused = declare("FULLNEXT", {"X"});
        ok = ok && !refused && refused.error() == errc::too_many;
        // An existing family can still be declared again and found.
        ok = ok && declare("FULL0", {"X"}).value_or(0) == herald::family_from_name("FULL0").value();
        ok = ok && herald::family_count() == herald::max_families;
        ok =
            ok && type_name(event_type(herald::max_families - 1, 1)).find('#') == std::string::npos;
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(EventType, AFamilyOf32SubtypesUsesBit31) {
  const event_type all = type_of<wide_event>();
  EXPECT_EQ(all.subtypes(), 0xFFFFFFFFu);
  EXPECT_EQ(type_name(all), "WIDE");
  const event_type last = type_of<wide_event>(wide_event::subtype::s31);
  EXPECT_EQ(last.subtypes(), bit(31));
  EXPECT_TRUE(last.is_single());
  EXPECT_EQ(type_name(last), "WIDE_S31");
  EXPECT_EQ(type_from_name("WIDE_S31").value(), last);
  EXPECT_EQ(type_from_name("WIDE").value(), all);
  const event_type ends = type_of<wide_event>(wide_event::subtype::s0, wide_event::subtype::s31);
  EXPECT_EQ(type_name(ends), "WIDE_S0|WIDE_S31");
  EXPECT_EQ(type_from_name(type_name(ends)).value(), ends);
  EXPECT_EQ(herald::subtype_count(all.family()).value(), 32u);
}

TEST(EventType, ConcurrentFirstCallsOfFamilyIdOfYieldOneId) {
  constexpr int threads = 8;
  std::latch start(threads);
  std::array<family_id, threads> seen{};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      seen[static_cast<std::size_t>(i)] = herald::family_id_of<race_event>();
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  for (family_id id : seen) {
    EXPECT_EQ(id, seen[0]);
  }
  EXPECT_EQ(herald::family_from_name("RACE").value(), seen[0]);
}

TEST(EventType, ConcurrentRuntimeDeclarationsOfOneNameYieldOneId) {
  constexpr int threads = 8;
  std::latch start(threads);
  std::array<family_id, threads> seen{};
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      const auto id = declare("RUNRACE", {"A", "B"});
      if (!id) {
        failures.fetch_add(1);
        return;
      }
      seen[static_cast<std::size_t>(i)] = *id;
    });
  }
  for (auto& t : pool) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  for (family_id id : seen) {
    EXPECT_EQ(id, seen[0]);
  }
}

TEST(EventTypeDeathTest, FamilyIdOfAbortsOnAnInvalidFamilyNameAndNamesIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)herald::family_id_of<lower_case_event>(),
               "cannot declare event family \"bad_family\": malformed_name");
}

TEST(EventTypeDeathTest, FamilyIdOfAbortsOnAConflictingRedeclaration) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        (void)declare("CLASH", {"A", "B"});
        (void)herald::family_id_of<clash_event>();
      },
      "\"CLASH\": invalid_argument");
}

TEST(EventTypeDeathTest, TypeOfAbortsOnAnUndeclaredEnumeratorValue) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH((void)type_of<server_event>(static_cast<server>(4)),
               "\"SERVER\": subtype enumerator value 4 has no declared name");
}

// ---- Names --------------------------------------------------------------------------------------

TEST(EventType, NamesRoundTripForEveryNonemptySubsetOfAFamily) {
  const family_id id = herald::family_id_of<server_event>();
  for (subtype_mask mask = 1; mask < 16; ++mask) {
    const event_type t(id, mask);
    const std::string name = type_name(t);
    const auto back = type_from_name(name);
    ASSERT_TRUE(back) << name << ": " << herald::to_string(back.error());
    EXPECT_EQ(*back, t) << name;
  }
}

TEST(EventType, NamesSpellFamilySubtypesInBitOrder) {
  EXPECT_EQ(type_name(type_of<server_event>()), "SERVER");
  EXPECT_EQ(type_name(type_of<server_event>(server::down)), "SERVER_DOWN");
  EXPECT_EQ(type_name(type_of<server_event>(server::down, server::up)), "SERVER_UP|SERVER_DOWN");
  EXPECT_EQ(type_name(type_of<server_event>(server::add, server::del, server::up)),
            "SERVER_ADD|SERVER_DEL|SERVER_UP");
  EXPECT_EQ(type_name(type_of<peer_event>(peer::addr_change)), "PEER_ADDR_CHANGE");
  EXPECT_EQ(type_from_name("PEER_ADDR_CHANGE").value(), type_of<peer_event>(peer::addr_change));
  EXPECT_EQ(type_from_name("SERVER").value(), type_of<server_event>());
  EXPECT_EQ(type_from_name("SERVER_DOWN|SERVER_UP").value(),
            type_of<server_event>(server::up, server::down));
  EXPECT_EQ(type_from_name("SERVER_UP|SERVER_UP").value(), type_of<server_event>(server::up));
}

TEST(EventType, AFamilyNameAmongSubtypesMeansTheWholeFamily) {
  // Declared first: the order in which EXPECT_EQ evaluates its arguments is unspecified
  // (GCC happened to declare the family before the lookup, clang does not).
  const event_type whole = type_of<server_event>();
  EXPECT_EQ(type_from_name("SERVER|SERVER_UP").value(), whole);
  EXPECT_EQ(type_from_name("SERVER_UP|SERVER").value(), whole);
}

TEST(EventType, MalformedNamesAreRefused) {
  (void)herald::family_id_of<server_event>();
  for (std::string_view bad : {"",
                               "|",
                               "SERVER||SERVER_UP",
                               "SERVER_UP|",
                               "|SERVER_UP",
                               "server",
                               "Server_UP",
                               "SERVER_up",
                               " SERVER",
                               "SERVER ",
                               "SERVER_UP | SERVER_DOWN",
                               "SERVER-UP",
                               "SERVER_",
                               "SERVER__UP",
                               "_UP",
                               "1SERVER",
                               "SERVER_#12",
                               "FAMILY#7",
                               "SERVER_#NONE",
                               "SERVER\n",
                               "SERVER_UP|server_down"}) {
    const auto r = type_from_name(bad);
    ASSERT_FALSE(r) << '"' << bad << '"';
    EXPECT_EQ(r.error(), errc::malformed_name) << '"' << bad << '"';
  }
  EXPECT_EQ(herald::family_from_name("SERVER_UP").error(), errc::malformed_name);
  EXPECT_EQ(herald::family_from_name("").error(), errc::malformed_name);
}

TEST(EventType, UnknownNamesAreRefused) {
  (void)herald::family_id_of<server_event>();
  for (std::string_view unknown : {"NOSUCHFAMILY", "NOSUCHFAMILY_UP", "SERVER_SIDEWAYS",
                                   "SERVER_UP|SERVER_SIDEWAYS", "SERVER_UP|NOSUCHFAMILY"}) {
    const auto r = type_from_name(unknown);
    ASSERT_FALSE(r) << unknown;
    EXPECT_EQ(r.error(), errc::unknown_name) << unknown;
  }
  EXPECT_EQ(herald::family_from_name("NOSUCHFAMILY").error(), errc::unknown_name);
}

TEST(EventType, NamesOfDifferentFamiliesDoNotMix) {
  (void)herald::family_id_of<server_event>();
  (void)herald::family_id_of<peer_event>();
  for (std::string_view mixed : {"SERVER_UP|PEER_CONNECT", "SERVER|PEER", "PEER|SERVER_DOWN"}) {
    const auto r = type_from_name(mixed);
    ASSERT_FALSE(r) << mixed;
    EXPECT_EQ(r.error(), errc::family_mismatch) << mixed;
  }
}

TEST(EventType, FamilyNamesAndIdsConvertBothWays) {
  const family_id id = herald::family_id_of<peer_event>();
  EXPECT_EQ(herald::family_name(id).value(), "PEER");
  EXPECT_EQ(herald::family_from_name("PEER").value(), id);
  EXPECT_EQ(herald::subtype_count(id).value(), 3u);
  const family_id undeclared = 0xFFFF;
  EXPECT_EQ(herald::family_name(undeclared).error(), errc::unknown_name);
  EXPECT_EQ(herald::subtype_count(undeclared).error(), errc::unknown_name);
}

TEST(EventType, NamesOfWhatWasNeverDeclaredAreMarked) {
  const family_id id = herald::family_id_of<server_event>();
  EXPECT_EQ(type_name(event_type(id, bit(12))), "SERVER_#12");
  EXPECT_EQ(type_name(event_type(id, bit(2) | bit(12))), "SERVER_UP|SERVER_#12");
  EXPECT_EQ(type_name(event_type(id, 0)), "SERVER_#NONE");
  EXPECT_EQ(type_name(event_type(0xFFFF, bit(2) | bit(3))), "FAMILY#65535_#2|FAMILY#65535_#3");
  EXPECT_EQ(type_name(event_type(0xFFFF, 0)), "FAMILY#65535_#NONE");
  EXPECT_EQ(type_from_name(type_name(event_type(id, bit(12)))).error(), errc::malformed_name);
}

}  // namespace
