// herald/error.hpp - expected failures as values: herald::errc and herald::result<T>.
//
// herald tells two kinds of failure apart (STYLE.md, "Errors"):
//   - misuse (a null handler, a wrong mode, use after shutdown) is a contract violation:
//     HERALD_ASSERT prints file:line and aborts;
//   - an expected failure (a duplicate id, a destroyed list, an unknown name, no memory) is a
//     value: one `errc` code per cause, hooked into std::error_code, carried by `result<T>`.
//
// result<T> is shaped like C++23 std::expected<T, errc> (g++ 12 in C++20 mode has none), with
// the operations herald's API needs: has_value / operator bool, value, error, operator* / ->,
// value_or. Reading value() of an error, or error() of a value, is misuse and aborts.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace herald {

/// One code per cause of an expected failure. 0 is never used (it means "no error" in
/// std::error_code).
enum class errc : int {
  duplicate_id = 1,    ///< a subscription with this id is already in the list
  list_destroyed = 2,  ///< the subscription list was destroyed
  not_found = 3,       ///< no subscription with this id / the subscription has ended
  family_mismatch = 4, ///< subtypes of another family than the subscription's or the type's
  unknown_name = 5,    ///< a family or subtype name that nobody declared
  malformed_name = 6,  ///< a name that is not of the form FAMILY, FAMILY_SUB or A|B
  no_memory = 7,       ///< an allocation failed
  shutting_down = 8,   ///< the bus is shutting down or shut down
  too_many = 9,        ///< a fixed limit was reached (families, subtypes per family)
  invalid_argument = 10, ///< a value outside its documented range
  no_codec = 11,         ///< the family declared no codec (serialising its safe part)
};

/// The std::error_category of herald::errc ("herald"). Thread safety: any thread.
const std::error_category& error_category() noexcept;

/// A std::error_code for `e`. Thread safety: any thread. Allocation: none.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// The short name of a code ("duplicate_id"). Thread safety: any thread. Allocation: none.
std::string_view to_string(errc e) noexcept;

namespace detail {
/// Prints "herald: misuse at file:line: what" and aborts. Never returns.
[[noreturn]] void contract_violation(const char* file, int line, const char* what) noexcept;
}  // namespace detail

}  // namespace herald

template <>
struct std::is_error_code_enum<herald::errc> : std::true_type {};

/// Always-on contract check: aborts with file:line and the message when `cond` is false.
#define HERALD_ASSERT(cond, what)                                        \
  do {                                                                   \
    if (!(cond)) [[unlikely]] {                                          \
      ::herald::detail::contract_violation(__FILE__, __LINE__, (what));  \
    }                                                                    \
  } while (false)

namespace herald {

/// An error value to construct a failed result from: `return unexpected(errc::not_found);`.
struct unexpected {
  constexpr explicit unexpected(errc e) noexcept : code(e) {}
  errc code;
};

/// Either a T or an errc, like std::expected<T, errc>. [[nodiscard]]: a dropped result is a
/// dropped error.
/// Thread safety: a value type; distinct objects are independent. Allocation: none of its own.
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_reference_v<T>, "result<T&> is not supported; use result<T*>");

 public:
  using value_type = T;

  template <class U = T, std::enable_if_t<std::is_constructible_v<T, U&&>, int> = 0>
  result(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>)  // NOLINT: implicit, as expected
      : ok_(true) {
    ::new (static_cast<void*>(&storage_.value)) T(std::forward<U>(v));
  }
  result(unexpected u) noexcept : ok_(false) { storage_.error = u.code; }  // NOLINT: implicit

  result(const result& o) noexcept(std::is_nothrow_copy_constructible_v<T>) : ok_(o.ok_) {
    if (ok_) {
      ::new (static_cast<void*>(&storage_.value)) T(o.storage_.value);
    } else {
      storage_.error = o.storage_.error;
    }
  }
  result(result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) : ok_(o.ok_) {
    if (ok_) {
      ::new (static_cast<void*>(&storage_.value)) T(std::move(o.storage_.value));
    } else {
      storage_.error = o.storage_.error;
    }
  }
  result& operator=(result o) noexcept(std::is_nothrow_move_constructible_v<T>) {
    destroy();
    ok_ = o.ok_;
    if (ok_) {
      ::new (static_cast<void*>(&storage_.value)) T(std::move(o.storage_.value));
    } else {
      storage_.error = o.storage_.error;
    }
    return *this;
  }
  ~result() { destroy(); }

  [[nodiscard]] bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }

  /// The value; aborts (misuse) if this holds an error.
  [[nodiscard]] T& value() & noexcept {
    check_value();
    return storage_.value;
  }
  [[nodiscard]] const T& value() const& noexcept {
    check_value();
    return storage_.value;
  }
  [[nodiscard]] T&& value() && noexcept {
    check_value();
    return std::move(storage_.value);
  }
  T& operator*() & noexcept { return value(); }
  const T& operator*() const& noexcept { return value(); }
  T* operator->() noexcept { return &value(); }
  const T* operator->() const noexcept { return &value(); }

  /// The error; aborts (misuse) if this holds a value.
  [[nodiscard]] errc error() const noexcept {
    HERALD_ASSERT(!ok_, "result::error() called on a result that holds a value");
    return storage_.error;
  }
  /// The value, or `fallback` if this holds an error.
  template <class U>
  [[nodiscard]] T value_or(U&& fallback) const& {
    return ok_ ? storage_.value : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void check_value() const noexcept {
    if (!ok_) [[unlikely]] {
      char what[96];
      std::snprintf(what, sizeof what, "result::value() called on an error (%.*s)",
                    static_cast<int>(to_string(storage_.error).size()),
                    to_string(storage_.error).data());
      detail::contract_violation(__FILE__, __LINE__, what);
    }
  }
  void destroy() noexcept {
    if (ok_) {
      storage_.value.~T();
    }
  }

  union storage {
    storage() noexcept {}
    ~storage() {}
    T value;
    errc error;
  } storage_;
  bool ok_;
};

/// A result with no value: success, or an errc.
template <>
class [[nodiscard]] result<void> {
 public:
  using value_type = void;
  result() noexcept = default;
  result(unexpected u) noexcept : error_(u.code) {}  // NOLINT: implicit, as expected

  [[nodiscard]] bool has_value() const noexcept { return error_ == errc{}; }
  explicit operator bool() const noexcept { return has_value(); }
  /// Aborts (misuse) if this holds an error.
  void value() const noexcept {
    HERALD_ASSERT(has_value(), "result<void>::value() called on an error");
  }
  /// The error; aborts (misuse) on success.
  [[nodiscard]] errc error() const noexcept {
    HERALD_ASSERT(!has_value(), "result::error() called on a result that holds a value");
    return error_;
  }

 private:
  errc error_{};
};

}  // namespace herald
