"""The body of a checkpoint write: what changed since the store's last write, or all of the actor's fields.

A JSON merge patch (RFC 7386) replaces a list wholesale, so a write that adds one message to the unsealed tail
re-sends the whole tail (up to layout.SEAL_BYTES). A JSON patch (RFC 6902) says what changed instead: it appends
the new messages and calls, replaces the calls and the small fields that changed, and leaves the rest alone.

A delta is only as right as its base. The base is the store's own last write, and the patch carries that write's
resourceVersion (a `replace`, which the apiserver checks like a merge patch's: a write in between is a 409, after
which the store reads the object again and writes whole). So the base is what the object holds, unless the tail
moved (a seal) or a field was never written by this store: then the write is a whole merge patch, as it was.
Not a `test` op on metadata.uid: a failed test is a bare 422, and a replaced object has another resourceVersion
anyway (a 409, then the read says it is gone); a `replace` of the uid is ignored on the status subresource.

Pure: encoded texts in, bytes out. Each message and finished call is encoded once (layout.py keeps its text);
a body is joined from those texts, nothing in it is encoded again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NULL = "null"  # a small field's text that removes it


@dataclass(frozen=True)
class Fields:
    """The actor's fields of TaskRun.status, as JSON texts."""
    small: dict[str, str]  # by wire name; NULL removes the field
    start: tuple[int, int]  # where the tail starts: messages and calls sealed before it
    messages: list[str]
    calls: list[str]

    def size(self) -> int:
        """About the bytes these fields take in the stored status (ASCII JSON: characters are bytes)."""
        return (sum(len(k) + len(v) + 4 for k, v in self.small.items()) + sum(map(len, self.messages))
                + sum(map(len, self.calls)) + len(self.messages) + len(self.calls))


def body(uid: str, version: str, fields: Fields, base: Fields | None) -> tuple[bytes, str]:
    """(body, content type) of the write of `fields` over `base`, the last write at `version` (None: unknown)."""
    ops = None if base is None else _delta(fields, base)
    if ops is None:
        return _merge_patch(uid, version, fields), MERGE_PATCH
    precondition = _op("replace", "/metadata/resourceVersion", json.dumps(version))
    return f"[{','.join([precondition, *ops])}]".encode(), JSON_PATCH


def _merge_patch(uid: str, version: str, fields: Fields) -> bytes:
    small = [f"{json.dumps(name)}:{text}" for name, text in fields.small.items()]
    lists = [f'"contextWindow":[{",".join(fields.messages)}]', f'"toolCallHistory":[{",".join(fields.calls)}]']
    metadata = f'{{"uid":{json.dumps(uid)},"resourceVersion":{json.dumps(version)}}}'
    return f'{{"metadata":{metadata},"status":{{{",".join(small + lists)}}}}}'.encode()


def _delta(fields: Fields, base: Fields) -> list[str] | None:
    """The ops that turn `base` into `fields`, or None when that is not known to be right."""
    if (fields.start != base.start or len(fields.messages) < len(base.messages)
            or len(fields.calls) < len(base.calls) or fields.messages[:len(base.messages)] != base.messages):
        return None  # sealed since (the tail moved), or a message changed: messages are append-only
    ops = []
    for name, text in fields.small.items():
        before = base.small.get(name)
        if before is None:
            return None  # not written by this store: what the object holds there is not known
        if text != before:
            ops.append(_op("remove", f"/status/{name}") if text == NULL else _op("add", f"/status/{name}", text))
    ops += [_op("add", "/status/contextWindow/-", text) for text in fields.messages[len(base.messages):]]
    for i, text in enumerate(fields.calls):
        if i >= len(base.calls):
            ops.append(_op("add", "/status/toolCallHistory/-", text))
        elif text != base.calls[i]:
            ops.append(_op("replace", f"/status/toolCallHistory/{i}", text))
    return ops


def _op(op: str, path: str, value: str | None = None) -> str:
    tail = "" if value is None else f',"value":{value}'
    return f'{{"op":"{op}","path":"{path}"{tail}}}'
