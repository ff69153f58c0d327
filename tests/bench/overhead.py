"""Gateway overhead benchmark: one gateway worker in front of the fake upstream vs the upstream directly.

Both paths are measured in the same run, interleaved round by round, with `wrk` as the load
generator (a C program, so the client costs the machine little). The gateway runs with
`model: "auto"`, so routing, metrics and the access log are all on.

    python -m tests.bench.overhead [--duration-s 5] [--rounds 3] [--out docs/benchmarks/overhead.md]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=int, default=5, help="seconds per wrk run")
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

    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    fake_cmd = tiergate_cmd("fake-upstream", "--port", str(up_port), "--reply-tokens", "16")
    gw_cmd = tiergate_cmd(
        "serve", "--upstream", f"small={upstream}", "--upstream", f"large={upstream}",
        "--port", str(gw_port), "--workers", "1", "--log-level", "info",
    )  # fmt: skip
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with (
        running(fake_cmd, f"http://127.0.0.1:{up_port}/health"),
        running(gw_cmd, f"http://127.0.0.1:{gw_port}/healthz") as gw,
    ):
        targets = {
            "upstream directly": f"{upstream}/chat/completions",
            "through tiergate": f"http://127.0.0.1:{gw_port}/v1/chat/completions",
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

    rows = []
    for (mode, name, conns), runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in ("p50_ms", "p99_ms", "rps")}
        rows.append((mode, name, conns, med))
    table = ["| mode | path | concurrency | p50 ms | p99 ms | requests/s |", "|---|---|---|---|---|---|"]
    for mode, name, conns, med in rows:
        table.append(f"| {mode} | {name} | {conns} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} | {med['rps']:,.0f} |")
    summary = []
    for mode in scripts:
        direct = next(m for md, n, c, m in rows if md == mode and n == "upstream directly" and c == 1)
        via = next(m for md, n, c, m in rows if md == mode and n == "through tiergate" and c == 1)
        via32 = next(m for md, n, c, m in rows if md == mode and n == "through tiergate" and c == 32)
        overhead = via["p50_ms"] - direct["p50_ms"]
        summary.append(
            f"- {mode}: gateway overhead p50 at concurrency 1 = {overhead:.3f} ms (target <= 0.5 ms); "
            f"through tiergate at concurrency 32 = {via32['rps']:,.0f} requests/s (target >= 2,500)"
        )
    header = [
        "# Gateway overhead benchmark",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}; wrk -t1, {args.duration_s} s per run, median of {args.rounds} "
        "interleaved rounds. One gateway worker (uvicorn + uvloop + httptools) with `model: auto` routing, "
        "Prometheus metrics and the JSON access log on, in front of `tiergate fake-upstream` (16-token reply, "
        "no delay). wrk, the gateway and the fake share the machine's cores.",
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
