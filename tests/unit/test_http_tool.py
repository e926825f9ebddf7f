"""http tools against a local aiohttp server: the whole body up to the limit, a marker past it, no redirects."""
import asyncio

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from actors.tools.executor import LocalToolExecutor
from actors.tools.http import MAX_RESULT_BYTES, post
from kubechain.api.runspec import ResolvedTool, secret_key
from kubechain.api.v1alpha1 import ToolExecution
from kubechain.api.v1alpha1.tool import HTTPExecution


async def slow_body(request: web.Request) -> web.StreamResponse:
    """`size` bytes in 1,000-byte chunks with a pause between: a single read(n) sees only the first ones."""
    size = int(request.query.get("size", "50000"))
    response = web.StreamResponse(headers={"Content-Length": str(size)})
    await response.prepare(request)
    for start in range(0, size, 1000):
        await response.write(b"x" * min(1000, size - start))
        await asyncio.sleep(0.001)
    await response.write_eof()
    return response


def served(**routes):
    """Run `body(base_url)` against an app with these GET/POST routes."""
    async def around(body):
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", f"/{path}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with aiohttp.ClientSession() as session:
                return await body(session, f"http://127.0.0.1:{runner.addresses[0][1]}")
        finally:
            await runner.cleanup()
    return around


@pytest.mark.parametrize("size, shown, marked", [(50_000, 50_000, False), (MAX_RESULT_BYTES, MAX_RESULT_BYTES, False),
                                                 (MAX_RESULT_BYTES + 1, MAX_RESULT_BYTES, True)])
def test_the_body_is_read_to_the_limit_and_a_longer_one_is_marked(size, shown, marked):
    async def body(session, base):
        return await post(session, HTTPExecution(url=f"{base}/slow?size={size}"), {}, {})
    outcome = asyncio.run(served(slow=slow_body)(body))
    assert outcome.error is None and outcome.result.count("x") == shown
    assert outcome.result.endswith(f"[truncated: the response body was cut at {MAX_RESULT_BYTES} of {size} bytes]") \
        is marked


def test_a_redirect_is_a_tool_error_and_the_headers_never_reach_its_target():
    seen = []

    async def redirect(request):
        raise web.HTTPFound(f"{request.query['to']}/target")

    async def target(request):
        seen.append(dict(request.headers))
        return web.Response(text="secret-eating endpoint")

    async def body(session, base):
        execution = ToolExecution(http={"url": f"{base}/redirect?to={base}",
                                        "headers": [{"name": "Authorization",
                                                     "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]})
        tool = ResolvedTool(name="fetch", description="d", parameters={"type": "object"}, execution=execution)
        executor = LocalToolExecutor([tool], {secret_key("s", "k"): SecretStr("Bearer hunter2")})
        executor._http = session  # noqa: SLF001  (the test's session, closed by served())
        return await executor.execute("fetch", "{}", "c1", "u/1/c1")

    outcome = asyncio.run(served(redirect=redirect, target=target)(body))
    assert outcome.result is None and outcome.error.startswith("HTTP 302: redirects are not followed (Location: http")
    assert seen == []
