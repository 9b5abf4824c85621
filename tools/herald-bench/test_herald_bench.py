#!/usr/bin/env python3
"""Unit tests of herald-bench's parsing and reporting. They run no benchmark: the input is
testdata/microbench_sample.json, the output of

  HERALD_BENCH_HISTOGRAM=1 herald_microbench --benchmark_filter=<17 benchmarks> \\
      --benchmark_min_time=0.01 --benchmark_repetitions=2 --benchmark_format=json

with the aggregate entries and the empty histogram buckets removed (min_time 0.01 makes the
async figures meaningless; only their shape matters here). Registered in CTest (label unit)
by tools/herald-bench/CMakeLists.txt; runs alone with `python3 test_herald_bench.py`.
"""

import contextlib
import copy
import io
import json
import math
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True

import herald_bench as hb  # noqa: E402

SAMPLE = HERE / "testdata" / "microbench_sample.json"


def sample_doc() -> dict:
    return json.loads(SAMPLE.read_text())


class ParseNameTest(unittest.TestCase):
    def test_arguments_threads_and_flags(self):
        b = hb.parse_name("BM_SyncPublish_Herald/slots:10/real_time/threads:2")
        self.assertEqual(b.family, "SyncPublish_Herald")
        self.assertEqual(b.subject, "SyncPublish")
        self.assertEqual(b.library, "Herald")
        self.assertEqual(b.args, (("slots", 10),))
        self.assertEqual(b.threads, 2)

    def test_several_named_arguments_keep_their_order(self):
        b = hb.parse_name("BM_AsyncLatency_Herald/subs:16/gap_us:200/real_time")
        self.assertEqual(b.args, (("subs", 16), ("gap_us", 200)))
        self.assertEqual(b.arg("gap_us"), 200)
        self.assertIsNone(b.arg("slots"))

    def test_unnamed_arguments_and_variants(self):
        b = hb.parse_name("BM_AsyncPublish_Herald_Bounded/64/4")
        self.assertEqual(b.library, "Herald_Bounded")
        self.assertEqual(b.args, (("arg0", 64), ("arg1", 4)))

    def test_non_benchmark_lines_are_ignored(self):
        self.assertIsNone(hb.parse_name("Running ./herald_microbench"))
        self.assertIsNone(hb.parse_name("BM_"))


class RunsTest(unittest.TestCase):
    def test_iterations_only_and_ns_per_event_from_items(self):
        runs = hb.runs_from_gbench(sample_doc())
        self.assertEqual(len(runs), 34)
        r = next(r for r in runs if r.name.full == "BM_SyncPublish_Herald/slots:1")
        self.assertAlmostEqual(r.ns_per_event, 1e9 / r.raw["items_per_second"])

    def test_median_aggregate_stands_in_when_no_repetition_is_reported(self):
        doc = sample_doc()
        one = copy.deepcopy(doc["benchmarks"][0])
        one.update(run_type="aggregate", aggregate_name="median",
                   name=one["run_name"] + "_median", run_name="BM_SyncPublish_Sigc/slots:1")
        mean = dict(one, aggregate_name="mean", name="BM_SyncPublish_Sigc/slots:1_mean")
        runs = hb.runs_from_gbench({"benchmarks": [one, mean]})
        self.assertEqual([r.name.full for r in runs], ["BM_SyncPublish_Sigc/slots:1"])

    def test_time_without_items_is_converted_to_ns(self):
        raw = {"name": "BM_X_Herald/1", "run_name": "BM_X_Herald/1", "run_type": "iteration",
               "real_time": 2.5, "cpu_time": 2.0, "time_unit": "us"}
        (run,) = hb.runs_from_gbench({"benchmarks": [raw]})
        self.assertAlmostEqual(run.ns_per_event, 2500.0)


class TablesTest(unittest.TestCase):
    def setUp(self):
        self.runs = hb.runs_from_gbench(sample_doc())

    def tables(self, suite):
        return {t.name: t for t in hb.build_tables(hb.SUITES_BY_NAME[suite], self.runs)}

    def test_sync_splits_threads_and_no_match(self):
        tables = self.tables("sync")
        one = tables["1 publishing thread"]
        self.assertEqual(one.xlabel, "slots")
        self.assertEqual(one.xs, [1, 10])
        self.assertEqual(one.libraries, ["Herald", "RawLoop"])
        ratio = one.ratio(10, "RawLoop")
        self.assertAlmostEqual(ratio, one.value(10, "RawLoop") / one.value(10, "Herald"))
        self.assertIn("2 publishing threads", tables)
        no_match = [t for name, t in tables.items() if name.startswith("nobody listening")]
        self.assertEqual(len(no_match), 1)
        self.assertEqual(no_match[0].xlabel, "others")

    def test_median_of_repetitions(self):
        one = self.tables("sync")["1 publishing thread"]
        values = one.cell(1, "Herald").values()
        self.assertEqual(len(values), 2)
        self.assertAlmostEqual(one.value(1, "Herald"), sum(values) / 2)

    def test_queue_suite_borrows_the_async_peers(self):
        (table,) = self.tables("queue").values()
        self.assertEqual(table.libraries, ["Herald", "ConcurrentQueue"])
        self.assertEqual(hb.SUITES_BY_NAME["queue"].label("Herald"), "herald queue")
        async_table = next(iter(self.tables("async").values()))
        self.assertEqual(table.value(1, "ConcurrentQueue"),
                         async_table.value(1, "ConcurrentQueue"))

    def test_mt_list_rows_are_threads_and_unlocked_walk_joins_iterate(self):
        tables = self.tables("mt_list")
        self.assertEqual(sorted(tables), ["AppendPop", "Iterate"])
        self.assertEqual(tables["AppendPop"].libraries, ["MtList", "MutexList"])
        self.assertEqual(tables["Iterate"].libraries, ["MtList_Unlocked"])
        self.assertEqual(tables["AppendPop"].xlabel, "threads")

    def test_herald_variant_appears_next_to_herald(self):
        runs = list(self.runs)
        for r in self.runs:
            if r.name.family == "AsyncPublish_Herald":
                raw = dict(r.raw, name=r.raw["name"].replace("Herald", "Herald_Bounded"),
                           run_name=r.raw["run_name"].replace("Herald", "Herald_Bounded"))
                runs.append(hb.Run(raw, hb.parse_name(raw["run_name"])))
        (table,) = hb.build_tables(hb.SUITES_BY_NAME["async"], runs)
        self.assertEqual(table.libraries, ["Herald", "Herald_Bounded", "ConcurrentQueue"])
        self.assertEqual(hb.library_label("Herald_Bounded"), "herald bounded")
        self.assertAlmostEqual(table.ratio(1, "Herald_Bounded"), 1.0)

    def test_latency_table_and_histogram(self):
        (table,) = self.tables("latency").values()
        self.assertEqual(table.name, "one event every 200 us")
        cell = table.cell(1, "Herald")
        p50, p99 = cell.median("p50_ns"), cell.median("p99_ns")
        self.assertTrue(0 < p50 <= p99)
        hist = hb.histogram(cell)
        self.assertTrue(hist)
        self.assertEqual(hist, sorted(hist))
        deliveries = sum(n for _, n in hist)
        self.assertEqual(deliveries, sum(cell.values("samples")))
        lines = hb.format_latency_table(table, "median of 2")
        self.assertTrue(any("ConcurrentQueue" in line for line in lines))


class FormatTest(unittest.TestCase):
    def test_numbers(self):
        self.assertEqual(hb.fmt_ns(3.284), "3.28")
        self.assertEqual(hb.fmt_ns(15.54), "15.5")
        self.assertEqual(hb.fmt_ns(2107.4), "2107")
        self.assertEqual(hb.fmt_ns(math.nan), "-")
        self.assertEqual(hb.fmt_ratio(23.41), "23.4x")
        self.assertEqual(hb.fmt_ratio(0.454), "0.45x")
        self.assertEqual(hb.fmt_ratio(0.0014), "0.0014x")
        self.assertEqual(hb.fmt_latency(781), "781 ns")
        self.assertEqual(hb.fmt_latency(3917), "3.92 us")
        self.assertEqual(hb.fmt_latency(7.0776e6), "7.08 ms")

    def test_time_table_shows_values_then_ratios_under_the_same_columns(self):
        runs = hb.runs_from_gbench(sample_doc())
        tables = hb.build_tables(hb.SUITES_BY_NAME["sync"], runs)
        one = next(t for t in tables if t.name == "1 publishing thread")
        lines = hb.format_time_table(one, "median of 2")
        self.assertIn("sync: 1 publishing thread", lines[0])
        header = lines[1]
        self.assertIn("herald", header)
        self.assertIn("raw loop", header)
        ratio_row = next(line for line in lines if line.strip().startswith("10 ") and "x" in line)
        # the ratio sits under the raw loop column: both end at the same position
        self.assertEqual(ratio_row.rstrip().rfind("x") + 1, len(header.rstrip()))


class PlanTest(unittest.TestCase):
    NAMES = ["BM_SyncPublish_Herald/slots:1", "BM_SyncPublish_RawLoop/slots:1",
             "BM_MtList_AppendPop/real_time/threads:4", "BM_MtList_AppendPop/real_time/threads:1",
             "BM_AsyncPublish_ConcurrentQueue/subs:1/real_time",
             "BM_QueuePublish_Herald/subs:1/real_time"]

    def test_absent_suites_are_not_built_and_shared_benchmarks_run_once(self):
        plan = hb.make_plan(self.NAMES, hb.SUITES, quick=False, name_filter=None)
        self.assertEqual(plan.suite_status["libp2p"], "not built")
        self.assertEqual(plan.suite_status["async"], "selected")
        names = [n for _, n in plan.order]
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(len(names), len(self.NAMES))

    def test_quick_drops_four_thread_mt_list_runs(self):
        plan = hb.make_plan(self.NAMES, hb.SUITES, quick=True, name_filter=None)
        names = [n for _, n in plan.order]
        self.assertNotIn("BM_MtList_AppendPop/real_time/threads:4", names)
        self.assertIn("BM_MtList_AppendPop/real_time/threads:1", names)

    def test_filter(self):
        plan = hb.make_plan(self.NAMES, hb.SUITES, quick=False, name_filter="RawLoop")
        self.assertEqual([n for _, n in plan.order], ["BM_SyncPublish_RawLoop/slots:1"])


class EndToEndTest(unittest.TestCase):
    def test_load_writes_every_file_and_reports_libp2p_not_built(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = io.StringIO()
            err = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = hb.main(["--load", str(SAMPLE), "--no-plots", "--out", tmp])
            self.assertEqual(status, 0, err.getvalue())
            text = out.getvalue()
            self.assertIn("libp2p: not built", text)
            self.assertIn("== sync: 1 publishing thread", text)
            for name in ("runs.csv", "summary.csv", "latency.csv", "latency_histogram.csv",
                         "results.json", "tables.txt"):
                self.assertTrue((Path(tmp) / name).is_file(), name)
            doc = json.loads((Path(tmp) / "results.json").read_text(),
                             parse_constant=self.fail)  # strict JSON: no NaN, no Infinity
            self.assertEqual(doc["tool"], "herald-bench")
            self.assertEqual(len(doc["runs"]), 34)
            self.assertIn("nproc", doc["machine"])
            statuses = {s["name"]: s["status"] for s in doc["suites"]}
            self.assertEqual(statuses["libp2p"], "not built")
            runs_csv = (Path(tmp) / "runs.csv").read_text().splitlines()
            self.assertEqual(len(runs_csv), 35)

    def test_gnuplot_scripts(self):
        runs = hb.runs_from_gbench(sample_doc())
        sync = hb.SUITES_BY_NAME["sync"]
        script = hb.gnuplot_time_script(sync, hb.build_tables(sync, runs), Path("x.png"), "t")
        self.assertIn("set logscale xy", script)
        self.assertIn('title "raw loop"', script)
        self.assertNotIn("nobody listening", script)  # x = 0 cannot go on a log axis
        latency = hb.SUITES_BY_NAME["latency"]
        script = hb.gnuplot_latency_script(latency, hb.build_tables(latency, runs),
                                           Path("h.png"), "t")
        self.assertIn("with steps", script)

    def test_help(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as done:
            hb.main(["--help"])
        self.assertEqual(done.exception.code, 0)
        self.assertIn("--quick", out.getvalue())

    def test_unknown_suite_is_refused(self):
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit) as done:
            hb.main(["--suite", "nope", "--load", str(SAMPLE)])
        self.assertEqual(done.exception.code, 2)


if __name__ == "__main__":
    unittest.main()
