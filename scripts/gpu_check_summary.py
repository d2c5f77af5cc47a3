"""The last lines of scripts/gpu_check.sh: test counts and how zerotuning's CUDA op compares with
the fastest SDPA backend, per benchmark case, dtype and CUDA path.

    python scripts/gpu_check_summary.py OUT_DIR

Reads OUT_DIR/tests_junit.xml and OUT_DIR/bench_gpu*.json; exits 1 if the test report or the
main benchmark is missing. The issue's target: within 1.05x of the fastest SDPA backend for
bfloat16 prefill and decode.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ElementTree

TARGET_RATIO = 1.05
BENCHMARKS = [("bench_gpu.json", "auto")] + [
    (f"bench_gpu_{path}.json", path) for path in ("split_kv", "flash_merge", "cudnn_merge")
]


def test_counts(path: str) -> str:
    suite = ElementTree.parse(path).getroot()
    if suite.tag == "testsuites":
        suite = suite[0]
    counts = {name: int(suite.get(name, 0)) for name in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return (f"tests: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['skipped']} skipped ({suite.get('time', '?')} s)")


def fastest_sdpa(rows: list[dict], case: str, dtype: str) -> dict | None:
    timed = [r for r in rows if r["case"] == case and r["dtype"] == dtype and "ms" in r
             and (r["impl"] == "sdpa" or r["impl"].startswith("sdpa-"))]
    return min(timed, key=lambda r: r["ms"], default=None)


def ratio_lines(rows: list[dict], path: str) -> list[str]:
    lines = []
    for row in rows:
        if row["impl"] != "zerotuning":
            continue
        if "ms" not in row:
            lines.append(f"{row['case']:<14}{row['dtype']:<10}{path:<13}  not run: {row.get('error', '?')}")
            continue
        best = fastest_sdpa(rows, row["case"], row["dtype"])
        verdict = ""
        if row["dtype"] == "bfloat16":
            verdict = "within 1.05x" if row["ratio_to_fastest_sdpa"] <= TARGET_RATIO else "OVER 1.05x"
        lines.append(f"{row['case']:<14}{row['dtype']:<10}{path:<13}{row['ms']:>9.3f}{best['impl']:>16}"
                     f"{best['ms']:>9.3f}{row['ratio_to_fastest_sdpa']:>8.3f}  {verdict}")
    return lines


def main(out_dir: str) -> int:
    status = 0
    junit = os.path.join(out_dir, "tests_junit.xml")
    if os.path.exists(junit):
        print(test_counts(junit))
    else:
        print("tests: no report (tests_junit.xml missing)")
        status = 1
    print(f"{'case':<14}{'dtype':<10}{'path':<13}{'ms':>9}{'fastest SDPA':>16}{'ms':>9}{'ratio':>8}")
    for name, path in BENCHMARKS:
        file = os.path.join(out_dir, name)
        if not os.path.exists(file):
            print(f"{name}: missing")
            status = status or int(path == "auto")
            continue
        with open(file) as f:
            bench = json.load(f)
        for line in ratio_lines(bench["rows"], path):
            print(line)
    return status


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    sys.exit(main(sys.argv[1]))
