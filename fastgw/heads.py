"""Select the head scanner: the Cython extension or its pure-Python twin.

fastgw.native.select() chooses (FASTGW_NO_EXTENSIONS, FASTGW_REQUIRE_EXTENSIONS);
IMPLEMENTATION says which one is in use: "c" or "py". The API is fastgw/_heads.pyi.
"""

from typing import TYPE_CHECKING

from fastgw import native as _native

if TYPE_CHECKING:
    from fastgw._heads import *  # noqa: F401,F403
    from fastgw._heads import __all__  # noqa: F401 - re-exported

    IMPLEMENTATION: str
else:
    IMPLEMENTATION = _native.select("_heads", globals())
