"""`make dashboard-preview`: the gateway's dashboard panels, drawn from a real Prometheus after a replay run.

Grafana is not installed here, so the picture is drawn with matplotlib from the same queries the
dashboard (k8s/grafana/tiergate.json) sends: a Prometheus scrapes the gateway of a `tiergate replay`
run (three replay tiers over the fixture outcome table, the shipped learned router with the live
cascade, the policy and four baselines in turn), then each gateway panel's queries are run over the
run's time range through Prometheus' HTTP API. Engine panels (vLLM, Ray Serve) need a real cluster;
panels whose metrics this build does not serve are left out and named.

    python -m tests.monitoring.preview [--out docs/dashboard-preview.png] [--duration-s 8] [--rate 4]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.replay import DriveSettings, ReplaySettings, run_replay
from tests.monitoring.promstack import PanelQuery, dashboard_queries, prometheus
from tests.procs import REPO, free_port

FIXTURE = REPO / "tests" / "fixtures" / "outcomes-small.jsonl"
MODELS = {"small": "mistralai/mistral-7b-chat", "mid": "mistralai/mixtral-8x7b-chat", "large": "gpt-4-1106-preview"}
# A shorter window than a live dashboard's: the run lasts about a minute, scraped every second.
RATE_INTERVAL = "6s"


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or "value"


def _runnable(q: PanelQuery) -> str:
    return q.expr.replace("$__rate_interval", RATE_INTERVAL).replace("$tier", ".*")


Runs = list[tuple[str, float, float]]  # (replay run, start, end), wall-clock seconds
_RUN_DONE = re.compile(r"^replay: (policy|always_\w+|random)\s+\d+ requests in ([\d.]+) s")


def draw(series: dict[str, list[tuple[str, list[tuple[float, float]]]]], start: float, runs: Runs, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.1 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, series.items(), strict=False):
        for label, points in lines:
            ax.plot([t - start for t, _ in points], [v for _, v in points], label=label, linewidth=1.3)
        for i, (name, t0, t1) in enumerate(runs):
            if i % 2 == 0:
                ax.axvspan(t0 - start, t1 - start, color="grey", alpha=0.08, linewidth=0)
            ax.text((t0 + t1) / 2 - start, 1.0, name.replace("always_", ""), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=6, color="dimgrey")  # fmt: skip
        ax.set_title(title, fontsize=10, pad=12)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(lines) <= 9:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(series) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the replay run", fontsize=8)
    fig.suptitle(
        "tiergate: the gateway's dashboard panels from a real Prometheus during `tiergate replay`"
        " (routing policy, then each baseline)",
        fontsize=13,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard-preview.png")
    parser.add_argument("--duration-s", type=float, default=8.0, help="Seconds of arrivals per replay run (5 runs).")
    parser.add_argument("--rate", type=float, default=4.0, help="Arrivals per second.")
    args = parser.parse_args(argv)
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="tiergate-preview-") as tmp,
        prometheus(Path(tmp), f"127.0.0.1:{port}") as prom,
    ):
        start = time.time()
        settings = ReplaySettings(
            data=[str(FIXTURE)],
            models=MODELS,
            rate=args.rate,
            duration_s=args.duration_s,
            drive=DriveSettings(concurrency=32, stream=True),
            gateway_port=port,
        )
        runs: Runs = []

        def progress(line: str) -> None:
            print(line, file=sys.stderr)
            done = _RUN_DONE.match(line)
            if done:
                now = time.time()
                runs.append((done.group(1), now - float(done.group(2)), now))

        run_replay(settings, progress)
        end = time.time()
        series: dict[str, list[tuple[str, list[tuple[float, float]]]]] = {}
        skipped: list[str] = []
        for q in dashboard_queries():
            if q.engine:
                continue
            result: list[dict[str, Any]] = prom.query_range(_runnable(q), start, end, 1.0)
            lines = [
                (_legend(q.legend, r["metric"]), [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN",)])
                for r in result
            ]
            lines = [(label, pts) for label, pts in lines if pts]
            if lines:
                series.setdefault(q.panel, []).extend(lines)
            elif q.panel not in series:
                skipped.append(q.panel)
    draw(series, start, runs, args.out)
    print(f"dashboard preview: {len(series)} panels drawn to {args.out}", file=sys.stderr)
    missing = sorted(set(skipped) - set(series))
    if missing:
        print(f"dashboard preview: no data for {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
