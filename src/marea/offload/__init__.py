"""marea.offload."""
