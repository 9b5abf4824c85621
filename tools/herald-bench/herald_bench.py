#!/usr/bin/env python3
"""herald-bench: runs herald's benchmark suites and reports herald against its peers.

It runs herald_microbench (Google Benchmark; bench/ in the repository) once per benchmark,
with --benchmark_format=json, shows a progress bar on stderr, then prints one table per suite
(rows: the benchmark's argument, e.g. the number of subscribers; columns: herald and each
peer, in ns per event, with the ratios peer / herald underneath), writes CSV and JSON files
with every raw number and a description of the machine, and draws one PNG per suite with
gnuplot. Only the Python 3 standard library is used.

Suites are found by benchmark name, so benchmarks added later (a new peer, a herald
variant, the benchmarks of a suite not written yet) show up without changing this file as
long as their names follow BM_<Subject>_<Library>[/<arg>:<value>...]. A suite whose benchmarks are absent
from the binary is reported as "not built".

docs/bench.md is the user's guide.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "build" / "release" / "bench" / "herald_microbench"
RESULTS_FORMAT = 1  # version of results.json's layout

# ---- Benchmark names -----------------------------------------------------------------------

# Parameters Google Benchmark appends to an instance name that are not benchmark arguments.
_RUN_PARAMETERS = {"threads", "repeats", "min_time", "min_warmup_time", "iterations"}
_RUN_FLAGS = {"real_time", "manual_time", "process_time"}


@dataclasses.dataclass(frozen=True)
class BenchName:
    """A parsed instance name such as BM_SyncPublish_Herald/slots:10/real_time/threads:2."""

    full: str                         # the instance name, as Google Benchmark prints it
    family: str                       # "SyncPublish_Herald" (no BM_ prefix)
    args: Tuple[Tuple[str, int], ...]  # benchmark arguments in order: (("slots", 10),)
    threads: int = 1

    @property
    def subject(self) -> str:
        """The part before the first underscore: "SyncPublish"."""
        return self.family.split("_", 1)[0]

    @property
    def library(self) -> str:
        """The part after the first underscore: "Herald", "Herald_Bounded", "BoostSignals2"."""
        parts = self.family.split("_", 1)
        return parts[1] if len(parts) > 1 else ""

    def arg(self, key: str, default: Optional[int] = None) -> Optional[int]:
        for k, v in self.args:
            if k == key:
                return v
        return default


def parse_name(name: str) -> Optional[BenchName]:
    """Parses an instance name; None for names that are not BM_<...> benchmarks.

    Arguments without a name (BM_X/16) get the names arg0, arg1, ...; aggregate suffixes
    (_mean, _median, ...) must have been removed (use a run's run_name).
    """
    parts = name.split("/")
    if not parts[0].startswith("BM_") or len(parts[0]) <= 3:
        return None
    family = parts[0][3:]
    args: List[Tuple[str, int]] = []
    threads = 1
    for i, part in enumerate(parts[1:]):
        if part in _RUN_FLAGS:
            continue
        key, sep, value = part.partition(":")
        if not sep:
            key, value = f"arg{i}", part
        try:
            number = int(value)
        except ValueError:
            try:
                number = int(float(value))
            except ValueError:
                continue  # not a number: not an argument
        if key == "threads":
            threads = number
        elif key not in _RUN_PARAMETERS:
            args.append((key, number))
    return BenchName(full=name, family=family, args=tuple(args), threads=threads)


# ---- Runs: one repetition of one benchmark, as Google Benchmark's JSON reports it ----------

_TIME_UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


@dataclasses.dataclass
class Run:
    """One Google Benchmark result object (run_type "iteration", or a median aggregate when the
    file holds aggregates only)."""

    raw: dict
    name: BenchName

    @property
    def failed(self) -> bool:
        return bool(self.raw.get("error_occurred"))

    @property
    def repetition(self) -> int:
        return int(self.raw.get("repetition_index", 0))

    def time_ns(self, key: str) -> float:
        return float(self.raw.get(key, math.nan)) * _TIME_UNITS_NS.get(
            self.raw.get("time_unit", "ns"), 1.0)

    @property
    def ns_per_event(self) -> float:
        """Nanoseconds per event: the inverse of items_per_second when the benchmark counts
        items (events published, list operations: summed over the threads, so with 2 threads
        this is wall time per event of the pair), else the reported time per iteration."""
        ips = self.raw.get("items_per_second")
        if isinstance(ips, (int, float)) and ips > 0 and math.isfinite(ips):
            return 1e9 / float(ips)
        return self.time_ns("real_time")

    def counter(self, key: str) -> Optional[float]:
        value = self.raw.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None


def runs_from_gbench(doc: dict) -> List[Run]:
    """The runs of one Google Benchmark JSON document. Individual repetitions are used; for a
    benchmark that only has aggregates (--benchmark_report_aggregates_only), its median."""
    iterations: List[Run] = []
    medians: Dict[str, Run] = {}
    for b in doc.get("benchmarks", []):
        run_name = b.get("run_name", b.get("name", ""))
        parsed = parse_name(run_name)
        if parsed is None:
            continue
        run_type = b.get("run_type", "iteration")
        if run_type == "iteration":
            iterations.append(Run(b, parsed))
        elif run_type == "aggregate" and b.get("aggregate_name") == "median":
            medians[run_name] = Run(b, parsed)
    have = {r.name.full for r in iterations}
    return iterations + [r for n, r in medians.items() if n not in have]


# ---- Libraries: display names and column order ---------------------------------------------

LIBRARY_LABELS = {
    "Herald": "herald",
    "MtList": "herald mt_list",
    "MtList_Unlocked": "mt_list unlocked walk",
    "RawLoop": "raw loop",
    "MutexVector": "mutex+vector",
    "BoostSignals2": "Boost.Signals2",
    "Sigc": "libsigc++ 3",
    "ConcurrentQueue": "ConcurrentQueue",
    "MutexDeque": "mutex+deque",
    "SpscFloor": "SPSC floor",
    "SpscFloorRmw": "SPSC floor + 1 RMW",
    "MutexList": "mutex+list",
    "SpinList": "spin lock+list",
}
_LIBRARY_ORDER = list(LIBRARY_LABELS)


def library_label(lib: str, overrides: Optional[Dict[str, str]] = None) -> str:
    if overrides and lib in overrides:
        return overrides[lib]
    if lib in LIBRARY_LABELS:
        return LIBRARY_LABELS[lib]
    if lib.startswith("Herald_"):  # a herald variant: Herald_Bounded -> "herald bounded"
        return "herald " + lib[len("Herald_"):].replace("_", " ").lower()
    return lib


def order_libraries(libs: Iterable[str], baseline: str) -> List[str]:
    """Baseline first, then its variants (same prefix), then known peers, then the others."""
    def key(lib: str) -> Tuple[int, int, str]:
        if lib == baseline:
            return (0, 0, lib)
        if lib.startswith(baseline + "_") or lib.startswith("Herald"):
            return (1, 0, lib)
        if lib in _LIBRARY_ORDER:
            return (2, _LIBRARY_ORDER.index(lib), lib)
        return (3, 0, lib)
    return sorted(set(libs), key=key)


# ---- Suites --------------------------------------------------------------------------------

# What a suite makes of one benchmark: (table, library, x, name of x), or None if it is not
# one of the suite's benchmarks.
Placement = Optional[Tuple[str, str, int, str]]


def _first_arg_placement(b: BenchName, library: str) -> Tuple[str, str, int, str]:
    """x = the first argument; the other arguments name the table ("gap_us 10")."""
    if not b.args:
        return ("", library, b.threads, "threads")
    key, x = b.args[0]
    table = ", ".join(f"{k} {v}" for k, v in b.args[1:])
    if b.threads > 1:
        table = ", ".join(t for t in (table, f"{b.threads} threads") if t)
    return (table, library, x, key)


def _place_mt_list(b: BenchName) -> Placement:
    m = re.fullmatch(r"(MtList|MutexList|SpinList)_(\w+)", b.family)
    if not m:
        return None
    lib, scenario = m.group(1), m.group(2)
    if lib == "MtList" and scenario.endswith("Unlocked"):
        lib, scenario = "MtList_Unlocked", scenario[: -len("Unlocked")]
    return (scenario, lib, b.threads, "threads")


def _place_sync(b: BenchName) -> Placement:
    if b.subject != "SyncPublish":
        return None
    lib = b.library
    table = "1 publishing thread" if b.threads == 1 else f"{b.threads} publishing threads"
    if lib.startswith("NoMatch_"):
        lib = lib[len("NoMatch_"):]
        table = "nobody listening, others = subscriptions of other families in the list"
    _, _, x, key = _first_arg_placement(b, lib)
    return (table, lib, x, key)


def _place_subject(subject: str) -> Callable[[BenchName], Placement]:
    def place(b: BenchName) -> Placement:
        if b.subject != subject:
            return None
        return _first_arg_placement(b, b.library)
    return place


_QUEUE_PEERS = {"ConcurrentQueue", "MutexDeque"}


def _place_queue(b: BenchName) -> Placement:
    # herald's queue mode against the async peers: the same end-to-end driver and work.
    if b.subject == "QueuePublish" or (b.subject == "AsyncPublish" and b.library in _QUEUE_PEERS):
        return _first_arg_placement(b, b.library)
    return None


def _place_latency(b: BenchName) -> Placement:
    if b.subject != "AsyncLatency":
        return None
    table, lib, x, key = _first_arg_placement(b, b.library)
    gap = b.arg("gap_us")
    if gap is not None:
        table = f"one event every {gap} us"
    return (table, lib, x, key)


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    title: str                       # what it measures, one line
    unit: str                        # what a cell holds
    primary: str                     # family regex: the suite is built if one matches
    place: Callable[[BenchName], Placement]
    baseline: str = "Herald"
    kind: str = "time"               # "time": ns per event; "latency": percentiles
    quick: Callable[[BenchName], bool] = lambda b: True
    quick_min_time: float = 0.05     # --benchmark_min_time in --quick mode
    min_time: Optional[float] = None  # default otherwise (None: Google Benchmark's own)
    labels: Tuple[Tuple[str, str], ...] = ()  # display-name overrides for this suite

    def is_primary(self, b: BenchName) -> bool:
        return re.fullmatch(self.primary, b.family) is not None

    def label(self, lib: str) -> str:
        return library_label(lib, dict(self.labels))


SUITES: Tuple[Suite, ...] = (
    Suite("mt_list", "herald::mt_list against a std::list under a mutex or a spin lock",
          "ns per list operation (Iterate: per element visited)",
          r"MtList_\w+", _place_mt_list, baseline="MtList",
          quick=lambda b: b.threads <= 2),
    Suite("sync", "synchronous publish: every handler runs inline",
          "ns per publish", r"SyncPublish_\w+", _place_sync),
    # async and queue: the first event pays for waking (or starting) the worker thread,
    # milliseconds on a busy machine, so short runs need more time than the others.
    Suite("async", "asynchronous publish, end to end (one worker thread runs the handlers)",
          "ns per event, fan-out done", r"AsyncPublish_\w+",
          _place_subject("AsyncPublish"), quick_min_time=0.2),
    Suite("queue", "queue subscriptions drained by a tasklet, end to end, against the async "
          "peers", "ns per event, fan-out done", r"QueuePublish_\w+", _place_queue,
          quick_min_time=0.2, labels=(("Herald", "herald queue"),)),
    Suite("latency", "asynchronous delivery latency, publish() to handler, paced publisher",
          "latency", r"AsyncLatency_\w+", _place_latency, kind="latency",
          quick_min_time=0.25, min_time=1.0),
    Suite("libp2p", "libp2p-style event bus matrix", "ns per event",
          r"Libp2pMatrix_\w+", _place_subject("Libp2pMatrix")),
)
SUITES_BY_NAME = {s.name: s for s in SUITES}


# ---- Tables --------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


@dataclasses.dataclass
class Cell:
    runs: List[Run] = dataclasses.field(default_factory=list)

    def values(self, key: Optional[str] = None) -> List[float]:
        if key is None:
            return [r.ns_per_event for r in self.runs if not r.failed]
        out = []
        for r in self.runs:
            v = r.counter(key)
            if v is not None and not r.failed:
                out.append(v)
        return out

    def median(self, key: Optional[str] = None) -> float:
        return median(self.values(key))

    def spread(self) -> float:
        """(max - min) / median over the repetitions; 0 with one repetition."""
        v = [x for x in self.values() if math.isfinite(x)]
        if len(v) < 2:
            return 0.0
        m = statistics.median(v)
        return (max(v) - min(v)) / m if m > 0 else 0.0


@dataclasses.dataclass
class Table:
    suite: Suite
    name: str
    xlabel: str  # what x is: the benchmark argument's name ("slots", "subs", "threads")
    cells: Dict[Tuple[int, str], Cell] = dataclasses.field(default_factory=dict)

    @property
    def libraries(self) -> List[str]:
        return order_libraries((lib for _, lib in self.cells), self.suite.baseline)

    @property
    def xs(self) -> List[int]:
        return sorted({x for x, _ in self.cells})

    def cell(self, x: int, lib: str) -> Optional[Cell]:
        return self.cells.get((x, lib))

    def value(self, x: int, lib: str, key: Optional[str] = None) -> float:
        c = self.cell(x, lib)
        return c.median(key) if c else math.nan

    def ratio(self, x: int, lib: str, key: Optional[str] = None) -> float:
        base = self.value(x, self.suite.baseline, key)
        v = self.value(x, lib, key)
        if not (math.isfinite(base) and math.isfinite(v)) or base <= 0:
            return math.nan
        return v / base

    @property
    def title(self) -> str:
        return f"{self.suite.name}: {self.name}" if self.name else self.suite.name


def build_tables(suite: Suite, runs: Iterable[Run]) -> List[Table]:
    tables: Dict[str, Table] = {}
    for run in runs:
        placed = suite.place(run.name)
        if placed is None:
            continue
        table_name, lib, x, xlabel = placed
        table = tables.setdefault(table_name, Table(suite, table_name, xlabel))
        table.cells.setdefault((x, lib), Cell()).runs.append(run)
    return [tables[k] for k in sorted(tables, key=_natural_key)]


def _natural_key(s: str) -> List[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ---- Text output ---------------------------------------------------------------------------

def fmt_ns(v: float) -> str:
    """Three significant digits, whole numbers from 100 on: 3.28, 15.5, 161, 2107."""
    if not math.isfinite(v):
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r: float) -> str:
    """2.59x, 14.5x, 123x; small ratios keep two significant digits (0.0014x)."""
    if not math.isfinite(r):
        return "-"
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    if r < 1e-4:
        return "<0.0001x"
    return f"{r:.2g}x"


def fmt_latency(ns: float) -> str:
    """A duration with a unit: 781 ns, 3.92 us, 7.08 ms."""
    if not math.isfinite(ns):
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{ns:.0f} ns"


def _render(rows: List[List[str]], left_columns: int = 1) -> List[str]:
    """Right-aligned columns (the first `left_columns` left-aligned), two spaces apart."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    out = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cells.append(c.ljust(widths[i]) if i < left_columns else c.rjust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return out


def format_time_table(table: Table, repetitions_note: str) -> List[str]:
    suite = table.suite
    libs = table.libraries
    lines = [f"== {table.title} -- {suite.unit}, {repetitions_note} (lower is better) =="]
    rows = [[table.xlabel] + [suite.label(lib) for lib in libs]]
    for x in table.xs:
        rows.append([str(x)] + [fmt_ns(table.value(x, lib)) for lib in libs])
    peers = [lib for lib in libs if lib != suite.baseline]
    have_baseline = suite.baseline in libs
    if peers and have_baseline:
        base = suite.label(suite.baseline)
        rows.append([f"ratio: library / {base} (above 1: {base} is faster)"])
        for x in table.xs:
            rows.append([str(x), ""] + [fmt_ratio(table.ratio(x, lib)) for lib in peers])
    rendered = _render_with_caption(rows)
    lines += ["  " + r for r in rendered]
    spreads = [(c.spread(), x, lib) for (x, lib), c in table.cells.items() if len(c.runs) > 1]
    if spreads:
        worst = max(spreads)
        lines.append(f"  spread over repetitions ((max-min)/median): median "
                     f"{statistics.median(s for s, _, _ in spreads) * 100:.0f}%, worst "
                     f"{worst[0] * 100:.0f}% ({suite.label(worst[2])} at {table.xlabel} "
                     f"{worst[1]})")
    failed = sorted({r.name.full for c in table.cells.values() for r in c.runs if r.failed})
    for name in failed:
        lines.append(f"  failed: {name}")
    return lines


def _render_with_caption(rows: List[List[str]]) -> List[str]:
    """_render, except that one-cell rows are captions printed as they are."""
    grid = [r for r in rows if len(r) > 1]
    rendered = iter(_render(grid))
    out = []
    for r in rows:
        out.append(r[0] if len(r) == 1 else next(rendered))
    return out


LATENCY_KEYS = (("p50_ns", "p50"), ("p99_ns", "p99"), ("p999_ns", "p99.9"), ("max_ns", "max"))


def format_latency_table(table: Table, repetitions_note: str) -> List[str]:
    suite = table.suite
    libs = table.libraries
    base = suite.label(suite.baseline)
    lines = [f"== {table.title} -- publish-to-handler latency, {repetitions_note} =="]
    rows = [[table.xlabel, "library"] + [k for _, k in LATENCY_KEYS] +
            ["late", "p50 ratio", "p99 ratio"]]
    for x in table.xs:
        for lib in libs:
            if table.cell(x, lib) is None:
                continue
            row = [str(x), suite.label(lib)]
            row += [fmt_latency(table.value(x, lib, key)) for key, _ in LATENCY_KEYS]
            late = table.value(x, lib, "late")
            row.append("-" if not math.isfinite(late) else f"{late:.0f}")
            if lib == suite.baseline:
                row += ["", ""]
            else:
                row += [fmt_ratio(table.ratio(x, lib, "p50_ns")),
                        fmt_ratio(table.ratio(x, lib, "p99_ns"))]
            rows.append(row)
    lines += ["  " + r for r in _render(rows, left_columns=2)]
    lines.append(f"  ratio: library / {base} (above 1: {base} delivers sooner); late: "
                 "publishes behind schedule (a busy machine)")
    failed = sorted({r.name.full for c in table.cells.values() for r in c.runs if r.failed})
    for name in failed:
        lines.append(f"  failed: {name}")
    return lines


def format_suite(suite: Suite, tables: List[Table], repetitions_note: str) -> List[str]:
    lines: List[str] = []
    for table in tables:
        if suite.kind == "latency":
            lines += format_latency_table(table, repetitions_note)
        else:
            lines += format_time_table(table, repetitions_note)
        lines.append("")
    return lines


# ---- Histograms (latency suite) ------------------------------------------------------------

def histogram(cell: Cell) -> List[Tuple[int, float]]:
    """(bucket lower bound in ns, deliveries) summed over the repetitions, from the
    hist_ge_<ns> counters of bench/async_latency_bench.cpp; empty if it has none."""
    sums: Dict[int, float] = {}
    for run in cell.runs:
        if run.failed:
            continue
        for key, value in run.raw.items():
            if key.startswith("hist_ge_") and isinstance(value, (int, float)):
                sums[int(key[len("hist_ge_"):])] = sums.get(int(key[len("hist_ge_"):]), 0.0) + value
    return sorted(sums.items())


# ---- Files ---------------------------------------------------------------------------------

def machine_info(binary: Optional[Path]) -> dict:
    info: dict = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": "",
        "kernel": " ".join(os.uname()[2:4]) if hasattr(os, "uname") else "",
        "load_average": None,
        "git_commit": "",
        "git_dirty": None,
        "binary": str(binary) if binary else "",
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["load_average"] = [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                check=True).stdout
        info["git_dirty"] = bool(status.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _counter_columns(runs: Sequence[Run]) -> List[str]:
    fixed = {"name", "family_index", "per_family_instance_index", "run_name", "run_type",
             "repetitions", "repetition_index", "threads", "iterations", "real_time",
             "cpu_time", "time_unit", "items_per_second", "bytes_per_second", "error_occurred",
             "error_message", "aggregate_name", "aggregate_unit", "label"}
    keys = set()
    for r in runs:
        for k, v in r.raw.items():
            if k not in fixed and not k.startswith("hist_ge_") and isinstance(v, (int, float)):
                keys.add(k)
    return sorted(keys)


def write_csv(out: Path, runs: Sequence[Run], suite_tables: Dict[str, List[Table]]) -> None:
    counters = _counter_columns(runs)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["benchmark", "family", "args", "threads", "repetition", "iterations",
                    "real_time_ns", "cpu_time_ns", "items_per_second", "ns_per_event",
                    "error"] + counters)
        for r in runs:
            w.writerow([r.name.full, r.name.family,
                        " ".join(f"{k}={v}" for k, v in r.name.args), r.name.threads,
                        r.repetition, r.raw.get("iterations", ""),
                        _num(r.time_ns("real_time")), _num(r.time_ns("cpu_time")),
                        _num(r.counter("items_per_second")), _num(r.ns_per_event),
                        r.raw.get("error_message", "") if r.failed else ""] +
                       [_num(r.counter(k)) for k in counters])
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["suite", "table", "x_name", "x", "library", "label", "repetitions",
                    "median_ns", "min_ns", "max_ns", "ratio_to_herald"])
        for name, tables in suite_tables.items():
            for t in tables:
                if t.suite.kind != "time":
                    continue
                for x in t.xs:
                    for lib in t.libraries:
                        c = t.cell(x, lib)
                        if c is None:
                            continue
                        v = c.values()
                        w.writerow([name, t.name, t.xlabel, x, lib, t.suite.label(lib),
                                    len(v), _num(c.median()), _num(min(v) if v else None),
                                    _num(max(v) if v else None), _num(t.ratio(x, lib))])
    latency = [t for ts in suite_tables.values() for t in ts if t.suite.kind == "latency"]
    if latency:
        with open(out / "latency.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["table", "subs", "library", "repetitions", "p50_ns", "p99_ns",
                        "p999_ns", "max_ns", "mean_ns", "late", "samples", "p50_ratio",
                        "p99_ratio"])
            for t in latency:
                for x in t.xs:
                    for lib in t.libraries:
                        c = t.cell(x, lib)
                        if c is None:
                            continue
                        w.writerow([t.name, x, lib, len(c.runs)] +
                                   [_num(c.median(k)) for k in ("p50_ns", "p99_ns", "p999_ns",
                                                                "max_ns", "mean_ns", "late",
                                                                "samples")] +
                                   [_num(t.ratio(x, lib, "p50_ns")),
                                    _num(t.ratio(x, lib, "p99_ns"))])
        with open(out / "latency_histogram.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["table", "subs", "library", "bucket_ge_ns", "deliveries"])
            for t in latency:
                for (x, lib), c in sorted(t.cells.items()):
                    for lo, n in histogram(c):
                        w.writerow([t.name, x, lib, lo, f"{n:.0f}"])


def _num(v: Optional[float]) -> str:
    if v is None or not math.isfinite(v):
        return ""
    return f"{v:.6g}"


def _json_safe(v):
    """NaN and infinities become null (strict JSON readers reject them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def results_document(info: dict, options: dict, runs: Sequence[Run],
                     suite_status: Dict[str, str], suite_tables: Dict[str, List[Table]],
                     failures: List[dict], gbench_context: dict) -> dict:
    suites = []
    for suite in SUITES:
        if suite.name not in suite_status:
            continue
        entry = {"name": suite.name, "title": suite.title, "status": suite_status[suite.name],
                 "unit": suite.unit, "baseline": suite.baseline,
                 "kind": suite.kind, "tables": []}
        for t in suite_tables.get(suite.name, []):
            rows = []
            for x in t.xs:
                cells = {}
                for lib in t.libraries:
                    c = t.cell(x, lib)
                    if c is None:
                        continue
                    d = {"label": suite.label(lib), "benchmark": c.runs[0].name.full,
                         "ns_per_event": c.values(), "median_ns": c.median(),
                         "ratio_to_baseline": t.ratio(x, lib)}
                    if suite.kind == "latency":
                        for key in ("p50_ns", "p99_ns", "p999_ns", "max_ns", "mean_ns", "late",
                                    "samples"):
                            d[key] = c.median(key)
                        d["histogram"] = [[lo, n] for lo, n in histogram(c)]
                    cells[lib] = d
                rows.append({"x": x, "libraries": cells})
            entry["tables"].append({"name": t.name, "x_name": t.xlabel, "libraries": t.libraries,
                                    "rows": rows})
        suites.append(entry)
    return _json_safe({
        "format": RESULTS_FORMAT,
        "tool": "herald-bench",
        "machine": info,
        "options": options,
        "google_benchmark_context": gbench_context,
        "suites": suites,
        "failures": failures,
        "runs": [r.raw for r in runs],
    })


# ---- Plots (gnuplot) -----------------------------------------------------------------------

def _gp_quote(s: str) -> str:
    """A gnuplot string; a newline in `s` becomes a line break in the label."""
    escaped = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


_HERALD_COLORS = ("#7b2fbe", "#c77dff", "#3c096c", "#e0aaff")
_PEER_COLORS = {"RawLoop": "#009e73", "MutexVector": "#0072b2", "BoostSignals2": "#e69f00",
                "Sigc": "#d55e00", "ConcurrentQueue": "#56b4e9", "MutexDeque": "#cc79a7",
                "MutexList": "#0072b2", "SpinList": "#e69f00"}
_OTHER_COLORS = ("#555555", "#999999", "#000000", "#b8860b")


def _style(suite: Suite, lib: str, libs: Sequence[str]) -> str:
    """Line colour and width: herald (thick) and its variants in purples, each known peer in
    the same colour in every plot."""
    if lib == suite.baseline or lib.startswith(suite.baseline + "_") or lib.startswith("Herald"):
        variants = [x for x in libs if x != suite.baseline and
                    (x.startswith(suite.baseline + "_") or x.startswith("Herald"))]
        i = 0 if lib == suite.baseline else 1 + variants.index(lib)
        width = 3 if lib == suite.baseline else 2
        return f"lc rgb '{_HERALD_COLORS[i % len(_HERALD_COLORS)]}' lw {width}"
    if lib in _PEER_COLORS:
        return f"lc rgb '{_PEER_COLORS[lib]}' lw 1.5"
    i = sorted(x for x in libs if x not in _PEER_COLORS).index(lib)
    return f"lc rgb '{_OTHER_COLORS[i % len(_OTHER_COLORS)]}' lw 1.5"


def _plottable(table: Table) -> bool:
    xs = [x for x in table.xs if x > 0]
    return len(xs) >= 2 and len(table.xs) == len(xs)


def gnuplot_time_script(suite: Suite, tables: List[Table], png: Path, subtitle: str) -> str:
    tables = [t for t in tables if _plottable(t)]
    if not tables:
        return ""
    cols = min(len(tables), 3)
    rows = (len(tables) + cols - 1) // cols
    lines = [
        f"set terminal pngcairo noenhanced size {660 * cols},{420 * rows + 40} "
        "font 'DejaVu Sans,10'",
        f"set output {_gp_quote(str(png))}",
        "set datafile missing '?'",
        "set logscale xy",
        "set grid xtics ytics mxtics mytics lc rgb '#dddddd'",
        "set key outside right top vertical",
        f"set ylabel {_gp_quote(suite.unit.split(',')[0])}",
        f"set multiplot layout {rows},{cols} title "
        f"{_gp_quote(suite.name + ': ' + suite.title + chr(10) + subtitle)}",
    ]
    for i, t in enumerate(tables):
        libs = t.libraries
        block = f"$d{i}"
        lines.append(f"{block} << EOD")
        for x in t.xs:
            vals = [t.value(x, lib) for lib in libs]
            lines.append(" ".join([str(x)] + [f"{v:.6g}" if math.isfinite(v) else "?"
                                               for v in vals]))
        lines.append("EOD")
        lines.append("set xtics (" + ", ".join(f"'{x}' {x}" for x in t.xs) + ")")
        lines.append(f"set xrange [{min(t.xs) / 1.3:.6g}:{max(t.xs) * 1.3:.6g}]")
        lines.append(f"set title {_gp_quote(t.name or suite.name)}")
        lines.append(f"set xlabel {_gp_quote(t.xlabel)}")
        plots = []
        for j, lib in enumerate(libs):
            plots.append(f"{block} using 1:{j + 2} with linespoints {_style(suite, lib, libs)} "
                         f"pt {j + 4} ps 1.2 title {_gp_quote(suite.label(lib))}")
        lines.append("plot " + ", \\\n     ".join(plots))
    lines.append("unset multiplot")
    return "\n".join(lines) + "\n"


def gnuplot_latency_script(suite: Suite, tables: List[Table], png: Path, subtitle: str) -> str:
    panels = []  # (title, table, x)
    for t in tables:
        for x in t.xs:
            if any(histogram(c) for (cx, _), c in t.cells.items() if cx == x):
                panels.append((f"{t.name}, {x} subscriber{'s' if x != 1 else ''}", t, x))
    if not panels:
        return ""
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    lines = [
        f"set terminal pngcairo noenhanced size {720 * cols},{380 * rows + 40} "
        "font 'DejaVu Sans,10'",
        f"set output {_gp_quote(str(png))}",
        "set logscale x",
        "set format x '%.0s%cs'",
        "set grid xtics ytics lc rgb '#dddddd'",
        "set key outside right top vertical",
        "set xlabel 'latency, publish() to handler (log scale)'",
        "set ylabel '% of deliveries'",
        f"set multiplot layout {rows},{cols} title "
        f"{_gp_quote(suite.name + ': ' + suite.title + chr(10) + subtitle)}",
    ]
    for i, (title, t, x) in enumerate(panels):
        libs = [lib for lib in t.libraries if t.cell(x, lib) and histogram(t.cell(x, lib))]
        # One x range for the panel: the buckets some library has deliveries in.
        hists = {lib: dict(histogram(t.cell(x, lib))) for lib in libs}
        used = sorted({lo for h in hists.values() for lo, n in h.items() if n > 0})
        if not used:
            continue
        bounds = sorted({lo for h in hists.values() for lo in h})
        lo_i = max(bounds.index(used[0]) - 1, 0)
        hi_i = min(bounds.index(used[-1]) + 2, len(bounds) - 1)
        window = bounds[lo_i:hi_i + 1]
        block = f"$h{i}"
        lines.append(f"{block} << EOD")
        for lo in window:
            row = [str(max(lo, 1) * 1e-9)]
            for lib in libs:
                total = sum(hists[lib].values()) or 1.0
                row.append(f"{100.0 * hists[lib].get(lo, 0.0) / total:.4g}")
            lines.append(" ".join(row))
        lines.append("EOD")
        lines.append(f"set title {_gp_quote(title)}")
        plots = []
        for j, lib in enumerate(libs):
            plots.append(f"{block} using 1:{j + 2} with steps {_style(suite, lib, libs)} "
                         f"title {_gp_quote(suite.label(lib))}")
        lines.append("plot " + ", \\\n     ".join(plots))
    lines.append("unset multiplot")
    return "\n".join(lines) + "\n"


def draw_plots(out: Path, suite_tables: Dict[str, List[Table]], subtitle: str,
               log: Callable[[str], None]) -> List[Path]:
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        log("gnuplot not found: no plots (scripts/install-deps.sh installs gnuplot-nox)")
        return []
    made = []
    plot_dir = out / "plots"
    for name, tables in suite_tables.items():
        suite = SUITES_BY_NAME[name]
        jobs = []
        if suite.kind == "latency":
            jobs.append((out / f"{name}_histogram.png",
                         gnuplot_latency_script(suite, tables, out / f"{name}_histogram.png",
                                                subtitle)))
        else:
            jobs.append((out / f"{name}.png",
                         gnuplot_time_script(suite, tables, out / f"{name}.png", subtitle)))
        for png, script in jobs:
            if not script:
                continue
            plot_dir.mkdir(exist_ok=True)
            gp = plot_dir / (png.stem + ".gp")
            gp.write_text(script)
            proc = subprocess.run([gnuplot, str(gp)], capture_output=True, text=True)
            if proc.returncode != 0 or not png.exists():
                log(f"gnuplot failed for {png.name}: {proc.stderr.strip()[:500]}")
            else:
                made.append(png)
    return made


# ---- Running the benchmarks ----------------------------------------------------------------

class Progress:
    """A progress bar on a terminal (redrawn in place), plain lines otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.width = shutil.get_terminal_size((100, 20)).columns if self.tty else 0

    def _eta(self) -> str:
        if self.done == 0:
            return "--:--"
        per = (time.monotonic() - self.start) / self.done
        return _clock(per * (self.total - self.done))

    def begin(self, suite: str, name: str) -> None:
        if not self.tty:
            return
        bar_len = 24
        filled = int(bar_len * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (bar_len - filled)
        text = (f"[{bar}] {self.done}/{self.total} {_clock(time.monotonic() - self.start)} "
                f"eta {self._eta()}  {suite}: {name}")
        self.stream.write("\r\033[K" + text[: max(self.width - 1, 20)])
        self.stream.flush()

    def end(self, suite: str, name: str, seconds: float, ok: bool) -> None:
        self.done += 1
        if self.tty:
            if not ok:
                self.stream.write(f"\r\033[Kherald-bench: FAILED {name}\n")
            return
        status = "" if ok else " FAILED"
        self.stream.write(f"herald-bench: [{self.done}/{self.total}] {suite}: {name} "
                          f"({seconds:.1f} s){status}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 60}:{s % 60:02d}"


def list_benchmarks(binary: Path) -> List[str]:
    proc = subprocess.run([str(binary), "--benchmark_list_tests=true"], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} --benchmark_list_tests failed: {proc.stderr.strip()}")
    return [line.strip() for line in proc.stdout.splitlines() if line.startswith("BM_")]


def run_benchmark(binary: Path, name: str, repetitions: int, min_time: Optional[float],
                  timeout: float) -> Tuple[Optional[dict], str]:
    """Runs one benchmark instance; (Google Benchmark's JSON document, "") or (None, why)."""
    cmd = [str(binary), f"--benchmark_filter=^{re.escape(name)}$",
           "--benchmark_format=json", f"--benchmark_repetitions={repetitions}"]
    if min_time is not None:
        cmd.append(f"--benchmark_min_time={min_time:g}")
    env = dict(os.environ, HERALD_BENCH_HISTOGRAM="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return None, f"exit status {proc.returncode}: {why[0]}"
    try:
        return json.loads(proc.stdout), ""
    except json.JSONDecodeError as e:
        return None, f"unreadable JSON output: {e}"


@dataclasses.dataclass
class Plan:
    suite_status: Dict[str, str]            # suite -> "selected" / "not built"
    order: List[Tuple[str, str]]            # (suite, benchmark), each benchmark once


def make_plan(names: Sequence[str], suites: Sequence[Suite], quick: bool,
              name_filter: Optional[str]) -> Plan:
    parsed = [p for p in (parse_name(n) for n in names) if p is not None]
    status: Dict[str, str] = {}
    order: List[Tuple[str, str]] = []
    seen = set()
    pattern = re.compile(name_filter) if name_filter else None
    for suite in suites:
        if not any(suite.is_primary(b) for b in parsed):
            status[suite.name] = "not built"
            continue
        status[suite.name] = "selected"
        for b in parsed:
            if suite.place(b) is None or b.full in seen:
                continue
            if quick and not suite.quick(b):
                continue
            if pattern and not pattern.search(b.full):
                continue
            seen.add(b.full)
            order.append((suite.name, b.full))
    return Plan(status, order)


def load_runs(paths: Sequence[Path]) -> Tuple[List[Run], dict, dict]:
    """Runs from Google Benchmark JSON files or from herald-bench's results.json files, with
    Google Benchmark's context and (from a results.json) the machine they ran on."""
    runs: List[Run] = []
    context: dict = {}
    machine: dict = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        if doc.get("tool") == "herald-bench":
            machine = machine or doc.get("machine", {})
            doc = {"context": doc.get("google_benchmark_context", {}),
                   "benchmarks": doc.get("runs", [])}
        context = context or doc.get("context", {})
        runs += runs_from_gbench(doc)
    return runs, context, machine


# ---- Main ----------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    suite_names = ", ".join(s.name for s in SUITES)
    p = argparse.ArgumentParser(
        prog="herald-bench",
        description="Runs herald_microbench's suites and reports herald against its peers: a "
                    "table per suite (ns per event and ratios), CSV and JSON files, and PNG "
                    "plots drawn with gnuplot.",
        epilog=f"Suites: {suite_names}. Files go to --out: runs.csv (every repetition), "
               "summary.csv (medians and ratios), latency.csv, latency_histogram.csv, "
               "results.json (everything, with the machine), tables.txt, <suite>.png, "
               "latency_histogram.png and plots/*.gp (the gnuplot scripts). "
               "scripts/herald-bench.sh builds the binary first; docs/bench.md explains the "
               "figures.")
    p.add_argument("--quick", action="store_true",
                   help="a short run (under a minute on 2 cores): 1 repetition, "
                        "--benchmark_min_time 0.05 s (async and queue 0.2 s, latency "
                        "0.25 s), mt_list with at most 2 threads")
    p.add_argument("--suite", action="append", metavar="NAME",
                   help=f"run this suite (repeatable; default: all). One of: {suite_names}")
    p.add_argument("--repetitions", type=int, metavar="N",
                   help="repetitions per benchmark, the tables show the median "
                        "(default 3, 1 with --quick)")
    p.add_argument("--min-time", type=float, metavar="SECONDS",
                   help="--benchmark_min_time for every suite (default: Google Benchmark's, "
                        "1 s for latency)")
    p.add_argument("--filter", metavar="REGEX",
                   help="only benchmarks whose name matches (Python regex, searched)")
    p.add_argument("--no-plots", action="store_true", help="do not run gnuplot")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default build/bench-results/<timestamp>/)")
    p.add_argument("--binary", type=Path, default=DEFAULT_BINARY, metavar="PATH",
                   help="herald_microbench to run (default: %(default)s)")
    p.add_argument("--load", type=Path, action="append", metavar="JSON",
                   help="run nothing: report on Google Benchmark JSON output "
                        "(herald_microbench --benchmark_format=json) or a results.json "
                        "of an earlier run (repeatable)")
    p.add_argument("--list", action="store_true",
                   help="print each suite and how many of its benchmarks the binary has")
    args = p.parse_args(argv)
    for name in args.suite or []:
        if name not in SUITES_BY_NAME:
            p.error(f"unknown suite {name!r}; the suites are: {suite_names}")
    if args.repetitions is not None and args.repetitions < 1:
        p.error("--repetitions must be at least 1")
    if args.min_time is not None and args.min_time <= 0:
        p.error("--min-time must be positive")
    return args


def _log(msg: str) -> None:
    print(f"herald-bench: {msg}", file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    suites = [SUITES_BY_NAME[n] for n in dict.fromkeys(args.suite or [s.name for s in SUITES])]
    repetitions = args.repetitions or (1 if args.quick else 3)
    started = time.monotonic()

    failures: List[dict] = []
    binary: Optional[Path] = None
    loaded_machine: dict = {}
    if args.load:
        runs, gbench_context, loaded_machine = load_runs(args.load)
        names = sorted({r.name.full for r in runs})
        plan = make_plan(names, suites, quick=False, name_filter=args.filter)
        wanted = {n for _, n in plan.order}
        runs = [r for r in runs if r.name.full in wanted]
        reps = sorted({int(r.raw.get("repetitions", 1)) for r in runs}) or [1]
        repetitions_note = _repetitions_note(reps[-1])
    else:
        binary = args.binary
        if not binary.exists():
            _log(f"{binary} not found: build it (scripts/herald-bench.sh does) or pass --binary")
            return 2
        try:
            names = list_benchmarks(binary)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            _log(f"cannot list the benchmarks of {binary}: {e}")
            return 2
        plan = make_plan(names, suites, args.quick, args.filter)
        if args.list:
            for suite in suites:
                count = sum(1 for s, _ in plan.order if s == suite.name)
                print(f"{suite.name:8} {plan.suite_status[suite.name]:9} {count:3} benchmarks"
                      f"  {suite.title}")
            return 0
        runs, gbench_context = [], {}
        info = machine_info(binary)  # before the run: its commit and load are the run's
        load = info.get("load_average")
        if load and os.cpu_count() and load[0] > 0.5 * os.cpu_count():
            _log(f"the machine is busy (load average {load[0]:.2f} on {os.cpu_count()} cores): "
                 "the figures will be noisy")
        progress = Progress(len(plan.order))
        min_times: Dict[str, Optional[float]] = {}
        try:
            for suite_name, name in plan.order:
                suite = SUITES_BY_NAME[suite_name]
                min_time = args.min_time
                if min_time is None:
                    min_time = suite.quick_min_time if args.quick else suite.min_time
                min_times[suite_name] = min_time
                budget = 120 + repetitions * (min_time or 0.5) * 40
                progress.begin(suite_name, name)
                t0 = time.monotonic()
                doc, why = run_benchmark(binary, name, repetitions, min_time, budget)
                ok = doc is not None
                progress.end(suite_name, name, time.monotonic() - t0, ok)
                if doc is None:
                    failures.append({"benchmark": name, "suite": suite_name, "error": why})
                    _log(f"{name}: {why}")
                    continue
                gbench_context = gbench_context or doc.get("context", {})
                got = runs_from_gbench(doc)
                runs += got
                for r in got:
                    if r.failed:
                        failures.append({"benchmark": name, "suite": suite_name,
                                         "error": r.raw.get("error_message", "error")})
        except KeyboardInterrupt:
            progress.close()
            _log("interrupted: reporting what ran")
        progress.close()
        repetitions_note = _repetitions_note(repetitions)

    wall = time.monotonic() - started
    suite_tables = {s.name: build_tables(s, runs) for s in suites
                    if plan.suite_status.get(s.name) == "selected"}
    suite_tables = {k: v for k, v in suite_tables.items() if v}

    if args.load:  # describe the machine the loaded runs come from, as far as known
        info = machine_info(None)
        info = loaded_machine or dict(info, date=gbench_context.get("date", info["date"]),
                                      git_commit="", git_dirty=None, load_average=None)
    commit = (info.get("git_commit") or "")[:10] + ("+" if info.get("git_dirty") else "")
    subtitle = (f"{info.get('cpu_model') or 'unknown CPU'}, {info.get('nproc')} cores, "
                f"commit {commit or 'unknown'}, {info['date'][:16]}, {repetitions_note}")

    lines = [f"herald-bench: {subtitle}", ""]
    for suite in suites:
        status = plan.suite_status.get(suite.name)
        if status == "not built":
            where = "the loaded files have" if args.load else "herald_microbench has"
            lines += [f"== {suite.name}: not built ({where} no benchmark named "
                      f"BM_{suite.primary.replace(chr(92) + 'w+', '*')}) ==", ""]
        elif suite.name not in suite_tables:
            failed = sum(1 for f in failures if f["suite"] == suite.name)
            why = f" ({failed} benchmarks failed)" if failed else ""
            lines += [f"== {suite.name}: no result{why} ==", ""]
        else:
            lines += format_suite(suite, suite_tables[suite.name], repetitions_note)
    text = "\n".join(lines).rstrip() + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()

    out = args.out or (REPO_ROOT / "build" / "bench-results" /
                       dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.txt").write_text(text)
    write_csv(out, runs, suite_tables)
    options = {"quick": args.quick, "suites": [s.name for s in suites],
               "repetitions": repetitions, "min_time": args.min_time,
               "min_time_per_suite": {} if args.load else min_times, "filter": args.filter,
               "loaded": [str(p) for p in args.load or []], "wall_seconds": round(wall, 2),
               "benchmarks_run": len(plan.order) if not args.load else 0}
    doc = results_document(info, options, runs, plan.suite_status, suite_tables, failures,
                           gbench_context)
    (out / "results.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    pngs = [] if args.no_plots else draw_plots(out, suite_tables, subtitle, _log)
    _log(f"{len(plan.order) if not args.load else len(runs)} "
         f"{'benchmarks' if not args.load else 'runs loaded'} in {wall:.1f} s; results in {out}"
         + (f" ({len(pngs)} plots)" if pngs else ""))
    if failures:
        _log(f"{len(failures)} benchmark(s) failed: " +
             ", ".join(f["benchmark"] for f in failures))
        return 1
    return 0


def _repetitions_note(n: int) -> str:
    return "1 run" if n == 1 else f"median of {n}"


if __name__ == "__main__":
    sys.exit(main())
