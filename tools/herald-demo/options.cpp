#include "options.hpp"

#include <charconv>
#include <cmath>
#include <optional>
#include <string_view>
#include <system_error>

namespace herald_demo {
namespace {

std::optional<double> to_double(std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

std::optional<std::uint64_t> to_unsigned(std::string_view text) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return v;
}

}  // namespace

std::string usage(const char* program) {
  std::string u = "usage: ";
  u += program;
  u += R"( [options]

A simulated load balancer publishing HAProxy-style SERVER events (ADD, DEL, UP, DOWN, STATE,
ADMIN, CHECK, INETADDR) through herald, to subscribers in every delivery mode. Ends with a
table per subscription and checks that the counts add up (exit 1 if they do not).

  --duration SECONDS   how long the publishers run (default 4)
  --servers N          servers (default 32; 1..4096)
  --threads N          publisher threads (default 2; 1..64)
  --rate EVENTS        events per second, all publishers together (default 5000; 1..2000000)
  --seed N             random seed (default: from the clock)
  --quick              a short run: 1 s, 12 servers, 2000 events/s (explicit options win)
  --help               this text
)";
  return u;
}

bool parse_options(int argc, char** argv, options& out, std::string& error) {
  options o;
  std::optional<double> duration;
  std::optional<double> rate;
  std::optional<std::uint64_t> servers;
  std::optional<std::uint64_t> threads;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto flag = [&](std::string_view name) {
      if (arg != name) {
        return false;
      }
      if (has_value) {
        error = std::string(name) + " takes no value";
      }
      return true;
    };
    auto take_value = [&]() -> bool {
      if (has_value) {
        return true;
      }
      if (i + 1 >= argc) {
        error = std::string(arg) + " needs a value";
        return false;
      }
      value = argv[++i];
      return true;
    };
    if (flag("--help") || flag("-h")) {
      o.help = true;
    } else if (flag("--quick")) {
      o.quick = true;
    } else if (arg == "--duration" || arg == "--rate") {
      if (!take_value()) {
        return false;
      }
      const auto v = to_double(value);
      const bool is_duration = arg == "--duration";
      const double lo = is_duration ? 0.1 : 1.0;
      const double hi = is_duration ? 3600.0 : 2e6;
      if (!v || *v < lo || *v > hi) {
        error = std::string(arg) + ": '" + std::string(value) + "' is not a number from " +
                (is_duration ? "0.1 to 3600" : "1 to 2000000");
        return false;
      }
      (is_duration ? duration : rate) = *v;
    } else if (arg == "--servers" || arg == "--threads" || arg == "--seed") {
      if (!take_value()) {
        return false;
      }
      const auto v = to_unsigned(value);
      if (arg == "--seed") {
        if (!v) {
          error = "--seed: '" + std::string(value) + "' is not an unsigned integer";
          return false;
        }
        o.seed = *v;
        continue;
      }
      const bool is_servers = arg == "--servers";
      const std::uint64_t hi = is_servers ? 4096 : 64;
      if (!v || *v < 1 || *v > hi) {
        error = std::string(arg) + ": '" + std::string(value) + "' is not an integer from 1 to " +
                std::to_string(hi);
        return false;
      }
      (is_servers ? servers : threads) = *v;
    } else {
      error = "unknown option '" + std::string(argv[i]) + "'";
      return false;
    }
    if (!error.empty()) {
      return false;
    }
  }
  if (o.quick) {
    o.duration_s = 1.0;
    o.servers = 12;
    o.rate = 2000.0;
  }
  o.duration_s = duration.value_or(o.duration_s);
  o.rate = rate.value_or(o.rate);
  o.servers = static_cast<unsigned>(servers.value_or(o.servers));
  o.threads = static_cast<unsigned>(threads.value_or(o.threads));
  out = o;
  return true;
}

}  // namespace herald_demo
