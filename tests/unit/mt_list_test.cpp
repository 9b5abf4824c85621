// Unit tests of herald::mt_list, mt_link and mt_locked, on one thread: the contents and order
// of the list after every operation, the detached/listed/locked state of elements, the walks
// (locked and unlocked) with erase, break, return and exceptions, and the raw lock API.
//
// The list contents are read through the raw links (lock_elem + unlock_elem on each link, a
// read that puts back what it took), not through the walks under test, and every read also
// checks that each prev pointer mirrors the next pointer before it.
//
// A single thread must never call try_append/try_insert/remove on an element that it holds
// locked (pop_locked, erase_locked, lock_*): those calls wait for the holder, that is forever.
// The tests only look at held elements with is_linked_approx(), which never waits.
#include "herald/mt_list.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using herald::mt_ends;
using herald::mt_link;
using ints = std::vector<int>;

struct item : herald::mt_list_hook<> {
  int value = 0;
};
using item_list = herald::mt_list<item>;

// N elements numbered 0 .. N-1, all detached.
template <std::size_t N>
struct items {
  items() {
    for (std::size_t i = 0; i < N; ++i) {
      a[i].value = static_cast<int>(i);
    }
  }
  item& operator[](std::size_t i) { return a[i]; }
  std::array<item, N> a;
};

mt_link& link(item& el) { return item_list::link(el); }

// A link's two pointers, read without changing them (lock_elem takes them, unlock_elem puts
// them back). Waits if the link is locked, so never call it on a held element.
mt_ends peek(mt_link& l) {
  const mt_ends e = mt_link::lock_elem(l);
  mt_link::unlock_elem(l, e);
  return e;
}

constexpr std::size_t max_walk = 1000;

// The values of the list front to back. Records a failure (and returns what it read so far)
// if a prev pointer does not mirror the next pointer before it, or if the list does not loop
// back to its head.
template <class T, class Tag>
ints values(herald::mt_list<T, Tag>& list) {
  ints out;
  mt_link* const head = &list.head();
  mt_link* cur = head;
  mt_ends cur_links = peek(*head);
  for (std::size_t steps = 0; steps <= max_walk; ++steps) {
    mt_link* const next = cur_links.next;
    const mt_ends next_links = peek(*next);
    if (next_links.prev != cur) {
      ADD_FAILURE() << "prev pointer of the link after element #" << out.size()
                    << " does not point back at it";
      return out;
    }
    if (next == head) {
      return out;
    }
    out.push_back(herald::mt_list<T, Tag>::elem(next)->value);
    cur = next;
    cur_links = next_links;
  }
  ADD_FAILURE() << "the list does not loop back to its head";
  return out;
}

// Detached = both pointers point at the link itself. Checks the racy hint first, so that a
// link left locked is reported instead of waited for.
::testing::AssertionResult detached(mt_link& l) {
  if (l.is_linked_approx()) {
    return ::testing::AssertionFailure() << "next pointer is not self: listed or locked";
  }
  const mt_ends e = peek(l);
  if (e.prev != &l || e.next != &l) {
    return ::testing::AssertionFailure() << "not self-looped";
  }
  return ::testing::AssertionSuccess();
}

template <std::size_t N>
void append_all(item_list& list, items<N>& it) {
  for (std::size_t i = 0; i < N; ++i) {
    list.append(it[i]);
  }
}

// The neighbours of element #pos in a list holding 0 .. n-1 in order.
mt_ends neighbours(item_list& list, item* first, std::size_t n, std::size_t pos) {
  mt_link* const head = &list.head();
  return mt_ends{pos == 0 ? head : &link(first[pos - 1]),
                 pos + 1 == n ? head : &link(first[pos + 1])};
}

ints without(ints v, int x) {
  std::erase(v, x);
  return v;
}

// ---- Construction and state ---------------------------------------------------------------------

TEST(MtList, NewHookIsDetached) {
  item el;
  EXPECT_FALSE(el.is_linked_approx());
  EXPECT_TRUE(detached(el));
}

TEST(MtList, NewListIsEmpty) {
  item_list list;
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_EQ(values(list), ints{});
  EXPECT_EQ(list.pop(), nullptr);
}

TEST(MtList, ListWithAnElementIsNotEmptyAndElementIsLinked) {
  item el;
  item_list list;
  list.append(el);
  EXPECT_FALSE(list.is_empty_approx());
  EXPECT_TRUE(el.is_linked_approx());
}

// ---- append / insert ----------------------------------------------------------------------------

TEST(MtList, AppendKeepsOrder) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
}

TEST(MtList, InsertPutsAtFront) {
  items<4> it;
  item_list list;
  for (std::size_t i = 0; i < 4; ++i) {
    list.insert(it[i]);
  }
  EXPECT_EQ(values(list), (ints{3, 2, 1, 0}));
}

TEST(MtList, MixedAppendAndInsertKeepTheirEnds) {
  items<6> it;
  item_list list;
  list.append(it[0]);
  list.insert(it[1]);
  list.append(it[2]);
  list.insert(it[3]);
  list.append(it[4]);
  list.insert(it[5]);
  EXPECT_EQ(values(list), (ints{5, 3, 1, 0, 2, 4}));
}

TEST(MtList, TryAppendOfDetachedElementSucceeds) {
  items<3> it;
  item_list list;
  EXPECT_TRUE(list.try_append(it[0]));
  EXPECT_TRUE(list.try_append(it[1]));
  EXPECT_TRUE(list.try_append(it[2]));
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
}

TEST(MtList, TryInsertOfDetachedElementSucceeds) {
  items<3> it;
  item_list list;
  EXPECT_TRUE(list.try_insert(it[0]));
  EXPECT_TRUE(list.try_insert(it[1]));
  EXPECT_TRUE(list.try_insert(it[2]));
  EXPECT_EQ(values(list), (ints{2, 1, 0}));
}

// Every position (first, middle, last) of a three-element list, and an only element.
TEST(MtList, TryAppendOfElementInSameListFailsAndChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    EXPECT_FALSE(list.try_append(it[pos]));
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
  }
  item el;
  item_list single;
  single.append(el);
  EXPECT_FALSE(single.try_append(el));
  EXPECT_EQ(values(single), ints{0});
}

TEST(MtList, TryInsertOfElementInSameListFailsAndChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    EXPECT_FALSE(list.try_insert(it[pos]));
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
  }
  item el;
  item_list single;
  single.append(el);
  EXPECT_FALSE(single.try_insert(el));
  EXPECT_EQ(values(single), ints{0});
}

TEST(MtList, TryAppendOfElementInAnotherListFailsAndChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<5> it;
    item_list list;
    item_list other;
    list.append(it[0]);
    list.append(it[1]);
    list.append(it[2]);
    other.append(it[3]);
    other.append(it[4]);
    EXPECT_FALSE(other.try_append(it[pos]));
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
    EXPECT_EQ(values(other), (ints{3, 4}));
  }
}

TEST(MtList, TryInsertOfElementInAnotherListFailsAndChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<5> it;
    item_list list;
    item_list other;
    list.append(it[0]);
    list.append(it[1]);
    list.append(it[2]);
    other.append(it[3]);
    other.append(it[4]);
    EXPECT_FALSE(other.try_insert(it[pos]));
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
    EXPECT_EQ(values(other), (ints{3, 4}));
  }
}

TEST(MtList, TryAppendIntoEmptyListOfElementListedElsewhereFails) {
  items<2> it;
  item_list list;
  item_list empty;
  append_all(list, it);
  EXPECT_FALSE(empty.try_append(it[1]));
  EXPECT_FALSE(empty.try_insert(it[0]));
  EXPECT_TRUE(empty.is_empty_approx());
  EXPECT_EQ(values(empty), ints{});
  EXPECT_EQ(values(list), (ints{0, 1}));
}

// ---- remove -------------------------------------------------------------------------------------

TEST(MtList, RemoveOfListedElementReturnsTrueAndDetachesIt) {
  items<3> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[1]));
  EXPECT_TRUE(detached(it[1]));
  EXPECT_EQ(values(list), (ints{0, 2}));
}

TEST(MtList, RemovedElementCanBeAppendedAgain) {
  items<3> it;
  item_list list;
  item_list other;
  append_all(list, it);
  ASSERT_TRUE(item_list::remove(it[0]));
  ASSERT_TRUE(detached(it[0]));
  EXPECT_TRUE(list.try_append(it[0]));
  EXPECT_EQ(values(list), (ints{1, 2, 0}));
  ASSERT_TRUE(item_list::remove(it[2]));
  ASSERT_TRUE(detached(it[2]));
  EXPECT_TRUE(other.try_append(it[2]));
  EXPECT_EQ(values(list), (ints{1, 0}));
  EXPECT_EQ(values(other), ints{2});
}

TEST(MtList, RemoveOfDetachedElementReturnsFalseAndIsHarmless) {
  items<3> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  EXPECT_FALSE(item_list::remove(it[2]));
  ASSERT_TRUE(detached(it[2]));
  EXPECT_EQ(values(list), (ints{0, 1}));
  EXPECT_TRUE(list.try_append(it[2]));
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
}

TEST(MtList, SecondRemoveReturnsFalse) {
  items<3> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[1]));
  EXPECT_FALSE(item_list::remove(it[1]));
  EXPECT_TRUE(detached(it[1]));
  EXPECT_EQ(values(list), (ints{0, 2}));
}

TEST(MtList, RemoveOfFirstKeepsTheRestInOrder) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[0]));
  EXPECT_EQ(values(list), (ints{1, 2, 3}));
}

TEST(MtList, RemoveOfMiddleKeepsTheRestInOrder) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[2]));
  EXPECT_EQ(values(list), (ints{0, 1, 3}));
}

TEST(MtList, RemoveOfLastKeepsTheRestInOrder) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[3]));
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
  list.append(it[3]);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
}

TEST(MtList, RemoveOfOnlyElementLeavesListEmpty) {
  item el;
  item_list list;
  list.append(el);
  EXPECT_TRUE(item_list::remove(el));
  EXPECT_TRUE(detached(el));
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_EQ(values(list), ints{});
  EXPECT_TRUE(detached(list.head()));
}

TEST(MtList, RemoveOfEveryElementInTurnLeavesListEmpty) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_TRUE(item_list::remove(it[2]));
  EXPECT_TRUE(item_list::remove(it[0]));
  EXPECT_TRUE(item_list::remove(it[3]));
  EXPECT_EQ(values(list), ints{1});
  EXPECT_TRUE(item_list::remove(it[1]));
  EXPECT_TRUE(list.is_empty_approx());
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(detached(it[i])) << i;
  }
}

// ---- pop / clear / destructor -------------------------------------------------------------------

TEST(MtList, PopReturnsFrontElementsInOrderThenNull) {
  items<3> it;
  item_list list;
  append_all(list, it);
  EXPECT_EQ(list.pop(), &it[0]);
  EXPECT_EQ(values(list), (ints{1, 2}));
  EXPECT_EQ(list.pop(), &it[1]);
  EXPECT_EQ(list.pop(), &it[2]);
  EXPECT_EQ(list.pop(), nullptr);
  EXPECT_EQ(list.pop(), nullptr);
  EXPECT_TRUE(list.is_empty_approx());
}

TEST(MtList, PoppedElementIsDetachedAndReusable) {
  items<3> it;
  item_list list;
  item_list other;
  append_all(list, it);
  item* el = list.pop();
  ASSERT_EQ(el, &it[0]);
  ASSERT_TRUE(detached(*el));
  EXPECT_TRUE(other.try_append(*el));
  EXPECT_EQ(values(other), ints{0});
  item* again = list.pop();
  ASSERT_EQ(again, &it[1]);
  ASSERT_TRUE(detached(*again));
  EXPECT_TRUE(list.try_append(*again));
  EXPECT_EQ(values(list), (ints{2, 1}));
}

TEST(MtList, ClearReturnsCountAndDetachesAll) {
  items<5> it;
  item_list list;
  append_all(list, it);
  EXPECT_EQ(list.clear(), std::size_t{5});
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_EQ(values(list), ints{});
  for (std::size_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(detached(it[i])) << i;
  }
  EXPECT_EQ(list.clear(), std::size_t{0});
  EXPECT_TRUE(list.try_append(it[4]));
  EXPECT_EQ(values(list), ints{4});
}

TEST(MtList, DestructorDetachesElementsStillInIt) {
  items<3> it;
  {
    item_list inner;
    append_all(inner, it);
    ASSERT_EQ(values(inner), (ints{0, 1, 2}));
  }
  for (std::size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(detached(it[i])) << i;
  }
  item_list outer;
  EXPECT_TRUE(outer.try_append(it[2]));
  EXPECT_TRUE(outer.try_append(it[0]));
  EXPECT_TRUE(outer.try_append(it[1]));
  EXPECT_EQ(values(outer), (ints{2, 0, 1}));
}

// ---- Two hooks, two lists -----------------------------------------------------------------------

struct tag_a {};
struct tag_b {};
struct dual : herald::mt_list_hook<tag_a>, herald::mt_list_hook<tag_b> {
  int value = 0;
};
using list_a = herald::mt_list<dual, tag_a>;
using list_b = herald::mt_list<dual, tag_b>;

TEST(MtList, ElementInTwoListsWithDistinctTagsIsIndependent) {
  std::array<dual, 3> e;
  for (std::size_t i = 0; i < e.size(); ++i) {
    e[i].value = static_cast<int>(i);
  }
  list_a a;
  list_b b;
  a.append(e[0]);
  a.append(e[1]);
  a.append(e[2]);
  EXPECT_TRUE(b.try_append(e[2]));  // listed in a, but its b hook is detached
  EXPECT_TRUE(b.try_append(e[0]));
  EXPECT_FALSE(b.try_append(e[0]));
  EXPECT_EQ(values(a), (ints{0, 1, 2}));
  EXPECT_EQ(values(b), (ints{2, 0}));

  EXPECT_TRUE(list_a::remove(e[0]));
  ASSERT_TRUE(detached(list_a::link(e[0])));
  EXPECT_TRUE(list_b::link(e[0]).is_linked_approx());
  EXPECT_EQ(values(a), (ints{1, 2}));
  EXPECT_EQ(values(b), (ints{2, 0}));

  EXPECT_EQ(b.pop(), &e[2]);
  EXPECT_TRUE(detached(list_b::link(e[2])));
  EXPECT_TRUE(list_a::link(e[2]).is_linked_approx());
  EXPECT_EQ(values(a), (ints{1, 2}));
  EXPECT_EQ(values(b), ints{0});

  // A walk of one list, erasing, leaves the other alone.
  for (auto& cur : b.for_each_locked()) {
    cur.erase();
  }
  EXPECT_EQ(values(b), ints{});
  EXPECT_EQ(values(a), (ints{1, 2}));
  EXPECT_TRUE(a.try_insert(e[0]));
  EXPECT_EQ(values(a), (ints{0, 1, 2}));
}

// ---- pop_locked and mt_locked -------------------------------------------------------------------

TEST(MtLocked, PopLockedHoldsTheFrontElementLocked) {
  items<3> it;
  item_list list;
  append_all(list, it);
  {
    herald::mt_locked<item> held = list.pop_locked();
    ASSERT_TRUE(held);
    EXPECT_EQ(held.get(), &it[0]);
    EXPECT_EQ(&*held, &it[0]);
    EXPECT_EQ(held->value, 0);
    // Out of the list, but its pointers are busy: it does not look detached.
    EXPECT_TRUE(it[0].is_linked_approx());
    EXPECT_EQ(values(list), (ints{1, 2}));
    // The rest of the list works while the element is held.
    EXPECT_EQ(list.pop(), &it[1]);
    list.insert(it[1]);
    EXPECT_EQ(values(list), (ints{1, 2}));
  }
  // Destroying the holder released it.
  ASSERT_TRUE(detached(it[0]));
  item_list other;
  EXPECT_TRUE(other.try_append(it[0]));
  EXPECT_EQ(values(other), ints{0});
}

TEST(MtLocked, UnlockLeavesElementDetachedAndReusable) {
  items<2> it;
  item_list list;
  item_list other;
  append_all(list, it);
  herald::mt_locked<item> held = list.pop_locked();
  ASSERT_TRUE(held);
  EXPECT_TRUE(it[0].is_linked_approx());
  EXPECT_EQ(held.unlock(), &it[0]);
  EXPECT_FALSE(held);
  EXPECT_EQ(held.get(), nullptr);
  ASSERT_TRUE(detached(it[0]));
  EXPECT_TRUE(other.try_append(it[0]));
  EXPECT_EQ(values(other), ints{0});
  EXPECT_EQ(values(list), ints{1});
  EXPECT_EQ(held.unlock(), nullptr);  // a second unlock does nothing
  EXPECT_EQ(values(other), ints{0});
}

TEST(MtLocked, PopLockedOnEmptyListIsEmpty) {
  item_list list;
  herald::mt_locked<item> held = list.pop_locked();
  EXPECT_FALSE(held);
  EXPECT_EQ(held.get(), nullptr);
  EXPECT_EQ(held.unlock(), nullptr);
  item el;
  list.append(el);
  EXPECT_EQ(values(list), ints{0});
}

TEST(MtLocked, DefaultConstructedIsEmpty) {
  const herald::mt_locked<item> held;
  EXPECT_FALSE(held);
  EXPECT_EQ(held.get(), nullptr);
}

TEST(MtLocked, MoveConstructionTransfersOwnership) {
  items<2> it;
  item_list list;
  append_all(list, it);
  herald::mt_locked<item> to;
  {
    herald::mt_locked<item> from = list.pop_locked();
    ASSERT_EQ(from.get(), &it[0]);
    herald::mt_locked<item> moved(std::move(from));
    EXPECT_FALSE(from);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    EXPECT_EQ(from.get(), nullptr);
    EXPECT_EQ(moved.get(), &it[0]);
    to = std::move(moved);
    EXPECT_FALSE(moved);  // NOLINT(bugprone-use-after-move)
    // `from` and `moved` die here; neither may release the element.
  }
  ASSERT_EQ(to.get(), &it[0]);
  EXPECT_TRUE(it[0].is_linked_approx()) << "released by a moved-from holder";
  EXPECT_EQ(to.unlock(), &it[0]);
  ASSERT_TRUE(detached(it[0]));
  EXPECT_TRUE(list.try_append(it[0]));
  EXPECT_EQ(values(list), (ints{1, 0}));
}

TEST(MtLocked, MoveAssignmentReleasesThePreviousElement) {
  items<3> it;
  item_list list;
  append_all(list, it);
  herald::mt_locked<item> first = list.pop_locked();
  herald::mt_locked<item> second = list.pop_locked();
  ASSERT_EQ(first.get(), &it[0]);
  ASSERT_EQ(second.get(), &it[1]);
  second = std::move(first);
  EXPECT_FALSE(first);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(second.get(), &it[0]);
  ASSERT_TRUE(detached(it[1])) << "the element second held must be released";
  EXPECT_TRUE(it[0].is_linked_approx()) << "the element moved in must stay held";
  EXPECT_TRUE(list.try_append(it[1]));
  EXPECT_EQ(values(list), (ints{2, 1}));
  second = herald::mt_locked<item>();
  EXPECT_FALSE(second);
  EXPECT_TRUE(detached(it[0]));
}

TEST(MtLocked, HoldersCanLiveInAVector) {
  items<4> it;
  item_list list;
  append_all(list, it);
  std::vector<herald::mt_locked<item>> held;
  while (herald::mt_locked<item> h = list.pop_locked()) {
    held.push_back(std::move(h));
  }
  ASSERT_EQ(held.size(), std::size_t{4});
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(held[i].get(), &it[i]);
    EXPECT_TRUE(it[i].is_linked_approx()) << i;
  }
  EXPECT_TRUE(list.is_empty_approx());
  held.clear();
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(detached(it[i])) << i;
  }
}

// ---- Walks: the same tests for for_each_locked and for_each_unlocked ----------------------------

struct locked_kind {
  static constexpr bool unlocked = false;
  template <class T, class Tag>
  static auto walk(herald::mt_list<T, Tag>& list) {
    return list.for_each_locked();
  }
};
struct unlocked_kind {
  static constexpr bool unlocked = true;
  template <class T, class Tag>
  static auto walk(herald::mt_list<T, Tag>& list) {
    return list.for_each_unlocked();
  }
};
struct walk_kind_names {
  template <class Kind>
  static std::string GetName(int) {
    return Kind::unlocked ? "Unlocked" : "Locked";
  }
};

template <class Kind>
class MtListWalk : public ::testing::Test {};
using walk_kinds = ::testing::Types<locked_kind, unlocked_kind>;
TYPED_TEST_SUITE(MtListWalk, walk_kinds, walk_kind_names);

// Walks `list`, erasing the elements whose value satisfies `pred`; returns the erased elements
// in the order they were erased and, in `seen`, every value visited.
template <class Kind, class Pred>
std::vector<item*> erase_if(item_list& list, Pred pred, ints& seen) {
  std::vector<item*> erased;
  for (auto& cur : Kind::walk(list)) {
    seen.push_back(cur->value);
    if (pred(cur->value)) {
      erased.push_back(&cur.erase());
    }
  }
  return erased;
}

// Checks that each erased element is detached, then appends them all to a fresh list and
// checks that list.
void expect_detached_and_reusable(const std::vector<item*>& erased, const ints& want) {
  ints got;
  for (item* el : erased) {
    got.push_back(el->value);
  }
  EXPECT_EQ(got, want);
  for (item* el : erased) {
    ASSERT_TRUE(detached(*el)) << "erased element " << el->value;
  }
  item_list other;
  for (item* el : erased) {
    EXPECT_TRUE(other.try_append(*el)) << el->value;
  }
  EXPECT_EQ(values(other), want);
  other.clear();
}

// Erases the elements selected by `pred` from a list 0 .. 5 and checks the walk, the list
// left behind and the erased elements.
template <class Kind, class Pred>
void check_erase(Pred pred, const ints& kept, const ints& gone) {
  items<6> it;
  item extra;  // declared before the list, so that it outlives it
  extra.value = 9;
  item_list list;
  append_all(list, it);
  ints seen;
  const std::vector<item*> erased = erase_if<Kind>(list, pred, seen);
  EXPECT_EQ(seen, (ints{0, 1, 2, 3, 4, 5})) << "the walk must visit every element once";
  EXPECT_EQ(values(list), kept);
  EXPECT_EQ(list.is_empty_approx(), kept.empty());
  expect_detached_and_reusable(erased, gone);
  // The list is still usable.
  EXPECT_TRUE(list.try_append(extra));
  ints with_extra = kept;
  with_extra.push_back(9);
  EXPECT_EQ(values(list), with_extra);
  EXPECT_TRUE(item_list::remove(extra));
}

TYPED_TEST(MtListWalk, VisitsAllInOrder) {
  items<5> it;
  item_list list;
  append_all(list, it);
  ints seen;
  std::vector<item*> addresses;
  for (auto& cur : TypeParam::walk(list)) {
    seen.push_back((*cur).value);
    addresses.push_back(&cur.get());
    EXPECT_EQ(cur.operator->(), &cur.get());
  }
  EXPECT_EQ(seen, (ints{0, 1, 2, 3, 4}));
  ASSERT_EQ(addresses.size(), std::size_t{5});
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(addresses[i], &it[i]);
  }
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3, 4}));
}

TYPED_TEST(MtListWalk, VisitsTheOnlyElement) {
  item el;
  el.value = 7;
  item_list list;
  list.append(el);
  ints seen;
  for (auto& cur : TypeParam::walk(list)) {
    seen.push_back(cur->value);
  }
  EXPECT_EQ(seen, ints{7});
  EXPECT_EQ(values(list), ints{7});
}

TYPED_TEST(MtListWalk, SecondWalkSeesTheSameList) {
  items<3> it;
  item_list list;
  append_all(list, it);
  for (int round = 0; round < 3; ++round) {
    ints seen;
    for (auto& cur : TypeParam::walk(list)) {
      seen.push_back(cur->value);
    }
    EXPECT_EQ(seen, (ints{0, 1, 2})) << "round " << round;
  }
}

TYPED_TEST(MtListWalk, EmptyListVisitsNothingAndStaysUsable) {
  item_list list;
  int visits = 0;
  for (auto& cur : TypeParam::walk(list)) {
    static_cast<void>(cur);
    ++visits;
  }
  EXPECT_EQ(visits, 0);
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_TRUE(detached(list.head()));
  items<2> it;
  list.append(it[0]);
  list.insert(it[1]);
  EXPECT_EQ(values(list), (ints{1, 0}));
  EXPECT_EQ(list.pop(), &it[1]);
  EXPECT_EQ(values(list), ints{0});
  list.clear();
}

TYPED_TEST(MtListWalk, CurrentElementLooksLinkedDuringTheBody) {
  items<3> it;
  item_list list;
  append_all(list, it);
  for (auto& cur : TypeParam::walk(list)) {
    EXPECT_TRUE(cur->is_linked_approx()) << cur->value;
  }
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
}

TYPED_TEST(MtListWalk, BreakLeavesListIntact) {
  for (int stop_at = 0; stop_at < 4; ++stop_at) {
    SCOPED_TRACE("break at " + std::to_string(stop_at));
    items<4> it;
    item extra;
    extra.value = 8;
    item_list list;
    append_all(list, it);
    ints seen;
    for (auto& cur : TypeParam::walk(list)) {
      seen.push_back(cur->value);
      if (cur->value == stop_at) {
        break;
      }
    }
    ASSERT_EQ(static_cast<int>(seen.size()), stop_at + 1);
    EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
    // Further operations work, at both ends and in the middle.
    EXPECT_TRUE(list.try_append(extra));
    EXPECT_TRUE(item_list::remove(it[1]));
    EXPECT_EQ(list.pop(), &it[0]);
    EXPECT_EQ(values(list), (ints{2, 3, 8}));
    ints again;
    for (auto& cur : TypeParam::walk(list)) {
      again.push_back(cur->value);
    }
    EXPECT_EQ(again, (ints{2, 3, 8}));
    EXPECT_TRUE(item_list::remove(extra));
  }
}

TYPED_TEST(MtListWalk, EraseFirst) {
  check_erase<TypeParam>([](int v) { return v == 0; }, ints{1, 2, 3, 4, 5}, ints{0});
}

TYPED_TEST(MtListWalk, EraseMiddle) {
  check_erase<TypeParam>([](int v) { return v == 3; }, ints{0, 1, 2, 4, 5}, ints{3});
}

TYPED_TEST(MtListWalk, EraseLast) {
  check_erase<TypeParam>([](int v) { return v == 5; }, ints{0, 1, 2, 3, 4}, ints{5});
}

TYPED_TEST(MtListWalk, EraseEveryElement) {
  check_erase<TypeParam>([](int) { return true; }, ints{}, ints{0, 1, 2, 3, 4, 5});
}

TYPED_TEST(MtListWalk, EraseEveryOtherElementStartingWithTheFirst) {
  check_erase<TypeParam>([](int v) { return v % 2 == 0; }, ints{1, 3, 5}, ints{0, 2, 4});
}

TYPED_TEST(MtListWalk, EraseEveryOtherElementStartingWithTheSecond) {
  check_erase<TypeParam>([](int v) { return v % 2 == 1; }, ints{0, 2, 4}, ints{1, 3, 5});
}

TYPED_TEST(MtListWalk, EraseTwoAdjacentElements) {
  check_erase<TypeParam>([](int v) { return v == 2 || v == 3; }, ints{0, 1, 4, 5}, ints{2, 3});
}

TYPED_TEST(MtListWalk, EraseNothing) {
  check_erase<TypeParam>([](int) { return false; }, ints{0, 1, 2, 3, 4, 5}, ints{});
}

TYPED_TEST(MtListWalk, EraseTheOnlyElement) {
  item el;
  item_list list;
  list.append(el);
  std::vector<item*> erased;
  for (auto& cur : TypeParam::walk(list)) {
    erased.push_back(&cur.erase());
  }
  ASSERT_EQ(erased.size(), std::size_t{1});
  EXPECT_EQ(erased[0], &el);
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_EQ(values(list), ints{});
  EXPECT_TRUE(detached(list.head()));
  expect_detached_and_reusable(erased, ints{0});
}

TYPED_TEST(MtListWalk, ErasedElementIsDetachedInsideTheBody) {
  items<3> it;
  item_list list;
  append_all(list, it);
  for (auto& cur : TypeParam::walk(list)) {
    if (cur->value == 1) {
      item& el = cur.erase();
      EXPECT_EQ(&el, &it[1]);
      EXPECT_TRUE(detached(el));
    }
  }
  EXPECT_EQ(values(list), (ints{0, 2}));
}

TYPED_TEST(MtListWalk, EraseThenAppendToAnotherListInsideTheBody) {
  items<6> it;
  item_list list;
  item_list other;
  append_all(list, it);
  for (auto& cur : TypeParam::walk(list)) {
    if (cur->value % 2 == 1) {
      item& el = cur.erase();
      ASSERT_TRUE(detached(el)) << el.value;
      EXPECT_TRUE(other.try_append(el)) << el.value;
      EXPECT_FALSE(other.try_append(el)) << el.value;
      EXPECT_TRUE(el.is_linked_approx());
    }
  }
  EXPECT_EQ(values(list), (ints{0, 2, 4}));
  EXPECT_EQ(values(other), (ints{1, 3, 5}));
  // Both lists keep working.
  EXPECT_EQ(other.pop(), &it[1]);
  EXPECT_TRUE(list.try_insert(it[1]));
  EXPECT_EQ(values(list), (ints{1, 0, 2, 4}));
  EXPECT_EQ(values(other), (ints{3, 5}));
}

TYPED_TEST(MtListWalk, EraseThenInsertAtFrontOfAnotherListInsideTheBody) {
  items<4> it;
  item_list list;
  item_list other;
  append_all(list, it);
  for (auto& cur : TypeParam::walk(list)) {
    other.insert(cur.erase());
  }
  EXPECT_EQ(values(list), ints{});
  EXPECT_EQ(values(other), (ints{3, 2, 1, 0}));
}

TYPED_TEST(MtListWalk, EraseLockedKeepsElementLockedUntilReleased) {
  items<5> it;
  item_list list;
  append_all(list, it);
  herald::mt_locked<item> held;
  ints seen;
  for (auto& cur : TypeParam::walk(list)) {
    seen.push_back(cur->value);
    if (cur->value == 2) {
      held = cur.erase_locked();
      EXPECT_TRUE(held);
    }
  }
  EXPECT_EQ(seen, (ints{0, 1, 2, 3, 4}));
  EXPECT_EQ(values(list), (ints{0, 1, 3, 4}));
  ASSERT_EQ(held.get(), &it[2]);
  EXPECT_TRUE(it[2].is_linked_approx()) << "released before its holder let it go";
  // The list works while the element is held.
  EXPECT_EQ(list.pop(), &it[0]);
  list.insert(it[0]);
  EXPECT_EQ(values(list), (ints{0, 1, 3, 4}));

  held = herald::mt_locked<item>();
  ASSERT_TRUE(detached(it[2]));
  item_list other;
  EXPECT_TRUE(other.try_append(it[2]));
  EXPECT_EQ(values(other), ints{2});
}

TYPED_TEST(MtListWalk, EraseLockedReleasedInsideTheBody) {
  items<4> it;
  item_list list;
  item_list other;
  append_all(list, it);
  for (auto& cur : TypeParam::walk(list)) {
    if (cur->value == 0 || cur->value == 3) {
      herald::mt_locked<item> held = cur.erase_locked();
      ASSERT_TRUE(held);
      item* el = held.unlock();
      ASSERT_TRUE(detached(*el));
      EXPECT_TRUE(other.try_append(*el));
    }
  }
  EXPECT_EQ(values(list), (ints{1, 2}));
  EXPECT_EQ(values(other), (ints{0, 3}));
}

TYPED_TEST(MtListWalk, EraseLockedOfEveryElement) {
  items<4> it;
  item_list list;
  append_all(list, it);
  std::vector<herald::mt_locked<item>> held;
  for (auto& cur : TypeParam::walk(list)) {
    held.push_back(cur.erase_locked());
  }
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_EQ(values(list), ints{});
  ASSERT_EQ(held.size(), std::size_t{4});
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(held[i].get(), &it[i]);
    EXPECT_TRUE(it[i].is_linked_approx()) << i;
  }
  held.clear();
  std::vector<item*> all;
  for (std::size_t i = 0; i < 4; ++i) {
    all.push_back(&it[i]);
  }
  expect_detached_and_reusable(all, ints{0, 1, 2, 3});
}

TYPED_TEST(MtListWalk, ExceptionFromTheBodyLeavesListIntact) {
  for (int throw_at = 0; throw_at < 4; ++throw_at) {
    SCOPED_TRACE("throw at " + std::to_string(throw_at));
    items<4> it;
    item_list list;
    append_all(list, it);
    bool caught = false;
    try {
      for (auto& cur : TypeParam::walk(list)) {
        if (cur->value == throw_at) {
          throw std::runtime_error("from the body");
        }
      }
    } catch (const std::runtime_error&) {
      caught = true;
    }
    EXPECT_TRUE(caught);
    EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
    EXPECT_EQ(list.pop(), &it[0]);
    EXPECT_TRUE(item_list::remove(it[3]));
    EXPECT_TRUE(list.try_append(it[0]));
    EXPECT_EQ(values(list), (ints{1, 2, 0}));
  }
}

TYPED_TEST(MtListWalk, ExceptionAfterEraseLeavesTheRestIntact) {
  for (int at = 0; at < 4; ++at) {
    SCOPED_TRACE("erase and throw at " + std::to_string(at));
    items<4> it;
    item_list list;
    append_all(list, it);
    try {
      for (auto& cur : TypeParam::walk(list)) {
        if (cur->value == at) {
          cur.erase();
          throw std::runtime_error("after erase");
        }
      }
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error&) {
    }
    ints rest{0, 1, 2, 3};
    EXPECT_EQ(values(list), without(rest, at));
    const std::size_t idx = static_cast<std::size_t>(at);
    ASSERT_TRUE(detached(it[idx]));
    EXPECT_TRUE(list.try_insert(it[idx]));
    EXPECT_EQ(values(list).front(), at);
  }
}

TYPED_TEST(MtListWalk, BreakAfterEraseLeavesTheRestIntact) {
  for (int at = 0; at < 4; ++at) {
    SCOPED_TRACE("erase and break at " + std::to_string(at));
    items<4> it;
    item_list list;
    append_all(list, it);
    for (auto& cur : TypeParam::walk(list)) {
      if (cur->value == at) {
        cur.erase();
        break;
      }
    }
    EXPECT_EQ(values(list), without(ints{0, 1, 2, 3}, at));
    const std::size_t idx = static_cast<std::size_t>(at);
    ASSERT_TRUE(detached(it[idx]));
    EXPECT_TRUE(list.try_append(it[idx]));
    EXPECT_EQ(values(list).back(), at);
  }
}

// Returns the first value >= `min` from inside the loop, or -1.
template <class Kind>
int first_at_least(item_list& list, int min) {
  for (auto& cur : Kind::walk(list)) {
    if (cur->value >= min) {
      return cur->value;
    }
  }
  return -1;
}

// Erases the first element with value >= `min` and returns it from inside the loop.
template <class Kind>
item* take_first_at_least(item_list& list, int min) {
  for (auto& cur : Kind::walk(list)) {
    if (cur->value >= min) {
      return &cur.erase();
    }
  }
  return nullptr;
}

TYPED_TEST(MtListWalk, ReturnFromInsideTheLoopLeavesListIntact) {
  items<4> it;
  item_list list;
  append_all(list, it);
  EXPECT_EQ(first_at_least<TypeParam>(list, 0), 0);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
  EXPECT_EQ(first_at_least<TypeParam>(list, 2), 2);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
  EXPECT_EQ(first_at_least<TypeParam>(list, 3), 3);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
  EXPECT_EQ(first_at_least<TypeParam>(list, 9), -1);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
  EXPECT_TRUE(item_list::remove(it[2]));
  EXPECT_EQ(first_at_least<TypeParam>(list, 2), 3);
  EXPECT_EQ(values(list), (ints{0, 1, 3}));
}

TYPED_TEST(MtListWalk, ReturnAfterEraseLeavesTheRestIntact) {
  items<4> it;
  item_list list;
  append_all(list, it);
  item* el = take_first_at_least<TypeParam>(list, 1);
  ASSERT_EQ(el, &it[1]);
  ASSERT_TRUE(detached(*el));
  EXPECT_EQ(values(list), (ints{0, 2, 3}));
  el = take_first_at_least<TypeParam>(list, 3);
  ASSERT_EQ(el, &it[3]);
  ASSERT_TRUE(detached(*el));
  EXPECT_EQ(values(list), (ints{0, 2}));
  el = take_first_at_least<TypeParam>(list, 0);
  ASSERT_EQ(el, &it[0]);
  ASSERT_TRUE(detached(*el));
  EXPECT_EQ(values(list), ints{2});
  EXPECT_TRUE(list.try_append(it[3]));
  EXPECT_TRUE(list.try_insert(it[0]));
  EXPECT_EQ(values(list), (ints{0, 2, 3}));
}

TYPED_TEST(MtListWalk, NestedWalkOfAnotherList) {
  items<3> a_items;
  items<2> b_items;
  item_list a;
  item_list b;
  append_all(a, a_items);
  append_all(b, b_items);
  ints pairs;
  for (auto& x : TypeParam::walk(a)) {
    for (auto& y : TypeParam::walk(b)) {
      pairs.push_back(x->value * 10 + y->value);
    }
  }
  EXPECT_EQ(pairs, (ints{0, 1, 10, 11, 20, 21}));
  EXPECT_EQ(values(a), (ints{0, 1, 2}));
  EXPECT_EQ(values(b), (ints{0, 1}));
}

// ---- Walk specifics -----------------------------------------------------------------------------

TEST(MtListUnlockedWalk, CurrentElementShowsItsNeighbours) {
  items<3> it;
  item_list list;
  append_all(list, it);
  std::vector<mt_ends> seen;
  for (auto& cur : list.for_each_unlocked()) {
    seen.push_back(peek(cur.get()));  // would wait forever if the pointers were busy
  }
  ASSERT_EQ(seen.size(), std::size_t{3});
  for (std::size_t i = 0; i < 3; ++i) {
    const mt_ends want = neighbours(list, &it[0], 3, i);
    EXPECT_EQ(seen[i].prev, want.prev) << i;
    EXPECT_EQ(seen[i].next, want.next) << i;
  }
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
}

TEST(MtListUnlockedWalk, TryAppendOfCurrentElementFailsAtOnce) {
  items<3> it;
  item_list list;
  item_list other;
  append_all(list, it);
  for (auto& cur : list.for_each_unlocked()) {
    EXPECT_FALSE(other.try_append(cur.get())) << cur->value;
    EXPECT_FALSE(other.try_insert(cur.get())) << cur->value;
  }
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
  EXPECT_EQ(values(other), ints{});
}

TEST(MtListWalkDeathTest, CursorUsedAfterEraseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        item el;
        item_list list;
        list.append(el);
        for (auto& cur : list.for_each_locked()) {
          cur.erase();
          static_cast<void>(cur.get());
        }
      },
      "used after erase");
}

TEST(MtListWalkDeathTest, WalkIteratedTwiceAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        item_list list;
        auto walk = list.for_each_locked();
        for (auto& cur : walk) {
          static_cast<void>(cur);
        }
        for (auto& cur : walk) {
          static_cast<void>(cur);
        }
      },
      "iterated only once");
}

// ---- Raw lock API on mt_link --------------------------------------------------------------------

TEST(MtLink, LockNextOfHeadThenUnlockFullInsertsAtFront) {
  items<4> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  list.append(it[2]);
  mt_link& head = list.head();
  const mt_ends ends = mt_link::lock_next(head);
  EXPECT_EQ(ends.prev, &head);
  EXPECT_EQ(ends.next, &link(it[0]));
  mt_link::unlock_full(link(it[3]), ends);
  EXPECT_EQ(values(list), (ints{3, 0, 1, 2}));
}

TEST(MtLink, LockPrevOfHeadThenUnlockFullInsertsAtBack) {
  items<4> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  list.append(it[2]);
  mt_link& head = list.head();
  const mt_ends ends = mt_link::lock_prev(head);
  EXPECT_EQ(ends.prev, &link(it[2]));
  EXPECT_EQ(ends.next, &head);
  mt_link::unlock_full(link(it[3]), ends);
  EXPECT_EQ(values(list), (ints{0, 1, 2, 3}));
}

TEST(MtLink, LockNextOfElementThenUnlockFullInsertsAfterIt) {
  items<4> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  list.append(it[2]);
  const mt_ends ends = mt_link::lock_next(link(it[1]));
  EXPECT_EQ(ends.prev, &link(it[1]));
  EXPECT_EQ(ends.next, &link(it[2]));
  mt_link::unlock_full(link(it[3]), ends);
  EXPECT_EQ(values(list), (ints{0, 1, 3, 2}));
}

TEST(MtLink, LockPrevOfElementThenUnlockFullInsertsBeforeIt) {
  items<4> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  list.append(it[2]);
  const mt_ends ends = mt_link::lock_prev(link(it[1]));
  EXPECT_EQ(ends.prev, &link(it[0]));
  EXPECT_EQ(ends.next, &link(it[1]));
  mt_link::unlock_full(link(it[3]), ends);
  EXPECT_EQ(values(list), (ints{0, 3, 1, 2}));
}

TEST(MtLink, LockNextThenUnlockLinkChangesNothing) {
  items<3> it;
  item_list list;
  append_all(list, it);
  mt_link::unlock_link(mt_link::lock_next(list.head()));
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
  for (std::size_t i = 0; i < 3; ++i) {
    mt_link::unlock_link(mt_link::lock_next(link(it[i])));
    EXPECT_EQ(values(list), (ints{0, 1, 2})) << i;
  }
}

TEST(MtLink, LockPrevThenUnlockLinkChangesNothing) {
  items<3> it;
  item_list list;
  append_all(list, it);
  mt_link::unlock_link(mt_link::lock_prev(list.head()));
  EXPECT_EQ(values(list), (ints{0, 1, 2}));
  for (std::size_t i = 0; i < 3; ++i) {
    mt_link::unlock_link(mt_link::lock_prev(link(it[i])));
    EXPECT_EQ(values(list), (ints{0, 1, 2})) << i;
  }
}

TEST(MtLink, LockNextOfEmptyHeadReturnsHeadOnBothEnds) {
  item_list list;
  mt_link& head = list.head();
  const mt_ends ends = mt_link::lock_next(head);
  EXPECT_EQ(ends.prev, &head);
  EXPECT_EQ(ends.next, &head);
  mt_link::unlock_link(ends);
  EXPECT_TRUE(list.is_empty_approx());
  EXPECT_TRUE(detached(head));
  EXPECT_EQ(values(list), ints{});
  item el;
  list.append(el);
  EXPECT_EQ(values(list), ints{0});
}

TEST(MtLink, LockPrevOfEmptyHeadReturnsHeadOnBothEnds) {
  item_list list;
  mt_link& head = list.head();
  const mt_ends ends = mt_link::lock_prev(head);
  EXPECT_EQ(ends.prev, &head);
  EXPECT_EQ(ends.next, &head);
  mt_link::unlock_link(ends);
  EXPECT_TRUE(detached(head));
  EXPECT_EQ(values(list), ints{});
}

TEST(MtLink, LockNextOfEmptyHeadThenUnlockFullInsertsTheOnlyElement) {
  items<2> it;
  item_list list;
  mt_link::unlock_full(link(it[1]), mt_link::lock_next(list.head()));
  EXPECT_EQ(values(list), ints{1});
  mt_link::unlock_full(link(it[0]), mt_link::lock_prev(list.head()));
  EXPECT_EQ(values(list), (ints{1, 0}));
}

TEST(MtLink, LockFullThenUnlockFullChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    const mt_ends ends = mt_link::lock_full(link(it[pos]));
    const mt_ends want = neighbours(list, &it[0], 3, pos);
    EXPECT_EQ(ends.prev, want.prev);
    EXPECT_EQ(ends.next, want.next);
    EXPECT_TRUE(it[pos].is_linked_approx());
    mt_link::unlock_full(link(it[pos]), ends);
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
  }
}

TEST(MtLink, LockFullOfOnlyElementThenUnlockFullChangesNothing) {
  item el;
  item_list list;
  list.append(el);
  const mt_ends ends = mt_link::lock_full(el);
  EXPECT_EQ(ends.prev, &list.head());
  EXPECT_EQ(ends.next, &list.head());
  mt_link::unlock_full(el, ends);
  EXPECT_EQ(values(list), ints{0});
}

TEST(MtLink, LockFullThenUnlockLinkAndUnlockSelfRemovesTheElement) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    const mt_ends ends = mt_link::lock_full(link(it[pos]));
    mt_link::unlock_link(ends);
    EXPECT_TRUE(it[pos].is_linked_approx()) << "still locked until unlock_self";
    mt_link::unlock_self(link(it[pos]));
    ASSERT_TRUE(detached(it[pos]));
    EXPECT_EQ(values(list), without(ints{0, 1, 2}, static_cast<int>(pos)));
    EXPECT_TRUE(list.try_append(it[pos]));
    EXPECT_EQ(values(list).back(), static_cast<int>(pos));
  }
}

TEST(MtLink, LockFullThenUnlockLinkAndUnlockSelfOfOnlyElementEmptiesTheList) {
  item el;
  item_list list;
  list.append(el);
  mt_link::unlock_link(mt_link::lock_full(el));
  mt_link::unlock_self(el);
  EXPECT_TRUE(detached(el));
  EXPECT_TRUE(detached(list.head()));
  EXPECT_EQ(values(list), ints{});
}

TEST(MtLink, LockFullOfDetachedElementReturnsItselfAndUnlockRestoresIt) {
  item el;
  const mt_ends ends = mt_link::lock_full(el);
  EXPECT_EQ(ends.prev, &link(el));
  EXPECT_EQ(ends.next, &link(el));
  EXPECT_TRUE(el.is_linked_approx()) << "a locked element must not look detached";
  mt_link::unlock_link(ends);
  mt_link::unlock_self(el);
  ASSERT_TRUE(detached(el));
  item_list list;
  EXPECT_TRUE(list.try_append(el));
  EXPECT_EQ(values(list), ints{0});
}

TEST(MtLink, LockFullOfDetachedElementThenUnlockFullRestoresIt) {
  item el;
  mt_link::unlock_full(el, mt_link::lock_full(el));
  EXPECT_TRUE(detached(el));
}

TEST(MtLink, LockElemThenUnlockElemChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    const mt_ends ends = mt_link::lock_elem(link(it[pos]));
    const mt_ends want = neighbours(list, &it[0], 3, pos);
    EXPECT_EQ(ends.prev, want.prev);
    EXPECT_EQ(ends.next, want.next);
    EXPECT_TRUE(it[pos].is_linked_approx());
    // The neighbours still point at the locked element (read without waiting: their own
    // pointers are not locked).
    EXPECT_EQ(peek(*ends.prev).next, &link(it[pos]));
    EXPECT_EQ(peek(*ends.next).prev, &link(it[pos]));
    mt_link::unlock_elem(link(it[pos]), ends);
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
  }
}

TEST(MtLink, LockElemOfDetachedElementReturnsItself) {
  item el;
  const mt_ends ends = mt_link::lock_elem(el);
  EXPECT_EQ(ends.prev, &link(el));
  EXPECT_EQ(ends.next, &link(el));
  EXPECT_TRUE(el.is_linked_approx());
  mt_link::unlock_elem(el, ends);
  EXPECT_TRUE(detached(el));
}

TEST(MtLink, CutAroundThenReconnectChangesNothing) {
  for (std::size_t pos = 0; pos < 3; ++pos) {
    SCOPED_TRACE("position " + std::to_string(pos));
    items<3> it;
    item_list list;
    append_all(list, it);
    const mt_ends ends = mt_link::cut_around(link(it[pos]));
    const mt_ends want = neighbours(list, &it[0], 3, pos);
    EXPECT_EQ(ends.prev, want.prev);
    EXPECT_EQ(ends.next, want.next);
    mt_link::reconnect(link(it[pos]), ends);
    EXPECT_EQ(values(list), (ints{0, 1, 2}));
  }
}

TEST(MtLink, CutAroundThenUnlockLinkAndUnlockSelfRemovesTheElement) {
  items<3> it;
  item_list list;
  append_all(list, it);
  const mt_ends ends = mt_link::cut_around(link(it[1]));
  mt_link::unlock_link(ends);
  mt_link::unlock_self(link(it[1]));
  EXPECT_TRUE(detached(it[1]));
  EXPECT_EQ(values(list), (ints{0, 2}));
}

TEST(MtLink, CutAroundOfOneElementThenReconnectElsewhereMovesIt) {
  items<4> it;
  item_list list;
  item_list other;
  list.append(it[0]);
  list.append(it[1]);
  list.append(it[2]);
  other.append(it[3]);
  // Take 1 out of `list` and link it at the back of `other`, never letting it look detached.
  const mt_ends ends = mt_link::cut_around(link(it[1]));
  mt_link::unlock_link(ends);
  mt_link::unlock_full(link(it[1]), mt_link::lock_prev(other.head()));
  EXPECT_EQ(values(list), (ints{0, 2}));
  EXPECT_EQ(values(other), (ints{3, 1}));
}

TEST(MtLink, RawInsertAndAppendRelativeToAnElement) {
  items<5> it;
  item_list list;
  list.append(it[0]);
  list.append(it[1]);
  mt_link::insert(link(it[0]), link(it[2]));  // right after 0
  EXPECT_EQ(values(list), (ints{0, 2, 1}));
  mt_link::append(link(it[0]), link(it[3]));  // right before 0
  EXPECT_EQ(values(list), (ints{3, 0, 2, 1}));
  EXPECT_TRUE(mt_link::try_insert(link(it[1]), link(it[4])));  // after the last
  EXPECT_EQ(values(list), (ints{3, 0, 2, 1, 4}));
  EXPECT_FALSE(mt_link::try_append(link(it[2]), link(it[4])));
  EXPECT_FALSE(mt_link::try_insert(link(it[2]), link(it[3])));
  EXPECT_EQ(values(list), (ints{3, 0, 2, 1, 4}));
}

TEST(MtLink, RawPopAndPopLockedOnABareHead) {
  mt_link head;
  mt_link a;
  mt_link b;
  mt_link::append(head, a);
  mt_link::append(head, b);
  EXPECT_TRUE(head.is_linked_approx());
  mt_link* locked = mt_link::pop_locked(head);
  ASSERT_EQ(locked, &a);
  EXPECT_TRUE(a.is_linked_approx());
  mt_link::unlock_self(a);
  ASSERT_TRUE(detached(a));
  EXPECT_EQ(mt_link::pop(head), &b);
  EXPECT_TRUE(detached(b));
  EXPECT_EQ(mt_link::pop(head), nullptr);
  EXPECT_EQ(mt_link::pop_locked(head), nullptr);
  EXPECT_TRUE(detached(head));
  EXPECT_FALSE(mt_link::remove(a));
}

}  // namespace
