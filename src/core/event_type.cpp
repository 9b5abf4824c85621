// The family registry behind herald/event_type.hpp, and the text forms of event types.
//
// The registry is one constant-initialised global (no static-initialisation order to worry
// about) that is never destroyed (declarations and lookups keep working during static
// destruction). Its records are allocated once and never freed; they stay reachable from the
// global's tables, so LeakSanitizer does not count them as leaks.
#include "herald/event_type.hpp"

#include <array>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace herald {
namespace {

// ---- Name grammar -----------------------------------------------------------------------------

constexpr bool is_upper(char c) noexcept { return c >= 'A' && c <= 'Z'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// [A-Z][A-Z0-9]*
constexpr bool is_family_name(std::string_view s) noexcept {
  if (s.empty() || !is_upper(s.front())) {
    return false;
  }
  for (char c : s) {
    if (!is_upper(c) && !is_digit(c)) {
      return false;
    }
  }
  return true;
}

// [A-Z0-9][A-Z0-9_]*
constexpr bool is_subtype_name(std::string_view s) noexcept {
  if (s.empty() || s.front() == '_') {
    return false;
  }
  for (char c : s) {
    if (!is_upper(c) && !is_digit(c) && c != '_') {
      return false;
    }
  }
  return true;
}

// One part of a type name: FAMILY or FAMILY_SUBTYPE (split at the first '_').
struct name_part {
  std::string_view family;
  std::string_view subtype;  // empty for a bare family name
  bool whole_family = false;
};

constexpr bool parse_part(std::string_view text, name_part& out) noexcept {
  const std::size_t sep = text.find('_');
  if (sep == std::string_view::npos) {
    out = {text, {}, true};
    return is_family_name(text);
  }
  out = {text.substr(0, sep), text.substr(sep + 1), false};
  return is_family_name(out.family) && is_subtype_name(out.subtype);
}

static_assert(is_family_name("SERVER") && is_family_name("G123") && !is_family_name("1A"));
static_assert(!is_family_name("SERVER_DOWN") && !is_family_name("") && !is_family_name("Server"));
static_assert(is_subtype_name("DOWN") && is_subtype_name("ADDR_CHANGE") && is_subtype_name("4"));
static_assert(!is_subtype_name("_X") && !is_subtype_name("") && !is_subtype_name("up"));

// Calls fn(part) for each '|'-separated part of text; stops at the first false and returns it.
template <class Fn>
bool for_each_part(std::string_view text, Fn&& fn) {
  for (;;) {
    const std::size_t bar = text.find('|');
    if (!fn(text.substr(0, bar))) {
      return false;
    }
    if (bar == std::string_view::npos) {
      return true;
    }
    text.remove_prefix(bar + 1);
  }
}

// ---- Registry -----------------------------------------------------------------------------------

// An immutable description of a declared family. Written once by the declaring thread before
// it is published (see registry), read by any thread afterwards, never freed.
struct family_record {
  family_id id = 0;
  subtype_mask all = 0;  // every declared subtype
  std::string name;
  std::vector<std::string> subtypes;

  [[nodiscard]] bool same_subtypes(std::span<const std::string_view> names) const noexcept {
    if (names.size() != subtypes.size()) {
      return false;
    }
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] != subtypes[i]) {
        return false;
      }
    }
    return true;
  }
  // The index of subtype `s`, or max_subtypes if there is none.
  [[nodiscard]] std::size_t subtype_index(std::string_view s) const noexcept {
    for (std::size_t i = 0; i < subtypes.size(); ++i) {
      if (subtypes[i] == s) {
        return i;
      }
    }
    return max_subtypes;
  }
};

// Open addressing with linear probing; twice as many slots as families, so a probe sequence
// always ends on an empty slot.
constexpr std::size_t name_index_size = 2 * max_families;
static_assert(std::has_single_bit(name_index_size));

std::size_t hash_name(std::string_view s) noexcept {  // FNV-1a
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return static_cast<std::size_t>(h ^ (h >> 32));
}

class registry {
 public:
  constexpr registry() noexcept = default;

  // Lock-free: acquire loads (pair with the release stores in declare()).
  [[nodiscard]] const family_record* by_id(family_id id) const noexcept {
    if (id >= max_families) {
      return nullptr;
    }
    return by_id_[id].load(std::memory_order_acquire);
  }

  // Lock-free: acquire loads (pair with the release stores in declare()). Entries are never
  // removed, so a probe that meets an empty slot may stop: the name is not (yet) declared.
  [[nodiscard]] const family_record* by_name(std::string_view name) const noexcept {
    std::size_t i = hash_name(name) & (name_index_size - 1);
    for (std::size_t probes = 0; probes < name_index_size; ++probes) {
      const family_record* r = by_name_[i].load(std::memory_order_acquire);
      if (r == nullptr) {
        return nullptr;
      }
      if (r->name == name) {
        return r;
      }
      i = (i + 1) & (name_index_size - 1);
    }
    return nullptr;
  }

  [[nodiscard]] std::size_t count() const noexcept {
    // Pairs with the release store in declare(): ids below the count have published records.
    return count_.load(std::memory_order_acquire);
  }

  [[nodiscard]] result<family_id> declare(std::string_view name,
                                          std::span<const std::string_view> subtypes) noexcept {
    if (subtypes.size() > max_subtypes) {
      return unexpected(errc::too_many);
    }
    if (subtypes.empty()) {
      return unexpected(errc::invalid_argument);
    }
    if (!is_family_name(name)) {
      return unexpected(errc::malformed_name);
    }
    for (std::size_t i = 0; i < subtypes.size(); ++i) {
      if (!is_subtype_name(subtypes[i])) {
        return unexpected(errc::malformed_name);
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (subtypes[j] == subtypes[i]) {
          return unexpected(errc::malformed_name);
        }
      }
    }

    const std::lock_guard lock(mutex_);
    if (const family_record* existing = by_name(name); existing != nullptr) {
      if (!existing->same_subtypes(subtypes)) {
        return unexpected(errc::invalid_argument);
      }
      return existing->id;
    }
    // Only written under mutex_, which we hold: relaxed is enough to read our own writes.
    const std::size_t n = count_.load(std::memory_order_relaxed);
    if (n >= max_families) {
      return unexpected(errc::too_many);
    }
    family_record* rec = nullptr;
    try {
      rec = new family_record;
      rec->id = static_cast<family_id>(n);
      rec->all = detail::first_subtypes(subtypes.size());
      rec->name.assign(name);
      rec->subtypes.reserve(subtypes.size());
      for (std::string_view s : subtypes) {
        rec->subtypes.emplace_back(s);
      }
    } catch (const std::bad_alloc&) {
      delete rec;
      return unexpected(errc::no_memory);
    }
    // Publish: each release store pairs with the acquire loads in by_id(), by_name() and
    // count(), so whoever sees the pointer (or the count) sees the filled record.
    by_id_[n].store(rec, std::memory_order_release);
    std::size_t i = hash_name(name) & (name_index_size - 1);
    while (by_name_[i].load(std::memory_order_relaxed) != nullptr) {  // written under mutex_
      i = (i + 1) & (name_index_size - 1);
    }
    by_name_[i].store(rec, std::memory_order_release);
    count_.store(n + 1, std::memory_order_release);
    return rec->id;
  }

 private:
  std::mutex mutex_;  // serialises declare(); lookups never take it
  std::atomic<std::size_t> count_{0};
  std::array<std::atomic<const family_record*>, max_families> by_id_{};
  std::array<std::atomic<const family_record*>, name_index_size> by_name_{};
};

// Constant-initialised and never destroyed: usable from any static constructor or destructor.
union registry_holder {
  constexpr registry_holder() noexcept : value() {}
  ~registry_holder() {}  // NOLINT: deliberately does not destroy `value`
  registry value;
};
constinit registry_holder the_registry;

registry& reg() noexcept { return the_registry.value; }

}  // namespace

// ---- Declarations -----------------------------------------------------------------------------

result<family_id> declare_family(std::string_view name,
                                 std::span<const std::string_view> subtype_names) noexcept {
  return reg().declare(name, subtype_names);
}

namespace detail {

family_id declare_family_or_abort(std::string_view name,
                                  std::span<const std::string_view> subtype_names) noexcept {
  const result<family_id> id = declare_family(name, subtype_names);
  if (id.has_value()) [[likely]] {
    return *id;
  }
  const char* why = "";
  switch (id.error()) {
    case errc::malformed_name:
      why =
          "family names must match [A-Z][A-Z0-9]*, subtype names [A-Z0-9][A-Z0-9_]*, "
          "without duplicates";
      break;
    case errc::too_many:
      why = "more than 32 subtypes, or the table of 1024 families is full";
      break;
    case errc::invalid_argument:
      why = "a family of this name is already declared with other subtype names";
      break;
    case errc::no_memory:
      why = "out of memory";
      break;
    default:
      break;
  }
  const std::string_view code = to_string(id.error());
  char what[512];
  std::snprintf(what, sizeof what, "cannot declare event family \"%.*s\": %.*s (%s)",
                static_cast<int>(name.size() > 200 ? 200 : name.size()), name.data(),
                static_cast<int>(code.size()), code.data(), why);
  HERALD_ASSERT(false, what);
  return 0;  // not reached
}

void subtype_out_of_range(std::string_view name, long long value) noexcept {
  char what[320];
  std::snprintf(what, sizeof what,
                "event family \"%.*s\": subtype enumerator value %lld has no declared name",
                static_cast<int>(name.size() > 200 ? 200 : name.size()), name.data(), value);
  contract_violation(__FILE__, __LINE__, what);
}

}  // namespace detail

// ---- Names ----------------------------------------------------------------------------------

result<event_type> type_from_name(std::string_view name) noexcept {
  if (name.empty()) {
    return unexpected(errc::malformed_name);
  }
  // Syntax first, so that a malformed text is reported as such whatever it names.
  name_part part;
  if (!for_each_part(name, [&](std::string_view text) { return parse_part(text, part); })) {
    return unexpected(errc::malformed_name);
  }
  const family_record* family = nullptr;
  subtype_mask mask = 0;
  errc error{};
  for_each_part(name, [&](std::string_view text) {
    (void)parse_part(text, part);
    const family_record* rec = reg().by_name(part.family);
    if (rec == nullptr) {
      error = errc::unknown_name;
      return false;
    }
    if (family != nullptr && family != rec) {
      error = errc::family_mismatch;
      return false;
    }
    family = rec;
    if (part.whole_family) {
      mask |= rec->all;
      return true;
    }
    const std::size_t index = rec->subtype_index(part.subtype);
    if (index >= rec->subtypes.size()) {
      error = errc::unknown_name;
      return false;
    }
    mask |= subtype_mask{1} << index;
    return true;
  });
  if (error != errc{}) {
    return unexpected(error);
  }
  return event_type(family->id, mask);
}

std::string type_name(event_type t) {
  const family_record* rec = reg().by_id(t.family());
  std::string family;
  if (rec != nullptr) {
    family = rec->name;
  } else {
    family = "FAMILY#" + std::to_string(t.family());
  }
  if (rec != nullptr && t.subtypes() == rec->all) {
    return family;
  }
  if (t.subtypes() == 0) {
    return family + "_#NONE";
  }
  std::string out;
  for (std::size_t bit = 0; bit < max_subtypes; ++bit) {
    if ((t.subtypes() & (subtype_mask{1} << bit)) == 0) {
      continue;
    }
    if (!out.empty()) {
      out += '|';
    }
    out += family;
    out += '_';
    if (rec != nullptr && bit < rec->subtypes.size()) {
      out += rec->subtypes[bit];
    } else {
      out += '#';
      out += std::to_string(bit);
    }
  }
  return out;
}

result<std::string_view> family_name(family_id id) noexcept {
  const family_record* rec = reg().by_id(id);
  if (rec == nullptr) {
    return unexpected(errc::unknown_name);
  }
  return std::string_view(rec->name);
}

result<family_id> family_from_name(std::string_view name) noexcept {
  if (!is_family_name(name)) {
    return unexpected(errc::malformed_name);
  }
  const family_record* rec = reg().by_name(name);
  if (rec == nullptr) {
    return unexpected(errc::unknown_name);
  }
  return rec->id;
}

std::size_t family_count() noexcept { return reg().count(); }

result<std::size_t> subtype_count(family_id id) noexcept {
  const family_record* rec = reg().by_id(id);
  if (rec == nullptr) {
    return unexpected(errc::unknown_name);
  }
  return rec->subtypes.size();
}

}  // namespace herald
