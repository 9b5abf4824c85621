// tests/unit/test_support.hpp - small helpers shared by the unit tests of async delivery:
// waiting for a condition without hanging, a gate a handler can wait on, and an executor whose
// tasks run only when the test runs them. Header-only; each test includes it once.
#pragma once

#include <gtest/gtest.h>
#include <herald/scheduler.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>

namespace herald_test {

// Polls `done` until true; fails the test (instead of hanging) after a long deadline, generous
// enough for sanitizer builds on a loaded machine.
template <class Done>
bool wait_for(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "condition not reached within 60 s";
      return false;
    }
    std::this_thread::yield();
  }
  return true;
}

// A gate a handler can wait on until the test opens it.
class gate {
 public:
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return open_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

// A user executor: posted tasks run only when the test calls run_all() (on its own thread).
struct manual_executor {
  std::mutex m;
  std::deque<herald::task*> tasks;
  static void post(void* self, herald::task& t, herald::run_on) noexcept {
    auto& ex = *static_cast<manual_executor*>(self);
    std::lock_guard lock(ex.m);
    ex.tasks.push_back(&t);
  }
  herald::executor_ref ref() { return herald::executor_ref(this, &manual_executor::post); }
  // Runs the posted tasks (and those they post) until none is left; returns how many ran.
  std::size_t run_all() {
    std::size_t n = 0;
    for (;;) {
      herald::task* t = nullptr;
      {
        std::lock_guard lock(m);
        if (tasks.empty()) {
          return n;
        }
        t = tasks.front();
        tasks.pop_front();
      }
      herald::task::execute(*t);
      ++n;
    }
  }
};

}  // namespace herald_test
