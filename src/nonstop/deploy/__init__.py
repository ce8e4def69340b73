"""Deploys: the state store today; blue-green plans and the executor build on it."""

from nonstop.deploy.store import (
    OUTCOMES,
    SCHEMA_VERSION,
    DeployLocked,
    DeployRecord,
    InstanceRecord,
    LiveRecord,
    LockInfo,
    StateStore,
    StoreError,
)

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "DeployLocked",
    "DeployRecord",
    "InstanceRecord",
    "LiveRecord",
    "LockInfo",
    "StateStore",
    "StoreError",
]
