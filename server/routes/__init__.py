"""One router per resource: health, stats (and metrics), planning, sessions."""
