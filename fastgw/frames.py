"""Select the frame engine: the Cython extension or its pure-Python twin.

FASTGW_NO_EXTENSIONS=1 forces the twin (fastgw._frames_py); FASTGW_REQUIRE_EXTENSIONS=1 makes a
missing or broken extension an ImportError (fastgw.native.ExtensionsRequired, one line saying
why), so that a wheel or CI build that failed to compile cannot pass quietly on the twin.
IMPLEMENTATION says which one is in use: "c" or "py".
"""

import os
from typing import TYPE_CHECKING

from fastgw import native as _native

if TYPE_CHECKING:
    # Both engines have one API, fastgw/_frames.pyi: type-check against it (the two modules'
    # classes are distinct types, so a checker cannot take both star imports below).
    from fastgw._frames import *  # noqa: F401,F403
    from fastgw._frames import __all__  # noqa: F401 - re-exported

    IMPLEMENTATION: str
elif os.environ.get("FASTGW_NO_EXTENSIONS") == "1":
    if os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1":
        raise _native.ExtensionsRequired(_native.required_problem())
    from fastgw._frames_py import *  # noqa: F401,F403
    from fastgw._frames_py import __all__  # noqa: F401 - re-exported

    IMPLEMENTATION = "py"
else:
    try:
        from fastgw._frames import *  # noqa: F401,F403
        from fastgw._frames import __all__  # noqa: F401 - re-exported

        IMPLEMENTATION = "c"
    except ImportError as exc:
        if os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1":
            raise _native.ExtensionsRequired(
                _native.required_problem() or f"fastgw._frames does not import: {exc}") from None
        from fastgw._frames_py import *  # noqa: F401,F403
        from fastgw._frames_py import __all__  # noqa: F401,F811 - re-exported

        IMPLEMENTATION = "py"
