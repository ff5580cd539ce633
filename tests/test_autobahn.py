"""The Autobahn TestSuite (fuzzing client) through the gateway, in its bounded CI form.

Cases 1-7, 9 (minus the slowest fragmentation cases) and 10, plus a sample of 12 and 13
(permessage-deflate): about 300 cases against an echo backend behind `fastgw serve`. The gate:
no case FAILED through the gateway that passes directly against the same backend. The direct
baseline only runs for the cases that failed through the gateway (the echo backend fails none,
see tests/autobahn_suite/README.md), which keeps the run near a minute.
"""

from __future__ import annotations

import signal

import pytest
from autobahn_suite.echo_backend import start_echo_backend
from autobahn_suite.fixtures import fixture_wstest  # noqa: F401 (registers the "wstest" fixture)
from autobahn_suite.harness import (
    CI_CASES,
    CI_DEFLATE_SAMPLE,
    CI_SLOW_9_EXCLUDED,
    counts,
    describe,
    failed_cases,
    run_fuzzingclient,
    summary,
)

from support import free_port, start_cli, wait_port

pytestmark = pytest.mark.autobahn


@pytest.mark.timeout(900)
def test_autobahn_through_the_gateway(wstest, tmp_path):
    backend_port, stop_backend = start_echo_backend()
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[gateway]
access_log = "off"

[[listeners]]
name = "ws"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "echo"
servers = ["127.0.0.1:{backend_port}"]

[[backend_settings]]
name = "echo"
request_timeout = 60

[[rules]]
name = "echo"
listener = "ws"
backend_pool = "echo"
backend_settings = "echo"
""")
    proc = start_cli("serve", str(cfg), "--log-level", "warning")
    try:
        wait_port(port, proc=proc)
        cases = CI_CASES + CI_DEFLATE_SAMPLE
        through = run_fuzzingclient(wstest, f"ws://127.0.0.1:{port}", cases, CI_SLOW_9_EXCLUDED,
                                    str(tmp_path / "through"), timeout=600, agent="fastgw")
        print("through the gateway:", summary(through))
        assert len(through) >= 300, counts(through)
        failed = failed_cases(through)
        if failed:
            # Only what fails through the gateway *and not directly* counts against it.
            direct = run_fuzzingclient(wstest, f"ws://127.0.0.1:{backend_port}", failed, (),
                                       str(tmp_path / "direct"), timeout=300, agent="direct")
            regressions = [c for c in failed if c not in failed_cases(direct)]
            assert not regressions, describe(regressions, direct, through,
                                             names=["direct", "through"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        stop_backend()
