"""Who a request is, and what they may see and do.

The console has its own credentials (a ServiceAccount in the cluster, or a kubeconfig) to watch the kubechain
kinds and to ask the apiserver about callers; it never acts for a caller with them:

- a caller is known by a bearer token (the `Authorization` header, or the HttpOnly cookie the login form sets);
  a TokenReview says whose it is;
- a read from the console's shared watches is shown only if a SubjectAccessReview says the caller may `list`
  that kind in that namespace (answers are cached for a few seconds);
- everything else (a run's page, its sealed transcript, answer/approve/reject/cancel) is sent to the apiserver
  with the caller's own token, so the apiserver's RBAC decides and its 403 is what the caller sees.

With `--as-kubeconfig-user` (a console on a laptop, for its user only) a request without a token is the
kubeconfig's user: the console's credentials are theirs.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kubernetes import client, config

from kubechain.api.v1alpha1 import GROUP
from kubechain.ui.ratelimit import SignInLimiter

COOKIE = "kubechain_token"
KUBECONFIG_USER = "(kubeconfig user)"


@dataclass(frozen=True)
class User:
    """A caller the apiserver authenticated. `token` None: the console's own kubeconfig user (local mode)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
    token: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """Identifies the caller in caches without keeping the token readable there."""
        return hashlib.sha256((self.token or "").encode()).hexdigest() if self.token else KUBECONFIG_USER


def token_of(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The caller's bearer token: the Authorization header first, then the console's cookie."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookies.get(COOKIE) or None


class TTLCache:
    """A small dict whose entries expire after `ttl` seconds (answers about callers must not outlive RBAC changes
    for long)."""

    def __init__(self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.max_entries, self.clock = ttl, max_entries, clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._entries.get(key)
        if hit is None or hit[0] <= self.clock():
            self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        if len(self._entries) >= self.max_entries:
            now = self.clock()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[key] = (self.clock() + self.ttl, value)


def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """The console's own credentials: the given kubeconfig, else in-cluster, else $KUBECONFIG / ~/.kube/config."""
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return cfg
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    return cfg


def with_token(own: client.Configuration, token: str) -> client.Configuration:
    """The console's connection settings (server, CA) with the caller's token instead of its own credentials."""
    cfg = copy.deepcopy(own)
    cfg.api_key, cfg.api_key_prefix, cfg.refresh_api_key_hook = {"authorization": f"Bearer {token}"}, {}, None
    cfg.cert_file = cfg.key_file = cfg.username = cfg.password = None
    return cfg


class Authorizer:
    """TokenReview and SubjectAccessReview through the console's own client, cached for `ttl` seconds."""

    def __init__(self, own: client.Configuration, ttl: float = 10.0, as_kubeconfig_user: bool = False,
                 limiter: SignInLimiter | None = None):
        """`limiter`: how many unknown tokens each client address may have checked (kubechain/ui/ratelimit.py)."""
        self.own = own
        self.as_kubeconfig_user = as_kubeconfig_user
        self.limiter = limiter
        self._api = client.ApiClient(own)
        self._users, self._access = TTLCache(ttl), TTLCache(ttl)

    def api_client(self, user: User) -> client.ApiClient:
        """A client that acts as `user` (close it after use)."""
        return client.ApiClient(with_token(self.own, user.token) if user.token else self.own)

    async def authenticate(self, token: str | None, client: str | None = None) -> User | None:
        """Who `token` is (None: nobody). `client`: the caller's address, for a token not checked lately - a sign-in
        attempt, limited per address (SignInLimited); None for the console's own re-checks."""
        if token is None:
            return User(KUBECONFIG_USER) if self.as_kubeconfig_user else None
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._users.get(key)
        if cached is None:
            limiter = self.limiter if client is not None else None
            if limiter is not None:
                limiter.take(client or "")  # before the TokenReview: an empty bucket never reaches the apiserver
            cached = await asyncio.to_thread(self._review_token, token) or False
            self._users.put(key, cached)
            if limiter is not None and cached:
                limiter.give_back(client or "")
        return cached or None

    def _review_token(self, token: str) -> User | None:
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        status = client.AuthenticationV1Api(self._api).create_token_review(review).status
        if not status or not status.authenticated or not status.user:
            return None
        extra = tuple(sorted((k, tuple(v)) for k, v in (status.user.extra or {}).items()))
        return User(status.user.username, tuple(status.user.groups or ()), status.user.uid or "", extra, token)

    async def allowed(self, user: User, verb: str, plural: str, namespace: str | None) -> bool:
        """May `user` `verb` the kubechain kind `plural` in `namespace` (None: in every namespace)?"""
        if user.token is None:
            return True  # local mode: the console's credentials are the caller's, the apiserver checked them
        if namespace is not None and await self.allowed(user, verb, plural, None):
            return True
        key = (user.key, verb, plural, namespace)
        cached = self._access.get(key)
        if cached is None:
            cached = await asyncio.to_thread(self._review_access, user, verb, plural, namespace)
            self._access.put(key, cached)
        return cached

    def _review_access(self, user: User, verb: str, plural: str, namespace: str | None) -> bool:
        spec = client.V1SubjectAccessReviewSpec(
            user=user.name, groups=list(user.groups), uid=user.uid or None,
            extra={k: list(v) for k, v in user.extra} or None,
            resource_attributes=client.V1ResourceAttributes(group=GROUP, resource=plural, verb=verb,
                                                            namespace=namespace or ""))
        review = client.AuthorizationV1Api(self._api).create_subject_access_review(
            client.V1SubjectAccessReview(spec=spec))
        return bool(review.status and review.status.allowed)
