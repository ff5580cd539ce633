"""The pytest fixture shared by the Autobahn tests: the wstest executable, or a loud skip."""

from __future__ import annotations

import os
import warnings

import pytest

from .harness import WstestUnavailable, ensure_wstest


@pytest.fixture(scope="session")
def wstest() -> str:
    """Build (once) and return wstest; skip loudly when Python 2.7 or the packages are missing,
    or fail when FASTGW_AUTOBAHN_REQUIRED=1."""
    try:
        return ensure_wstest()
    except WstestUnavailable as exc:
        reason = exc.reason
    message = f"AUTOBAHN TESTSUITE UNAVAILABLE, Autobahn tests NOT RUN: {reason}"
    if os.environ.get("FASTGW_AUTOBAHN_REQUIRED") == "1":
        pytest.fail(message, pytrace=False)
    warnings.warn(message, pytest.PytestWarning)
    pytest.skip(message)
