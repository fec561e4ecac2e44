"""Cold import of each function's module in fresh processes, against the libraries its routes need.

DESIGN.md's budget: importing a function's module ≤ 1.25× importing the libraries its routes
genuinely need (functions_framework + google.cloud.firestore, plus googleapiclient or msal where used).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["functions_framework", "google.cloud.firestore"]
# What each function's routes genuinely need beyond the base (API.md section 1).
NEEDS = {
    "oauth": BASE + ["googleapiclient.discovery", "msal"],
    "send": BASE + ["googleapiclient.discovery", "google.cloud.pubsub_v1"],
    "read": BASE + ["googleapiclient.discovery"],
    "manage": BASE + ["googleapiclient.discovery", "google.cloud.pubsub_v1"],
    "gmail_push": BASE + ["googleapiclient.discovery", "google.cloud.pubsub_v1"],
    "graph_push": BASE + ["google.cloud.pubsub_v1"],
    "deliver": BASE,
    "renew": BASE + ["googleapiclient.discovery", "msal", "google.cloud.pubsub_v1"],
}

_TIME_IMPORT = """
import sys, time, importlib.util
t = time.perf_counter()
{body}
print((time.perf_counter() - t) * 1000)
"""


def _run(body: str) -> float:
    out = subprocess.run([sys.executable, "-c", _TIME_IMPORT.format(body=body)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def function_import_ms(name: str) -> float:
    body = (f"spec = importlib.util.spec_from_file_location('main', {str(ROOT / 'functions' / name / 'main.py')!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "import functions_framework")
    return _run(body)


def libraries_import_ms(modules: list[str]) -> float:
    return _run("\n".join(f"import {m}" for m in modules))


def table(runs: int = 5) -> list[tuple[str, float, float]]:
    rows = []
    for name, needs in NEEDS.items():
        fn = statistics.median(function_import_ms(name) for _ in range(runs))
        libs = statistics.median(libraries_import_ms(needs) for _ in range(runs))
        rows.append((name, fn, libs))
    return rows


def main(runs: int = 5) -> None:
    print(f"\nCold import, fresh process, median of {runs} (ms)")
    print(f"{'function':<12} {'module+ff':>10} {'needed libs':>12} {'ratio':>6}  budget ≤ 1.25")
    for name, fn, libs in table(runs):
        print(f"{name:<12} {fn:>10.0f} {libs:>12.0f} {fn / libs:>6.2f}")


if __name__ == "__main__":
    main()
