"""Gateway overhead benchmark: tiergate, a bare pass-through proxy and the upstream, in one run.

Three paths to the same fake upstream are measured in the same run, interleaved round by round,
with `wrk` as the load generator (a C program, so the client costs the machine little):
the upstream directly, a bare proxy on tiergate's stack with no routing and no metrics
(tests/bench/bare_proxy.py), and one tiergate worker with `model: "auto"`, so routing, metrics
and the access log are all on. Two ratios judge tiergate against the bare proxy, which cancels
most of the machine's own speed out:

- throughput ratio: tiergate's requests/s at concurrency 32 / the bare proxy's (1.0 = free);
- added-latency ratio: tiergate's added p50 at concurrency 1 / the bare proxy's, where added =
  p50 through the proxy minus the upstream's own p50 (1.0 = no cost beyond any proxy's).

    python -m tests.bench.overhead [--duration-s 3] [--rounds 3] [--out docs/benchmarks/overhead.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.procs import REPO, free_port, running, tiergate_cmd

BODY = '{"model":"auto","messages":[{"role":"user","content":"What is the capital of France?"}]%s}'
LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration_s: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not (p50 and p99 and rps):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed responses from {url}")
    return {"p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)), "rps": float(rps.group(1))}


UPSTREAM, BARE, TIERGATE = "upstream directly", "through the bare proxy", "through tiergate"
# Throughput at concurrency 32 as a share of the bare proxy's; below this, tiergate's own work
# costs more than the proxy it is built on (0.64 measured before the package restructure).
THROUGHPUT_RATIO_TARGET = 0.6

Row = tuple[str, str, int, dict[str, float]]


def ratio_lines(rows: list[Row], modes: list[str]) -> list[str]:
    """Per mode: tiergate against the bare proxy (throughput at c=32, added p50 at c=1)."""

    def med(mode: str, name: str, conns: int) -> dict[str, float]:
        return next(m for md, n, c, m in rows if md == mode and n == name and c == conns)

    lines = []
    for mode in modes:
        direct = med(mode, UPSTREAM, 1)["p50_ms"]
        bare_added = med(mode, BARE, 1)["p50_ms"] - direct
        tiergate_added = med(mode, TIERGATE, 1)["p50_ms"] - direct
        throughput = med(mode, TIERGATE, 32)["rps"] / med(mode, BARE, 32)["rps"]
        # The bare proxy's added p50 can round to zero on a fast machine; no ratio then.
        latency = f"{tiergate_added / bare_added:.2f}" if bare_added > 0.0 else "n/a"
        verdict = "meets" if throughput >= THROUGHPUT_RATIO_TARGET else "MISSES"
        lines.append(
            f"{mode}: throughput at concurrency 32, tiergate / bare proxy = {throughput:.2f} "
            f"({verdict} the {THROUGHPUT_RATIO_TARGET} target); added p50 at concurrency 1, tiergate / bare proxy"
            f" = {tiergate_added:.3f} / {bare_added:.3f} ms = {latency}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "overhead.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `make bench` installs it (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    scripts = {}
    for mode, extra in (("non-streaming", ""), ("streaming", ',"stream":true')):
        scripts[mode] = tmp / f"{mode}.lua"
        scripts[mode].write_text(LUA % (BODY % extra))

    up_port, gw_port, bare_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    fake_cmd = tiergate_cmd("fake-upstream", "--port", str(up_port), "--reply-tokens", "16")
    gw_cmd = tiergate_cmd(
        "serve", "--upstream", f"small={upstream}", "--upstream", f"large={upstream}",
        "--port", str(gw_port), "--workers", "1", "--log-level", "info",
    )  # fmt: skip
    bare_cmd = [sys.executable, "-m", "tests.bench.bare_proxy", "--port", str(bare_port), "--upstream", upstream]
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with (
        running(fake_cmd, f"http://127.0.0.1:{up_port}/health"),
        running(gw_cmd, f"http://127.0.0.1:{gw_port}/healthz") as gw,
        running(bare_cmd, f"http://127.0.0.1:{bare_port}/healthz"),
    ):
        targets = {
            UPSTREAM: f"{upstream}/chat/completions",
            BARE: f"http://127.0.0.1:{bare_port}/v1/chat/completions",
            TIERGATE: f"http://127.0.0.1:{gw_port}/v1/chat/completions",
        }
        # Warm both paths (connection pools, code paths) before measuring.
        for url in targets.values():
            run_wrk(url, scripts["non-streaming"], 8, 1)
        total = args.rounds * len(scripts) * 2 * len(targets)
        done = 0
        for r in range(args.rounds):
            for mode, script in scripts.items():
                for conns in (1, 32):
                    for name, url in targets.items():
                        done += 1
                        print(
                            f"[{done}/{total}] round {r + 1} {mode} c={conns} {name}",
                            file=sys.stderr,
                            flush=True,
                        )
                        results.setdefault((mode, name, conns), []).append(run_wrk(url, script, conns, args.duration_s))
        log_lines = sum(1 for line in gw.output().splitlines() if line.startswith('{"ts"'))

    rows: list[Row] = []
    for (mode, name, conns), runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in ("p50_ms", "p99_ms", "rps")}
        rows.append((mode, name, conns, med))
    table = ["| mode | path | concurrency | p50 ms | p99 ms | requests/s |", "|---|---|---|---|---|---|"]
    for mode, name, conns, med in rows:
        table.append(f"| {mode} | {name} | {conns} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} | {med['rps']:,.0f} |")
    summary = [f"- {line}" for line in ratio_lines(rows, list(scripts))]
    header = [
        "# Gateway overhead benchmark",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}; wrk -t1, {args.duration_s} s per run, median of {args.rounds} "
        "interleaved rounds. One gateway worker (uvicorn + uvloop + httptools) with `model: auto` routing, "
        "Prometheus metrics and the JSON access log on, and one bare pass-through proxy worker on the same "
        "stack (tests/bench/bare_proxy.py: no routing, no metrics), each in front of `tiergate fake-upstream` "
        "(16-token reply, no delay). wrk, the proxies and the fake share the machine's cores.",
        "",
        "Reproduce: `make bench` (or `python -m tests.bench.overhead`).",
        "",
    ]
    text = "\n".join([*header, *table, "", *summary, "", f"Access-log lines written during the run: {log_lines:,}", ""])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(
        f"written to {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}",
        file=sys.stderr,
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
