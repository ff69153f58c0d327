"""A request's latency budget: headers over class defaults; a whole answer's first token is its last."""

from __future__ import annotations

import pytest

from deployments.profile import RoutingSpec
from gateway.budgets import SLO_TOTAL_HEADER, SLO_TTFT_HEADER, request_budget
from gateway.errors import InvalidRequest
from router.runtime.slo import Budget

ROUTING = RoutingSpec()


def test_class_defaults_bound_the_first_token() -> None:
    assert request_budget({}, "realtime", ROUTING, sent_whole=False) == Budget(ttft_ms=100.0, total_ms=None)


def test_an_answer_sent_whole_is_held_to_its_first_token_budget_in_total() -> None:
    assert request_budget({}, "interactive", ROUTING, sent_whole=True) == Budget(ttft_ms=None, total_ms=1000.0)
    both = {SLO_TTFT_HEADER: "300", SLO_TOTAL_HEADER: "200"}
    assert request_budget(both, "batch", ROUTING, sent_whole=True) == Budget(ttft_ms=None, total_ms=200.0)


def test_headers_override_the_class() -> None:
    got = request_budget({SLO_TTFT_HEADER: "250", SLO_TOTAL_HEADER: "4000"}, "realtime", ROUTING, sent_whole=False)
    assert got == Budget(ttft_ms=250.0, total_ms=4000.0)


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "nan", "inf", "1e12"])
def test_bad_budget_headers_are_a_400_naming_the_header(bad: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        request_budget({SLO_TOTAL_HEADER: bad}, "batch", ROUTING, sent_whole=False)
    assert err.value.param == SLO_TOTAL_HEADER
