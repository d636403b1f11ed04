"""Worker user-data templates shipped with marea, by name."""

from __future__ import annotations

from importlib import resources


def worker_template(name: str) -> str:
    """The text of `marea/batch/templates/<name>` (e.g. "slurm-worker.sh")."""
    return (resources.files("marea.batch") / "templates" / name).read_text()
