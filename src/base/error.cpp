// herald::errc's error category and the contract-violation reporter.
#include "herald/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

namespace herald {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "herald"; }
  std::string message(int code) const override {
    switch (static_cast<errc>(code)) {
      case errc::duplicate_id:
        return "a subscription with this id already exists in the list";
      case errc::list_destroyed:
        return "the subscription list was destroyed";
      case errc::not_found:
        return "no such subscription (unknown id, or the subscription has ended)";
      case errc::family_mismatch:
        return "the event types belong to different families";
      case errc::unknown_name:
        return "no event family or subtype has this name";
      case errc::malformed_name:
        return "malformed event type name";
      case errc::no_memory:
        return "out of memory";
      case errc::shutting_down:
        return "the bus is shutting down";
      case errc::too_many:
        return "a fixed limit was reached";
      case errc::invalid_argument:
        return "argument out of range";
      case errc::no_codec:
        return "the family declared no codec";
    }
    return "unknown herald error " + std::to_string(code);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const category instance;
  return instance;
}

std::string_view to_string(errc e) noexcept {
  switch (e) {
    case errc::duplicate_id:
      return "duplicate_id";
    case errc::list_destroyed:
      return "list_destroyed";
    case errc::not_found:
      return "not_found";
    case errc::family_mismatch:
      return "family_mismatch";
    case errc::unknown_name:
      return "unknown_name";
    case errc::malformed_name:
      return "malformed_name";
    case errc::no_memory:
      return "no_memory";
    case errc::shutting_down:
      return "shutting_down";
    case errc::too_many:
      return "too_many";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::no_codec:
      return "no_codec";
  }
  return "unknown";
}

namespace detail {
void contract_violation(const char* file, int line, const char* what) noexcept {
  std::fprintf(stderr, "herald: misuse at %s:%d: %s\n", file, line, what);
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

}  // namespace herald
