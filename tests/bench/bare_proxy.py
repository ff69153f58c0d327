"""The floor a Python proxy cannot beat: a bare pass-through, the benchmark's yardstick for tiergate.

The same stack as the gateway (Starlette on uvicorn with uvloop + httptools, aiohttp with a
pooled connector, orjson), and nothing else: no routing, no admission, no metrics, no access log,
no auth, no error mapping. It forwards POST /v1/chat/completions to one upstream and relays the
answer, streamed when the request asks for it. Comparing tiergate with it separates what
tiergate's own work costs from what any Python proxy on this stack costs.

    python -m tests.bench.bare_proxy --port 8001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_JSON = {"Content-Type": "application/json"}


def create_app(upstream: str, pool_size: int = 256) -> Starlette:
    """A Starlette app that forwards chat completions to `upstream` (a base URL ending in /v1)."""
    url = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # One pooled session per worker, as the gateway keeps: reusing connections is most of a
        # proxy's speed, so the yardstick must not pay for new ones either.
        connector = aiohttp.TCPConnector(limit=pool_size, limit_per_host=0, keepalive_timeout=60.0)
        sessions.append(aiohttp.ClientSession(connector=connector))
        yield
        await sessions.pop().close()

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def chat(request: Request) -> Response:
        body = await request.body()
        # Parsed only to learn whether to stream; the bytes go upstream unchanged.
        stream = bool(orjson.loads(body).get("stream"))
        resp = await sessions[0].post(url, data=body, headers=_JSON)
        if not stream:
            async with resp:
                content = await resp.read()
            return Response(content, status_code=resp.status, media_type="application/json")

        async def relay() -> AsyncIterator[bytes]:
            async with resp:
                async for chunk in resp.content.iter_any():
                    yield chunk

        return StreamingResponse(relay(), status_code=resp.status, media_type="text/event-stream")

    routes = [Route("/healthz", health), Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/v1")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
