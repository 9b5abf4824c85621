// herald-demo: output (the console shared by the progress line and the live table), latency
// histograms, and the summary table with its checks.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "herald/backpressure.hpp"

namespace herald_demo {

/// stdout shared by threads. On a terminal the progress line is redrawn in place (\r) and a
/// block of text printed meanwhile goes above it; elsewhere every line is a plain line.
class console {
 public:
  explicit console(bool tty) : tty_(tty) {}
  [[nodiscard]] bool is_tty() const noexcept { return tty_; }
  /// Replaces the progress line (terminal), or prints it as a line.
  void progress(std::string_view line);
  /// Prints `text` (whole lines) above the progress line.
  void block(std::string_view text);
  /// Ends the progress line, so that what follows starts on a fresh line.
  void end_progress();

 private:
  std::mutex mu_;
  bool tty_;
  std::string shown_;  // the progress line on screen (terminal only); guarded by mu_
};

/// A log-linear histogram of durations: 8 buckets per power of two (about 9% wide), from 1 ns
/// to about 2^40 ns. One writer at a time; merge() combines histograms.
class latency_histogram {
 public:
  void record(std::chrono::nanoseconds d) noexcept;
  void merge(const latency_histogram& o) noexcept;
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  /// The duration below which a fraction `q` (0..1) of the samples lie (a bucket's upper
  /// edge); nullopt without samples.
  [[nodiscard]] std::optional<std::chrono::nanoseconds> quantile(double q) const noexcept;

 private:
  static constexpr unsigned sub_bits = 3;
  static constexpr std::size_t buckets = 41 << sub_bits;
  [[nodiscard]] static std::size_t bucket_of(std::uint64_t ns) noexcept;
  [[nodiscard]] static std::uint64_t upper_edge(std::size_t bucket) noexcept;
  std::array<std::uint64_t, buckets> counts_{};
  std::uint64_t count_ = 0;
};

/// printf into a std::string (at most 1 KiB; longer text is cut).
[[nodiscard]] std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/// "850 ns", "12.4 us", "3.1 ms", "2.0 s".
[[nodiscard]] std::string format_duration(std::chrono::nanoseconds d);
/// 1234567 -> "1,234,567".
[[nodiscard]] std::string with_commas(std::uint64_t v);

/// One line of the summary table.
struct summary_row {
  std::string name;
  std::string mode;
  /// For async and queue subscriptions, herald's counters (summed over the subscriptions of
  /// the row). For a sync row, published is what the simulation published to the list while
  /// the handler was subscribed, delivered what the handler counted.
  herald::subscription_stats stats;
  /// Latency from publish to handling; empty for sync rows (inline in the publish).
  std::optional<latency_histogram> latency;
};

/// The result of the demo's self-checks: each check has a description and an outcome.
class check_list {
 public:
  void expect(bool ok, std::string what);
  [[nodiscard]] bool all_passed() const noexcept { return failed_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  /// One line per check ("ok" or "FAILED").
  [[nodiscard]] std::string render() const;

 private:
  std::vector<std::pair<bool, std::string>> items_;
  std::size_t failed_ = 0;
};

/// The summary table, followed by a line stating whether every row adds up
/// (published = delivered + dropped + discarded + queued). Adds one check per row to `checks`.
[[nodiscard]] std::string render_summary(const std::vector<summary_row>& rows, check_list& checks);

}  // namespace herald_demo
