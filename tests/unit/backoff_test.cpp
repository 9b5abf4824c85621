// Unit tests of herald::backoff: the geometric growth of the wait limit, its cap, reset(), and
// that pause() returns. No timing is measured or asserted: pause() is checked for termination
// and for the limit it leaves behind, never for how long it took.
#include "herald/backoff.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

namespace {

using herald::backoff;

constexpr std::uint32_t cap = backoff::max_pause_loops - 1;

// True if v is 2^k - 1 for some k >= 1 (all ones from bit 0 up): pause() draws its wait with
// `random & limit`, which is uniform over [0, limit] only for such values.
bool is_all_ones(std::uint32_t v) { return v != 0 && (v & (v + 1)) == 0; }

// The limits a fresh backoff goes through, computed independently of next_limit():
// 2^3 - 1, 2^6 - 1, 2^9 - 1, ... while below the cap, then the cap itself.
std::vector<std::uint32_t> expected_limits(std::size_t count) {
  std::vector<std::uint32_t> out;
  unsigned bits = 3;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint64_t v = (std::uint64_t{1} << bits) - 1;
    out.push_back(v >= cap ? cap : static_cast<std::uint32_t>(v));
    bits += 3;
  }
  return out;
}

// Compile-time checks: next_limit is usable in constant expressions.
static_assert(backoff::next_limit(backoff::initial_limit) == 63);
static_assert(backoff::next_limit(cap) == cap);

TEST(Backoff, ConstantsHaveTheDocumentedValues) {
  EXPECT_EQ(backoff::initial_limit, 7u);
  EXPECT_EQ(backoff::max_pause_loops, std::uint32_t{1} << 20);
  EXPECT_TRUE(is_all_ones(backoff::initial_limit));
  EXPECT_LT(backoff::initial_limit, backoff::yield_after_loops);
  EXPECT_LT(backoff::yield_after_loops, backoff::max_pause_loops);
}

TEST(Backoff, NewBackoffStartsAtInitialLimit) {
  const backoff b;
  EXPECT_EQ(b.limit(), backoff::initial_limit);
}

TEST(Backoff, NextLimitSequenceStartsAtSevenThenSixtyThree) {
  EXPECT_EQ(backoff::next_limit(7), 63u);
  EXPECT_EQ(backoff::next_limit(63), 511u);
  EXPECT_EQ(backoff::next_limit(511), 4095u);
  EXPECT_EQ(backoff::next_limit(4095), 32767u);
  EXPECT_EQ(backoff::next_limit(32767), 262143u);
}

TEST(Backoff, NextLimitSequenceIsPowersOfTwoMinusOneUpToTheCap) {
  const std::vector<std::uint32_t> want = expected_limits(10);
  std::vector<std::uint32_t> got;
  std::uint32_t limit = backoff::initial_limit;
  for (std::size_t i = 0; i < want.size(); ++i) {
    got.push_back(limit);
    limit = backoff::next_limit(limit);
  }
  EXPECT_EQ(got, want);
  for (const std::uint32_t v : got) {
    EXPECT_TRUE(is_all_ones(v)) << v;
    EXPECT_LE(v, cap) << v;
  }
}

TEST(Backoff, NextLimitReachesExactlyTheCapAndStaysThere) {
  std::uint32_t limit = backoff::initial_limit;
  std::uint32_t previous = 0;
  int steps = 0;
  while (limit != cap) {
    ASSERT_GT(limit, previous) << "the limit must grow until it reaches the cap";
    ASSERT_LT(limit, cap);
    ASSERT_LT(steps, 32) << "the limit never reached the cap";
    previous = limit;
    limit = backoff::next_limit(limit);
    ++steps;
  }
  EXPECT_EQ(steps, 6);  // 7 -> 63 -> 511 -> 4095 -> 32767 -> 262143 -> 2^20 - 1
  for (int i = 0; i < 100; ++i) {
    limit = backoff::next_limit(limit);
    ASSERT_EQ(limit, cap);
  }
}

TEST(Backoff, NextLimitOfLargeValuesIsCappedWithoutOverflow) {
  EXPECT_EQ(backoff::next_limit(backoff::max_pause_loops), cap);
  EXPECT_EQ(backoff::next_limit(std::uint32_t{1} << 28), cap);
  // limit * 8 + 7 would wrap in 32 bits to a small value here.
  EXPECT_EQ(backoff::next_limit(std::numeric_limits<std::uint32_t>::max()), cap);
  EXPECT_EQ(backoff::next_limit((std::uint32_t{1} << 29) + 1), cap);
}

TEST(Backoff, NextLimitJustBelowTheCapThresholdStillGrows) {
  // 131070 * 8 + 7 == 1048567 < 2^20: not capped.
  EXPECT_EQ(backoff::next_limit(131070), 1048567u);
  // 131071 * 8 + 7 == 2^20 - 1: exactly the cap.
  EXPECT_EQ(backoff::next_limit(131071), cap);
  // 131072 * 8 + 7 > 2^20: capped.
  EXPECT_EQ(backoff::next_limit(131072), cap);
}

TEST(Backoff, PauseGrowsLimitAlongTheSequence) {
  backoff b;
  const std::vector<std::uint32_t> want = expected_limits(9);
  for (std::size_t i = 0; i + 1 < want.size(); ++i) {
    ASSERT_EQ(b.limit(), want[i]) << "before pause " << i;
    b.pause();
    ASSERT_EQ(b.limit(), want[i + 1]) << "after pause " << i;
  }
  EXPECT_EQ(b.limit(), cap);
}

TEST(Backoff, ResetReturnsToInitialLimit) {
  backoff b;
  b.pause();
  b.pause();
  ASSERT_NE(b.limit(), backoff::initial_limit);
  b.reset();
  EXPECT_EQ(b.limit(), backoff::initial_limit);
  b.pause();
  EXPECT_EQ(b.limit(), backoff::next_limit(backoff::initial_limit));
}

TEST(Backoff, ResetFromTheCapReturnsToInitialLimit) {
  backoff b;
  for (int i = 0; i < 8; ++i) {
    b.pause();
  }
  ASSERT_EQ(b.limit(), cap);
  b.reset();
  EXPECT_EQ(b.limit(), backoff::initial_limit);
}

TEST(Backoff, ManyPausesTerminateAndEndAtTheCap) {
  // A termination test: ten pauses from the initial limit must return, whatever the random
  // draws. The last few run at the cap.
  backoff b;
  for (int i = 0; i < 10; ++i) {
    b.pause();
    ASSERT_LE(b.limit(), cap);
  }
  EXPECT_EQ(b.limit(), cap);
}

TEST(Backoff, DistinctObjectsGrowIndependently) {
  backoff a;
  backoff b;
  a.pause();
  a.pause();
  EXPECT_EQ(a.limit(), 511u);
  EXPECT_EQ(b.limit(), backoff::initial_limit);
  b.pause();
  EXPECT_EQ(a.limit(), 511u);
  EXPECT_EQ(b.limit(), 63u);
}

TEST(Backoff, CpuRelaxReturns) {
  for (int i = 0; i < 1000; ++i) {
    herald::cpu_relax();
  }
  SUCCEED();
}

}  // namespace
