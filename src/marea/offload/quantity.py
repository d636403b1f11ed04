"""Kept so `marea.offload.quantity` imports keep working: the parser lives in `marea.quantity`, shared with the
Kubernetes batch driver (which may not import the offload server)."""

from marea.quantity import PodRequest, QuantityError, parse_quantity, pod_request

__all__ = ["PodRequest", "QuantityError", "parse_quantity", "pod_request"]
