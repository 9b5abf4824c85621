# Standalone asio for herald/asio.hpp (Debian: libasio-dev; scripts/install-deps.sh installs
# it). herald's library does not need asio, so it is optional: without it the header check
# skips herald/asio.hpp and the asio test and example are not built.
# Defines `herald_asio`, a private INTERFACE target (never exported) that carries asio's
# include directory; HERALD_HAVE_ASIO tells whether it was found.
include_guard(GLOBAL)

find_path(HERALD_ASIO_INCLUDE_DIR asio.hpp DOC "Standalone asio's include directory")
if(HERALD_ASIO_INCLUDE_DIR)
  set(HERALD_HAVE_ASIO TRUE)
  add_library(herald_asio INTERFACE)
  # SYSTEM: asio's own headers are not held to herald's warning flags.
  target_include_directories(herald_asio SYSTEM INTERFACE ${HERALD_ASIO_INCLUDE_DIR})
  # Debian's asio defines ASIO_STANDALONE itself in C++11 and later; say it for other copies.
  target_compile_definitions(herald_asio INTERFACE ASIO_STANDALONE)
  target_link_libraries(herald_asio INTERFACE Threads::Threads)
  if("thread" IN_LIST HERALD_SANITIZER AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # asio's handler completion uses std::atomic_thread_fence, which ThreadSanitizer does not
    # model; GCC 12 warns about it (-Wtsan), and -Werror would make that fatal. asio's queue
    # itself is mutex-protected, which TSan does see.
    target_compile_options(herald_asio INTERFACE -Wno-tsan)
  endif()
else()
  set(HERALD_HAVE_ASIO FALSE)
  message(STATUS "herald: standalone asio not found (libasio-dev): herald/asio.hpp is not "
    "checked, its test and example are not built")
endif()
