// Shared by the stress tests: how much work to do, and how to wait for another thread. The base counts in the tests are sized for
// sanitizer builds (each operation 5 to 20 times slower); `optimised_build` lets an optimised
// uninstrumented build do more in the same time, and HERALD_STRESS_SCALE scales everything
// (e.g. 0.2 for a quick run, 10 for a soak).
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdlib>
#include <thread>

#include "herald/backoff.hpp"

namespace herald::test {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define HERALD_STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define HERALD_STRESS_SANITIZED 1
#endif
#endif

/// True in an optimised build without sanitizers.
#if defined(__OPTIMIZE__) && !defined(HERALD_STRESS_SANITIZED)
inline constexpr bool optimised_build = true;
#else
inline constexpr bool optimised_build = false;
#endif

/// HERALD_STRESS_SCALE (a positive number, default 1). Call it from the main thread only,
/// before workers start (getenv is not thread-safe against setenv).
inline double stress_scale() {
  const char* text = std::getenv("HERALD_STRESS_SCALE");  // NOLINT(concurrency-mt-unsafe)
  if (text == nullptr || *text == '\0') {
    return 1.0;
  }
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (end == text || !(value > 0.0)) {
    ADD_FAILURE() << "HERALD_STRESS_SCALE must be a positive number, got '" << text << "'";
    return 1.0;
  }
  return value;
}

/// Waits for `done()` to turn true: spins briefly, then yields the CPU on every try. Never
/// sleeps and never looks at a clock.
template <class Done>
void spin_until(Done done) {
  for (unsigned tries = 0; !done(); ++tries) {
    if (tries < 64) {
      herald::cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace herald::test
