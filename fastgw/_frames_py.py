"""Pure-Python twin of fastgw._frames (placeholder until the frame engine lands)."""

__all__ = ["ENGINE"]
ENGINE = "py"
