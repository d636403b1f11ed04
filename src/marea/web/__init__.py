"""marea.web: the engine's web endpoint (metrics, status API, live page) and its packaged assets."""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    """The live page's assets, shipped inside the package."""
    return Path(__file__).parent / "static"
