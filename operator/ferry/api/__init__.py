"""The HTTP read API: health, metrics and the cached rendered configuration."""
