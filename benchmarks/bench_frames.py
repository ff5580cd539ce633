"""Micro-benchmarks of the frame engine: the C module against its pure-Python twin, side by side.

    pytest benchmarks/bench_frames.py
    pytest benchmarks/bench_frames.py --benchmark-json=frames.json

Measured in one run:
  * scanning a 64 KiB chunk of 64-byte-payload masked frames (the chat workload), C vs twin;
  * scanning a chunk that holds one large frame (64 KiB payload), C vs twin;
  * apply_mask on 1 MiB, C vs twin vs `bytes(bytearray_1MiB)`, a plain copy: the memory-bandwidth
    reference (masking reads and writes every byte once, as a copy does);
  * Pump.get_buffer + buffer_updated on a 64 KiB read of small frames, with a sink that only
    counts: the per-read cost of the relay without the system calls.
The ratios are printed after pytest-benchmark's table. Targets: C scanner >= 50x the twin on small
frames; apply_mask >= 0.5x the copy's bandwidth.
"""

from __future__ import annotations

import importlib
import os

import pytest

import fastgw._frames_py as twin

try:
    c = importlib.import_module("fastgw._frames")
except ImportError:  # pragma: no cover - the benchmarks need the extension
    c = None

IMPLS = {"c": c, "py": twin}
CHUNK = 64 * 1024
MIB = 1 << 20
KEY = b"\x12\x34\x56\x78"


def small_frames_chunk() -> bytes:
    frame = twin.build_frame(twin.OP_BINARY, os.urandom(64), mask=True)  # 2 + 4 + 64 bytes
    return frame * (CHUNK // len(frame))  # whole frames only: every scan starts at a boundary


def large_frame_chunk() -> bytes:
    return twin.build_frame(twin.OP_BINARY, os.urandom(CHUNK), mask=True)


class _Ratios:
    """Registered at run time: prints the ratios after pytest-benchmark's table.

    Ratios are of the minimum times (the rounds least disturbed by other work on the machine),
    with the ratio of the medians in parentheses."""

    def __init__(self):
        self.times: dict[str, tuple[float, float]] = {}  # name -> (min, median) seconds per call
        self.sizes: dict[str, tuple[int, int]] = {}  # name -> (bytes, frames) per call

    def record(self, name, benchmark, nbytes=0, nframes=0):
        if benchmark.stats is not None:
            stats = benchmark.stats.stats
            self.times[name] = (stats.min, stats.median)
            self.sizes[name] = (nbytes, nframes)

    def ratio(self, slow, fast):
        if slow in self.times and fast in self.times:
            return tuple(s / f for s, f in zip(self.times[slow], self.times[fast]))
        return None

    def pytest_terminal_summary(self, terminalreporter):
        if not self.times:
            return
        w = terminalreporter.write_line
        terminalreporter.section("fastgw frame engine (min per call; ratios: min, median)")
        for name, (t, _) in self.times.items():
            nbytes, nframes = self.sizes[name]
            line = f"{name:16s} {t * 1e6:10.2f} us"
            if nbytes:
                line += f"  {nbytes / t / 1e9:7.2f} GB/s"
            if nframes:
                line += f"  {nframes / t / 1e6:8.2f} M frames/s  {t / nframes * 1e9:7.1f} ns/frame"
            w(line)
        checks = [
            ("scan small frames, C / twin speed", self.ratio("scan_small[py]", "scan_small[c]"), 50),
            ("scan one large frame, C / twin speed", self.ratio("scan_large[py]", "scan_large[c]"), None),
            ("apply_mask 1 MiB, C / copy bandwidth", self.ratio("copy_1MiB", "mask_1MiB[c]"), 0.5),
            ("apply_mask 1 MiB, C / twin speed", self.ratio("mask_1MiB[py]", "mask_1MiB[c]"), None),
            ("Pump read of small frames, C / twin", self.ratio("pump_read[py]", "pump_read[c]"), None),
        ]
        for label, value, target in checks:
            if value is None:
                continue
            line = f"{label:40s} {value[0]:8.2f}x  ({value[1]:.2f}x)"
            if target is not None:
                line += f"  target >= {target:g}: {'met' if value[0] >= target else 'MISSED'}"
            w(line)


@pytest.fixture(scope="module")
def ratios(request):
    summary = _Ratios()
    request.config.pluginmanager.register(summary, "fastgw-frames-ratios")
    return summary


@pytest.fixture(params=["c", "py"])
def impl(request):
    module = IMPLS[request.param]
    if module is None:
        pytest.skip("fastgw._frames is not built")
    return module


def test_scan_small(benchmark, ratios, impl, request):
    chunk = small_frames_chunk()
    scanner = impl.FrameScanner(masked=True)
    consumed = benchmark(scanner.scan, chunk)
    assert consumed == len(chunk) and scanner.at_boundary
    ratios.record(f"scan_small[{request.node.callspec.id}]", benchmark, len(chunk), len(chunk) // 70)


def test_scan_large(benchmark, ratios, impl, request):
    chunk = large_frame_chunk()
    scanner = impl.FrameScanner(masked=True)
    assert benchmark(scanner.scan, chunk) == len(chunk)
    ratios.record(f"scan_large[{request.node.callspec.id}]", benchmark, len(chunk), 1)


def test_mask_1mib(benchmark, ratios, impl, request):
    buf = bytearray(os.urandom(MIB))
    benchmark(impl.apply_mask, buf, KEY)
    ratios.record(f"mask_1MiB[{request.node.callspec.id}]", benchmark, MIB)


def test_copy_1mib(benchmark, ratios):
    buf = bytearray(os.urandom(MIB))
    benchmark(bytes, buf)
    ratios.record("copy_1MiB", benchmark, MIB)


class CountingSink:
    """A transport that sends everything at once and only counts."""

    def __init__(self):
        self.bytes = 0

    def write(self, data):
        self.bytes += len(data)

    def get_write_buffer_size(self):
        return 0


class NullSession:
    def on_control(self, pump, data, consumed):  # pragma: no cover - no control frames here
        return consumed


def test_pump_read(benchmark, ratios, impl, request):
    chunk = small_frames_chunk()
    pump = impl.Pump(impl.FrameScanner(masked=True), NullSession(), side="client")
    pump.sink = sink = CountingSink()
    # The arena is shared and never retired here (the sink keeps nothing), so the bytes written
    # into it once stay for every round: a round is get_buffer + buffer_updated, as the loop does.
    buf = pump.get_buffer(-1)
    buf[: len(chunk)] = chunk
    del buf
    pump.buffer_updated(len(chunk))

    def one_read():
        pump.get_buffer(-1)
        pump.buffer_updated(len(chunk))

    benchmark(one_read)
    assert sink.bytes % len(chunk) == 0 and pump.scanner.at_boundary
    ratios.record(f"pump_read[{request.node.callspec.id}]", benchmark, len(chunk), len(chunk) // 70)
