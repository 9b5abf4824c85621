# Warning and sanitizer flags for herald's own targets. Both are INTERFACE targets that herald's
# targets link privately (through $<BUILD_INTERFACE:...>), so nothing here reaches the exported
# herald::herald or the flags of a project that uses herald.

add_library(herald_warnings INTERFACE)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(herald_warnings INTERFACE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wold-style-cast
    -Wnon-virtual-dtor -Woverloaded-virtual -Werror)
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(herald_warnings INTERFACE -Wthread-safety)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 reports impossible overlaps inside std::string at -O2/-O3 (GCC bug 105329).
    target_compile_options(herald_warnings INTERFACE -Wno-restrict)
  endif()
endif()

add_library(herald_sanitizers INTERFACE)
if(HERALD_SANITIZER)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "HERALD_SANITIZER needs GCC or Clang")
  endif()
  if("thread" IN_LIST HERALD_SANITIZER AND "address" IN_LIST HERALD_SANITIZER)
    message(FATAL_ERROR "HERALD_SANITIZER: 'thread' and 'address' cannot be combined")
  endif()
  list(JOIN HERALD_SANITIZER "," _herald_san)
  set(_herald_san_flags -fsanitize=${_herald_san} -fno-omit-frame-pointer -g)
  if("undefined" IN_LIST HERALD_SANITIZER)
    # Any undefined behaviour fails the test instead of printing a line nobody reads.
    list(APPEND _herald_san_flags -fno-sanitize-recover=all)
  endif()
  target_compile_options(herald_sanitizers INTERFACE ${_herald_san_flags})
  target_link_options(herald_sanitizers INTERFACE -fsanitize=${_herald_san})
  message(STATUS "herald: sanitizers: ${_herald_san}")
endif()
