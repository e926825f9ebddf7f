"""Which context store a run's sealed chunks go to (pure): its status's record, its contextStorageRef, or the
operator's default (KUBECHAIN_CONTEXT_STORAGE_SECRET). The operator reads the chosen store's DSN from its Secret
and hands it to the actor in the RunSpec (kubechain/operator/contextstore.py).

  1. status.sealedContext.store is set: the chunks are there already, so that store (whatever the ref says now).
  2. contextStorageRef kind PostgreSQL: that Secret, in the run's namespace (the author may `get` it: admission).
  3. contextStorageRef kind ConfigMap (or PersistentVolumeClaim, kept as ConfigMap): ConfigMaps; the default
     store, if any, only as the overflow at the run's allowance.
  4. no contextStorageRef: the default store from the first chunk, if there is one; else ConfigMaps.
"""
from __future__ import annotations

from kubechain.api.v1alpha1 import ContextStorageRef, StoreLocation


def default_location(setting: str, key: str = "dsn") -> StoreLocation | None:
    """KUBECHAIN_CONTEXT_STORAGE_SECRET (`namespace/name`) as a location; None when empty or malformed."""
    namespace, _, name = setting.strip().partition("/")
    if not (namespace and name) or "/" in name:
        return None
    return StoreLocation(namespace=namespace, secret=name, key=key)


def location(namespace: str, ref: ContextStorageRef | None, default: StoreLocation | None,
             recorded: StoreLocation | None) -> tuple[StoreLocation | None, bool]:
    """(the run's external store or None, whether it is only the overflow), by the module's rules."""
    if recorded is not None:
        return recorded, False
    if ref is not None and ref.kind == "PostgreSQL":
        return StoreLocation(namespace=namespace, secret=ref.name, key=ref.key), False
    if ref is not None:
        return default, default is not None
    return default, False
