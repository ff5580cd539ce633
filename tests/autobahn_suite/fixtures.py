"""The pytest fixture shared by the Autobahn tests: the wstest executable, or a loud skip."""

from __future__ import annotations

import os
import warnings

import pytest

from .harness import WstestUnavailable, ensure_wstest


# Registered as "wstest"; the function has another name so that the modules importing it (to make
# the fixture visible) do not shadow the import with the test parameter of the same name.
@pytest.fixture(scope="session", name="wstest")
def fixture_wstest() -> str:
    """Build (once) and return wstest; skip loudly when Python 2.7 or the packages are missing,
    or fail when FASTGW_AUTOBAHN_REQUIRED=1."""
    try:
        return ensure_wstest()
    except WstestUnavailable as exc:
        reason = exc.reason
    message = f"AUTOBAHN TESTSUITE UNAVAILABLE, Autobahn tests NOT RUN: {reason}"
    if os.environ.get("FASTGW_AUTOBAHN_REQUIRED") == "1":
        pytest.fail(message, pytrace=False)
    warnings.warn(message, pytest.PytestWarning, stacklevel=2)
    pytest.skip(message)
