// herald/version.hpp - the library version, for #if checks and for logs. CMake checks at
// configure time that these numbers match the project version.
#pragma once

#define HERALD_VERSION_MAJOR 0
#define HERALD_VERSION_MINOR 1
#define HERALD_VERSION_PATCH 0

#define HERALD_DETAIL_STR2(x) #x
#define HERALD_DETAIL_STR(x) HERALD_DETAIL_STR2(x)

namespace herald {
/// "MAJOR.MINOR.PATCH" of the headers in use. Thread safety: a constant.
inline constexpr const char* version_string =
    HERALD_DETAIL_STR(HERALD_VERSION_MAJOR) "." HERALD_DETAIL_STR(
        HERALD_VERSION_MINOR) "." HERALD_DETAIL_STR(HERALD_VERSION_PATCH);
}  // namespace herald
