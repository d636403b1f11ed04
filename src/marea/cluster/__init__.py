"""marea.cluster."""
