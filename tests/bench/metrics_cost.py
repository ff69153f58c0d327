"""What the metrics cost a request: one process's in-memory registry vs N workers' shared files.

The metric updates of one routed, answered request (in flight, routing decision, router scores, SLO,
spend, savings, latency histograms, tokens) are timed in a process without and with
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client picks its mode on import, so each mode gets its own
process). `tiergate serve` uses the files only with more than one worker.

    python -m tests.bench.metrics_cost
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit

from tests.procs import REPO


def per_request_us(n: int = 20000) -> float:
    """Microseconds of metric updates for one request, best of three runs of `n`."""
    from gateway.metrics import GatewayMetrics

    m = GatewayMetrics(["small", "medium", "large"], router_version="bench", policy="rule")

    def request() -> None:
        m.in_flight.inc()
        m.routed("small", "score")
        m.scored([0.2, 0.3])
        m.slo_result("interactive", "met")
        m.spent("small", 1e-6, "-")
        m.saved("small", 5e-6)
        m.in_flight.dec()
        m.observe("small", 200, total_s=0.01, ttft_s=0.01, overhead_s=0.0003, prompt_tokens=10, completion_tokens=16)

    return min(timeit.repeat(request, number=n, repeat=3)) / n * 1e6


def _measure(multiprocess: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO)
    with tempfile.TemporaryDirectory(prefix="tiergate-metrics-bench-") as folder:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        code = "from tests.bench.metrics_cost import per_request_us; print(per_request_us())"
        cmd = [sys.executable, "-c", code]
        out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    one = _measure(multiprocess=False)
    many = _measure(multiprocess=True)
    print(
        f"metric updates per request: one process {one:.1f} us,"
        f" N workers' shared files {many:.1f} us ({many / one:.1f}x)"
    )


if __name__ == "__main__":
    main()
