// Subscription lists, subscriptions and the bus: everything but the inline publish path.
//
// Writers serialise on the list's mutex, rebuild the snapshot of the one family they change,
// publish it with a release store and retire the old pieces (src/core/quiescence.hpp). A
// subscription ends under the mutex (ended flag, out of the id map and member list); its
// handler is destroyed after the next grace period.
#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <unordered_map>
#include <thread>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/internal.hpp"
#include "core/quiescence.hpp"
#include "herald/bus.hpp"

namespace herald {
namespace detail {

constinit directory destroyed_directory{{}, 0, dir_ended};
constinit directory shutdown_directory{{}, 0, dir_ended};
constinit const sub_array empty_array{};
constinit const family_slot empty_slot{};

result<std::size_t> publish_unindexed(const list_core& l, const directory* d, event_type type,
                                      const void* safe, const payload_ops& ops,
                                      bool outermost) noexcept {
  if (d == &destroyed_directory) {
    return unexpected(errc::list_destroyed);
  }
  if (d == &shutdown_directory) {
    return unexpected(errc::shutting_down);
  }
  if (d->wildcard->size == 0) {
    return std::size_t{0};  // a live list where nobody ever subscribed to this family
  }
  return publish_rest(l, &empty_array, d->wildcard, type, safe, ops, outermost);
}

result<std::size_t> publish_rest(const list_core& l, const sub_array* family,
                                 const sub_array* wildcard, event_type type, const void* safe,
                                 const payload_ops& ops, bool outermost) noexcept {
  std::size_t called = 0;
  sub_core* const* wild = wildcard->items();
  for (std::uint32_t i = 0; i < wildcard->sync_count; ++i) {
    sub_core& s = *wild[i];
    if (sub_callable(s)) {
      s.invoke_any(s, type, safe, ops);
      ++called;
    }
  }
  const std::span<sub_core* const> family_deferred(family->items() + family->sync_count,
                                                   family->size - family->sync_count);
  const std::span<sub_core* const> wild_deferred(wild + wildcard->sync_count,
                                                 wildcard->size - wildcard->sync_count);
  if (family_deferred.empty() && wild_deferred.empty()) {
    return called;
  }
  auto queued = publish_deferred(l, family_deferred, wild_deferred, type, safe, ops, outermost);
  if (!queued) {
    return unexpected(queued.error());
  }
  return called + *queued;
}

result<std::size_t> publish_nested(const list_core& l, event_type type, unsigned bit,
                                   const void* safe, void* unsafe,
                                   const payload_ops& ops) noexcept {
  const bool outermost = !in_read_section();  // a thread's first publish, not a handler's
  read_guard guard;
  count_publish(*tls_reader.record, type.family());
  const directory* d = l.dir.load(std::memory_order_acquire);
  if (type.family() >= d->families) {
    return publish_unindexed(l, d, type, safe, ops, outermost);
  }
  return call_matching(l, d, type, bit, safe, unsafe, ops, outermost);
}

namespace {

// The snapshot of an empty list. Never retired.
constinit directory empty_directory{};

}  // namespace

// ---- Reference counts --------------------------------------------------------------------

void bus_release(bus_core* b) noexcept {
  // acq_rel: the last owner sees every other owner's writes before deleting.
  if (b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    delete b;
  }
}

void list_release(list_core* l) noexcept {
  if (l->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    bus_release(l->bus);
    delete static_cast<list_state*>(l->state);
    delete l;
  }
}

void sub_release(sub_core* s) noexcept {
  if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    list_core* l = s->list;
    free_sub(s);
    list_release(l);
  }
}

namespace {

// ---- Snapshot pieces ---------------------------------------------------------------------

template <class Piece>
void reclaim_piece(retire_node* n) noexcept {
  Piece* p = static_cast<Piece*>(n->owner);
  p->~Piece();
  ::operator delete(static_cast<void*>(p));
}

template <class Piece>
Piece* allocate_piece(std::size_t trailing_pointers) noexcept {
  void* mem = ::operator new(sizeof(Piece) + trailing_pointers * sizeof(void*), std::nothrow);
  if (mem == nullptr) {
    return nullptr;
  }
  Piece* p = ::new (mem) Piece{};
  p->retire.reclaim = &reclaim_piece<Piece>;
  p->retire.owner = p;
  return p;
}

void free_piece(retire_node& n) noexcept { n.reclaim(&n); }

// Retires a slot and its arrays, leaving the sentinels alone.
void retire_slot(const family_slot* slot) noexcept {
  if (slot == &empty_slot) {
    return;
  }
  auto* s = const_cast<family_slot*>(slot);
  for (const sub_array* a : s->by_bit) {
    if (a != &empty_array) {
      retire(const_cast<sub_array*>(a)->retire);
    }
  }
  retire(s->retire);
}

void free_slot(family_slot* slot) noexcept {
  for (const sub_array* a : slot->by_bit) {
    if (a != &empty_array) {
      free_piece(const_cast<sub_array*>(a)->retire);
    }
  }
  free_piece(slot->retire);
}

// The subscription's membership ends, a grace period after it was ended: no publish can reach
// it any more. Sync: destroy the handler. Async and queue: queue END behind the events already
// queued and notify the consumer (which destroys the handler, or pops END). Then drop the
// membership reference.
void reclaim_sub(retire_node* n) noexcept {
  sub_core* s = static_cast<sub_core*>(n->owner);
  if (s->deferred != nullptr) {
    deferred_core& d = *s->deferred;
    // relaxed: taking a reference from one we hold. It keeps s and d alive until the
    // notification returned, even if the consumer reaches END and drops its own at once.
    s->refs.fetch_add(1, std::memory_order_relaxed);
    d.end_queued.store(true, std::memory_order_relaxed);
    d.end_notifier.store(std::this_thread::get_id(), std::memory_order_relaxed);
    d.queue.push(d.end_node);
    notify_consumer(d);
    // release: a consumer that sees it (acquire) knows no notification of this queue follows.
    d.end_notified.store(true, std::memory_order_release);
    sub_release(s);
  } else if (s->handler != nullptr) {
    s->destroy(s->handler);
    s->handler = nullptr;
  }
  sub_release(s);
}

// Builds the slot of family `f` from the current members. *out is &empty_slot when nobody
// subscribes to f. Returns false (and allocates nothing) when out of memory.
bool build_slot(const list_state& st, family_id f, family_slot** out) noexcept {
  std::uint32_t counts[max_subtypes] = {};
  bool any = false;
  for (const sub_core* s : st.members) {
    const event_type t = unpack_type(s->type.load(std::memory_order_relaxed));
    if (t.family() != f) {
      continue;
    }
    any = true;
    for (subtype_mask m = t.subtypes(); m != 0; m &= m - 1) {
      ++counts[std::countr_zero(m)];
    }
  }
  *out = const_cast<family_slot*>(&empty_slot);
  if (!any) {
    return true;
  }
  family_slot* slot = allocate_piece<family_slot>(0);
  if (slot == nullptr) {
    return false;
  }
  for (std::size_t bit = 0; bit < max_subtypes; ++bit) {
    if (counts[bit] == 0) {
      continue;
    }
    sub_array* a = allocate_piece<sub_array>(counts[bit]);
    if (a == nullptr) {
      free_slot(slot);
      return false;
    }
    slot->by_bit[bit] = a;
    slot->subscribed |= subtype_mask{1} << bit;
  }
  // Sync subscriptions first, then async and queue ones; each in subscription order (members
  // are in subscription order).
  for (const bool deferred : {false, true}) {
    for (sub_core* s : st.members) {
      const event_type t = unpack_type(s->type.load(std::memory_order_relaxed));
      if (t.family() != f || (s->deferred != nullptr) != deferred) {
        continue;
      }
      for (subtype_mask m = t.subtypes(); m != 0; m &= m - 1) {
        auto* a = const_cast<sub_array*>(slot->by_bit[std::countr_zero(m)]);
        a->items()[a->size++] = s;
        if (!deferred) {
          a->sync_count = a->size;
        }
      }
    }
  }
  *out = slot;
  return true;
}

// Rebuilds family f's part of the snapshot and publishes it. Call with the mutex held.
// Builds the array of wildcard subscriptions (sync first, each part in subscription order).
// *out is &empty_array when there are none. False (nothing allocated) when out of memory.
bool build_wildcard(const list_state& st, sub_array** out) noexcept {
  const auto is_wild = [](const sub_core* s) {
    return unpack_type(s->type.load(std::memory_order_relaxed)).family() == wildcard_family;
  };
  const auto count = static_cast<std::size_t>(
      std::count_if(st.members.begin(), st.members.end(), is_wild));
  *out = const_cast<sub_array*>(&empty_array);
  if (count == 0) {
    return true;
  }
  sub_array* a = allocate_piece<sub_array>(count);
  if (a == nullptr) {
    return false;
  }
  for (const bool deferred : {false, true}) {
    for (sub_core* s : st.members) {
      if (is_wild(s) && (s->deferred != nullptr) == deferred) {
        a->items()[a->size++] = s;
        if (!deferred) {
          a->sync_count = a->size;
        }
      }
    }
  }
  *out = a;
  return true;
}

bool rebuild(list_core& l, list_state& st, family_id f) noexcept {
  const bool wild = f == wildcard_family;
  family_slot* slot = const_cast<family_slot*>(&empty_slot);
  sub_array* wild_array = const_cast<sub_array*>(&empty_array);
  if (wild ? !build_wildcard(st, &wild_array) : !build_slot(st, f, &slot)) {
    return false;
  }
  const directory* old = l.dir.load(std::memory_order_relaxed);
  const std::uint32_t families =
      wild ? old->families : std::max<std::uint32_t>(old->families, f + 1u);
  directory* dir = allocate_piece<directory>(families);
  if (dir == nullptr) {
    if (slot != &empty_slot) {
      free_slot(slot);
    }
    if (wild_array != &empty_array) {
      free_piece(wild_array->retire);
    }
    return false;
  }
  dir->families = families;
  dir->flags = (wild ? wild_array : old->wildcard) != &empty_array ? dir_has_wildcard : 0;
  for (std::uint32_t i = 0; i < families; ++i) {
    dir->slots()[i] = i < old->families ? old->slots()[i] : &empty_slot;
  }
  dir->wildcard = wild ? wild_array : old->wildcard;
  const family_slot* old_slot = !wild && f < old->families ? old->slots()[f] : &empty_slot;
  if (!wild) {
    dir->slots()[f] = slot;
  }
  // Read before `old` is retired: from then on another thread's reclamation may free it.
  const sub_array* old_wildcard = old->wildcard;
  // release: publishes the new pieces; pairs with publish_raw's acquire load.
  l.dir.store(dir, std::memory_order_release);
  if (old != &empty_directory && old != &destroyed_directory) {
    retire(const_cast<directory*>(old)->retire);
  }
  retire_slot(old_slot);
  if (wild && old_wildcard != &empty_array) {
    retire(const_cast<sub_array*>(old_wildcard)->retire);
  }
  // Stale subscriptions of this family are no longer referenced by the snapshot.
  sub_core** link = &st.stale;
  while (*link != nullptr) {
    sub_core* s = *link;
    if (unpack_type(s->type.load(std::memory_order_relaxed)).family() == f) {
      *link = s->stale_next;
      s->stale_next = nullptr;
      retire(s->retire);
    } else {
      link = &s->stale_next;
    }
  }
  return true;
}

// Ends `s` (mutex held). False if it had already ended.
bool end_locked(list_core& l, list_state& st, sub_core* s) noexcept {
  if ((s->flags.load(std::memory_order_relaxed) & sub_ended) != 0) {
    return false;
  }
  if (s->deferred != nullptr) {
    set_end_reason(*s->deferred, end_reason::unsubscribed);  // unless overflow came first
  }
  // release: publishers that see the flag (acquire) skip the handler.
  s->flags.fetch_or(sub_ended, std::memory_order_release);
  if (s->deferred != nullptr) {
    wake_blocked_publishers(*s->deferred);  // they stop waiting for an ended subscription
  }
  st.members.erase(std::find(st.members.begin(), st.members.end(), s));
  if (s->id != 0) {
    st.by_id.erase(s->id);
  }
  const family_id f = unpack_type(s->type.load(std::memory_order_relaxed)).family();
  if (rebuild(l, st, f)) {
    retire(s->retire);
  } else {
    // Out of memory: the old snapshot keeps pointing at s (publishers skip it: it has ended).
    s->stale_next = st.stale;
    st.stale = s;
  }
  return true;
}

// Ends every subscription of the list and marks it destroyed (mutex held); `ended` is
// destroyed_directory, or shutdown_directory when the bus shuts down. Returns true if an async
// or queue subscription was among them.
bool end_all_locked(list_core& l, list_state& st, const directory* ended) noexcept {
  l.destroyed.store(true, std::memory_order_release);
  bool deferred = false;
  for (sub_core* s : st.members) {
    if (s->deferred != nullptr) {
      set_end_reason(*s->deferred, ended == &shutdown_directory ? end_reason::shutdown
                                                                 : end_reason::list_destroyed);
    }
    s->flags.fetch_or(sub_ended, std::memory_order_release);
    if (s->deferred != nullptr) {
      wake_blocked_publishers(*s->deferred);
    }
    deferred = deferred || s->deferred != nullptr;
  }
  const directory* old = l.dir.load(std::memory_order_relaxed);
  l.dir.store(ended, std::memory_order_release);
  if (old != &empty_directory) {
    for (std::uint32_t i = 0; i < old->families; ++i) {
      retire_slot(old->slots()[i]);
    }
    if (old->wildcard != &empty_array) {
      retire(const_cast<sub_array*>(old->wildcard)->retire);
    }
    retire(const_cast<directory*>(old)->retire);
  }
  for (sub_core* s : st.members) {
    retire(s->retire);
  }
  while (st.stale != nullptr) {
    sub_core* s = st.stale;
    st.stale = s->stale_next;
    s->stale_next = nullptr;
    retire(s->retire);
  }
  st.members.clear();
  st.by_id.clear();
  return deferred;
}

// After ending something: outside a handler, wait until no publish still runs it, then free
// what was retired. Inside a handler (a read section), nothing may wait: leave it to a later
// reclamation, and when an async or queue subscription ended (its consumer waits for END),
// have the bus's workers run that reclamation soon.
void settle(bus_core& b, bool deferred_ended) noexcept {
  if (!collect(/*always_wait=*/true) && deferred_ended) {
    request_reclaim(b);
  }
}

bool subset_of_family(event_type t) noexcept {
  const auto n = subtype_count(t.family());
  if (!n || t.subtypes() == 0) {
    return false;
  }
  const subtype_mask declared =
      *n >= max_subtypes ? ~subtype_mask{0} : (subtype_mask{1} << *n) - 1;
  return (t.subtypes() & ~declared) == 0;
}

result<void> resubscribe_core(sub_core* s, event_type type) noexcept {
  list_core& l = *s->list;
  list_state& st = state_of(l);
  {
    std::lock_guard lock(st.mutex);
    if ((s->flags.load(std::memory_order_relaxed) & sub_ended) != 0) {
      return unexpected(errc::not_found);
    }
    const event_type old = unpack_type(s->type.load(std::memory_order_relaxed));
    if (type.family() != old.family() || !subset_of_family(type)) {
      return unexpected(errc::family_mismatch);
    }
    s->type.store(pack_type(type), std::memory_order_release);
    if (!rebuild(l, st, type.family())) {
      s->type.store(pack_type(old), std::memory_order_release);
      return unexpected(errc::no_memory);
    }
  }
  (void)try_collect();  // never waits: a resubscribe must not stall behind a long handler
  return {};
}

// Pauses or resumes `s` (mutex held). not_found if it has ended.
result<void> set_paused_locked(sub_core* s, bool paused) noexcept {
  if ((s->flags.load(std::memory_order_relaxed) & sub_ended) != 0) {
    return unexpected(errc::not_found);
  }
  // release: pairs with sub_callable's acquire load in publishers.
  if (paused) {
    s->flags.fetch_or(sub_paused, std::memory_order_release);
  } else {
    s->flags.fetch_and(~sub_paused, std::memory_order_release);
  }
  return {};
}

result<void> set_paused(sub_core* s, bool paused) noexcept {
  std::lock_guard lock(state_of(*s->list).mutex);
  return set_paused_locked(s, paused);
}

}  // namespace

void unsubscribe_core(sub_core* s) noexcept {
  list_core& l = *s->list;
  list_state& st = state_of(l);
  bool ended = false;
  {
    std::lock_guard lock(st.mutex);
    ended = end_locked(l, st, s);
  }
  // Also when another path ended it first: the promise "not running, and destroyed, when
  // unsubscribe returns" holds for every caller outside a handler.
  settle(*l.bus, ended && s->deferred != nullptr);
}

namespace {

}  // namespace

void report_handler_exception(sub_core& s, event_type type) noexcept {
  s.exceptions.fetch_add(1, std::memory_order_relaxed);
  bus_core* b = s.list->bus;
  b->exceptions.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const error_hook> hook;
  {
    std::lock_guard lock(b->hook_mutex);
    hook = b->hook;
  }
  if (!hook || !*hook) {
    return;
  }
  std::string_view what = "unknown exception";
  try {
    throw;  // called from a catch block: the exception being handled
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  handler_error err;
  err.subscription_id = s.id;
  err.subscription_name = s.name;
  err.file = s.file;
  err.line = s.line;
  err.type = type;
  err.what = what;
  try {
    (*hook)(err);
  } catch (...) {
    // The hook must not throw; what it throws is dropped so that publish never throws.
  }
}

sub_core* allocate_sub() noexcept { return new (std::nothrow) sub_core; }

void free_sub(sub_core* s) noexcept {
  delete s->deferred;
  delete s;
}

namespace {
// Gives a new subscription the last value of each stateful subtype it subscribed to, before any
// newer event (lv_mutex held). Sync: the handler runs now. Async and queue: queued first.
// False when out of memory (then nothing was queued).
//
// A sync handler run by the replay may publish to this list (lv_mutex is recursive), replacing
// or, by destroying the list, dropping the values being replayed: so every value is held by
// its own reference while replayed, and a subtype whose value changed meanwhile is not
// replayed (the subscription, already visible, received the newer event directly).
bool replay_last_values(list_core& l, list_state& st, sub_core& s, event_type type) noexcept {
  if (st.last.empty()) {
    return true;
  }
  struct entry {
    family_id family;
    std::size_t bit;
    event_block* last;   // a reference of ours
    event_block* copy;   // async and queue: the block to queue (one node)
  };
  std::vector<entry> todo;
  const auto add = [&](family_id f, const std::array<event_block*, max_subtypes>& blocks,
                       subtype_mask mask) {
    for (std::size_t bit = 0; bit < max_subtypes; ++bit) {
      if (blocks[bit] != nullptr && ((mask >> bit) & 1U) != 0) {
        todo.push_back(entry{f, bit, blocks[bit], nullptr});
      }
    }
  };
  try {
    if (type.family() == wildcard_family) {
      for (const auto& [f, blocks] : st.last) {
        add(f, blocks, ~subtype_mask{0});
      }
      // Family order (the map is unordered), subtype order within a family.
      std::sort(todo.begin(), todo.end(), [](const entry& x, const entry& y) {
        return x.family != y.family ? x.family < y.family : x.bit < y.bit;
      });
    } else if (auto it = st.last.find(type.family()); it != st.last.end()) {
      add(type.family(), it->second, type.subtypes());
    }
  } catch (const std::bad_alloc&) {
    return false;
  }
  for (entry& e : todo) {
    e.last->refs.fetch_add(1, std::memory_order_relaxed);
  }
  const auto release_all = [&] {
    for (entry& e : todo) {
      release_block(e.last);
      if (e.copy != nullptr) {
        release_block(e.copy);
      }
    }
  };
  if (s.deferred != nullptr) {
    // Every copy first: out of memory, nothing is queued (no half replay).
    for (entry& e : todo) {
      e.copy = make_block(l, 1, e.last->type, e.last->payload(), *e.last->ops, e.last);
      if (e.copy == nullptr) {
        release_all();
        return false;
      }
    }
  }
  read_guard guard;  // the handler may be ended (and reclaimed) by another thread meanwhile
  for (entry& e : todo) {
    auto it = st.last.find(e.family);
    if (it == st.last.end() || it->second[e.bit] != e.last || !sub_callable(s)) {
      continue;  // replaced (delivered directly), dropped (list destroyed), or ended/paused
    }
    if (e.copy != nullptr) {
      sub_core* const item = &s;
      (void)offer_block(e.copy, {&item, 1}, {}, /*may_block=*/false, caller_ref::keep);
    } else if (s.invoke_any != nullptr) {
      s.invoke_any(s, e.last->type, e.last->payload(), *e.last->ops);
    } else {
      s.invoke(s, e.last->type, e.last->payload(), nullptr);  // no unsafe part: live only then
    }
  }
  release_all();
  return true;
}
}  // namespace

result<std::size_t> publish_stateful(const list_core& lc, event_type type, unsigned bit,
                                     const void* safe, void* unsafe,
                                     const payload_ops& ops) noexcept {
  auto& l = const_cast<list_core&>(lc);
  list_state& st = state_of(l);
  std::lock_guard lv_lock(st.lv_mutex);
  const bool outermost = !in_read_section();
  read_guard guard;
  count_publish(*tls_reader.record, type.family());
  const directory* d = l.dir.load(std::memory_order_acquire);
  if (d == &destroyed_directory || d == &shutdown_directory) {
    return publish_unindexed(l, d, type, safe, ops, outermost);  // the error
  }
  const sub_array* arr =
      type.family() < d->families ? d->slots()[type.family()]->by_bit[bit] : &empty_array;
  std::array<event_block*, max_subtypes>* slots = nullptr;
  try {
    slots = &st.last.try_emplace(type.family()).first->second;
  } catch (const std::bad_alloc&) {
    return unexpected(errc::no_memory);
  }
  // The block is the last value whether or not anyone receives it now. Allocated before any
  // handler runs: out of memory, nobody gets the event and the last value stays as it was.
  const sub_array* wild = d->wildcard;
  const std::uint32_t deferred =
      (arr->size - arr->sync_count) + (wild->size - wild->sync_count);
  event_block* b = make_block(l, deferred, type, safe, ops, nullptr);
  if (b == nullptr) {
    return unexpected(errc::no_memory);
  }
  event_block* previous = std::exchange((*slots)[bit], b);  // b's reference moves to the slot
  b->refs.fetch_add(1, std::memory_order_relaxed);          // this publish's own
  std::size_t called = 0;
  sub_core* const* items = arr->items();
  for (std::uint32_t i = 0; i < arr->sync_count; ++i) {
    sub_core& s = *items[i];
    if (sub_callable(s)) {
      s.invoke(s, type, safe, unsafe);
      ++called;
    }
  }
  for (std::uint32_t i = 0; i < wild->sync_count; ++i) {
    sub_core& s = *wild->items()[i];
    if (sub_callable(s)) {
      s.invoke_any(s, type, safe, ops);
      ++called;
    }
  }
  if (deferred != 0) {
    called += offer_block(
        b, {items + arr->sync_count, arr->size - arr->sync_count},
        {wild->items() + wild->sync_count, wild->size - wild->sync_count}, outermost,
        caller_ref::keep);
  }
  release_block(b);
  if (previous != nullptr) {
    release_block(previous);
  }
  return called;
}

result<subscription> subscribe_core(list_core& l, event_type type, sub_core* s,
                                    const subscribe_options& opt,
                                    const herald::source_location& where) noexcept {
  auto fail = [&](errc e) -> result<subscription> {
    if (s->handler != nullptr) {
      s->destroy(s->handler);
    }
    free_sub(s);
    return unexpected(e);
  };
  if (type.family() != wildcard_family && !subset_of_family(type)) {
    return fail(errc::family_mismatch);
  }
  try {
    s->name.assign(opt.name);
  } catch (const std::bad_alloc&) {
    return fail(errc::no_memory);
  }
  s->type.store(pack_type(type), std::memory_order_relaxed);
  s->id = opt.id;
  s->list = &l;
  s->file = where.file_name();
  s->line = where.line();
  s->retire.reclaim = &reclaim_sub;
  s->retire.owner = s;
  // Membership + the returned handle (+ the consumer: the drain task or the user's queue).
  s->refs.store(s->deferred != nullptr ? 3 : 2, std::memory_order_relaxed);

  list_state& st = state_of(l);
  // Held until the replay is queued: no stateful publish can fall between the moment the
  // subscription becomes visible and the replay of the values it should see.
  std::unique_lock lv_lock(st.lv_mutex);
  {
    std::lock_guard lock(st.mutex);
    if (l.destroyed.load(std::memory_order_relaxed)) {
      return fail(l.dir.load(std::memory_order_relaxed) == &shutdown_directory
                      ? errc::shutting_down
                      : errc::list_destroyed);
    }
    if (opt.id != 0 && st.by_id.contains(opt.id)) {
      return fail(errc::duplicate_id);
    }
    try {
      st.members.push_back(s);
      if (opt.id != 0) {
        st.by_id.emplace(opt.id, s);
      }
    } catch (const std::bad_alloc&) {
      if (!st.members.empty() && st.members.back() == s) {
        st.members.pop_back();
      }
      return fail(errc::no_memory);
    }
    s->seq = st.next_seq++;
    if (!rebuild(l, st, type.family())) {
      st.members.pop_back();
      if (opt.id != 0) {
        st.by_id.erase(opt.id);
      }
      return fail(errc::no_memory);
    }
    l.refs.fetch_add(1, std::memory_order_relaxed);  // the subscription's reference
  }
  subscription handle(s);
  if (!replay_last_values(l, st, *s, type)) {
    lv_lock.unlock();
    unsubscribe_core(s);
    if (s->deferred != nullptr && s->deferred->mode == deferred_mode::queue) {
      sub_release(s);  // the consumer's reference: the caller's queue stays unbound
    }
    return unexpected(errc::no_memory);
  }
  lv_lock.unlock();
  (void)try_collect();  // free replaced snapshot pieces if nobody is publishing; never waits
  return handle;
}

}  // namespace detail

std::uint64_t family_published(family_id f) noexcept {
  return f < max_families ? detail::published_total(f) : 0;
}

void set_family_counting(bool on) noexcept {
  detail::family_counting.store(on, std::memory_order_relaxed);
}

// ---- make_id -----------------------------------------------------------------------------

std::uint64_t make_id(std::string_view scope, std::string_view name) noexcept {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const std::uint64_t scope_len = scope.size();
  const std::uint64_t name_len = name.size();
  XXH3_64bits_update(&state, &scope_len, sizeof scope_len);
  XXH3_64bits_update(&state, scope.data(), scope.size());
  XXH3_64bits_update(&state, &name_len, sizeof name_len);
  XXH3_64bits_update(&state, name.data(), name.size());
  const std::uint64_t id = XXH3_64bits_digest(&state);
  return id == 0 ? 1 : id;
}

// ---- subscription ------------------------------------------------------------------------

subscription::subscription(const subscription& o) noexcept : core_(o.core_) {
  if (core_ != nullptr) {
    // relaxed: taking a reference from one we hold needs no ordering.
    core_->refs.fetch_add(1, std::memory_order_relaxed);
  }
}

void subscription::drop() noexcept {
  if (core_ != nullptr) {
    detail::sub_release(std::exchange(core_, nullptr));
  }
}

void subscription::unsubscribe() noexcept {
  HERALD_ASSERT(core_ != nullptr, "unsubscribe() on an empty subscription handle");
  detail::unsubscribe_core(core_);
}

result<void> subscription::pause() noexcept {
  HERALD_ASSERT(core_ != nullptr, "pause() on an empty subscription handle");
  return detail::set_paused(core_, true);
}

result<void> subscription::resume() noexcept {
  HERALD_ASSERT(core_ != nullptr, "resume() on an empty subscription handle");
  return detail::set_paused(core_, false);
}

result<void> subscription::resubscribe(event_type type) noexcept {
  HERALD_ASSERT(core_ != nullptr, "resubscribe() on an empty subscription handle");
  return detail::resubscribe_core(core_, type);
}

event_type subscription::type() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "type() on an empty subscription handle");
  return detail::unpack_type(core_->type.load(std::memory_order_acquire));
}

std::uint64_t subscription::id() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "id() on an empty subscription handle");
  return core_->id;
}

std::string_view subscription::name() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "name() on an empty subscription handle");
  return core_->name;
}

const char* subscription::origin_file() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "origin_file() on an empty subscription handle");
  return core_->file;
}

std::uint32_t subscription::origin_line() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "origin_line() on an empty subscription handle");
  return core_->line;
}

bool subscription::is_active() const noexcept {
  return core_ != nullptr &&
         (core_->flags.load(std::memory_order_acquire) & detail::sub_ended) == 0;
}

bool subscription::is_paused() const noexcept {
  return core_ != nullptr &&
         (core_->flags.load(std::memory_order_acquire) & detail::sub_paused) != 0;
}

subscription_stats subscription::stats() const noexcept {
  HERALD_ASSERT(core_ != nullptr, "stats() on an empty subscription handle");
  return core_->deferred != nullptr ? core_->deferred->stats() : subscription_stats{};
}

std::uint64_t subscription::exceptions() const noexcept {
  return core_ == nullptr ? 0 : core_->exceptions.load(std::memory_order_relaxed);
}

// ---- subscription_self ---------------------------------------------------------------------

event_type subscription_self::type() const noexcept {
  return detail::unpack_type(core_->type.load(std::memory_order_acquire));
}

void subscription_self::unsubscribe() noexcept { detail::unsubscribe_core(core_); }

result<void> subscription_self::resubscribe(event_type type) noexcept {
  return detail::resubscribe_core(core_, type);
}

subscription subscription_self::take() const noexcept {
  core_->refs.fetch_add(1, std::memory_order_relaxed);
  return subscription(core_);
}

// ---- sub_list ------------------------------------------------------------------------------

sub_list::sub_list(bus& b, std::string_view name) : core_(new detail::list_core) {
  core_->dir.store(&detail::empty_directory, std::memory_order_relaxed);
  auto* st = new detail::list_state;
  st->name.assign(name);
  core_->state = st;
  detail::bus_core& bc = b.core();
  core_->bus = &bc;
  bc.refs.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(bc.lists_mutex);
  if (bc.shutting_down.load(std::memory_order_relaxed)) {
    // Born after the shutdown: ended at once, refusing subscriptions with shutting_down.
    core_->destroyed.store(true, std::memory_order_relaxed);
    core_->dir.store(&detail::shutdown_directory, std::memory_order_relaxed);
    return;
  }
  bc.lists.push_back(core_);
}

sub_list::~sub_list() {
  {
    detail::bus_core& bc = *core_->bus;
    std::lock_guard lock(bc.lists_mutex);
    auto it = std::find(bc.lists.begin(), bc.lists.end(), core_);
    if (it != bc.lists.end()) {
      bc.lists.erase(it);
    }
  }
  destroy();
  detail::list_release(core_);
}

void sub_list::destroy() noexcept {
  detail::list_core& l = *core_;
  detail::list_state& st = detail::state_of(l);
  bool deferred = false;
  {
    std::lock_guard lock(st.mutex);
    if (!l.destroyed.load(std::memory_order_relaxed)) {
      deferred = detail::end_all_locked(l, st, &detail::destroyed_directory);
    }
  }
  {
    // After the end: a stateful publish now finds the list destroyed and stores nothing.
    std::lock_guard lv_lock(st.lv_mutex);
    st.drop_last_values();
  }
  // A second destroy waits like the first: the handlers are gone when it returns.
  detail::settle(*l.bus, deferred);
}

std::string_view sub_list::name() const noexcept { return detail::state_of(*core_).name; }

bool sub_list::is_destroyed() const noexcept {
  return core_->destroyed.load(std::memory_order_acquire);
}

bool sub_list::has_subscribers(event_type type) const noexcept {
  detail::read_guard guard;
  const detail::directory* d = core_->dir.load(std::memory_order_acquire);
  if (d->wildcard->size != 0) {
    return true;  // a wildcard subscription listens to every family
  }
  if (type.family() >= d->families) {
    return false;
  }
  const detail::family_slot* slot = d->slots()[type.family()];
  return (slot->subscribed & type.subtypes()) != 0;
}

namespace {
// Runs `op(sub)` on the active subscription with this id, under the list mutex.
template <class Op>
auto with_id(detail::list_core& l, std::uint64_t id, Op op) noexcept -> decltype(op(nullptr)) {
  detail::list_state& st = detail::state_of(l);
  std::lock_guard lock(st.mutex);
  auto it = st.by_id.find(id);
  if (id == 0 || it == st.by_id.end()) {
    return unexpected(errc::not_found);
  }
  return op(it->second);
}
}  // namespace

result<void> sub_list::lookup_unsubscribe(std::uint64_t id) noexcept {
  bool deferred = false;
  auto r = with_id(*core_, id, [&](detail::sub_core* s) -> result<void> {
    // Read first: once ended (retired), `s` may be reclaimed by another thread's collect,
    // since no handle of ours keeps it.
    deferred = s->deferred != nullptr;
    detail::end_locked(*core_, detail::state_of(*core_), s);
    return {};
  });
  if (r) {
    detail::settle(*core_->bus, deferred);
  }
  return r;
}

result<void> sub_list::lookup_pause(std::uint64_t id) noexcept {
  return with_id(*core_, id,
                 [](detail::sub_core* s) { return detail::set_paused_locked(s, true); });
}

result<void> sub_list::lookup_resume(std::uint64_t id) noexcept {
  return with_id(*core_, id,
                 [](detail::sub_core* s) { return detail::set_paused_locked(s, false); });
}

result<void> sub_list::lookup_resubscribe(std::uint64_t id, event_type type) noexcept {
  auto taken = lookup_take(id);
  if (!taken) {
    return unexpected(taken.error());
  }
  return taken->resubscribe(type);
}

result<subscription> sub_list::lookup_take(std::uint64_t id) noexcept {
  return with_id(*core_, id, [](detail::sub_core* s) -> result<subscription> {
    s->refs.fetch_add(1, std::memory_order_relaxed);
    return subscription(s);
  });
}

std::size_t sub_list::size_approx() const noexcept {
  detail::list_state& st = detail::state_of(*core_);
  std::lock_guard lock(st.mutex);
  return st.members.size();
}

// ---- bus -----------------------------------------------------------------------------------

namespace {
detail::bus_core* make_bus_core(const bus_options& opt) {
  HERALD_ASSERT(opt.events_per_run >= 1 && opt.events_per_run <= 10000,
                "bus_options::events_per_run must be within 1..10000");
  auto* b = new detail::bus_core;
  b->options = opt;
  return b;
}
}  // namespace

bus::bus(bus_options opt)
    : core_(make_bus_core(opt)), global_(std::make_unique<sub_list>(*this, "global")) {}

bus::~bus() {
  shutdown();
  {
    // Lists and handlers may outlive the bus; the hooks, which may refer to what the bus's
    // owner is about to destroy, are not called any more.
    std::lock_guard lock(core_->hook_mutex);
    core_->hook.reset();
    core_->diag_hook.reset();
  }
  global_.reset();
  reclaim();
  {
    // Every task bound to the workers is done (shutdown ran them to their END); the reclaimer
    // goes first, since a tasklet must not outlive its scheduler.
    std::lock_guard lock(core_->scheduler_mutex);
    core_->reclaimer = tasklet();
    core_->workers.reset();
  }
  detail::bus_release(core_);
}

void bus::shutdown() noexcept {
  detail::bus_core& b = *core_;
  HERALD_ASSERT(!detail::in_read_section(),
                "bus::shutdown() called from inside a sync handler (it would wait for itself)");
  std::lock_guard once(b.shutdown_mutex);
  if (b.shutdown_done) {
    return;
  }
  std::vector<detail::list_core*> lists;
  {
    std::lock_guard lock(b.lists_mutex);
    b.shutting_down.store(true, std::memory_order_release);
    for (detail::list_core* l : b.lists) {
      l->refs.fetch_add(1, std::memory_order_relaxed);  // kept while we end it
      lists.push_back(l);
    }
  }
  detail::wake_emitter_waiters(b);  // a wait_for_emitter() with no emitter returns false
  if (b.options.on_shutdown == shutdown_mode::discard) {
    // release: pairs with the drain tasks' acquire load (should_discard).
    b.discard_pending.store(true, std::memory_order_release);
  }
  for (detail::list_core* l : lists) {
    detail::list_state& st = detail::state_of(*l);
    std::lock_guard lock(st.mutex);
    if (!l->destroyed.load(std::memory_order_relaxed)) {
      (void)detail::end_all_locked(*l, st, &detail::shutdown_directory);
    } else if (l->dir.load(std::memory_order_relaxed) == &detail::destroyed_directory) {
      // Destroyed earlier by the user: later subscribes now report shutting_down too.
      l->dir.store(&detail::shutdown_directory, std::memory_order_release);
    }
  }
  for (detail::list_core* l : lists) {
    detail::list_state& st = detail::state_of(*l);
    std::lock_guard lv_lock(st.lv_mutex);
    st.drop_last_values();
  }
  // A grace period: no publish reaches anything any more; END is queued everywhere.
  (void)detail::collect(/*always_wait=*/true);
  scheduler* workers = nullptr;
  {
    std::lock_guard lock(b.scheduler_mutex);
    workers = b.workers.get();
  }
  if (workers != nullptr) {
    HERALD_ASSERT(workers->current() == nullptr,
                  "bus::shutdown() called on one of the bus's workers (it would join itself)");
    workers->stop();  // runs every drain task to its END, then joins
  }
  for (detail::list_core* l : lists) {
    detail::list_release(l);
  }
  b.shutdown_done = true;
}

bool bus::is_shut_down() const noexcept {
  return core_->shutting_down.load(std::memory_order_acquire);
}

scheduler& bus::workers() { return detail::bus_workers(*core_); }

void bus::set_error_hook(error_hook hook) {
  auto shared = std::make_shared<const error_hook>(std::move(hook));
  std::lock_guard lock(core_->hook_mutex);
  core_->hook = std::move(shared);
}

void bus::set_diagnostic_hook(diagnostic_hook hook) {
  auto p = std::make_shared<const diagnostic_hook>(std::move(hook));
  std::lock_guard lock(core_->hook_mutex);
  core_->diag_hook = std::move(p);
}

std::uint64_t bus::handler_exceptions() const noexcept {
  return core_->exceptions.load(std::memory_order_relaxed);
}

void bus::reclaim() noexcept { (void)detail::collect(); }

// ---- Async and queue subscriptions -----------------------------------------------------------

namespace detail {

scheduler& bus_workers(bus_core& b) {
  std::lock_guard lock(b.scheduler_mutex);
  if (!b.workers) {
    scheduler_options so;
    so.threads = b.options.threads;
    so.groups = b.options.groups;
    b.workers = std::make_unique<scheduler>(so);
    b.reclaimer = b.workers->make_tasklet([] { (void)collect(/*always_wait=*/true); });
  }
  return *b.workers;
}

void request_reclaim(bus_core& b) noexcept {
  try {
    (void)bus_workers(b);
  } catch (...) {
    return;  // out of memory: the next waiting operation reclaims
  }
  b.reclaimer.wake();
}

namespace {
// Copies the backpressure options into a new deferred core (which is not shared yet).
bool set_backpressure(deferred_core& d, const subscribe_options& opt) noexcept {
  try {
    d.bp = opt.backpressure;
  } catch (...) {
    return false;  // copying the hook ran out of memory
  }
  const backpressure_options& bp = d.bp;
  d.watch_depth = bp.bound != 0 || bp.slow_threshold != 0;
  d.blocking = bp.bound != 0 && bp.policy == overflow_policy::block;
  d.lock_pops = bp.bound != 0 && (bp.policy == overflow_policy::drop_oldest ||
                                  (bp.policy == overflow_policy::block &&
                                   bp.after_timeout == overflow_policy::drop_oldest));
  return true;
}
}  // namespace

bool attach_async(list_core& l, sub_core* s, const subscribe_options& opt,
                  void (*deliver)(sub_core&, const event_block&, std::uint64_t)) noexcept {
  executor_ref ex = opt.executor;
  if (!ex) {
    try {
      ex = bus_workers(*l.bus).executor();
    } catch (...) {
      return false;
    }
  }
  auto* d = new (std::nothrow) deferred_core(ex, opt.where);
  if (d == nullptr) {
    return false;
  }
  if (!set_backpressure(*d, opt)) {
    delete d;
    return false;
  }
  d->sub = s;
  d->mode = deferred_mode::async;
  d->discard_on_end = opt.on_end == pending_on_end::discard;
  d->events_per_run = opt.events_per_run != 0 ? opt.events_per_run : l.bus->options.events_per_run;
  d->deliver = deliver;
  s->deferred = d;
  return true;
}

bool attach_queue(list_core& l, sub_core* s, const subscribe_options& opt, notify_kind how,
                  tasklet&& t, std::function<void()>&& fn) noexcept {
  (void)l;
  auto* d = new (std::nothrow) deferred_core(executor_ref{}, run_on::any());
  if (d == nullptr) {
    return false;
  }
  if (!set_backpressure(*d, opt)) {
    delete d;
    return false;
  }
  d->sub = s;
  d->mode = deferred_mode::queue;
  d->discard_on_end = opt.on_end == pending_on_end::discard;
  d->notify_how = how;
  d->notify_tasklet = std::move(t);
  d->notify_callback = std::move(fn);
  if (how == notify_kind::fd) {
    d->notify_fd = make_event_fd();
    if (d->notify_fd < 0) {
      delete d;
      return false;
    }
  }
  s->deferred = d;
  return true;
}

void release_queue(sub_core* s) noexcept {
  unsubscribe_core(s);
  sub_release(s);
}

int queue_fd(const sub_core& s) noexcept { return s.deferred->notify_fd; }

bool is_shutting_down(const list_core& l) noexcept {
  return l.bus->shutting_down.load(std::memory_order_acquire);
}

std::size_t queue_size_approx(const sub_core& s) noexcept {
  return static_cast<std::size_t>(s.deferred->stats().queued);
}

result<void> check_backpressure(const subscribe_options& opt) noexcept {
  const backpressure_options& bp = opt.backpressure;
  if (bp.after_timeout == overflow_policy::block ||
      static_cast<unsigned>(bp.policy) > static_cast<unsigned>(overflow_policy::notify) ||
      static_cast<unsigned>(bp.after_timeout) > static_cast<unsigned>(overflow_policy::notify) ||
      bp.block_timeout.count() < 0 || bp.slow_after.count() < 0) {
    return unexpected(errc::invalid_argument);
  }
  const bool notifies = bp.policy == overflow_policy::notify ||
                        (bp.policy == overflow_policy::block &&
                         bp.after_timeout == overflow_policy::notify);
  if (bp.bound != 0 && notifies && !bp.on_overflow) {
    return unexpected(errc::invalid_argument);  // notify policy without a hook
  }
  return {};
}


void report_diagnostic(bus_core& b, const diagnostic& diag) noexcept {
  std::shared_ptr<const diagnostic_hook> hook;
  {
    std::lock_guard lock(b.hook_mutex);
    hook = b.diag_hook;
  }
  if (!hook || !*hook) {
    return;
  }
  try {
    (*hook)(diag);
  } catch (...) {
    // The hook must not throw; what it throws is dropped so that publish never throws.
  }
}

}  // namespace detail

}  // namespace herald
