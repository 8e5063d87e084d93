"""Small statistics for the drills' and benchmarks' reports."""
from __future__ import annotations

import math
from typing import Dict, Iterable, List


def percentile(sorted_values: List[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(math.ceil(q / 100.0 * len(sorted_values)))))
    return sorted_values[rank - 1]


def latency_summary(seconds: Iterable[float]) -> Dict[str, float]:
    """count, p50, p90, p99, max in milliseconds."""
    values = sorted(seconds)
    out: Dict[str, float] = {"count": len(values)}
    for q in (50, 90, 99):
        out["p%d" % q] = percentile(values, q) * 1000
    out["max"] = (values[-1] * 1000) if values else float("nan")
    return out


def fmt_latency(s: Dict[str, float]) -> str:
    if not s["count"]:
        return "no jobs"
    return "n=%d p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms" % (s["count"], s["p50"], s["p90"], s["p99"], s["max"])
