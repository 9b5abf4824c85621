// herald::errc, herald::result<T> and HERALD_ASSERT.
#include "herald/error.hpp"

#include <gtest/gtest.h>

#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <system_error>

namespace {

herald::result<int> half(int x) {
  if (x % 2 != 0) {
    return herald::unexpected(herald::errc::invalid_argument);
  }
  return x / 2;
}

TEST(Errc, EveryCodeHasItsOwnNameAndMessage) {
  const herald::errc all[] = {
      herald::errc::duplicate_id,  herald::errc::list_destroyed, herald::errc::not_found,
      herald::errc::family_mismatch, herald::errc::unknown_name, herald::errc::malformed_name,
      herald::errc::no_memory,     herald::errc::shutting_down,  herald::errc::too_many,
      herald::errc::invalid_argument};
  std::set<std::string> names;
  std::set<std::string> messages;
  for (herald::errc e : all) {
    names.insert(std::string(herald::to_string(e)));
    messages.insert(herald::make_error_code(e).message());
  }
  EXPECT_EQ(names.size(), std::size(all));
  EXPECT_EQ(messages.size(), std::size(all));
  EXPECT_EQ(herald::to_string(herald::errc::duplicate_id), "duplicate_id");
}

TEST(Errc, ConvertsToErrorCodeOfTheHeraldCategory) {
  std::error_code ec = herald::errc::no_memory;
  EXPECT_TRUE(ec);
  EXPECT_STREQ(ec.category().name(), "herald");
  EXPECT_EQ(ec, herald::errc::no_memory);
  EXPECT_NE(ec, herald::errc::duplicate_id);
}

TEST(Result, HoldsAValueOrAnError) {
  auto ok = half(8);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, 4);
  EXPECT_EQ(ok.value_or(-1), 4);
  auto bad = half(7);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error(), herald::errc::invalid_argument);
  EXPECT_EQ(bad.value_or(-1), -1);
}

TEST(Result, CopiesMovesAndDestroysItsValueOnce) {
  auto counter = std::make_shared<int>(0);
  {
    herald::result<std::shared_ptr<int>> a = counter;
    EXPECT_EQ(counter.use_count(), 2);
    herald::result<std::shared_ptr<int>> b = a;
    EXPECT_EQ(counter.use_count(), 3);
    herald::result<std::shared_ptr<int>> c = std::move(a);
    EXPECT_EQ(counter.use_count(), 3);
    b = herald::unexpected(herald::errc::not_found);
    EXPECT_EQ(counter.use_count(), 2);
    EXPECT_EQ(b.error(), herald::errc::not_found);
  }
  EXPECT_EQ(counter.use_count(), 1);
}

TEST(Result, VoidResultTellsSuccessFromFailure) {
  herald::result<void> ok;
  EXPECT_TRUE(ok);
  herald::result<void> bad = herald::unexpected(herald::errc::shutting_down);
  EXPECT_FALSE(bad);
  EXPECT_EQ(bad.error(), herald::errc::shutting_down);
}

TEST(ResultDeathTest, ValueOfAnErrorAbortsWithTheCode) {
  EXPECT_DEATH((void)half(3).value(), "misuse at .*invalid_argument");
}

TEST(ResultDeathTest, ErrorOfAValueAborts) {
  EXPECT_DEATH((void)half(2).error(), "misuse at .*holds a value");
}

TEST(AssertDeathTest, PrintsFileLineAndMessage) {
  EXPECT_DEATH(HERALD_ASSERT(1 + 1 == 3, "arithmetic is broken"),
               "herald: misuse at .*error_test.cpp:[0-9]+: arithmetic is broken");
}

}  // namespace
