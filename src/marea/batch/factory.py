"""Build the batch-system driver a configuration asks for (its profile knows how: marea.profiles)."""

from __future__ import annotations

from marea import profiles
from marea.batch.base import BatchSystem
from marea.config import MareaConfig


def make_batch(cfg: MareaConfig) -> BatchSystem:
    profile = profiles.get(cfg.batch.system)
    missing = profile.available()
    if missing:
        raise NotImplementedError(f"batch system {cfg.batch.system!r} is not available in this build: {missing}")
    return profile.make_driver(cfg)
