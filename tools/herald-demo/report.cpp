#include "report.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace herald_demo {

// ---- console ----------------------------------------------------------------------------------

void console::progress(std::string_view line) {
  std::lock_guard lock(mu_);
  if (tty_) {
    shown_.assign(line);
    // \r back to the start, the line, then erase what a longer previous line left.
    std::fprintf(stdout, "\r%.*s\x1b[K", static_cast<int>(line.size()), line.data());
  } else {
    std::fprintf(stdout, "%.*s\n", static_cast<int>(line.size()), line.data());
  }
  std::fflush(stdout);
}

void console::block(std::string_view text) {
  std::lock_guard lock(mu_);
  if (tty_ && !shown_.empty()) {
    std::fputs("\r\x1b[K", stdout);
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (tty_ && !shown_.empty()) {
    std::fwrite(shown_.data(), 1, shown_.size(), stdout);
  }
  std::fflush(stdout);
}

void console::end_progress() {
  std::lock_guard lock(mu_);
  if (tty_ && !shown_.empty()) {
    std::fputc('\n', stdout);
    shown_.clear();
  }
  std::fflush(stdout);
}

// ---- latency_histogram -----------------------------------------------------------------------

// Values below 2^sub_bits have a bucket each; above, a power of two [2^e, 2^(e+1)) is split
// into 2^sub_bits buckets by the bits after the leading one.
std::size_t latency_histogram::bucket_of(std::uint64_t ns) noexcept {
  constexpr std::uint64_t linear = 1U << sub_bits;
  if (ns < linear) {
    return static_cast<std::size_t>(ns);
  }
  const unsigned e = static_cast<unsigned>(std::bit_width(ns)) - 1;  // >= sub_bits
  const std::uint64_t mantissa = (ns >> (e - sub_bits)) & (linear - 1);
  const std::size_t b = ((e - sub_bits + 1) << sub_bits) + static_cast<std::size_t>(mantissa);
  return std::min(b, buckets - 1);
}

std::uint64_t latency_histogram::upper_edge(std::size_t bucket) noexcept {
  constexpr std::uint64_t linear = 1U << sub_bits;
  if (bucket < linear) {
    return bucket + 1;
  }
  const unsigned e = static_cast<unsigned>(bucket >> sub_bits) + sub_bits - 1;
  const std::uint64_t mantissa = bucket & (linear - 1);
  return ((linear + mantissa + 1) << (e - sub_bits));
}

void latency_histogram::record(std::chrono::nanoseconds d) noexcept {
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0));
  ++counts_[bucket_of(ns)];
  ++count_;
}

void latency_histogram::merge(const latency_histogram& o) noexcept {
  for (std::size_t i = 0; i < buckets; ++i) {
    counts_[i] += o.counts_[i];
  }
  count_ += o.count_;
}

std::optional<std::chrono::nanoseconds> latency_histogram::quantile(double q) const noexcept {
  if (count_ == 0) {
    return std::nullopt;
  }
  // The smallest bucket whose cumulative count reaches ceil(q * count).
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < buckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::chrono::nanoseconds(static_cast<std::int64_t>(upper_edge(i)));
    }
  }
  return std::chrono::nanoseconds(static_cast<std::int64_t>(upper_edge(buckets - 1)));
}

// ---- formatting ------------------------------------------------------------------------------

std::string strprintf(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

std::string format_duration(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  char buf[32];
  if (ns < 1e3) {
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  } else if (ns < 1e6) {
    std::snprintf(buf, sizeof buf, ns < 1e4 ? "%.1f us" : "%.0f us", ns / 1e3);
  } else if (ns < 1e9) {
    std::snprintf(buf, sizeof buf, ns < 1e7 ? "%.1f ms" : "%.0f ms", ns / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", ns / 1e9);
  }
  return buf;
}

std::string with_commas(std::uint64_t v) {
  std::string digits = std::to_string(v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) {
      out += ',';
    }
    out += digits[i];
  }
  return out;
}

// ---- checks and the summary ------------------------------------------------------------------

void check_list::expect(bool ok, std::string what) {
  if (!ok) {
    ++failed_;
  }
  items_.emplace_back(ok, std::move(what));
}

std::string check_list::render() const {
  std::string out;
  for (const auto& [ok, what] : items_) {
    out += ok ? "  ok      " : "  FAILED  ";
    out += what;
    out += '\n';
  }
  return out;
}

std::string render_summary(const std::vector<summary_row>& rows, check_list& checks) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "  %-14s %-22s %10s %10s %9s %9s %7s %9s %9s\n", "subscription",
                "mode", "published", "delivered", "dropped", "discarded", "queued", "p50", "p99");
  out += line;
  std::size_t good = 0;
  std::vector<std::string> bad;
  for (const auto& r : rows) {
    const auto& s = r.stats;
    std::string p50 = "inline";
    std::string p99 = "inline";
    if (r.latency) {
      const auto q50 = r.latency->quantile(0.50);
      const auto q99 = r.latency->quantile(0.99);
      p50 = q50 ? format_duration(*q50) : "-";
      p99 = q99 ? format_duration(*q99) : "-";
    }
    std::snprintf(line, sizeof line, "  %-14s %-22s %10s %10s %9s %9s %7s %9s %9s\n",
                  r.name.c_str(), r.mode.c_str(), with_commas(s.published).c_str(),
                  with_commas(s.delivered).c_str(), with_commas(s.dropped()).c_str(),
                  with_commas(s.discarded).c_str(), with_commas(s.queued).c_str(), p50.c_str(),
                  p99.c_str());
    out += line;
    const std::uint64_t sum = s.delivered + s.dropped() + s.discarded + s.queued;
    const bool adds_up = s.published == sum;
    checks.expect(adds_up,
                  r.name + ": published " + std::to_string(s.published) +
                      " = delivered + dropped + discarded + queued = " + std::to_string(sum));
    if (adds_up) {
      ++good;
    } else {
      bad.push_back(r.name);
    }
  }
  if (bad.empty()) {
    std::snprintf(line, sizeof line,
                  "  every row adds up: published = delivered + dropped + discarded + queued "
                  "(%zu of %zu rows)\n",
                  good, rows.size());
    out += line;
  } else {
    out += "  ROWS THAT DO NOT ADD UP:";
    for (const auto& name : bad) {
      out += ' ';
      out += name;
    }
    out += '\n';
  }
  return out;
}

}  // namespace herald_demo
