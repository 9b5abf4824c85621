// herald/version.hpp - the library version, for #if checks and for logs.
#pragma once

#define HERALD_VERSION_MAJOR 0
#define HERALD_VERSION_MINOR 1
#define HERALD_VERSION_PATCH 0

namespace herald {
/// "MAJOR.MINOR.PATCH" of the headers in use. Thread safety: a constant.
inline constexpr const char* version_string = "0.1.0";
}  // namespace herald
