"""Reading vLLM's own load counters from a Prometheus scrape."""

from __future__ import annotations

from gateway.engine_load import parse_load

SCRAPE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="small"} 3.0
vllm:num_requests_running{engine="0",model_name="big"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="small"} 2.0
"""


def test_counts_are_read_per_model() -> None:
    load = parse_load(SCRAPE, "small")
    assert load is not None and (load.running, load.waiting, load.source) == (3.0, 2.0, "engine")
    assert parse_load(SCRAPE) is not None and parse_load(SCRAPE).running == 10.0  # type: ignore[union-attr]


def test_ray_prefixed_names_count_and_other_metrics_do_not() -> None:
    ray = SCRAPE.replace("vllm:", "ray_vllm:")
    assert parse_load(ray, "small") == parse_load(SCRAPE, "small")
    assert parse_load("# TYPE other gauge\nother 1.0\n") is None
