"""The `fastgw` command: serve CONFIG | check CONFIG | upgrade --pid PID | demo | --version.

Exit status: 0 fine, 2 a configuration problem (each printed as `FILE:key.path: reason` on
stderr), 1 a runtime failure (e.g. a port that cannot be bound), printed as one line. Never a
traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import os
import sys

from fastgw import __version__, log, native, preflight
from fastgw.errors import ConfigError

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


_EXAMPLE = ("examples/gateway.toml in the fastgw repository is a complete, commented "
            "configuration; the README's configuration reference lists every key.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fastgw", description="A fast L7 application gateway with native WebSocket support.",
        epilog="Run `fastgw COMMAND --help` for a command's arguments.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the version, whether the compiled modules are in use (c) or "
                             "their pure-Python twins (py), and why not, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_serve = sub.add_parser(
        "serve", help="run the gateway with a configuration file",
        description="Run the gateway until SIGTERM or SIGINT (graceful stop); SIGHUP reloads "
                    "CONFIG. Problems in CONFIG are printed as FILE:key.path: reason (exit "
                    "status 2); a port that cannot be bound exits with status 1.",
        epilog=_EXAMPLE)
    p_serve.add_argument("config", metavar="CONFIG",
                         help="path to the gateway's TOML configuration file")
    p_serve.add_argument("--log-level", default=os.environ.get("FASTGW_LOG_LEVEL", "info"),
                         choices=("debug", "info", "warning", "error"),
                         help="least severe event written to the log on stderr (default: "
                              "$FASTGW_LOG_LEVEL, else info); the access log is configured "
                              "apart, by [gateway] access_log")
    p_serve.add_argument("--log-format", choices=log.FORMATS, default=None,
                         help="json: one JSON object per line (time, level, log, then the "
                              "record); text: one readable line per record. Default: text when "
                              "stderr is a terminal, else json")
    p_check = sub.add_parser(
        "check", help="validate a configuration file and print its routes",
        description="Validate CONFIG, including the files it names (certificates, keys, WAF "
                    "rules), and print the routing table. Exit status 0 when it can be served; "
                    "otherwise 2, with every problem on stderr as FILE:key.path: reason.",
        epilog=_EXAMPLE)
    p_check.add_argument("config", metavar="CONFIG",
                         help="path to the gateway's TOML configuration file")
    p_demo = sub.add_parser(
        "demo", help="run the gateway in front of built-in demo backends",
        description="Start the gateway on HOST:PORT in front of two built-in demo backends (a "
                    "page, /api/info and a WebSocket chat at /chat/ws), with its admin listener "
                    "(/metrics, /backend-health) on PORT+1 or, if that is taken, a free port. "
                    "Everything runs in this process; Ctrl-C stops it.",
        epilog=_EXAMPLE)
    p_demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    p_demo.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    p_demo.add_argument("--log-format", choices=log.FORMATS, default=None,
                        help="as for serve (default: text on a terminal, else json)")
    p_upgrade = sub.add_parser(
        "upgrade", help="hand a running gateway's listeners and sessions to a new process",
        description="Send SIGUSR2 to the `fastgw serve` process PID (or its supervisor) and wait "
                    "for the outcome: a new process running the same command line (so a newly "
                    "installed fastgw) takes over the listeners and the plain WebSocket "
                    "sessions without disconnecting anyone; a supervisor (workers > 1) does "
                    "this for each of its workers. Exit status 0 when it took over (its PID, "
                    "or the new and the old workers' PIDs, are printed), 1 when it failed (the "
                    "old process goes on serving).")
    p_upgrade.add_argument("--pid", type=int, required=True, help="the process to upgrade")
    p_upgrade.add_argument("--timeout", type=float, default=120.0,
                           help="seconds to wait for the outcome (default 120)")
    args = parser.parse_args(argv)

    problem = native.required_problem()
    if problem:
        print(f"fastgw: {problem}", file=sys.stderr)
        return EXIT_RUNTIME
    try:
        if args.command == "check":
            return check(args.config)
        if args.command == "serve":
            return serve(args.config, args.log_level, args.log_format)
        if args.command == "upgrade":
            return upgrade(args.pid, args.timeout)
        if args.command == "demo":
            from fastgw.demo import run_demo
            return run_demo(args.host, args.port, args.log_format, _warn_build)
    except native.ExtensionsRequired as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    parser.print_help()
    return EXIT_CONFIG


class _VersionAction(argparse.Action):
    """--version, computed only when asked (it imports every compiled module to say which run)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        problem = native.required_problem()
        if problem:
            parser.exit(EXIT_RUNTIME, f"fastgw: {problem}\n")
        try:
            text = _version()
        except native.ExtensionsRequired as exc:
            parser.exit(EXIT_RUNTIME, f"fastgw: {exc}\n")
        print(text + "".join(f"\n  {line}" for line in native.notes()))
        parser.exit(EXIT_OK)


def _version() -> str:
    from fastgw import frames
    return (f"fastgw {__version__} (frame engine: {frames.IMPLEMENTATION}, "
            f"hot path: {native.implementation()}, Python {sys.version.split()[0]})")


def _warn_build(as_event: bool = False) -> None:
    """Once, at start: what runs is not the compiled build, or not the build of these sources.
    `serve` and `demo` write it as a log record (stderr is their log), `check` as text."""
    for line in native.notes():
        if as_event:
            log.event(log.WARNING, "build_warning", note=line)
        else:
            print(f"fastgw: warning: {line}", file=sys.stderr)


def check(path: str) -> int:
    _warn_build()
    try:
        cfg = preflight.load_checked(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    from fastgw.routing import Router
    for warning in cfg.warnings:
        print(warning, file=sys.stderr)
    print(f"{path}: OK")
    for line in Router(cfg).describe():
        print(line)
    return EXIT_OK


def serve(path: str, log_level: str = "info", log_format: str | None = None) -> int:
    log.setup(getattr(log, log_level.upper()), log_format)
    if not os.environ.get("FASTGW_WORKER"):
        _warn_build(as_event=True)
    try:
        cfg = preflight.load_checked(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    if os.environ.get("FASTGW_WORKER"):
        _exit_with_parent()  # the supervisor starts every worker, a live upgrade's too
    else:
        for warning in cfg.warnings:
            print(warning, file=sys.stderr)
        _raise_descriptor_limit(cfg.gateway.max_connections)  # workers inherit it
    if cfg.gateway.workers > 1 and not os.environ.get("FASTGW_WORKER"):
        if os.environ.get("FASTGW_UPGRADE_FD"):
            # A single process's successor would have to become a supervisor: not supported;
            # the old process sees this exit status and serves on.
            print("fastgw: a live upgrade cannot change workers = 1 to more; restart instead",
                  file=sys.stderr)
            return EXIT_RUNTIME
        from fastgw.supervisor import Supervisor
        return Supervisor(path, cfg.gateway.workers, log_level,
                          "text" if log.text_format() else "json").run()
    from fastgw.gateway import run
    from fastgw.listener import BindError
    try:
        return run(cfg, reload_from=path)
    except BindError as exc:
        print(f"fastgw: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C during shutdown
        return EXIT_OK


def upgrade(pid: int, timeout: float) -> int:
    """SIGUSR2 to `pid`, then wait for its status file (fastgw.upgrade)."""
    import signal
    import time

    from fastgw import upgrade as live
    path = live.status_path(pid)
    try:
        os.unlink(path)  # an earlier upgrade's outcome
    except FileNotFoundError:
        pass
    try:
        os.kill(pid, signal.SIGUSR2)
    except OSError as exc:
        print(f"fastgw: cannot signal process {pid}: {exc.strerror}", file=sys.stderr)
        return EXIT_RUNTIME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = live.read_status(pid)
        if status is not None:
            if status.get("outcome") == "done":
                if "workers" in status:  # a supervisor's (fastgw.supervisor)
                    print(f"upgraded: processes {_pids(status['workers'])} took over from "
                          f"{_pids(status['replaced'])} (workers of {pid})")
                else:
                    print(f"upgraded: process {status.get('successor')} took over from {pid}")
                return EXIT_OK
            print(f"fastgw: upgrade failed, process {pid} goes on serving: {status.get('reason')}",
                  file=sys.stderr)
            return EXIT_RUNTIME
        time.sleep(0.05)
    print(f"fastgw: no outcome from process {pid} within {timeout:g} s (see its log)",
          file=sys.stderr)
    return EXIT_RUNTIME


def _pids(pids: list) -> str:
    return ", ".join(str(p) for p in pids)


def _raise_descriptor_limit(configured: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit and say what it allows (capacity.py)."""
    from fastgw import capacity
    soft, hard = capacity.raise_nofile()
    sessions = capacity.sessions(soft)
    limit = capacity.max_connections(configured, soft)
    log.event(log.INFO, "capacity", open_files=soft, hard_limit=hard, sessions=sessions,
              max_connections=limit)
    if sessions < 1000 or (configured and sessions < configured):
        log.event(log.WARNING, "low_capacity", sessions=sessions, open_files=soft,
                  hard_limit=hard, max_connections=limit,
                  hint="raise the hard limit (ulimit -Hn, systemd LimitNOFILE=, docker --ulimit "
                       "nofile=): each WebSocket session holds two descriptors")


def _exit_with_parent() -> None:
    """A worker gets SIGTERM if its supervisor dies, even by SIGKILL (Linux), so that no orphan
    keeps serving a port after the supervisor is gone."""
    import signal
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["main", "check", "serve", "upgrade"]
