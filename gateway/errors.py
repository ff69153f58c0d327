"""The gateway's HTTP errors, and the one function that renders them as OpenAI's error JSON.

Every leaf is one HTTP answer: a status, an OpenAI error `type` and a default `code`. They hang
under `router.errors.GatewayError`, so the product has one tree (see router/errors.py for the
root and its config / launch branches):

    TiergateError                           router.errors
    └── GatewayError                        router.errors
        └── HTTPError           500  internal_error          base of the leaves below; renders itself
            ├── InternalError           500  internal_error          a fault in the gateway itself
            ├── InvalidRequest          400  invalid_request_error   (param names the field)
            ├── AuthenticationFailed    401  authentication_error    (WWW-Authenticate: Bearer)
            ├── NotFound                404  invalid_request_error   (unknown model or route)
            ├── MethodNotAllowed        405  invalid_request_error
            ├── PayloadTooLarge         413  invalid_request_error
            ├── RateLimited             429  requests | tokens | insufficient_quota (Retry-After)
            ├── UpstreamRejected        4xx  passed through from the tier: the caller's fault, not the tier's
            ├── UpstreamFailed          502  upstream_error          (connect error, 5xx, bad body)
            ├── Overloaded              503  overloaded_error        (Retry-After)
            ├── TierUnavailable         503  overloaded_error        a pinned tier's breaker is open (Retry-After)
            └── UpstreamTimeout         504  timeout_error

`counts_as_tier_failure` marks the leaves that are the tier's fault (UpstreamFailed,
UpstreamTimeout); bad requests never count against a tier. Those two carry `fault` (what went wrong:
connect, timeout, status_429, status_5xx, broken, misconfigured, bad_answer) and the tier's
`retry_after_s`, which the gateway's retry loop reads (gateway/resilience.py).

A caller who hangs up is not an error and not in this tree: see `gateway.disconnect.ClientClosed`.

Messages are bounded and never contain server paths, keys or prompt text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from starlette.responses import Response

from router.errors import GatewayError

MAX_MESSAGE_CHARS = 500


class HTTPError(GatewayError):
    """An error with its HTTP answer; raise a leaf, catch this."""

    status_code = 500
    error_type = "internal_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})

    # Only faults of the tier itself (5xx, timeouts) count against it; bad requests never do.
    counts_as_tier_failure = False


class InternalError(HTTPError):
    """A fault in the gateway itself; the message never carries the cause's details."""

    default_code = "internal_error"


class InvalidRequest(HTTPError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(HTTPError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str = "Missing or invalid API key. Send 'Authorization: Bearer <key>'.") -> None:
        super().__init__(message, headers={"www-authenticate": 'Bearer realm="tiergate"'})


class NotFound(HTTPError):
    status_code = 404
    error_type = "invalid_request_error"


class MethodNotAllowed(HTTPError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(HTTPError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class _RetryLater(HTTPError):
    """A refusal the caller should retry: carries Retry-After in whole seconds (at least 1)."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"retry-after": str(max(retry_after_s, 1))})


class RateLimited(_RetryLater):
    """A key over its rate limit or spend budget, in OpenAI's own terms: type 'requests' or 'tokens' with
    code 'rate_limit_exceeded', or type and code 'insufficient_quota' for spend."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=math.ceil(retry_after_s))
        if limit == "spend":
            self.error_type = self.code = "insufficient_quota"
        else:
            self.error_type = limit


class UpstreamRejected(HTTPError):
    """The tier refused the request as invalid (4xx): reported to the caller with the tier's status."""

    error_type = "invalid_request_error"

    def __init__(self, status_code: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message, param=param, code=code)
        self.status_code = status_code


class UpstreamFailed(HTTPError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_failed"

    counts_as_tier_failure = True

    def __init__(self, message: str, *, fault: str = "bad_answer", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.fault = fault
        self.retry_after_s = retry_after_s


class Overloaded(_RetryLater):
    status_code = 503
    error_type = "overloaded_error"
    default_code = "overloaded"


class TierUnavailable(_RetryLater):
    """A request pinned to a tier whose circuit breaker is open: refused fast, not sent."""

    status_code = 503
    error_type = "overloaded_error"
    default_code = "tier_unavailable"


class UpstreamTimeout(HTTPError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "upstream_timeout"

    counts_as_tier_failure = True
    fault = "timeout"
    retry_after_s: float | None = None


def error_body(err: HTTPError) -> bytes:
    return orjson.dumps(
        {"error": {"message": err.message, "type": err.error_type, "param": err.param, "code": err.code}}
    )


def render(err: HTTPError, extra_headers: Mapping[str, str] | None = None) -> Response:
    """The single place where an error becomes an HTTP response."""
    headers = dict(err.headers)
    if extra_headers:
        headers.update(extra_headers)
    return Response(error_body(err), status_code=err.status_code, headers=headers, media_type="application/json")
