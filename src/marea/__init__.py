"""marea: elastic batch clusters for research-cloud tenants, and an interLink offload plugin."""

__version__ = "0.1.0"


def package_version() -> str:
    """The installed distribution's version (what pip and `twine check` see); `__version__` when marea runs
    from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("marea")
    except PackageNotFoundError:
        return __version__
