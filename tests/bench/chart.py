"""The benchmark chart (PNG): HTTP req/s per case and worker class, pipeline jobs/s ours vs Celery."""
from __future__ import annotations

from typing import Any, Dict, List


def draw(path: str, http: List[Dict[str, Any]], pipeline: List[Dict[str, Any]], machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1.3]})
    cases = [r["name"] for r in http if r["worker_class"] in (None, "sync")]
    classes = ["sync", "gevent"]
    width = 0.38
    for k, wc in enumerate(classes):
        values = []
        for case in cases:
            row = next((r for r in http if r["name"] == case and r["worker_class"] in (wc, None)), None)
            values.append(row["rps"] if row else 0)
        xs = [i + (k - 0.5) * width for i in range(len(cases))]
        bars = left.bar(xs, values, width, label=wc)
        left.bar_label(bars, labels=["%.0f" % v for v in values], fontsize=7)
    left.set_yscale("log")
    left.set_xticks(range(len(cases)))
    left.set_xticklabels([c.replace(" -> ", "\n-> ") for c in cases], fontsize=8)
    left.set_ylabel("requests/s (log scale)")
    left.set_title("HTTP (wrk, fixed concurrency)")
    left.legend(title="gunicorn worker class")

    counts = sorted({r["workers"] for r in pipeline})
    for k, system in enumerate(["joblab", "celery"]):
        values = [next((r["jobs_per_s"] for r in pipeline if r["system"] == system and r["workers"] == n), 0)
                  for n in counts]
        xs = [i + (k - 0.5) * width for i in range(len(counts))]
        bars = right.bar(xs, values, width, label="Kafka + PostgreSQL (ours)" if system == "joblab" else "Celery + Redis")
        right.bar_label(bars, labels=["%.0f" % v for v in values], fontsize=8)
    right.set_xticks(range(len(counts)))
    right.set_xticklabels(["%d worker%s" % (n, "s" if n > 1 else "") for n in counts])
    right.set_ylabel("no-op jobs/s, end to end")
    right.set_title("Pipeline")
    right.legend(fontsize=8)
    fig.suptitle("joblab benchmark — %s (one run; compare within the run)" % machine, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
