// herald/asio.hpp - run herald tasks on an asio::io_context the program already has.
//
// What it is
//   A header-only adapter: asio_executor(ctx) returns an executor_ref whose post() hands the
//   task to asio::post(ctx, ...); the io_context then runs task::execute(t) on whichever thread
//   calls ctx.run() (or poll(), run_one(), ...). Bind tasks to it (task's constructor,
//   task::rebind) and herald's asynchronous work runs inside the program's event loop, next to
//   its sockets and timers, instead of on a herald::scheduler's workers.
//
// Requirements
//   Standalone asio (Debian: libasio-dev, header <asio.hpp>; scripts/install-deps.sh installs
//   it). Debian's asio defines ASIO_STANDALONE by itself in C++11 and later; with Boost.Asio
//   instead, include this header only if <asio/...> resolves to standalone asio. herald's
//   library does not need asio: only code that includes this header does.
//
// Semantics
//   - The task state machine is the same as on a scheduler: a wake-up during a run makes one
//     more run after it, wake-ups while queued are merged, and a task never runs on two
//     threads at once, even when several threads run the io_context.
//   - The placement (run_on) is ignored: an io_context has no thread groups. Every task runs
//     on some thread running the io_context.
//   - Each post() asks asio to allocate one handler (asio recycles these per thread, so a warm
//     loop usually allocates nothing). If that allocation throws, post() is noexcept and the
//     program terminates: a wake-up is never silently lost.
//
// Lifetimes and hazards
//   - The io_context must outlive every task bound to it, and must be run by someone until
//     every woken task has run: a task woken and never run holds its reference forever (a
//     tasklet-like owner never frees it). Stopping or destroying the io_context with handlers
//     still queued drops those runs: destroy the tasks' owners first, or run the context
//     until idle (e.g. ctx.restart(); ctx.run(); after the last wake-up) before destroying it.
//   - asio_executor() stores only the address of `ctx`: it does not keep it alive and takes
//     no work guard. A context whose run() finds no work returns; keep it running with
//     asio::make_work_guard(ctx) while wake-ups may still come.
//
// Memory ordering
//   asio::post and the io_context's dequeue synchronise (a mutex or its equivalent), so the
//   wake-up happens before the run it causes; the task's own state transitions order
//   consecutive runs (herald/scheduler.hpp).
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include "herald/scheduler.hpp"

namespace herald {

namespace detail {

// executor_ref::post_fn for an asio::io_context (see asio_executor()).
inline void asio_post(void* self, task& t, run_on /*where: ignored*/) noexcept {
  auto& ctx = *static_cast<asio::io_context*>(self);
  task* pt = &t;  // the handler must not touch *pt after execute(): it may be gone
  asio::post(ctx, [pt] { task::execute(*pt); });
}

}  // namespace detail

/// An executor_ref that runs tasks on `ctx`, through asio::post (see the file comment).
/// Thread safety: any thread; the returned executor_ref may be used from any thread.
/// Handler context: allowed. Blocking: never (post() takes asio's queue lock briefly).
/// Allocation: none here; each post() allocates one asio handler (recycled by asio).
/// Ownership: `ctx` is borrowed: it must outlive every task bound to the executor and be run
/// until every woken task has run. Errors: none; out of memory in post() terminates.
/// Ordering: tasks run in the order asio runs posted handlers (FIFO for one thread running
/// the context).
[[nodiscard]] inline executor_ref asio_executor(asio::io_context& ctx) noexcept {
  return executor_ref(&ctx, &detail::asio_post);
}

}  // namespace herald
