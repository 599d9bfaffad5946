"""How fast ``audit verify`` is, next to SHA-256 alone over the same bytes.

The baseline is the least any verifier must do: for every audit entry, the SHA-256 of the
exact UTF-8 text its hash covers (:func:`pdca.audit.text_of`), those bytes built in memory
beforehand, untimed. ``verify`` is :meth:`pdca.Engine.verify_audit` over the whole log, with
every check it makes. The two are timed in the same run, taking turns, and their medians
compared: ``ratio`` is the speed of verify relative to the speed of hashing alone
(``baseline_seconds / verify_seconds``); the target is 0.2.

Run on its own (prints one JSON object)::

    .venv/bin/python -m benchmarks.bench_verify --db sqlite:///national.db
    .venv/bin/python -m benchmarks.bench_verify --db postgresql://postgres@127.0.0.1/national
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from pdca import Engine, audit

TARGET = 0.2


def _hashed_bytes(engine: Engine) -> list[bytes]:
    """Every entry's hashed text, as UTF-8, checked against its stored hash."""
    texts = []
    for entry in engine.audit_log():
        text = audit.text_of(entry).encode("utf-8")
        if hashlib.sha256(text).hexdigest() != entry.hash:
            raise ValueError(f"entry {entry.seq} does not match its hash: verify the log first")
        texts.append(text)
    return texts


def _time_hashing(texts: list[bytes]) -> float:
    sha256 = hashlib.sha256
    started = time.perf_counter()
    for text in texts:
        sha256(text).hexdigest()
    return time.perf_counter() - started


def verify_figures(url: str, *, repeat: int = 3) -> dict[str, Any]:
    """Time ``verify_audit`` and the hash-only baseline over the log at ``url``."""
    engine = Engine.open(url)
    try:
        texts = _hashed_bytes(engine)
        verify_times: list[float] = []
        baseline_times: list[float] = []
        ok = True
        for _ in range(max(1, repeat)):
            started = time.perf_counter()
            report = engine.verify_audit()
            verify_times.append(time.perf_counter() - started)
            ok = ok and report.ok and report.entries == len(texts)
            baseline_times.append(_time_hashing(texts))
    finally:
        engine.close()
    verify_seconds = statistics.median(verify_times)
    baseline_seconds = statistics.median(baseline_times)
    ratio = baseline_seconds / verify_seconds if verify_seconds > 0 else 0.0
    return {
        "entries": len(texts),
        "verify_seconds": verify_seconds,
        "baseline_seconds": baseline_seconds,
        "ratio": ratio,
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "ok": ok,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_verify",
        description="audit verify against SHA-256 alone over the same bytes",
    )
    parser.add_argument("--db", required=True, help="a database with an audit log")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (median)")
    args = parser.parse_args(argv)
    figures = verify_figures(args.db, repeat=args.repeat)
    json.dump(figures, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
