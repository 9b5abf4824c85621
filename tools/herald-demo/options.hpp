// herald-demo: command line.
#pragma once

#include <cstdint>
#include <string>

namespace herald_demo {

struct options {
  double duration_s = 4.0;  ///< how long the publishers run
  unsigned servers = 32;    ///< servers alive at any time (removals are replaced)
  unsigned threads = 2;     ///< publisher threads; each owns a share of the servers
  double rate = 5000.0;     ///< events per second, all publishers together
  std::uint64_t seed = 0;   ///< 0: from the clock
  bool quick = false;       ///< a short run with smaller defaults (the CTest run)
  bool help = false;
};

/// Parses argv. On error returns false and sets `error` to a message for the user.
[[nodiscard]] bool parse_options(int argc, char** argv, options& out, std::string& error);

/// The --help text.
[[nodiscard]] std::string usage(const char* program);

}  // namespace herald_demo
