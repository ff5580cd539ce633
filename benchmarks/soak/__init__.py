"""Soak benchmark: WebSocket sessions at scale, fastgw against nginx (one worker each).

Three parts, each against a freshly started proxy pinned to core 0, with the backend and the C
session client (csrc/wssoak.c) on core 1: ``hold`` (N idle sessions: RSS per session, echo and
Close 1000 on every one after a hold), ``slow`` (1,000 stalled readers behind a pushing backend,
csrc/wspush.c: RSS per stalled session, latency of 50 healthy sessions) and ``storm`` (a restart,
then N handshakes at once).  N follows from the hard RLIMIT_NOFILE (runner.session_budget).

Entry point: ``python -m benchmarks.soak``; see benchmarks/README.md, "Soak: sessions at scale".
It reuses the end-to-end suite's pieces (benchmarks/e2e): the proxy configs, the echo backend
wsecho and its build cache, and the process-tree helpers.
"""
