// herald/herald.hpp - the umbrella header: everything public in herald.
//
// Layers (lowest first; see docs/ and ../shared/DESIGN.md): list (mt_list, back-off) -> sched
// -> core -> bridges. Each public header also compiles on its own.
#pragma once

#include "herald/backoff.hpp"
#include "herald/bus.hpp"
#include "herald/error.hpp"
#include "herald/event_type.hpp"
#include "herald/introspect.hpp"
#include "herald/mt_list.hpp"
#include "herald/presence.hpp"
#include "herald/scheduler.hpp"
#include "herald/source_location.hpp"
#include "herald/version.hpp"
