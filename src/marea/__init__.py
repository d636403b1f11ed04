"""marea: elastic batch clusters for research-cloud tenants, and an interLink offload plugin."""

__version__ = "0.1.0"
