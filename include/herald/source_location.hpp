// herald/source_location.hpp - where a subscription was made (file and line), for
// introspection. herald::source_location is std::source_location wherever the standard library
// provides it; where it does not (libstdc++ 12 compiled by clang 14, which lacks the builtin
// libstdc++ needs), it is a class of the same shape built on the __builtin_FILE family.
#pragma once

#include <cstdint>
#if __has_include(<source_location>)
#include <source_location>
#endif

namespace herald {

#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
#else
/// The part of std::source_location that herald uses. current() in a default argument records
/// the caller's position, as std::source_location::current() does. Thread safety: a value.
class source_location {
 public:
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           std::uint_least32_t line = __builtin_LINE()) noexcept {
    source_location l;
    l.file_ = file;
    l.function_ = function;
    l.line_ = line;
    return l;
  }
  constexpr source_location() noexcept = default;
  [[nodiscard]] constexpr const char* file_name() const noexcept { return file_; }
  [[nodiscard]] constexpr const char* function_name() const noexcept { return function_; }
  [[nodiscard]] constexpr std::uint_least32_t line() const noexcept { return line_; }
  [[nodiscard]] constexpr std::uint_least32_t column() const noexcept { return 0; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
};
#endif

}  // namespace herald
