"""http tools: one POST per call, from the actor's process.

- **The body is read up to MAX_RESULT_BYTES** however it arrives (a single `read(n)` returns only what is
  buffered: 5,000 of 50,000 bytes), and a longer one is cut there with a marker saying so, and how long it was
  when the server said (Content-Length).
- **Redirects are not followed.** The request carries the tool's headers (Secret values: tokens, API keys) and the
  arguments; a redirect could send them anywhere, e.g. a 302 to a cloud metadata address. Following only
  same-origin redirects would still turn a POST into a GET for 301/302/303 and change what the tool does, so a
  3xx is a tool error naming the Location: point the tool's `url` at the final address.
"""
from __future__ import annotations

from typing import Any

from kubechain.api.v1alpha1.tool import HTTPExecution

from .executor import ToolOutcome  # executor imports this module only when an http tool is called

MAX_RESULT_BYTES = 64 * 1024  # of a response body, kept as the tool's result
ERROR_BODY_CHARS = 1024       # of an error response's body, in the tool error


def truncated(limit: int, length: str | None) -> str:
    """The marker after a body cut at `limit` bytes (`length`: the response's Content-Length, if it gave one)."""
    whole = f" of {length}" if length and length.isdigit() else ""
    return f"\n[truncated: the response body was cut at {limit}{whole} bytes]"


async def read_body(content: Any, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a response body (an aiohttp StreamReader), and whether there was more."""
    chunks, size = [], 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)  # returns what is buffered, or waits for some: loop
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    return body[:limit], len(body) > limit


async def post(session: Any, http: HTTPExecution, args: dict[str, Any], headers: dict[str, str],
               limit: int = MAX_RESULT_BYTES) -> ToolOutcome:
    """POST the arguments as JSON with `headers` (an aiohttp ClientSession): the body is the result, a non-2xx
    status or a redirect a tool error."""
    import aiohttp

    try:
        async with session.post(http.url, json=args, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=http.timeout_seconds)) as response:
            if 300 <= response.status < 400:
                where = response.headers.get("Location", "(no Location)")
                return ToolOutcome(error=f"HTTP {response.status}: redirects are not followed (Location: {where}): "
                                         "the request carries the tool's headers; set the tool's url to the final "
                                         "address")
            raw, more = await read_body(response.content, limit)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return ToolOutcome(error=f"{type(exc).__name__}: {exc}")
    body = raw.decode(errors="replace") + (truncated(limit, response.headers.get("Content-Length")) if more else "")
    if response.ok:
        return ToolOutcome(result=body)
    return ToolOutcome(error=f"HTTP {response.status}: {body[:ERROR_BODY_CHARS]}")
