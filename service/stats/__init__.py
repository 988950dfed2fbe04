"""Which job characteristics go with failure: a registry of patterns and the one SQL query that evaluates them."""
