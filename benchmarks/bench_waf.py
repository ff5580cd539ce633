"""WAF inspection cost per request (full OWASP CRS, paranoia level 1) and whether the binding
releases the GIL.

    pytest benchmarks/bench_waf.py              # pytest-benchmark table
    python benchmarks/bench_waf.py              # plain numbers for docs/waf.md

Cases: a clean GET with a browser's headers, a clean urlencoded POST form, a clean JSON POST,
an SQL injection in the query (blocked in prevention mode, so phase 2 stops at 949110) and the
same in detection mode. The threading case has N threads inspect in parallel and compares the
wall time with one thread doing the same work: a speedup near N means `process_*` runs without
the GIL; near (or below) 1 means it holds it and inspection belongs on the event loop.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

try:
    from fastgw.config import WafConfig
    from fastgw.waf import Waf, waf_available
except ImportError as exc:  # pragma: no cover
    pytest.skip(f"fastgw.waf cannot be imported: {exc}", allow_module_level=True)

CRS_PATH = os.environ.get("FASTGW_CRS_PATH", "/usr/share/modsecurity-crs")
CRS_SETUP = os.environ.get("FASTGW_CRS_SETUP", "/etc/modsecurity/crs/crs-setup.conf")
_missing = waf_available() or (
    None if os.path.isdir(CRS_PATH) and os.path.isfile(CRS_SETUP)
    else f"the OWASP CRS is not installed ({CRS_PATH}, {CRS_SETUP}): apt-get install modsecurity-crs"
)
if _missing and __name__ != "__main__":
    pytest.skip(f"WAF benchmarks skipped: {_missing}", allow_module_level=True)

BROWSER = [
    (b"Host", b"shop.example.com"),
    (b"Connection", b"keep-alive"),
    (b"sec-ch-ua", b'"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Windows"'),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"User-Agent", b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    b"Chrome/124.0.0.0 Safari/537.36"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    (b"Sec-Fetch-Site", b"same-origin"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"Sec-Fetch-User", b"?1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Referer", b"https://shop.example.com/catalog?page=2&sort=price"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Accept-Language", b"en-US,en;q=0.9,fr;q=0.8"),
    (b"Cookie", b"_ga=GA1.1.123456789.1700000000; session=eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWxpY2UifQ.c2ln; "
                b"theme=dark"),
]
FORM_BODY = b"user=alice&password=s3cr%21t&remember=on&redirect=%2Faccount%2Forders"
FORM = [h for h in BROWSER if h[0] != b"Upgrade-Insecure-Requests"] + [
    (b"Content-Type", b"application/x-www-form-urlencoded"),
    (b"Content-Length", str(len(FORM_BODY)).encode()),
]
JSON_BODY = b'{"item": 42, "qty": 2, "note": "please ring the bell", "tags": ["gift", "fragile"]}'
JSON = [(b"Host", b"api.example.com"), (b"User-Agent", b"Mozilla/5.0"), (b"Accept", b"application/json"),
        (b"Content-Type", b"application/json"), (b"Content-Length", str(len(JSON_BODY)).encode())]

CASES = {
    "clean_get": dict(method=b"GET", uri=b"/products/42?color=blue&size=m", headers=BROWSER),
    "clean_post_form": dict(method=b"POST", uri=b"/login", headers=FORM, body=FORM_BODY),
    "clean_post_json": dict(method=b"POST", uri=b"/api/orders", headers=JSON, body=JSON_BODY),
    "attack_sqli_query": dict(method=b"GET", uri=b"/products?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                              headers=BROWSER),
}
CONN = dict(client_ip="203.0.113.7", client_port=51234, server_ip="127.0.0.1", server_port=8080,
            http_version="1.1")


def _config(mode: str) -> WafConfig:
    return WafConfig(mode=mode, crs_path=CRS_PATH, crs_setup=CRS_SETUP)


@pytest.fixture(scope="module")
def prevention() -> Waf:
    return Waf(_config("prevention"))


@pytest.fixture(scope="module")
def detection() -> Waf:
    return Waf(_config("detection"))


@pytest.mark.parametrize("case", list(CASES))
def test_inspect_prevention(benchmark, prevention, case):
    request = {**CONN, **CASES[case]}
    verdict = benchmark(lambda: prevention.inspect(**request))
    assert verdict.blocked == case.startswith("attack")


def test_inspect_detection_attack(benchmark, detection):
    request = {**CONN, **CASES["attack_sqli_query"]}
    verdict = benchmark(lambda: detection.inspect(**request))
    assert not verdict.blocked and verdict.would_block


def test_build(benchmark):
    """Loading the full CRS: once per config at startup/reload."""
    benchmark.pedantic(lambda: Waf(_config("prevention")).close(), rounds=3, iterations=1)


def parallel_speedup(waf: Waf, threads: int = 2, per_thread: int = 150) -> dict[str, float]:
    """One thread doing threads*per_thread inspections vs `threads` threads doing per_thread
    each. `speedup` is the wall-time ratio; `cpu_parallelism` the CPU seconds all threads used
    per wall second in the parallel run (thread_time, so other processes on the box do not
    count): ~1.0 means the GIL serialises inspection, ~threads means it is released."""
    request = {**CONN, **CASES["clean_get"]}
    cpu: list[float] = []

    def work(n: int) -> None:
        started = time.thread_time()
        for _ in range(n):
            waf.inspect(**request)
        cpu.append(time.thread_time() - started)

    work(20)  # warm up
    start = time.perf_counter()
    work(threads * per_thread)
    serial = time.perf_counter() - start
    cpu.clear()
    pool = [threading.Thread(target=work, args=(per_thread,)) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    parallel = time.perf_counter() - start
    return {"threads": threads, "serial_s": serial, "parallel_s": parallel,
            "speedup": serial / parallel, "cpu_parallelism": sum(cpu) / parallel}


def test_gil_release(benchmark, prevention):
    """Records the parallel speedup; fails if the binding starts releasing the GIL (then a
    thread pool for inspection would pay, and fastgw.waf's on-loop design is worth revisiting)."""
    threads = min(2, os.cpu_count() or 1)
    result = parallel_speedup(prevention, threads=threads)
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    if threads >= 2:
        assert result["cpu_parallelism"] < 1.5, (
            f"the binding now seems to release the GIL ({result}); inspecting in a thread "
            "pool would pay (see fastgw/waf.py, 'Cost, and why on the loop')")


def _time(waf: Waf, request: dict, n: int) -> tuple[float, float]:
    """Best of 5 runs of n inspections: (wall seconds, this thread's CPU seconds) per request."""
    for _ in range(20):
        waf.inspect(**request)
    best_wall = best_cpu = float("inf")
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            waf.inspect(**request)
        best_wall = min(best_wall, (time.perf_counter() - wall) / n)
        best_cpu = min(best_cpu, (time.thread_time() - cpu) / n)
    return best_wall, best_cpu


def main() -> int:
    if _missing:
        print(f"skipped: {_missing}")
        return 1
    start = time.perf_counter()
    prev = Waf(_config("prevention"))
    print(f"build (load CRS + self-test): {(time.perf_counter() - start) * 1e3:.0f} ms; {prev.describe()}")
    det = Waf(_config("detection"))
    n = int(os.environ.get("N", "300"))
    print(f"{'us per request (wall / CPU)':28s} {'prevention':>16s} {'detection':>16s}")
    for name, case in CASES.items():
        request = {**CONN, **case}
        (pw, pc), (dw, dc) = _time(prev, request, n), _time(det, request, n)
        print(f"{name:28s} {pw * 1e6:7.0f} / {pc * 1e6:6.0f} {dw * 1e6:7.0f} / {dc * 1e6:6.0f}")
    off = Waf(WafConfig(mode="prevention", crs_path=CRS_PATH, crs_setup=CRS_SETUP, request_body_check=False))
    w, c = _time(off, {**CONN, **CASES["clean_post_form"]}, n)
    print(f"{'clean_post_form, no body':28s} {w * 1e6:7.0f} / {c * 1e6:6.0f}")
    for threads in (2, 4):
        r = parallel_speedup(prev, threads=threads)
        print(f"{threads} threads: serial {r['serial_s']:.3f} s, parallel {r['parallel_s']:.3f} s, "
              f"speedup x{r['speedup']:.2f}, CPU parallelism {r['cpu_parallelism']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
