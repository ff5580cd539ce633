"""fastgw: a fast, self-hosted L7 application gateway with native WebSocket support."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("FASTGW_NO_EXTENSIONS") == "1":
    # Every compiled module from its pure-Python source (fastgw/native.py).
    from fastgw import native as _native

    _native.use_twins()
elif _os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1":
    # A compiled module that is missing is an import error, never a quiet fallback to its .py.
    from fastgw import native as _native

    _native.require_compiled()
