"""marea.sim."""
