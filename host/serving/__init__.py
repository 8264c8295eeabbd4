"""Serving logic between the thin routes and the backends (streaming, fan-out, lease life time)."""
