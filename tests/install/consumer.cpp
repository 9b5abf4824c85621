// Uses the installed headers and library: a list filled and drained by two threads.
#include <herald/herald.hpp>

#include <cstdio>
#include <thread>
#include <vector>

namespace {
struct node : herald::mt_list_hook<> {
  int value = 0;
};
}  // namespace

int main() {
  herald::mt_list<node> list;
  std::vector<node> nodes(1000);
  std::thread producer([&] {
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      nodes[i].value = static_cast<int>(i);
      list.append(nodes[i]);
    }
  });
  producer.join();
  long sum = 0;
  for (auto& cur : list.for_each_locked()) {
    sum += cur->value;
    cur.erase();
  }
  const long expected = 999L * 1000L / 2;
  std::printf("herald install consumer: sum=%ld expected=%ld\n", sum, expected);
  return (sum == expected && list.is_empty_approx()) ? 0 : 1;
}
