"""The operator's live-stream endpoint with fakes for the apiserver (reads as the user) and Ray (the actor's
stream_since): who gets a stream, and what it carries across an actor's restart."""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from kubechain.core.livestream import Cursor
from kubechain.operator import streams
from kubechain.operator.raygateway import ActorDied

RUN = {"metadata": {"name": "r", "namespace": "ns", "uid": "u1"}, "status": {"phase": "Running", "step": 0}}


class Reads:
    def __init__(self, allowed: set[str], phases: list[str]):
        self.allowed, self.phases, self.asked = allowed, phases, []

    async def taskrun(self, token, namespace, name):
        self.asked.append(token)
        if token not in self.allowed:
            return 403, {"message": f'taskruns.kubechain.dev "{name}" is forbidden: User "{token}" cannot get'}
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        return 200, {**RUN, "status": {"phase": phase, "step": 0}}


class Ray:
    """Two actors in turn: the first streams two batches then dies, its replacement streams from the start."""

    def __init__(self):
        self.found, self.cursors = 0, []
        self.batches = {1: [[{"c": "he"}], [{"c": "llo"}], ActorDied("killed")], 2: [[{"c": "hello"}], None]}

    def find(self, ref, name=None, pool=True):
        assert ref.uid == "u1" and pool is False  # a reader never adopts the pool
        self.found += 1
        return self.found if self.found <= 2 else None

    async def stream_since(self, handle, uid, cursor, wait):
        assert uid == "u1"
        self.cursors.append(cursor)
        queue = self.batches[handle]
        item = queue.pop(0) if queue else None
        if isinstance(item, Exception):
            raise item
        if item is None:
            return None
        offset = cursor.offset if cursor.source == f"actor{handle}" else 0
        return {"step": 1, "source": f"actor{handle}", "attempt": 1, "offset": offset, "deltas": item}


async def serve(reads, ray):
    server = streams.StreamServer(ray, reads, max_streams=4)
    app = web.Application()
    app.router.add_get("/streams/{namespace}/{name}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/streams/ns/r"


def test_who_may_not_get_the_run_gets_the_apiservers_403_and_no_stream():
    async def scenario():
        ray = Ray()
        runner, url = await serve(Reads({"alice"}, ["Running"]), ray)
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Authorization": "Bearer mallory"}) as answer:
                assert answer.status == 403 and "forbidden" in (await answer.json())["message"]
            async with http.get(url) as answer:
                assert answer.status == 401
        await runner.cleanup()
        assert ray.found == 0 and ray.cursors == []  # Ray was never asked
    asyncio.run(scenario())


def test_batches_follow_the_cursor_across_an_actor_restart_until_the_run_ends(monkeypatch):
    monkeypatch.setattr(streams, "IDLE_SECONDS", (0.01, 0.01))

    async def scenario():
        ray = Ray()
        reads = Reads({"alice"}, ["Running", "Running", "Running", "Completed"])
        runner, url = await serve(reads, ray)
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers={"Authorization": "Bearer alice"}) as answer:
                assert answer.status == 200
                body = (await answer.text()).split("\n\n")
        await runner.cleanup()
        events = [part for part in body if part.startswith("event:")]
        kinds = [e.split("\n")[0].removeprefix("event: ") for e in events]
        assert kinds == ["run", "delta", "delta", "delta", "end"]
        assert '"deltas":[{"c":"he"}]' in events[1] and '"offset":1' in events[2]
        assert '"source":"actor2"' in events[3] and '"offset":0' in events[3]
        assert ray.cursors[:3] == [Cursor(), Cursor(1, "actor1", 1, 1), Cursor(1, "actor1", 1, 2)]
        assert set(reads.asked) == {"alice"}  # every read of the run was the user's
    asyncio.run(scenario())
