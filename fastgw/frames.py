"""Select the frame engine: the Cython extension or its pure-Python twin.

fastgw.native.select() chooses (FASTGW_NO_EXTENSIONS, FASTGW_REQUIRE_EXTENSIONS);
IMPLEMENTATION says which one is in use: "c" or "py".
"""

from typing import TYPE_CHECKING

from fastgw import native as _native

if TYPE_CHECKING:
    # Both engines have one API, fastgw/_frames.pyi: type-check against it (the two modules'
    # classes are distinct types, so a checker cannot take both star imports below).
    from fastgw._frames import *  # noqa: F401,F403
    from fastgw._frames import __all__  # noqa: F401 - re-exported

    IMPLEMENTATION: str
else:
    IMPLEMENTATION = _native.select("_frames", globals())
