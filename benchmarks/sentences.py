"""Throughput of the radiology sentence splitter on the real Open-I reports, one core, cold.

Usage::

    python benchmarks/sentences.py [--archive ../shared/data/iu_xray/NLMCXR_reports.tgz]

"Cold" means every report is split from scratch (no cache: ``split_sentences`` has none). Three
workloads, each timed over all 3,955 reports, best of ``--repeats`` passes, in this process:

* ``split``: ``split_sentences(findings)`` + ``split_sentences(impression)`` per report (what the
  sampler does for a record with sections);
* ``parse+split``: a report string ``"FINDINGS: ...\\nIMPRESSION: ..."`` through
  ``parse_report_sections`` then ``split_sentences`` on both sections;
* ``nltk punkt``: reference, plain ``PunktSentenceTokenizer.tokenize`` with the same shipped
  parameters on findings and impression (no radiology rules, no shortcut).

Prints reports/s and the ratios to the Punkt reference measured in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from relaxclip.data.openi import read_openi_reports
from relaxclip.sentences import ABBREVIATIONS, parse_report_sections, split_sentences

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archive", type=Path, default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not args.archive.exists():
        sys.exit(f"archive not found: {args.archive} (needs ../shared/data)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    records = read_openi_reports(args.archive)
    pairs = [(r["findings"], r["impression"]) for r in records]
    strings = [f"FINDINGS: {f}\nIMPRESSION: {i}" for f, i in pairs]
    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    punkt = PunktSentenceTokenizer(params)

    def split() -> None:
        for f, i in pairs:
            split_sentences(f)
            split_sentences(i)

    def parse_split() -> None:
        for s in strings:
            sec = parse_report_sections(s)
            split_sentences(sec.get("findings", ""))
            split_sentences(sec.get("impression", ""))

    def plain() -> None:
        for f, i in pairs:
            punkt.tokenize(f)
            punkt.tokenize(i)

    n = len(pairs)
    n_sent = sum(len(split_sentences(f)) + len(split_sentences(i)) for f, i in pairs)
    t_split = _best(split, args.repeats)
    t_parse = _best(parse_split, args.repeats)
    t_punkt = _best(plain, args.repeats)
    print(f"{n} Open-I reports (findings + impression), {n_sent} sentences; one core; cold")
    print(f"split        : {n / t_split:10,.0f} reports/s   ({n_sent / t_split:,.0f} sentences/s)")
    print(f"parse+split  : {n / t_parse:10,.0f} reports/s")
    print(f"nltk punkt   : {n / t_punkt:10,.0f} reports/s   (reference, same process)")
    print(f"ratio split / punkt       = {t_punkt / t_split:.2f}x faster")
    print(f"ratio parse+split / punkt = {t_punkt / t_parse:.2f}x faster")
    print(f"target >= 5,000 reports/s: split {'met' if n / t_split >= 5000 else 'NOT met'}")


if __name__ == "__main__":
    main()
