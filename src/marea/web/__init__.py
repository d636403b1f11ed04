"""marea.web."""
