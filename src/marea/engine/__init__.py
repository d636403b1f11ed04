"""marea.engine."""
