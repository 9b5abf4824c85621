// src/core/quiescence.hpp - the writer side of the grace-period domain (private to herald).
//
// A writer that unlinks something a publisher may still be reading either waits for a grace
// period (synchronize) or hands it to retire(): the object's reclaim function runs after a later
// grace period, from collect(). A grace period ends when every thread that was inside a read
// section when it began has left it. Writers inside a read section (a handler that
// unsubscribes) cannot wait, since they would wait for themselves or, across threads, for each
// other: they retire, and the next collect() outside a read section reclaims.
#pragma once

#include "herald/detail/quiescence.hpp"

namespace herald::detail {

/// Waits until every read section that was running when it was called has ended.
/// Must not be called from inside a read section (aborts: it would wait for itself).
/// Thread safety: any thread; grace periods are serialised. Blocking: yes, on publishers.
void synchronize() noexcept;

/// Queues `node` for reclamation after a later grace period. Thread safety: any thread,
/// including inside a read section. Blocking: a short mutex. Allocation: none.
void retire(retire_node& node) noexcept;

/// Outside a read section: waits for a grace period and runs every node retired before the
/// call; returns true. With `always_wait`, waits for a grace period even if nothing is retired
/// (so that the caller knows every publish that began before the call has ended). Inside a
/// read section: does nothing and returns false.
bool collect(bool always_wait = false) noexcept;

/// Like collect(), but never waits: reclaims what was retired only if no thread is inside a
/// read section right now (a grace period has then already elapsed); otherwise leaves it for
/// a later call. Returns true if it reclaimed (or there was nothing to reclaim).
bool try_collect() noexcept;

/// Whether readers use compiler-only barriers paired with membarrier() (for diagnostics).
bool asymmetric_fences_in_use() noexcept;

}  // namespace herald::detail
