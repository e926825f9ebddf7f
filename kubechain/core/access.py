"""No borrowed Secrets: an object may use a Secret or ServiceAccount of its namespace only if its author could use
it themselves. Pure: which fields use what, which access reviews decide it, and the refusals; the reviews are sent
by kubechain/operator/access.py.

The operator reads Secrets and creates Jobs with its own rights, for whoever wrote the object. Without this a
tenant who may create LLMs but not read Secrets points `baseURL` at their own server and `apiKeySecretRef` at
`db-password`, and the operator sends them its value (a confused deputy). So, at admission, from the request's
own user (the apiserver authenticated it; nothing written on the object is trusted):

1. A Secret named by `apiKeySecretRef`, an http tool's or http MCP server's header, a stdio MCP server's or a
   container tool's env, a Task's, TaskRun's or TaskSchedule's run template's `contextStorageRef` (a PostgreSQL
   DSN): the author may `get` that Secret (the operator creates a schedule's runs with its own rights). The object decides where the value goes (baseURL, the
   URL, the image), so using it is reading it.
2. A container tool's `serviceAccountName`: the author may `create pods` in the namespace, or `create
   serviceaccounts/token` for that ServiceAccount. Either already lets them act as it themselves (Kubernetes lets a
   pod's author name any ServiceAccount of its namespace); the Job runs the tenant's image with its token.

Creates are checked, and updates that change the spec (a new ref, but also a new baseURL or url sends a Secret the
object already named elsewhere). Updates that leave the spec alone (labels, kopf's annotations) are not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

SECRET_HINT = "an object may use only the Secrets its author may get (docs/threat-model.md)"


@dataclass(frozen=True)
class Use:
    """A field of an object that makes the operator use something of the namespace for it."""

    field: str  # where, as in the refusal: spec.execution.http.headers[0].valueFrom.secretKeyRef
    kind: str  # "Secret" or "ServiceAccount"
    name: str


@dataclass(frozen=True)
class Access:
    """One question for a SubjectAccessReview: may the author `verb` this, in the namespace?"""

    verb: str
    resource: str
    name: str = ""
    subresource: str = ""
    group: str = ""

    def describe(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {what}" + (f" named {self.name!r}" if self.name else "")


@dataclass(frozen=True)
class Author:
    """Who made the request, as the AdmissionReview's userInfo says (user, groups, uid, extra)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_userinfo(cls, info: Mapping[str, Any] | None) -> "Author":
        info = info or {}
        extra = tuple(sorted((k, tuple(v or ())) for k, v in (info.get("extra") or {}).items()))
        return cls(str(info.get("username") or ""), str(info.get("uid") or ""), tuple(info.get("groups") or ()),
                   extra)


def _value_refs(items: list[dict[str, Any]] | None, where: str) -> Iterator[Use]:
    for i, item in enumerate(items or []):
        if name := ((item.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"):
            yield Use(f"{where}[{i}].valueFrom.secretKeyRef", "Secret", name)


def _execution_uses(execution: dict[str, Any] | None, where: str) -> Iterator[Use]:
    execution = execution or {}
    if http := execution.get("http"):
        yield from _value_refs(http.get("headers"), f"{where}.http.headers")
    if container := execution.get("container"):
        yield from _value_refs(container.get("env"), f"{where}.container.env")
        if account := container.get("serviceAccountName"):
            yield Use(f"{where}.container.serviceAccountName", "ServiceAccount", account)


def uses(kind: str, spec: dict[str, Any]) -> list[Use]:
    """What an LLM, Tool, ToolSet, Task, TaskRun or TaskSchedule spec (wire form) uses of its namespace; others use
    nothing."""
    if kind == "LLM":
        ref = spec.get("apiKeySecretRef") or {}
        return [Use("spec.apiKeySecretRef", "Secret", ref["name"])] if ref.get("name") else []
    if kind == "Tool":
        return list(_execution_uses(spec.get("execution"), "spec.execution"))
    if kind in ("Task", "TaskRun", "TaskSchedule"):  # an external context store's DSN: the run's chunks go there
        where = "spec.runTemplate.contextStorageRef" if kind == "TaskSchedule" else "spec.contextStorageRef"
        holder = (spec.get("runTemplate") or {}) if kind == "TaskSchedule" else spec
        ref = holder.get("contextStorageRef") or {}
        return [Use(where, "Secret", ref["name"])] if ref.get("kind") == "PostgreSQL" and ref.get("name") else []
    if kind != "ToolSet":
        return []
    found = [u for i, tool in enumerate(spec.get("tools") or [])
             for u in _execution_uses(tool.get("execution"), f"spec.tools[{i}].execution")]
    for i, server in enumerate(spec.get("mcpServers") or []):
        where = f"spec.mcpServers[{i}]"
        found += _value_refs((server.get("stdio") or {}).get("env"), f"{where}.stdio.env")
        found += _value_refs((server.get("http") or {}).get("headers"), f"{where}.http.headers")
    return found


def needs_check(operation: str, old_spec: dict[str, Any] | None, new_spec: dict[str, Any]) -> bool:
    """Creates, and updates that change the spec: a changed baseURL or url redirects a Secret the object named."""
    return operation == "CREATE" or old_spec != new_spec


def alternatives(use: Use) -> tuple[Access, ...]:
    """Accesses any one of which lets the author use it (rules 1 and 2 of the module's docstring)."""
    if use.kind == "Secret":
        return (Access("get", "secrets", use.name),)
    return (Access("create", "pods"), Access("create", "serviceaccounts", use.name, subresource="token"))


def review_body(author: Author, namespace: str, access: Access) -> dict[str, Any]:
    """The SubjectAccessReview (authorization.k8s.io/v1) asking whether `author` has `access` in `namespace`."""
    spec: dict[str, Any] = {"user": author.username, "groups": list(author.groups),
                            "resourceAttributes": {"namespace": namespace, "verb": access.verb, "group": access.group,
                                                   "resource": access.resource, "subresource": access.subresource,
                                                   "name": access.name}}
    if author.uid:
        spec["uid"] = author.uid
    if author.extra:
        spec["extra"] = {k: list(v) for k, v in author.extra}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def refusal(use: Use, author: Author, namespace: str) -> str:
    """Why `use` is refused: the field, the user and what they lack. The same whether the Secret exists or not."""
    who = f"user {author.username or '(unknown)'}"
    if use.kind == "Secret":
        return f"{use.field}: {who} may not get Secret {use.name!r} in namespace {namespace!r}: {SECRET_HINT}"
    return (f"{use.field}: {who} may not run pods as ServiceAccount {use.name!r} in namespace {namespace!r} "
            f"(that needs create pods, or create serviceaccounts/token on {use.name!r})")


def questions(found: list[Use]) -> list[Access]:
    """Every access review `found` needs answered, once each, in order."""
    return list(dict.fromkeys(a for u in found for a in alternatives(u)))


def refusals(found: list[Use], author: Author, namespace: str, answers: Mapping[Access, bool]) -> list[str]:
    """The refused uses, one message each, from the reviews' `answers` (a missing answer is a no: fail closed)."""
    return [refusal(u, author, namespace) for u in found if not any(answers.get(a) for a in alternatives(u))]
