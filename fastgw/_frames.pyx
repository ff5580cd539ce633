# cython: language_level=3
"""WebSocket frame engine in C (placeholder until the frame engine lands)."""

__all__ = ["ENGINE"]
ENGINE = "c"
