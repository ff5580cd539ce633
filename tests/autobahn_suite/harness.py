"""Autobahn TestSuite (``wstest -m fuzzingclient``) harness for fastgw.

Importable without pytest (and without anything but the standard library).

* ``ensure_wstest(cache_dir=None) -> str``: builds, once, a CPython 2.7
  virtualenv with ``autobahntestsuite==0.8.2`` and a pinned, known-good set of
  its dependencies, and returns the path of its ``wstest``. Raises
  ``WstestUnavailable`` with a specific reason when python2.7 is missing or the
  packages cannot be installed.
* ``run_fuzzingclient(wstest, url, cases, exclude_cases, outdir, timeout)``:
  writes the spec, runs wstest against ``url`` (bounded), parses
  ``outdir/index.json``, returns ``{case_id: {"behavior", "behaviorClose",
  "duration", "remoteCloseCode", "reportfile"}}``.
* ``compare(direct, through)``: case ids that FAILED through the gateway but not
  directly, plus cases missing from either run: the CI gate.
* ``CI_CASES``, ``CI_DEFLATE_SAMPLE``, ``FULL_CASES``: case selections.

Command line (from the repository root)::

    python tests/autobahn_suite/harness.py ensure
    python tests/autobahn_suite/harness.py direct --cases ci     # against the echo backend
    python tests/autobahn_suite/harness.py run --url ws://127.0.0.1:8080/ws --cases full

See README.md beside this file.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

# --------------------------------------------------------------------------
# Versions. Everything below installs from PyPI with pip 20.3.4 (the pip that
# virtualenv 20.21.1 seeds into a 2.7 environment) on pyenv's CPython 2.7.18,
# also with no pip cache at all, and runs the full suite (the resolver picks
# exactly this set unpinned today; pinning keeps a future release of any of
# them from breaking the suite). wsaccel, zope.interface, autobahn, txaio and
# PyHamcrest come as sdists: gcc and the 2.7 headers (pyenv's build has them)
# are needed the first time; pip caches the built wheels.
# --------------------------------------------------------------------------

AUTOBAHNTESTSUITE = "autobahntestsuite==0.8.2"

PY27_PINS = (
    "autobahn==0.10.9",  # autobahntestsuite 0.8.2 requires exactly this
    "txaio==2.1.0",  # autobahntestsuite 0.8.2 requires <=2.1.0
    "Twisted==20.3.0",  # the last Twisted for Python 2.7
    "zope.interface==5.5.2",
    "Automat==22.10.0",
    "attrs==21.4.0",
    "constantly==15.1.0",
    "hyperlink==21.0.0",
    "incremental==22.10.0",
    "idna==2.10",
    "typing==3.10.0.0",
    "PyHamcrest==1.10.1",
    "six==1.17.0",
    "wsaccel==0.6.6",  # autobahn[accelerate]: C masking and UTF-8 validation
    "ujson==2.0.3",  # autobahn[accelerate]
    "klein==20.6.0",
    "Tubes==0.2.1",
    "Werkzeug==1.0.1",
    "enum34==1.1.10",
    "Jinja2==2.11.3",
    "MarkupSafe==1.1.1",
    "pyOpenSSL==21.0.0",
    "cryptography==3.3.2",
    "cffi==1.15.1",
    "pycparser==2.21",
    "service-identity==21.1.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "ipaddress==1.0.23",
    "unittest2==1.1.0",
    "argparse==1.4.0",
    "linecache2==1.0.0",
    "traceback2==1.4.0",
)

# The Python 3 side: virtualenv 20.22 dropped creating 2.7 environments.
VIRTUALENV_PINS = (
    "virtualenv==20.21.1",
    "platformdirs==3.11.0",
    "distlib==0.4.4",
    "filelock==3.32.7",
)

DEFAULT_CACHE_DIR = os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "fastgw-autobahn",
)
CACHE_DIR_ENV = "FASTGW_AUTOBAHN_VENV"
PYTHON27_ENV = "FASTGW_PYTHON27"
INSTALL_TIMEOUT = 900.0  # seconds for the one-time pip install into the 2.7 env

# --------------------------------------------------------------------------
# Case selections. Autobahn case ids; patterns with "*" are wstest's own.
# Timings: see README.md (measured against the echo backend on the project's
# 2-core machine).
# --------------------------------------------------------------------------

#: The slowest 9.x cases, measured directly against the echo backend (stream
#: mode): 9.3.1 (4 MiB in 64-byte fragments, 65536 frames) ~5.4 s, 9.4.1
#: (4 MiB binary in 64-byte fragments) ~2.4 s, 9.3.2/9.4.2 (256-byte
#: fragments) ~0.7-1.0 s each, 9.5.1/9.6.1 (1 MiB written in 64-byte TCP
#: chunks) ~0.8 s each: together more than half of the ~19 s of the whole 9.x
#: directly. Every category keeps cases: 9.1.6/9.2.6 (one 16 MiB message) stay,
#: fragmentation (9.3/9.4) from 1 KiB fragments up, chopped writes (9.5/9.6)
#: from 128-byte chunks up, 9.7/9.8 (1000 messages, round trips) all.
CI_SLOW_9_EXCLUDED = ("9.3.1", "9.3.2", "9.4.1", "9.4.2", "9.5.1", "9.6.1")

#: Cases 1-7, 9 and 10 (CI_SLOW_9_EXCLUDED is the matching exclude list).
CI_CASES = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*")

#: A sample of permessage-deflate. Every 12/13 case sends 1000 compressed
#: messages (>= ~1 s each directly), sizes 16 B..128 KiB, the last 8 of each
#: group auto-fragmented. 12.x: the five test-data sets with the default offer;
#: 13.x: the parameter matrix on JSON text, the client's offer asking for
#: 13.1 nothing, 13.2 server_no_context_takeover, 13.3 server_max_window_bits=9,
#: 13.4 =15, 13.5 both with 9, 13.6 both with 15, 13.7 three offers. Chosen: each 12.x data set once, each 13.x
#: non-default offer but 13.4 (window bits 15 = the default window) once,
#: small sizes, two auto-fragmented (8 KiB in 256-byte frames: RSV1 on the
#: first frame only, continuation frames without it).
CI_DEFLATE_SAMPLE = (
    "12.1.1",  # JSON text, 16 B
    "12.2.3",  # binary bitmap, 256 B
    "12.3.4",  # German text (binary frames), 1 KiB
    "12.4.11",  # HTML text, 8 KiB in 256-byte frames
    "12.5.2",  # PDF, 64 B
    "13.2.11",  # server_no_context_takeover, 8 KiB in 256-byte frames
    "13.3.3",  # server_max_window_bits=9, 256 B
    "13.5.1",  # server_no_context_takeover + server_max_window_bits=9, 16 B
    "13.6.2",  # server_no_context_takeover + server_max_window_bits=15, 64 B
    "13.7.1",  # three offers, the server picks one
)

#: Everything for a manual full run: 1-7, 9, 10, 12, 13 (there are no
#: categories 8 and 11), 517 cases.
FULL_CASES = ("*",)

FAILED = "FAILED"
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


class WstestUnavailable(Exception):
    """wstest cannot be provided on this machine; ``reason`` says exactly why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class WstestError(Exception):
    """wstest did not produce a complete result (timeout, crash, no index.json,
    lost the target); ``results`` holds what it did report, if anything."""

    def __init__(self, message: str, results: Optional[Dict[str, dict]] = None):
        super().__init__(message)
        self.results = results or {}


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------


def _clean_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment for Python 2.7 subprocesses: nothing of the 3.x process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
    }
    env["PYTHONWARNINGS"] = "ignore"  # cryptography's "Python 2 is no longer supported" on every start
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    if extra:
        env.update(extra)
    return env


def _is_python27(path: str) -> bool:
    try:
        out = subprocess.run(
            [path, "-c", "import sys; sys.stdout.write('%d.%d' % sys.version_info[:2])"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            env=_clean_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == b"2.7"


def _pyenv_roots() -> List[str]:
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(os.environ["PYENV_ROOT"])
    roots.append(os.path.join(os.path.expanduser("~"), ".pyenv"))
    pyenv = shutil.which("pyenv")
    if pyenv:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                roots.append(out.stdout.strip())
    seen: List[str] = []
    for r in roots:
        if r not in seen:
            seen.append(r)
    return seen


def find_python27() -> str:
    """Path of a working CPython 2.7 interpreter, or WstestUnavailable.

    Order: $FASTGW_PYTHON27, pyenv versions 2.7.* (newest first) under
    $PYENV_ROOT, ~/.pyenv and ``pyenv root``, then python2.7/python2 on PATH.
    """
    explicit = os.environ.get(PYTHON27_ENV)
    if explicit:
        if _is_python27(explicit):
            return explicit
        raise WstestUnavailable(f"${PYTHON27_ENV}={explicit!r} is not a working Python 2.7 interpreter")

    tried: List[str] = []
    candidates: List[str] = []
    for root in _pyenv_roots():
        found = glob.glob(os.path.join(root, "versions", "2.7*", "bin", "python2.7"))
        candidates.extend(sorted(found, reverse=True))
        tried.append(os.path.join(root, "versions", "2.7*", "bin", "python2.7"))
    for name in ("python2.7", "python2"):
        path = shutil.which(name)
        tried.append(f"{name} on PATH")
        if path:
            candidates.append(path)
    for c in candidates:
        if _is_python27(c):
            return c
    raise WstestUnavailable(
        "Autobahn TestSuite needs CPython 2.7 and none was found (tried "
        + ", ".join(tried)
        + (f"; not working: {', '.join(candidates)}" if candidates else "")
        + f"). Install one (e.g. `pyenv install 2.7.18`) or point ${PYTHON27_ENV} at it."
    )


def _fingerprint(python27: str) -> str:
    h = hashlib.sha256()
    for part in (python27, AUTOBAHNTESTSUITE, *PY27_PINS, *VIRTUALENV_PINS):
        h.update(part.encode() + b"\n")
    return h.hexdigest()


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _run_logged(cmd: Sequence[str], log_path: str, timeout: float, env: Mapping[str, str], what: str) -> None:
    with open(log_path, "ab") as log:
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        try:
            rc = subprocess.run(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=dict(env),
            ).returncode
        except subprocess.TimeoutExpired:
            # The message says everything TimeoutExpired would (what, how long); the log tail says why.
            raise WstestUnavailable(
                f"{what} timed out after {timeout:.0f}s; log {log_path}:\n{_tail(log_path)}"
            ) from None
        except OSError as exc:
            raise WstestUnavailable(f"{what} could not start ({exc}); log {log_path}") from exc
    if rc != 0:
        raise WstestUnavailable(f"{what} failed (exit {rc}); log {log_path}:\n{_tail(log_path)}")


@contextlib.contextmanager
def _locked(path: str):
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_ready: Dict[str, str] = {}


def default_cache_dir() -> str:
    return os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR


def ensure_wstest(cache_dir: Optional[str] = None) -> str:
    """Return the path of a working ``wstest``, building its 2.7 env if needed.

    ``cache_dir`` defaults to ``$FASTGW_AUTOBAHN_VENV`` or
    ``~/.cache/fastgw-autobahn`` (outside the git tree). Layout::

        cache_dir/boot/    Python 3 venv with virtualenv<20.22
        cache_dir/py27/    the 2.7 virtualenv: bin/wstest
        cache_dir/*.log    install logs
        cache_dir/py27/.fastgw-ready   fingerprint of the interpreter and pins

    Idempotent and safe to call concurrently (a file lock serializes builders;
    a finished env is reused while its fingerprint matches, rebuilt otherwise).
    """
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    if cache_dir in _ready:
        return _ready[cache_dir]
    python27 = find_python27()
    fingerprint = _fingerprint(python27)

    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as exc:
        raise WstestUnavailable(f"cannot create the Autobahn cache dir {cache_dir}: {exc}") from exc

    py27_dir = os.path.join(cache_dir, "py27")
    wstest = os.path.join(py27_dir, "bin", "wstest")
    marker = os.path.join(py27_dir, ".fastgw-ready")

    with _locked(os.path.join(cache_dir, ".lock")):
        if not (_read(marker) == fingerprint and os.access(wstest, os.X_OK)):
            _build(cache_dir, python27, py27_dir, marker, fingerprint)
        _verify(py27_dir, os.path.join(cache_dir, "verify.log"))
    _ready[cache_dir] = wstest
    return wstest


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _build(cache_dir: str, python27: str, py27_dir: str, marker: str, fingerprint: str) -> None:
    log = os.path.join(cache_dir, "install.log")
    with open(log, "w") as f:
        f.write(f"building the Autobahn TestSuite env with {python27} at {time.ctime()}\n")
    env = _clean_env({"VIRTUALENV_OVERRIDE_APP_DATA": os.path.join(cache_dir, "virtualenv-app-data")})

    # 1. Python 3 venv holding virtualenv<20.22 (outside the test interpreter's
    #    own environment, which we never modify).
    boot = os.path.join(cache_dir, "boot")
    boot_py = os.path.join(boot, "bin", "python")
    boot_ok = os.path.join(boot, ".fastgw-ready")
    boot_fp = hashlib.sha256("\n".join((sys.executable, *VIRTUALENV_PINS)).encode()).hexdigest()
    if _read(boot_ok) != boot_fp:
        shutil.rmtree(boot, ignore_errors=True)
        _run_logged([sys.executable, "-m", "venv", boot], log, 300, env, "creating the Python 3 venv for virtualenv")
        _run_logged(
            [boot_py, "-m", "pip", "install", "--no-input", *VIRTUALENV_PINS],
            log,
            600,
            env,
            "pip install 'virtualenv<20.22' (pinned " + ", ".join(VIRTUALENV_PINS) + ")",
        )
        with open(boot_ok, "w") as f:
            f.write(boot_fp)

    # 2. The 2.7 virtualenv (pip 20.3.4 / setuptools 44.1.1 / wheel 0.37.1 from
    #    virtualenv's bundled wheels: no download).
    shutil.rmtree(py27_dir, ignore_errors=True)
    _run_logged(
        [boot_py, "-m", "virtualenv", "--no-download", "--no-periodic-update", "-p", python27, py27_dir],
        log,
        300,
        env,
        f"virtualenv -p {python27}",
    )

    # 3. autobahntestsuite and the pins.
    reqs = os.path.join(cache_dir, "requirements-py27.txt")
    with open(reqs, "w") as f:
        f.write("\n".join((AUTOBAHNTESTSUITE, *PY27_PINS)) + "\n")
    _run_logged(
        [
            os.path.join(py27_dir, "bin", "python"),
            "-m", "pip", "install", "--no-input", "--progress-bar", "off", "-r", reqs,
        ],
        log,
        INSTALL_TIMEOUT,
        env,
        f"pip install {AUTOBAHNTESTSUITE} and pins into the 2.7 env",
    )
    with open(marker, "w") as f:
        f.write(fingerprint)


def _verify(py27_dir: str, log: str) -> None:
    code = (
        "import autobahn, autobahntestsuite, twisted, wsaccel\n"
        "from autobahntestsuite import wstest, fuzzing\n"
        "print('autobahntestsuite %s autobahn %s twisted %s' % "
        "(autobahntestsuite.version, autobahn.version, twisted.__version__))\n"
    )
    open(log, "w").close()
    _run_logged(
        [os.path.join(py27_dir, "bin", "python"), "-c", code],
        log,
        120,
        _clean_env(),
        "importing autobahntestsuite in the 2.7 env (delete the cache dir to rebuild)",
    )


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def make_spec(
    url: str,
    cases: Iterable[str],
    exclude_cases: Iterable[str] = (),
    outdir: str = ".",
    *,
    agent: str = "fastgw",
    options: Optional[Mapping[str, object]] = None,
    exclude_agent_cases: Optional[Mapping[str, Sequence[str]]] = None,
) -> dict:
    """The fuzzingclient spec.

    ``failByDrop: false`` (also wstest's own choice for fuzzingclient, stated
    explicitly here): when the fuzzer itself fails a connection, e.g. on a
    protocol violation it detects in what comes back, it starts a closing
    handshake instead of dropping TCP. Through a proxy that is what we want to
    exercise: the gateway must relay that Close to the backend and the reply
    back, and a missing reply shows up as UNCLEAN/FAILED close behavior. With
    ``true`` the fuzzer would just drop TCP and only the gateway's "peer lost"
    path would be tested. Other options (e.g. ``openHandshakeTimeout``,
    default 5 s, ``closeHandshakeTimeout``, default 1 s) can be overridden via
    ``options``.
    """
    opts = {"failByDrop": False}
    opts.update(options or {})
    return {
        "outdir": os.path.abspath(outdir),
        "options": opts,
        "servers": [{"agent": agent, "url": url}],
        "cases": list(cases),
        "exclude-cases": list(exclude_cases),
        "exclude-agent-cases": {k: list(v) for k, v in (exclude_agent_cases or {}).items()},
    }


def run_fuzzingclient(
    wstest: str,
    url: str,
    cases: Iterable[str],
    exclude_cases: Iterable[str] = (),
    outdir: str = "autobahn-reports",
    timeout: float = 300.0,
    *,
    agent: str = "fastgw",
    options: Optional[Mapping[str, object]] = None,
    exclude_agent_cases: Optional[Mapping[str, Sequence[str]]] = None,
) -> Dict[str, dict]:
    """Run ``wstest -m fuzzingclient`` against ``url``; return results by case id.

    Writes ``outdir/spec.json``, the log ``outdir/wstest.log``, the reports
    (``outdir/index.html``, per-case ``.json``/``.html``) and parses
    ``outdir/index.json``. Each value: ``{"behavior", "behaviorClose",
    "duration" (ms), "remoteCloseCode", "reportfile"}``.

    Raises ``WstestError`` on timeout (wstest and its process group are
    killed), on a non-zero exit, when no index.json was written, or when
    wstest could not connect to ``url`` at some point (it then skips all the
    remaining cases; ``exc.results`` has the cases run before).
    """
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    index = os.path.join(outdir, "index.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(index)
    spec = make_spec(
        url, cases, exclude_cases, outdir, agent=agent, options=options, exclude_agent_cases=exclude_agent_cases
    )
    spec_path = os.path.join(outdir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
    log_path = os.path.join(outdir, "wstest.log")

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [wstest, "-m", "fuzzingclient", "-s", spec_path],
            cwd=outdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            start_new_session=True,  # its own process group: killed as a whole
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise WstestError(
                f"wstest did not finish within {timeout:.0f}s against {url}; log {log_path}:\n{_tail(log_path, 5)}"
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    if rc != 0:
        raise WstestError(f"wstest exited {rc} against {url}; log {log_path}:\n{_tail(log_path)}")
    try:
        with open(index) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise WstestError(f"wstest wrote no usable {index} ({exc}); log {log_path}:\n{_tail(log_path)}") from exc
    per_agent = data.get(agent, {})
    results = {
        case_id: {
            "behavior": r.get("behavior"),
            "behaviorClose": r.get("behaviorClose"),
            "duration": r.get("duration"),
            "remoteCloseCode": r.get("remoteCloseCode"),
            "reportfile": os.path.join(outdir, r["reportfile"]) if r.get("reportfile") else None,
        }
        for case_id, r in per_agent.items()
    }
    lost = _connection_failures(log_path)
    if lost:
        # wstest gives up on the remaining cases when a connection attempt
        # fails; its reports cover only the cases before.
        raise WstestError(
            f"wstest could not connect to {url} after {len(results)} case(s): {lost[0]}; log {log_path}", results
        )
    return results


def _connection_failures(log_path: str) -> List[str]:
    try:
        with open(log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.startswith("Connection to ") and " failed (" in line]


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def case_key(case_id: str):
    """Sort key for case ids: "9.10.2" after "9.2.1"."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def is_failed(result: Mapping[str, object]) -> bool:
    """A case failed: its behavior is FAILED, or its closing behavior is.

    behaviorClose FAILED means the connection was failed by the wrong
    endpoint, or the opening handshake never completed; both are real failures
    for a proxy. Closing behaviors UNCLEAN / WRONG CODE do not count here (see
    ``close_regressions``).
    """
    return result.get("behavior") == FAILED or result.get("behaviorClose") == FAILED


def failed_cases(results: Mapping[str, Mapping[str, object]]) -> List[str]:
    return sorted((c for c, r in results.items() if is_failed(r)), key=case_key)


def compare(direct: Mapping[str, Mapping[str, object]], through: Mapping[str, Mapping[str, object]]) -> List[str]:
    """The gate: case ids FAILED through the gateway but not FAILED directly,
    plus ids present in only one of the two runs. Empty list = pass."""
    bad = set(direct.keys()) ^ set(through.keys())
    for case_id, r in through.items():
        if case_id in direct and is_failed(r) and not is_failed(direct[case_id]):
            bad.add(case_id)
    return sorted(bad, key=case_key)


def close_regressions(
    direct: Mapping[str, Mapping[str, object]], through: Mapping[str, Mapping[str, object]]
) -> List[str]:
    """Informational: cases whose closing behavior is OK directly but not
    through the gateway (UNCLEAN, WRONG CODE, FAILED BY CLIENT, ...)."""
    return sorted(
        (
            c
            for c, r in through.items()
            if c in direct and direct[c].get("behaviorClose") == "OK" and r.get("behaviorClose") not in ("OK", None)
        ),
        key=case_key,
    )


def counts(results: Mapping[str, Mapping[str, object]], key: str = "behavior") -> Dict[str, int]:
    c = collections.Counter(r.get(key) for r in results.values())
    ordered = {b: c.pop(b, 0) for b in BEHAVIORS} if key == "behavior" else {}
    ordered.update(sorted(c.items(), key=lambda kv: str(kv[0])))
    return ordered


def describe(case_ids: Iterable[str], *runs: Mapping[str, Mapping[str, object]], names: Sequence[str] = ()) -> str:
    """Human-readable lines for the given cases across runs (for assertion messages)."""
    lines = []
    for c in case_ids:
        parts = []
        for i, run in enumerate(runs):
            name = names[i] if i < len(names) else f"run{i}"
            r = run.get(c)
            parts.append(
                f"{name}: "
                + (
                    "missing"
                    if r is None
                    else f"{r.get('behavior')}/{r.get('behaviorClose')} "
                    f"close={r.get('remoteCloseCode')} ({r.get('reportfile')})"
                )
            )
        lines.append(f"  {c}: " + "; ".join(parts))
    return "\n".join(lines)


def summary(results: Mapping[str, Mapping[str, object]]) -> str:
    b = ", ".join(f"{k} {v}" for k, v in counts(results).items())
    bc = ", ".join(f"{k} {v}" for k, v in counts(results, "behaviorClose").items())
    return f"{len(results)} cases: {b}; close: {bc}"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _case_args(name: str):
    if name == "ci":
        return list(CI_CASES) + list(CI_DEFLATE_SAMPLE), list(CI_SLOW_9_EXCLUDED)
    if name == "ci-nodeflate":
        return list(CI_CASES), list(CI_SLOW_9_EXCLUDED)
    if name == "deflate":
        return list(CI_DEFLATE_SAMPLE), []
    if name == "full":
        return list(FULL_CASES), []
    return [c.strip() for c in name.split(",") if c.strip()], []


def _load_echo_backend():
    try:
        from . import echo_backend  # type: ignore[no-redef]
    except ImportError:
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo_backend.py")
        spec = importlib.util.spec_from_file_location("fastgw_autobahn_echo_backend", path)
        echo_backend = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(echo_backend)
    return echo_backend


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Autobahn TestSuite harness for fastgw")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure", help="build/verify the 2.7 env; print the wstest path")
    for name, helptext in (("direct", "run against the echo backend (started here)"), ("run", "run against --url")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument(
            "--cases", default="ci", help="ci | ci-nodeflate | deflate | full | comma-separated ids/patterns"
        )
        sp.add_argument("--exclude", default="", help="extra comma-separated case ids/patterns to exclude")
        sp.add_argument("--outdir", default=None)
        sp.add_argument("--timeout", type=float, default=1800.0)
        sp.add_argument("--agent", default=None)
        if name == "run":
            sp.add_argument("--url", required=True)
        else:
            sp.add_argument("--mode", default=None, help="echo backend mode: stream (default) | message")
    args = p.parse_args(argv)

    try:
        wstest = ensure_wstest()
    except WstestUnavailable as exc:
        print(f"AUTOBAHN UNAVAILABLE: {exc.reason}", file=sys.stderr)
        return 3
    if args.cmd == "ensure":
        print(wstest)
        return 0

    cases, exclude = _case_args(args.cases)
    exclude += [c.strip() for c in args.exclude.split(",") if c.strip()]
    outdir = args.outdir or os.path.join(
        tempfile.gettempdir(),
        "fastgw-autobahn-reports",
        f"{args.cmd}-{args.cases.replace(',', '_').replace('*', 'x')[:40]}",
    )
    stop = None
    if args.cmd == "direct":
        eb = _load_echo_backend()
        kwargs = {"mode": args.mode} if args.mode else {}
        port, stop = eb.start_echo_backend(**kwargs)
        url = f"ws://127.0.0.1:{port}"
        agent = args.agent or "echo-direct"
    else:
        url = args.url
        agent = args.agent or "fastgw"
    try:
        t0 = time.monotonic()
        results = run_fuzzingclient(wstest, url, cases, exclude, outdir, args.timeout, agent=agent)
        elapsed = time.monotonic() - t0
    finally:
        if stop:
            stop()
    print(f"{url}: {summary(results)} in {elapsed:.1f}s; reports in {outdir}")
    failed = failed_cases(results)
    if failed:
        print("FAILED:\n" + describe(failed, results, names=[agent]))
    slow = sorted(results.items(), key=lambda kv: -(kv[1].get("duration") or 0))[:10]
    print("slowest: " + ", ".join(f"{c} {r.get('duration')}ms" for c, r in slow))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
