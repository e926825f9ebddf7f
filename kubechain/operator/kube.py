"""The operator's Kubernetes calls beyond the object a kopf handler is handling.

The kubernetes client is synchronous; calls run in threads so kopf's event loop never blocks.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubechain.api.context import part_name
from kubechain.api.v1alpha1 import GROUP, VERSION


DELETES_AT_ONCE = 8  # chunks deleted concurrently (threads of the client's pool)


@dataclass(frozen=True)
class SecretValue:
    value: str | None
    problem: str | None  # why there is no value: the Secret or the key is missing


EXECUTOR_THREADS = 64  # the loop's default executor (operator/main.py): blocking client calls run there


class Kube:
    def __init__(self) -> None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        # As many kept connections as the loop's executor has threads (operator/main.py): with urllib3's default of
        # 10, a burst's calls discarded a connection after nearly every request and paid a TLS handshake for the
        # next ("Connection pool is full"), on the apiserver's CPU too.
        configuration.connection_pool_maxsize = EXECUTOR_THREADS
        api = client.ApiClient(configuration)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.authorization = client.AuthorizationV1Api(api)

    async def secret_value(self, namespace: str, name: str, key: str) -> SecretValue:
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return SecretValue(None, f"Secret {name!r} not found")
            raise
        data = secret.data or {}
        if key not in data:
            return SecretValue(None, f"Secret {name!r} has no key {key!r}")
        return SecretValue(base64.b64decode(data[key]).decode(), None)

    async def access_review(self, body: dict[str, Any]) -> bool:
        """Whether a SubjectAccessReview is allowed (body: kubechain/core/access.review_body)."""
        answer = await asyncio.to_thread(self.authorization.create_subject_access_review, body)
        return bool(answer.status and answer.status.allowed)

    async def namespace_labels(self, name: str) -> dict[str, str]:
        """The labels of a Namespace, fresh from the apiserver ({} when it does not exist)."""
        try:
            found = await asyncio.to_thread(self.core.read_namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return dict(found.metadata.labels or {})

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A kubechain object fresh from the apiserver, or None when it does not exist."""
        try:
            return await asyncio.to_thread(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                           plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, plural: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The kubechain objects of a namespace with these labels."""
        found = await asyncio.to_thread(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                                        label_selector=selector)
        return found.get("items", [])

    async def patch_status(self, plural: str, namespace: str, name: str, status: dict[str, Any],
                           version: str | None = None) -> bool:
        """Merge-patch the status of a kubechain object; a vanished object is not an error. With `version`
        (a resourceVersion) the patch applies only if nobody wrote since: False when someone did."""
        body: dict[str, Any] = {"status": status}
        if version is not None:
            body["metadata"] = {"resourceVersion": version}
        try:
            await asyncio.to_thread(self.custom.patch_namespaced_custom_object_status,
                                    GROUP, VERSION, namespace, plural, name, body)
        except ApiException as exc:
            if exc.status == 409 and version is not None:
                return False
            if exc.status != 404:
                raise
            return False
        return True

    async def patch_cluster_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status of a cluster-scoped kubechain object; a vanished object is not an error."""
        try:
            await asyncio.to_thread(self.custom.patch_cluster_custom_object_status, GROUP, VERSION, plural, name,
                                    {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge-patch a kubechain object (not its status); a vanished object is not an error."""
        try:
            await asyncio.to_thread(self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                                    name, body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete(self, plural: str, namespace: str, name: str, uid: str) -> None:
        """Delete this very object (uid precondition: never a successor of the same name); its dependents
        follow through garbage collection."""
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid),
                                         propagation_policy="Background")
        try:
            await asyncio.to_thread(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, plural,
                                    name, body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def delete_chunks(self, namespace: str, taskrun: str, chunks: int) -> None:
        """Delete the ConfigMaps of a run's sealed chunks, by name (`<run>-ctx-<i>-<part>`: the operator may not
        read ConfigMaps, so a chunk's parts are deleted from 1 on until one is not there, then part 0: a retry
        after a partial deletion finds every part it left)."""
        async def chunk(index: int) -> None:
            for part in itertools.count(1):
                if not await self._delete_config_map(namespace, part_name(taskrun, index, part)):
                    break
            await self._delete_config_map(namespace, part_name(taskrun, index, 0))

        for first in range(0, chunks, DELETES_AT_ONCE):
            await asyncio.gather(*(chunk(i) for i in range(first, min(first + DELETES_AT_ONCE, chunks))))

    async def _delete_config_map(self, namespace: str, name: str) -> bool:
        """False if it was not there."""
        try:
            await asyncio.to_thread(self.core.delete_namespaced_config_map, name, namespace)
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False

    async def wake(self, plural: str, namespace: str, name: str, reason: str) -> None:
        """Touch an object so its watch handlers run now. Repeating the same reason writes nothing."""
        await self.patch(plural, namespace, name, {"metadata": {"annotations": {f"{GROUP}/wake": reason}}})

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """Create a kubechain object; False when it already exists (so retries are idempotent)."""
        try:
            await asyncio.to_thread(self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, plural, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (a retry, or a resumed run finding its call's Job)."""
        try:
            await asyncio.to_thread(self.batch.create_namespaced_job, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods (a running tool is killed); a vanished Job is not an error."""
        try:
            await asyncio.to_thread(self.batch.delete_namespaced_job, name, namespace,
                                    body=client.V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def annotate_job(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        try:
            await asyncio.to_thread(self.batch.patch_namespaced_job, name, namespace,
                                    {"metadata": {"annotations": annotations}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def job_pods(self, namespace: str, job: str) -> list[Any]:
        pods = await asyncio.to_thread(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job}")
        return pods.items

    async def pod_log_tail(self, namespace: str, pod: str, container: str, chars: int) -> str:
        """The end of a container's log; "" when the kubelet cannot give it (e.g. the node is gone)."""
        try:
            text = await asyncio.to_thread(self.core.read_namespaced_pod_log, pod, namespace, container=container,
                                           tail_lines=1000)
        except ApiException:
            return ""
        return text[-chars:]

    async def ensure_actor_account(self, namespace: str) -> None:
        """The namespace's actor ServiceAccount and its RoleBinding, created if absent (left as they are if there)."""
        from kubechain.core.builders import actor_account, actor_binding

        for create, body in ((self.core.create_namespaced_service_account, actor_account(namespace)),
                             (self.rbac.create_namespaced_role_binding, actor_binding(namespace))):
            try:
                await asyncio.to_thread(create, namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    async def account_token(self, namespace: str, account: str, seconds: int) -> tuple[str, float] | None:
        """(token, expiry as seconds since the epoch) of a TokenRequest for a ServiceAccount; None if it is absent."""
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                    expiration_seconds=seconds))
        try:
            issued = await asyncio.to_thread(self.core.create_namespaced_service_account_token, account, namespace,
                                             request)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return issued.status.token, issued.status.expiration_timestamp.timestamp()

    def connection(self) -> tuple[str, str | None, bool]:
        """(server URL, CA PEM or None, TLS verification off) of the operator's own apiserver connection."""
        from pathlib import Path

        configuration = client.Configuration.get_default_copy()
        ca = Path(configuration.ssl_ca_cert).read_text() if configuration.ssl_ca_cert else None
        return configuration.host, ca, not configuration.verify_ssl
