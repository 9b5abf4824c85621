// herald/event_type.hpp - event types: one family and a set of its subtypes, with names.
//
// What it is
//   Every event belongs to a *family* ("SERVER") and is of one *subtype* of it ("DOWN"). An
//   `event_type` is a family id plus a bit mask of subtypes (bit i = subtype i). A published
//   event names exactly one subtype (is_single()); a subscription names one family and any
//   nonempty subset of its subtypes, the whole family included. The model is HAProxy's
//   event_hdl (families of up to 16 subtypes, 256 families); herald allows max_subtypes (32)
//   subtypes per family and max_families (1024) families, and checks family boundaries where
//   HAProxy trusted the caller: combining subtypes of two families is an error value.
//
// Declaring a family
//   In C++, a family is a struct (see `family_declaration`):
//       struct server_event {
//         static constexpr std::string_view family_name = "SERVER";
//         enum class subtype : std::uint8_t { add, del, up, down };  // bit = enumerator value
//         static constexpr std::array<std::string_view, 4> subtype_names{"ADD", "DEL", "UP",
//                                                                          "DOWN"};
//         struct safe_part { int id = 0; std::string name; };  // copied; read later, anywhere
//         struct unsafe_part { int* live = nullptr; };         // optional; sync handlers only
//       };
//   family_id_of<server_event>() declares it on first use and returns its id; type_of<F>(...)
//   builds types from enumerators. Tools and bridges, which learn names at run time, call
//   declare_family(name, subtype_names) instead. Both meet in one registry keyed by the family
//   name: the same name with the same subtype names is the same family (declaring it again
//   returns the same id, also across shared libraries); the same name with other subtype
//   names is refused (declare_family) or aborts (family_id_of).
//
// Names
//   A family name matches [A-Z][A-Z0-9]* (no '_': the first '_' separates family from
//   subtype), a subtype name [A-Z0-9][A-Z0-9_]*. Text forms, converted both ways by
//   type_from_name() and type_name():
//       SERVER                  the whole family (every declared subtype)
//       SERVER_DOWN             one subtype
//       SERVER_UP|SERVER_DOWN   several subtypes of one family
//   type_name() never fails: for what has no name it writes a form containing '#' (which
//   type_from_name() refuses as malformed_name): "FAMILY#7" for an undeclared family id 7,
//   "SERVER_#12" for bit 12 beyond the declared subtypes, "SERVER_#NONE" for an empty mask.
//
// Lifetime
//   Family ids are dense (0, 1, 2, ... in declaration order) and stable for the life of the
//   process. Declared families are never forgotten: their records are never freed, so names
//   stay valid for every user, static destructors included.
//
// Memory ordering
//   The registry is a fixed table of max_families slots plus a fixed open-addressing index by
//   name, each entry an atomic pointer to an immutable record (name and subtype names).
//   declare_family() serialises declarations with a mutex, fills a record, then publishes it
//   with release stores (slot, index, then the family count). Every lookup (family_name,
//   family_from_name, type_name, type_from_name, subtype_count, family_count) reads those
//   pointers with acquire loads, which pair with the release stores, and never takes a lock.
//   A thread that obtained a family id from declare_family() or family_id_of() (or from any
//   event_type built from it) therefore always finds its record. family_id_of<F>() caches the
//   id in a function-local static (a thread-safe one-time initialisation): after the first
//   call it is one load.
//
// Contracts common to every function here
//   Thread safety: any thread, concurrently with any other function of this file.
//   Handler context: every function may be called from inside a handler.
//   Errors: expected failures are errc values in a result; nothing here throws except
//   type_name(), which allocates its string (std::bad_alloc).
#pragma once

#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "herald/error.hpp"

namespace herald {

/// The largest number of families one process can declare (HAProxy: 256).
inline constexpr std::size_t max_families = 1024;
/// The largest number of subtypes of one family (HAProxy: 16): one bit each in subtype_mask.
inline constexpr std::size_t max_subtypes = 32;

/// The id of a declared family: 0 .. max_families - 1, dense, assigned in declaration order,
/// stable for the life of the process.
using family_id = std::uint16_t;
/// A set of subtypes of one family: bit i is the subtype declared at index i.
using subtype_mask = std::uint32_t;

/// A family and a set of its subtypes: what an event is (exactly one subtype) or what a
/// subscription wants (any nonempty subset of one family).
///
/// A plain value (trivially copyable, 8 bytes) that does not refer to the registry: building,
/// copying and comparing one never looks anything up. The default-constructed type is *empty*
/// (family 0, no subtype): it matches nothing, and can be neither published nor subscribed to;
/// it only stands for "no type yet". An empty type of another family results from
/// remove_subtypes() taking every bit away, or from the two-argument constructor with mask 0.
/// Thread safety: a value type; distinct objects are independent. Allocation: none.
class event_type {
 public:
  /// The empty type: family 0, no subtype. Not publishable, not subscribable.
  /// Thread safety: any thread. Allocation: none. Errors: none.
  constexpr event_type() noexcept = default;

  /// The subtypes `subtypes` of family `family`. Nothing is checked against the registry:
  /// type_of() and type_from_name() are the checked ways to build a type.
  /// Thread safety: any thread. Allocation: none. Errors: none.
  constexpr event_type(family_id family, subtype_mask subtypes) noexcept
      : subtypes_(subtypes), family_(family) {}

  /// The family id. Thread safety: any thread. Allocation: none. Errors: none.
  [[nodiscard]] constexpr family_id family() const noexcept { return family_; }

  /// The subtype mask (bit i = subtype i). Thread safety: any thread. Allocation: none.
  /// Errors: none.
  [[nodiscard]] constexpr subtype_mask subtypes() const noexcept { return subtypes_; }

  /// True if no subtype bit is set. Thread safety: any thread. Allocation: none. Errors: none.
  [[nodiscard]] constexpr bool is_empty() const noexcept { return subtypes_ == 0; }

  /// True if exactly one subtype bit is set: what a published event must be.
  /// Thread safety: any thread. Allocation: none. Errors: none.
  [[nodiscard]] constexpr bool is_single() const noexcept { return std::has_single_bit(subtypes_); }

  /// True if `other` is of the same family and each of its subtypes is one of ours (a
  /// subscription of this type would receive every event of type `other`). An empty `other`
  /// of the same family is contained; nothing of another family is.
  /// Thread safety: any thread. Allocation: none. Errors: none.
  [[nodiscard]] constexpr bool contains(event_type other) const noexcept {
    return family_ == other.family_ && (other.subtypes_ & ~subtypes_) == 0;
  }

  /// Same family and same subtypes. Thread safety: any thread. Allocation: none.
  [[nodiscard]] constexpr bool operator==(const event_type&) const noexcept = default;

 private:
  subtype_mask subtypes_ = 0;
  family_id family_ = 0;
  // Explicit padding, always 0: with no undefined bytes the whole value is built in one
  // register (the compiler otherwise merges the fields into whatever the stack held).
  std::uint16_t zero_ = 0;
};

static_assert(std::is_trivially_copyable_v<event_type>);
static_assert(sizeof(event_type) == 8 && std::has_unique_object_representations_v<event_type>);

/// The union of the subtypes of `a` and `b`.
/// Thread safety: any thread. Handler context: yes. Blocking: no. Allocation: none.
/// Errors: errc::family_mismatch if `a` and `b` are of different families (the empty default
/// type is of family 0: to accumulate, start from `event_type(family, 0)`).
[[nodiscard]] inline result<event_type> combine(event_type a, event_type b) noexcept {
  if (a.family() != b.family()) {
    return unexpected(errc::family_mismatch);
  }
  return event_type(a.family(), a.subtypes() | b.subtypes());
}

/// The subtypes of `a` that are not in `b`; may be empty.
/// Thread safety: any thread. Handler context: yes. Blocking: no. Allocation: none.
/// Errors: errc::family_mismatch if `a` and `b` are of different families.
[[nodiscard]] inline result<event_type> remove_subtypes(event_type a, event_type b) noexcept {
  if (a.family() != b.family()) {
    return unexpected(errc::family_mismatch);
  }
  return event_type(a.family(), a.subtypes() & ~b.subtypes());
}

/// The family of `t` (the same as t.family()).
/// Thread safety: any thread. Allocation: none. Errors: none.
[[nodiscard]] constexpr family_id family_of(event_type t) noexcept { return t.family(); }

// ---- Declaring families ---------------------------------------------------------------------

namespace detail {
template <class T>
struct is_subtype_name_array : std::false_type {};
template <std::size_t N>
struct is_subtype_name_array<std::array<std::string_view, N>>
    : std::bool_constant<(N >= 1 && N <= max_subtypes)> {};
}  // namespace detail

/// What a C++ family declaration provides (see the example at the top of this file):
///   - `F::family_name`, convertible to std::string_view;
///   - `F::subtype`, an enumeration whose enumerator values are the bit indexes;
///   - `F::subtype_names`, a std::array<std::string_view, N> with 1 <= N <= max_subtypes, the
///     name of subtype i at index i;
///   - `F::safe_part`, copy-constructible: the part of the payload copied into a snapshot and
///     read by any thread at any later time;
///   - optionally `F::unsafe_part`: live references valid only during a sync call.
/// The names themselves are checked at run time, by family_id_of<F>().
template <class F>
concept family_declaration = requires {
  { F::family_name } -> std::convertible_to<std::string_view>;
  typename F::subtype;
  typename F::safe_part;
  F::subtype_names;
}
&&std::is_enum_v<typename F::subtype>&&
    detail::is_subtype_name_array<std::remove_cv_t<decltype(F::subtype_names)>>::value&&
        std::copy_constructible<typename F::safe_part>;

/// True if the family declaration F has an `unsafe_part` member type.
template <class F>
inline constexpr bool has_unsafe_part_v = requires {
  typename F::unsafe_part;
};

/// Declares the family `name` with the subtypes `subtype_names` (subtype i = bit i) and returns
/// its id. Declaring a name again with identical subtype names (same order) returns the
/// existing id, whoever declared it first (this function or family_id_of).
/// Thread safety: any thread; concurrent declarations are serialised, and concurrent
/// declarations of one name yield one id. Handler context: yes. Blocking: takes the registry
/// mutex for the duration of the declaration (lookups never wait for it). Allocation: one
/// record per new family, never freed. Ownership: the names are copied.
/// Errors: errc::malformed_name (a name not matching [A-Z][A-Z0-9]* for the family or
/// [A-Z0-9][A-Z0-9_]* for a subtype, or two equal subtype names); errc::too_many (more than
/// max_subtypes subtypes, or max_families families already declared); errc::invalid_argument
/// (no subtype at all, or the name is already declared with other subtype names);
/// errc::no_memory (the record could not be allocated).
[[nodiscard]] result<family_id> declare_family(
    std::string_view name, std::span<const std::string_view> subtype_names) noexcept;

namespace detail {
/// declare_family(), aborting with a message naming the family on any error.
[[nodiscard]] family_id declare_family_or_abort(
    std::string_view name, std::span<const std::string_view> subtype_names) noexcept;
/// Aborts: enumerator `value` of family `name` has no declared subtype name.
[[noreturn]] void subtype_out_of_range(std::string_view name, long long value) noexcept;

template <family_declaration F>
[[nodiscard]] constexpr subtype_mask subtype_bit(typename F::subtype s) noexcept {
  const auto index = static_cast<std::underlying_type_t<typename F::subtype>>(s);
  if (std::cmp_less(index, 0) || std::cmp_greater_equal(index, F::subtype_names.size()))
      [[unlikely]] {
    subtype_out_of_range(F::family_name, static_cast<long long>(index));
  }
  return subtype_mask{1} << static_cast<unsigned>(index);
}

/// The mask of the first `count` subtypes (count <= max_subtypes).
[[nodiscard]] constexpr subtype_mask first_subtypes(std::size_t count) noexcept {
  return count >= max_subtypes ? ~subtype_mask{0}
                               : (subtype_mask{1} << static_cast<unsigned>(count)) - 1;
}
}  // namespace detail

/// The id of the family declared by F, declaring it on the first call (through
/// declare_family, with F::family_name and F::subtype_names).
/// Thread safety: any thread; concurrent first calls yield one id. Handler context: yes.
/// Blocking: the first call takes the registry mutex; later calls are one load. Allocation:
/// the first call allocates the family's record. Errors: none returned. Misuse (an invalid
/// family or subtype name, a name already declared with other subtypes, the family table full,
/// or out of memory) aborts with a message naming the family.
template <family_declaration F>
[[nodiscard]] family_id family_id_of() noexcept {
  static const family_id id = detail::declare_family_or_abort(
      std::string_view(F::family_name), std::span<const std::string_view>(F::subtype_names));
  return id;
}

/// The type of family F with the given subtypes: `type_of<F>(F::subtype::down)` is the single
/// type of a published event, `type_of<F>(a, b)` the mask {a, b}, and `type_of<F>()` the
/// whole family (every declared subtype: the type of a subscription to all of F).
/// Thread safety: any thread. Handler context: yes. Blocking: as family_id_of<F>().
/// Allocation: as family_id_of<F>(). Errors: none returned. Misuse (an enumerator value with
/// no subtype name, or as family_id_of<F>()) aborts.
template <family_declaration F, class... Subtypes>
requires(std::same_as<Subtypes, typename F::subtype>&&...) [[nodiscard]] event_type
    type_of(Subtypes... subtypes) noexcept {
  if constexpr (sizeof...(Subtypes) == 0) {
    return event_type(family_id_of<F>(), detail::first_subtypes(F::subtype_names.size()));
  } else {
    const subtype_mask mask = (detail::subtype_bit<F>(subtypes) | ...);
    return event_type(family_id_of<F>(), mask);
  }
}

// ---- Names ----------------------------------------------------------------------------------

/// The type named by `name`: "SERVER" (the whole family), "SERVER_DOWN" (one subtype) or
/// "SERVER_UP|SERVER_DOWN" (several subtypes of one family; a bare family name among them
/// stands for the whole family, so "SERVER|SERVER_UP" is "SERVER"). Never returns an empty
/// type.
/// Thread safety: any thread. Handler context: yes. Blocking: never (lock-free lookups).
/// Allocation: none.
/// Errors: errc::malformed_name (empty text, an empty part as in "A||B" or "A|", characters
/// other than A-Z 0-9 '_' '|', a family part that does not start with a letter, a bare
/// "SERVER_", and every '#' form written by type_name); errc::unknown_name (a family or
/// subtype nobody declared); errc::family_mismatch (parts of different families).
[[nodiscard]] result<event_type> type_from_name(std::string_view name) noexcept;

/// The name of `t`: "SERVER" when its mask is every declared subtype of the family,
/// "SERVER_DOWN" for one subtype, "SERVER_UP|SERVER_DOWN" for several (ascending bit order).
/// type_from_name(type_name(t)) == t for every nonempty t of a declared family whose bits are
/// all declared. Anything else still gets a name, marked with '#': "FAMILY#<id>" stands for
/// an undeclared family (as in "FAMILY#7_#2|FAMILY#7_#3"), "<FAMILY>_#<bit>" for a bit with
/// no declared subtype ("SERVER_UP|SERVER_#12"), "<FAMILY>_#NONE" for an empty mask.
/// Thread safety: any thread. Handler context: yes. Blocking: never (lock-free lookups).
/// Allocation: the returned string. Errors: std::bad_alloc only.
[[nodiscard]] std::string type_name(event_type t);

/// The name of family `id`. The view stays valid for the life of the process.
/// Thread safety: any thread. Handler context: yes. Blocking: never. Allocation: none.
/// Errors: errc::unknown_name if no family has this id.
[[nodiscard]] result<std::string_view> family_name(family_id id) noexcept;

/// The id of the family named `name` ("SERVER").
/// Thread safety: any thread. Handler context: yes. Blocking: never. Allocation: none.
/// Errors: errc::malformed_name if `name` does not match [A-Z][A-Z0-9]*; errc::unknown_name
/// if no family has this name.
[[nodiscard]] result<family_id> family_from_name(std::string_view name) noexcept;

/// The number of families declared so far (ids 0 .. family_count() - 1 are declared). It only
/// grows.
/// Thread safety: any thread. Handler context: yes. Blocking: never. Allocation: none.
/// Errors: none.
[[nodiscard]] std::size_t family_count() noexcept;

/// The number of subtypes declared for family `id` (1 .. max_subtypes).
/// Thread safety: any thread. Handler context: yes. Blocking: never. Allocation: none.
/// Errors: errc::unknown_name if no family has this id.
[[nodiscard]] result<std::size_t> subtype_count(family_id id) noexcept;

}  // namespace herald
