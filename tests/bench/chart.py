"""The benchmark chart (PNG): HTTP req/s per case and worker class, pipeline jobs/s of every row."""
from __future__ import annotations

from typing import Any, Dict, List


def draw(path: str, http: List[Dict[str, Any]], pipeline: List[Dict[str, Any]], machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [3, 2]})
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

    # Pipeline: jobs/s of each row (system, submit, job), ours in one colour, Celery's in another.
    labels, values, colours = [], [], []
    for r in pipeline:
        labels.append("%s\n%s\n%s" % (r["system"], r["submit"], r["kind"]))
        values.append(r["jobs_per_s"])
        colours.append("tab:blue" if r["system"] == "joblab" else "tab:orange")
    bars = right.barh(range(len(values)), values, color=colours)
    right.bar_label(bars, labels=["%.0f" % v for v in values], fontsize=7)
    right.set_yticks(range(len(labels)))
    right.set_yticklabels(labels, fontsize=6)
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("jobs/s, end to end (log scale)")
    right.set_title("Pipeline (blue: ours; orange: Celery + Redis)")
    fig.suptitle("joblab benchmark — %s (one run; compare within the run)" % machine, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
