"""The access reviews of kubechain/core/access.py, asked of the apiserver (SubjectAccessReview) and cached briefly.

A burst of objects from one author (kubectl apply of a directory) asks each question once; an answer is kept
CACHE_SECONDS, so a Role granted or removed counts within that long. A review that fails is a no (the webhook
fails closed) and is not cached.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from kubechain.core.access import Access, Author, Use, questions, refusals, review_body

from .kube import Kube

log = logging.getLogger(__name__)
CACHE_SECONDS = 10.0
CacheKey = tuple[Author, str, Access]


@dataclass
class AccessReviews:
    kube: Kube
    answers: dict[CacheKey, tuple[float, bool]] = field(default_factory=dict)
    """(author, namespace, access) -> (monotonic time asked, allowed)."""

    async def allowed(self, author: Author, namespace: str, access: Access) -> bool:
        key, now = (author, namespace, access), time.monotonic()
        if (cached := self.answers.get(key)) and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            answer = await self.kube.access_review(review_body(author, namespace, access))
        except Exception as exc:  # the apiserver did not answer: refuse, ask again next time
            log.warning("SubjectAccessReview for %s (%s in %s) failed: %s", author.username, access.describe(),
                        namespace, exc)
            return False
        self._forget_old(now)
        self.answers[key] = (now, answer)
        return answer

    async def refusals(self, found: list[Use], author: Author, namespace: str) -> list[str]:
        """The refusals of kubechain/core/access.py for `found`, its questions asked together."""
        asked = questions(found)
        answers = await asyncio.gather(*(self.allowed(author, namespace, a) for a in asked))
        return refusals(found, author, namespace, dict(zip(asked, answers)))

    def _forget_old(self, now: float) -> None:
        if len(self.answers) > 1000:  # bounded: many authors over a long uptime
            self.answers = {k: v for k, v in self.answers.items() if now - v[0] < CACHE_SECONDS}
