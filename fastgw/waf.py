"""Request inspection through libmodsecurity (ModSecurity v3) running the OWASP Core Rule Set.

One job: given a request the proxy has already parsed (head, and the body up to a limit), say
whether the web application firewall lets it through, and describe every rule that matched as a
firewall-log record. The proxy calls it once per request and once per WebSocket handshake,
*before* any connection to a backend is opened; after a 101 the frames are not inspected.

    waf_available()  -> None, or a one-line message saying what to install
    check(cfg, key="waf") -> [(key, reason)]: loads what Waf(cfg) would, as `fastgw check` problems
    Waf(cfg)         built once per distinct WafConfig (loading the CRS takes ~75 ms); share it
    waf.inspect(...) -> Verdict   the proxy's one call per request (on the loop; ~1-2 ms with
                                  the full CRS, see below)
    firewall_log_records(verdict) -> [dict]   one JSON-serialisable record per matched rule
    waf.rule_matches  Counter[(rule_id: str, action: str)] for metrics
    waf.requests      Counter: "inspected", "matched", "blocked" (prevention), "detected"
                      (detection, would have blocked)

Verdicts
--------
A request is *clean* when no rule matched (``verdict.matches`` is empty) and its body was within
the limit: ``verdict.clean``. In **prevention** mode ``verdict.blocked`` is True when the engine
intervened: answer ``verdict.status`` (403 from the CRS anomaly evaluation, or the status a rule
names, e.g. 400 for a body that fails to parse, 418 from a custom rule; a rule's ``redirect``
gives ``verdict.location`` and a 3xx status) with a short page carrying
``verdict.transaction_id``. In **detection** mode ``blocked`` is always False: the request passes,
``verdict.would_block`` and ``verdict.status`` say what prevention would have done, and the
records say ``Detected``.

Record actions follow the cloud gateway's firewall log: ``Matched`` for a rule that matched and
contributed (anomaly scoring), ``Blocked`` for the rule that blocked the request (prevention),
``Detected`` for a rule that would have blocked it (detection). Which rules are disruptive is read
from the rule files when they load (``deny``/``drop``/``redirect`` actions), because the engine in
DetectionOnly mode does not say.

The request body
----------------
``waf.body_limit`` is how many body bytes the proxy must buffer and pass to ``inspect`` (the
config's ``max_request_body_size``), or None when the body is not inspected
(``request_body_check = false``: then no limit applies here and the body streams). When the body
is longer than the limit (Content-Length over it, or a chunked body that grew past it), the proxy
passes what it has (possibly nothing) with ``body_truncated=True``:

* prevention: ``blocked=True, status=413`` at once, without running the rules (the body is not
  there to inspect, and the answer is 413 whatever the head holds); one ``Blocked`` record,
  ruleSetType ``fastgw``, ruleId ``request-body-limit``.
* detection: the head and the first ``body_limit`` bytes are inspected as usual (ModSecurity's
  ``ProcessPartial``) and a ``Detected`` record for the limit is added; the request passes.

Exclusions and disabled rules
-----------------------------
``disabled_rules`` become ``SecRuleRemoveById`` (any rule, CRS or custom; an id no loaded file
defines is a config error, to catch typos). ``exclusions`` ("REQUEST_HEADERS:Authorization",
"REQUEST_COOKIES:session", "ARGS:token", also ARGS_GET/ARGS_POST, the ``*_NAMES`` collections
for the names themselves, and ``/regex/`` names; ``config.exclusion_problem`` checks them) become
``SecRuleUpdateTargetByTag "OWASP_CRS" "!<target>"``: they apply to every CRS rule. As on the
cloud gateway they do not apply to custom rules, which name their targets themselves.

Cost, and why on the loop
-------------------------
Measured on the 2-core CI box (benchmarks/bench_waf.py, full CRS 3.3.4 at PL1, CPU time): a
clean GET with Chrome's headers ~1.5 ms, a clean form POST ~1.8 ms, a JSON POST ~1.2 ms, an SQL
injection ~1.7 ms; building a Waf ~75 ms (docs/waf.md has the table). The PyPI wheel's PCRE2 is
built without JIT, so every CRS regex runs in PCRE2's interpreter. The binding holds the GIL
during ``process_*`` (N threads inspecting run no faster than one; benchmarks/bench_waf.py
checks it), so a thread pool would buy nothing: inspection runs on the event loop.

Binding quirks this module works around (libmodsecurity 3.0.15 wheel)
--------------------------------------------------------------------
* A string with a glob ``Include`` loads nothing useful; the CRS files are loaded one by one with
  ``load_from_uri`` in sorted order, and a self-test attack must match after loading.
* Engine directives (``SecRuleEngine``, ``SecRequestBodyAccess``, limits) keep the value of the
  *first* load that sets them, so fastgw's are loaded before anything else and win over
  crs-setup.conf and custom rule files.
* ``SecRuleUpdateTargetByTag`` loaded before the CRS makes later CRS files fail to parse: it goes
  after them.
* The wheel has no GeoIP/MaxMind: REQUEST-910-IP-REPUTATION.conf fails to parse
  (``@geoLookup``); it is skipped and listed in ``waf.skipped`` (the IP reputation features are
  off in the default crs-setup anyway).
* ``get_parser_error()`` accumulates over the life of a RulesSet: only the new tail is reported.
* ``append_request_body`` takes ``bytes`` only; headers and URI may be bytes (passed untouched).
* Without a log callback every match is printed to stderr; a no-op callback is installed and the
  matches are read with ``get_rule_messages()``, which leaves out rules marked ``noauditlog``.
* ``SecRequestBodyAccess Off`` makes ModSecurity v3 skip phase 2 entirely (where the CRS matches
  ARGS and blocks): it stays On, and ``request_body_check = false`` means no body bytes are
  passed.
* The bundled libxml2 prints XML body parse errors to stderr: no-op handlers are installed.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from fastgw.accesslog import timestamp
from fastgw.config import exclusion_problem
from fastgw.errors import FastgwError

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.config import WafConfig

__all__ = [
    "INSTALL_HINT",
    "Match",
    "Verdict",
    "Waf",
    "WafLoadError",
    "check",
    "firewall_log_records",
    "waf_available",
]

INSTALL_HINT = (
    "the WAF needs the libmodsecurity binding: pip install 'fastgw[waf]' (from a clone: "
    "pip install '.[waf]'), and the OWASP CRS (e.g. apt-get install modsecurity-crs)"
)

# Rule ids fastgw itself loads, in a range no rule publisher registered (4,301,000-19,999,999
# is unassigned in ModSecurity's rule id reservations).
_ID_SETTINGS = 4_310_001
_ID_SCORE = 4_310_010
_FASTGW_IDS = frozenset({_ID_SETTINGS, _ID_SCORE})

# From ModSecurity's modsecurity.conf-recommended (v3): parse JSON and XML bodies, and refuse
# bodies that fail to parse or multipart bodies that look like evasion. Kept under their
# well-known ids so they can be listed in disabled_rules.
_RECOMMENDED_RULES = r"""
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation: PE %{REQBODY_PROCESSOR_ERROR}, BQ %{MULTIPART_BOUNDARY_QUOTED}, BW %{MULTIPART_BOUNDARY_WHITESPACE}, DB %{MULTIPART_DATA_BEFORE}, DA %{MULTIPART_DATA_AFTER}, HF %{MULTIPART_HEADER_FOLDING}, LF %{MULTIPART_LF_LINE}, SM %{MULTIPART_MISSING_SEMICOLON}, IQ %{MULTIPART_INVALID_QUOTING}, IP %{MULTIPART_INVALID_PART}, IH %{MULTIPART_INVALID_HEADER_FOLDING}, FL %{MULTIPART_FILE_LIMIT_EXCEEDED}'"
SecRule MULTIPART_UNMATCHED_BOUNDARY "@eq 1" "id:200004,phase:2,t:none,log,deny,msg:'Multipart parser detected a possible unmatched boundary.'"
"""  # noqa: E501 - the rules as modsecurity.conf-recommended writes them
# Without body inspection no body is passed: an XML/JSON processor would fail on the empty body.
_RECOMMENDED_RULES_NO_BODY = "\n".join(
    line for line in _RECOMMENDED_RULES.splitlines() if "requestBodyProcessor" not in line
)
_RECOMMENDED_DISRUPTIVE = {200002: 400, 200003: 400, 200004: 403}
_RECOMMENDED_IDS = frozenset({200000, 200001, *_RECOMMENDED_DISRUPTIVE})

_SEVERITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG")
_TOTAL_SCORE_RE = re.compile(r"Total Score: (\d+)")
_GEOIP_ERROR = "not compiled with GeoIP or MaxMind support"
_SELF_TEST_URI = b"/?fastgw_selftest=%3Cscript%3Ealert(1)%3C/script%3E&fastgw_selftest_sql=1%27%20or%20%271%27=%271"


def waf_available() -> str | None:
    """None when the libmodsecurity binding imports; otherwise what to install, in one line."""
    try:
        import libmodsecurity  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    except Exception as exc:  # a broken wheel (missing bundled library, ...)
        return f"the libmodsecurity binding failed to load ({exc}); reinstall: pip install 'fastgw[waf]'"
    return None


class WafLoadError(FastgwError):
    """The WAF could not be built from its config. `problems` is [(key, reason)], the keys being
    config paths such as "waf.crs_path" or "waf.custom_rules[0]" (the caller prefixes the file)."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in self.problems))


@dataclass(frozen=True, slots=True)
class Match:
    """One rule that matched during a transaction (from libmodsecurity's RuleMessage)."""

    rule_id: int
    message: str  # the rule's msg
    data: str  # the rule's logdata, e.g. "Matched Data: ... found within ARGS:id: ..."
    match: str  # what the operator matched, e.g. 'Matched "Operator `Rx' ... against ARGS:q'
    severity: int  # 0 EMERGENCY .. 7 DEBUG
    phase: int
    file: str
    line: int
    tags: tuple[str, ...]
    disruptive: bool  # the rule denies/drops/redirects (in either mode)

    @property
    def severity_name(self) -> str:
        return _SEVERITIES[self.severity] if 0 <= self.severity < len(_SEVERITIES) else str(self.severity)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the WAF decided about one request. See the module docstring for the semantics."""

    blocked: bool  # answer `status` instead of proxying (prevention mode only)
    would_block: bool  # prevention would block this request (== blocked in prevention mode)
    status: int  # the status to answer when blocked / would_block; 0 otherwise
    location: str | None  # a rule's redirect target (status is then 3xx)
    anomaly_score: int  # the CRS inbound anomaly score (0 when nothing scored)
    body_over_limit: bool
    matches: tuple[Match, ...]
    transaction_id: str
    mode: str  # "detection" | "prevention"
    # what the firewall-log records need about the request
    client_ip: str
    client_port: int
    method: str
    uri: str
    hostname: str
    crs_version: str
    crs_rules_dir: str
    custom_files: tuple[str, ...]
    timestamp: float  # time.time() when inspection started
    duration: float  # seconds spent inspecting
    body_limit: int

    @property
    def clean(self) -> bool:
        return not self.matches and not self.body_over_limit

    @property
    def reason(self) -> str:
        """A one-line text for the block page and the access log."""
        if self.body_over_limit:
            return f"request body larger than {self.body_limit} bytes (transaction {self.transaction_id})"
        return f"request blocked by the web application firewall (transaction {self.transaction_id})"


class _VerdictRequest(TypedDict):
    """The Verdict fields every verdict of one inspection shares (Waf._inspect's `common`)."""

    mode: str
    client_ip: str
    client_port: int
    method: str
    uri: str
    hostname: str
    crs_version: str
    crs_rules_dir: str
    custom_files: tuple[str, ...]
    timestamp: float
    body_limit: int


def _action(verdict: Verdict, match: Match) -> str:
    if match.disruptive:
        return "Blocked" if verdict.mode == "prevention" else "Detected"
    return "Matched"


def firewall_log_records(verdict: Verdict) -> list[dict[str, Any]]:
    """One firewall-log record per matched rule (and one for an over-limit body), named as the
    cloud gateway's firewall log names its fields; JSON-serialisable. [] for a clean request."""
    if verdict.clean:
        return []
    common = {
        "time": timestamp(verdict.timestamp),  # the log envelope's format (log.py)
        "clientIp": verdict.client_ip,
        "clientPort": verdict.client_port,
        "requestUri": verdict.uri,
        "hostname": verdict.hostname,
        "transactionId": verdict.transaction_id,
        "policyMode": "Prevention" if verdict.mode == "prevention" else "Detection",
    }
    records = []
    crs_dir = verdict.crs_rules_dir + os.sep
    for m in verdict.matches:
        if m.file.startswith(crs_dir) or (not m.file and m.rule_id >= 900_000 and m.rule_id < 1_000_000):
            rule_set, version = "OWASP_CRS", verdict.crs_version
            group = os.path.splitext(os.path.basename(m.file))[0]
        elif m.file in verdict.custom_files:
            rule_set, version, group = "Custom", "", os.path.basename(m.file)
        elif m.rule_id in _RECOMMENDED_IDS:
            rule_set, version, group = "ModSecurity", "recommended", "modsecurity.conf-recommended"
        else:  # crs-setup.conf, the exclusion files beside it
            rule_set, version = "OWASP_CRS", verdict.crs_version
            group = os.path.splitext(os.path.basename(m.file))[0]
        records.append({
            **common,
            "ruleSetType": rule_set,
            "ruleSetVersion": version,
            "ruleGroup": group,
            "ruleId": str(m.rule_id),
            "message": m.message,
            "action": _action(verdict, m),
            "details": {
                "message": m.match,
                "data": m.data,
                "file": m.file,
                "line": str(m.line),
                "severity": m.severity_name,
                "tags": list(m.tags),
            },
        })
    if verdict.body_over_limit:
        records.append({
            **common,
            "ruleSetType": "fastgw",
            "ruleSetVersion": "",
            "ruleGroup": "request-body",
            "ruleId": "request-body-limit",
            "message": f"Request body larger than max_request_body_size ({verdict.body_limit} bytes)",
            "action": "Blocked" if verdict.mode == "prevention" else "Detected",
            "details": {"message": "", "data": "", "file": "", "line": "", "severity": "CRITICAL", "tags": []},
        })
    return records


# --------------------------------------------------------------------------------------------
# Loading


@dataclass(slots=True)
class _Loaded:
    rules: Any = None  # libmodsecurity.RulesSet
    problems: list[tuple[str, str]] = field(default_factory=list)
    rule_count: int = 0
    crs_rule_count: int = 0
    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    crs_rules_dir: str = ""
    crs_version: str = "unknown"
    defined_ids: set[int] = field(default_factory=set)
    disruptive: dict[int, int] = field(default_factory=dict)  # rule id -> status it answers


_DIRECTIVE_RE = re.compile(r"^\s*(SecRule|SecAction)\b", re.IGNORECASE)
_ID_RE = re.compile(r"(?:^|,)\s*id\s*:\s*'?(\d+)")
_DISRUPTIVE_RE = re.compile(r"(?:^|,)\s*'?(deny|drop|redirect)\b")
_STATUS_RE = re.compile(r"(?:^|,)\s*status\s*:\s*'?(\d{3})")
_VER_ACTION_RE = re.compile(r"ver:'?OWASP_CRS/(\d+(?:\.\d+)*)")
_VERSION_RE = re.compile(r'SecComponentSignature\s+"?OWASP_CRS/(\d+(?:\.\d+)*(?:-[\w.]+)?)')


def _scan_rules(text: str, out: _Loaded) -> None:
    """Collect rule ids, and which rules are disruptive, from SecRules text. Not a parser: it reads
    the last quoted argument (the actions) of each SecRule/SecAction logical line."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            buf += raw[:-1] + " "
            continue
        logical.append(buf + raw)
        buf = ""
    if buf:
        logical.append(buf)
    for line in logical:
        if not _DIRECTIVE_RE.match(line):
            continue
        line = line.rstrip()
        if not line.endswith('"'):
            continue
        start = line.rfind('"', 0, len(line) - 1)
        while start > 0 and line[start - 1] == "\\":  # an escaped quote inside the actions
            start = line.rfind('"', 0, start - 1)
        if start < 0:
            continue
        actions = line[start + 1 : -1]
        rid = _ID_RE.search(actions)
        if not rid:
            continue
        rule_id = int(rid.group(1))
        out.defined_ids.add(rule_id)
        verb = _DISRUPTIVE_RE.search(actions)
        if verb:
            status = _STATUS_RE.search(actions)
            out.disruptive[rule_id] = (
                int(status.group(1)) if status else (302 if verb.group(1) == "redirect" else 403)
            )


def _parse_error_reason(error: str, path: str) -> str:
    """Turn ModSecurity's parser message into '<file> line N: <message>'."""
    error = " ".join(error.split())
    m = re.match(r"Rules error\. File: (.*?)\. Line: (\d+)\. Column: \d+\. (.*)$", error)
    if m:
        return f"{m.group(1)} line {m.group(2)}: {m.group(3).strip() or 'parse error'}"
    m = re.match(r"(.*?)\s*File: (.*?) at line: (\d+)\s*$", error)
    if m:
        return f"{m.group(2)} line {m.group(3)}: {m.group(1).rstrip('. ')}"
    return f"{path}: {error or 'parse error'}"


def _crs_version(rule_files: list[str]) -> str:
    """The CRS version, from REQUEST-901's SecComponentSignature (or any rule's ver: action)."""
    first = sorted(rule_files, key=lambda p: "REQUEST-901" not in os.path.basename(p))
    for path in first[:3]:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        found = _VERSION_RE.search(text) or _VER_ACTION_RE.search(text)
        if found:
            return found.group(1)
    return "unknown"


def _crs_rules_dir(crs_path: str) -> str | None:
    for candidate in (os.path.join(crs_path, "rules"), crs_path):
        if glob.glob(os.path.join(glob.escape(candidate), "REQUEST-*.conf")):
            return candidate
    return None


def _settings_first(cfg: WafConfig) -> str:
    # Loaded before anything else: the first load that sets an engine directive wins.
    engine = "On" if cfg.mode == "prevention" else "DetectionOnly"
    limit = max(1, int(cfg.max_request_body_size))
    return "\n".join([
        f"SecRuleEngine {engine}",
        # Always On: with it Off, ModSecurity v3 skips phase 2 altogether, where the CRS does
        # most of its matching and all of its blocking. request_body_check = false only means
        # fastgw passes no body bytes (and loads no JSON/XML body processor rules).
        "SecRequestBodyAccess On",
        f"SecRequestBodyLimit {limit}",
        f"SecRequestBodyNoFilesLimit {limit}",
        # fastgw passes at most `limit` bytes and decides about the rest itself (413 / record).
        "SecRequestBodyLimitAction ProcessPartial",
        "SecResponseBodyAccess Off",
        "SecAuditEngine Off",
        "",
    ])


def _settings_after_setup(cfg: WafConfig) -> str:
    pl = int(cfg.paranoia_level)
    # tx.paranoia_level/executing_paranoia_level are CRS 3's names; blocking_/detection_ CRS 4's.
    return (
        f'SecAction "id:{_ID_SETTINGS},phase:1,pass,nolog,t:none,'
        f"setvar:tx.paranoia_level={pl},setvar:tx.executing_paranoia_level={pl},"
        f"setvar:tx.blocking_paranoia_level={pl},setvar:tx.detection_paranoia_level={pl},"
        f'setvar:tx.inbound_anomaly_score_threshold={int(cfg.anomaly_threshold)}"\n'
        + (_RECOMMENDED_RULES if cfg.request_body_check else _RECOMMENDED_RULES_NO_BODY)
    )


def _settings_after_crs(cfg: WafConfig) -> list[tuple[str, str]]:
    """(key, SecRules text) loaded after the CRS; each separately so a problem names its key."""
    out = [(
        "waf",
        # Reports the inbound anomaly score (CRS 3: tx.anomaly_score, CRS 4:
        # tx.blocking_inbound_anomaly_score) after the CRS's blocking evaluation; when 949110
        # blocks, this rule does not run and the score is read from 949110's message.
        f'SecRule TX:ANOMALY_SCORE|TX:BLOCKING_INBOUND_ANOMALY_SCORE "@gt 0" '
        f"\"id:{_ID_SCORE},phase:2,pass,log,t:none,msg:'fastgw inbound anomaly score',"
        f"logdata:'%{{MATCHED_VAR}}'\"\n",
    )]
    for i, rule_id in enumerate(cfg.disabled_rules):
        out.append((f"waf.disabled_rules[{i}]", f"SecRuleRemoveById {int(rule_id)}\n"))
    for i, target in enumerate(cfg.exclusions):
        out.append((f"waf.exclusions[{i}]", f'SecRuleUpdateTargetByTag "OWASP_CRS" "!{target}"\n'))
    return out


def _load(cfg: WafConfig) -> _Loaded:
    """Load everything Waf(cfg) needs; never raises for config problems (they are collected)."""
    out = _Loaded()
    rules: Any = None

    def load_text(key: str, text: str) -> int:
        before = rules.get_parser_error()
        n = rules.load(text)
        if n < 0:
            error = rules.get_parser_error()[len(before):]
            out.problems.append((key, f"cannot load {text.strip()!r}: {' '.join(error.split())}"))
            return 0
        _scan_rules(text, out)
        out.rule_count += n
        return n

    def load_file(key: str, path: str, *, crs: bool = False) -> int | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            out.problems.append((key, f"cannot read {path}: {exc.strerror or exc}"))
            return None
        before = rules.get_parser_error()
        n = rules.load_from_uri(path)
        if n < 0:
            error = rules.get_parser_error()[len(before):]
            if crs and _GEOIP_ERROR in error:
                # The wheel has no GeoIP: skip the file (IP reputation is off by default).
                out.skipped.append((path, "this libmodsecurity build has no GeoIP/MaxMind support"))
                return None
            out.problems.append((key, _parse_error_reason(error, path)))
            return None
        _scan_rules(text, out)
        out.files.append(path)
        out.rule_count += n
        return n

    # --- validation of what only the engine side knows -----------------------------------
    exclusions_ok = True
    for i, target in enumerate(cfg.exclusions):
        why = exclusion_problem(target)
        if why:
            exclusions_ok = False
            out.problems.append((f"waf.exclusions[{i}]", why))
    rules_dir = _crs_rules_dir(cfg.crs_path) if cfg.crs_path else None
    if not cfg.crs_path or not os.path.isdir(cfg.crs_path):
        out.problems.append(("waf.crs_path", f"no such directory: {cfg.crs_path!r} (install the OWASP CRS, "
                                             "e.g. apt-get install modsecurity-crs)"))
    elif rules_dir is None:
        out.problems.append(("waf.crs_path", f"no CRS rules found in {cfg.crs_path} (expected rules/REQUEST-*.conf)"))
    if cfg.crs_setup and not os.path.isfile(cfg.crs_setup):
        out.problems.append(("waf.crs_setup", f"no such file: {cfg.crs_setup}"))
    custom_ok = []
    for i, path in enumerate(cfg.custom_rules):
        if not os.path.isabs(path):
            out.problems.append((f"waf.custom_rules[{i}]", f"not an absolute path: {path}"))
        elif not os.path.isfile(path):
            out.problems.append((f"waf.custom_rules[{i}]", f"no such file: {path}"))
        else:
            custom_ok.append((i, path))
    hint = waf_available()
    if hint:
        out.problems.append(("waf.mode", hint))
        return out
    if rules_dir is None or any(key in ("waf.crs_path", "waf.crs_setup") for key, _ in out.problems):
        return out  # nothing sensible to load without the CRS
    from libmodsecurity import RulesSet

    rules = out.rules = RulesSet()
    out.crs_rules_dir = rules_dir
    all_conf = sorted(glob.glob(os.path.join(glob.escape(rules_dir), "*.conf")))
    out.crs_version = _crs_version(all_conf)

    # --- 1. engine directives: first load wins --------------------------------------------
    load_text("waf", _settings_first(cfg))

    # --- 2. crs-setup, then fastgw's CRS variables and ModSecurity's recommended rules ------
    if cfg.crs_setup:
        load_file("waf.crs_setup", cfg.crs_setup)
    else:  # no setup file: say it was set up, as crs-setup.conf's rule 900990 does
        digits = "".join(out.crs_version.split(".")[:3]) if out.crs_version != "unknown" else "334"
        load_text("waf.crs_setup", 'SecAction "id:900990,phase:1,pass,nolog,t:none,'
                                   f'setvar:tx.crs_setup_version={digits}"\n')
    load_text("waf", _settings_after_setup(cfg))

    # --- 3. the CRS: request rules one by one, in order ----------------------------------
    setup_dir = os.path.dirname(cfg.crs_setup) if cfg.crs_setup else ""
    names = {os.path.basename(p) for p in all_conf}
    before_crs = os.path.join(setup_dir, "REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf") if setup_dir else ""
    after_crs = os.path.join(setup_dir, "RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf") if setup_dir else ""
    if before_crs and os.path.basename(before_crs) not in names and os.path.isfile(before_crs):
        load_file("waf.crs_setup", before_crs)
    for path in all_conf:
        name = os.path.basename(path)
        # Only requests are inspected: RESPONSE-* files (phases 3-5) are skipped, except the
        # user's exclusion file, which holds SecRuleRemoveById & co. for request rules too.
        if name.startswith("REQUEST-") or name.startswith("RESPONSE-999-EXCLUSION"):
            n = load_file("waf.crs_path", path, crs=True)
            if n:
                out.crs_rule_count += n
    if after_crs and os.path.basename(after_crs) not in names and os.path.isfile(after_crs):
        load_file("waf.crs_setup", after_crs)

    # --- 4. fastgw's exclusions, disabled rules, score reporter; then custom rules ---------
    for key, text in _settings_after_crs(cfg):
        if key.startswith("waf.exclusions") and not exclusions_ok:
            continue
        load_text(key, text)
    for i, path in custom_ok:
        load_file(f"waf.custom_rules[{i}]", path)

    # --- 5. did the rules really load? -------------------------------------------------------
    if out.crs_rule_count == 0 and not any(k == "waf.crs_path" for k, _ in out.problems):
        out.problems.append(("waf.crs_path", f"no CRS rules loaded from {rules_dir}"))
    for i, rule_id in enumerate(cfg.disabled_rules):
        if int(rule_id) not in out.defined_ids:
            out.problems.append((f"waf.disabled_rules[{i}]", f"no loaded rule has id {rule_id}"))
    return out


def check(cfg: WafConfig, key: str = "waf") -> list[tuple[str, str]]:
    """Load everything as Waf(cfg) would and return the problems as (key, reason); [] = fine.

    `key` is where the table sits in the config: "waf", or e.g. "listeners[2].waf" for a
    listener's own table; the keys returned start with it ("listeners[2].waf.crs_path")."""
    if cfg.mode == "off":
        return []
    problems: list[tuple[str, str]]
    if cfg.mode not in ("detection", "prevention"):
        problems = [("waf.mode", f"must be 'off', 'detection' or 'prevention', not {cfg.mode!r}")]
    else:
        try:
            Waf(cfg).close()
            return []
        except WafLoadError as exc:
            problems = exc.problems
    return [(key + k[3:] if k.startswith("waf") else k, reason) for k, reason in problems]


# --------------------------------------------------------------------------------------------
# The engine


def _noop(_message: Any) -> None:
    pass


_xml_quiet = threading.local()
_XML_CALLBACKS: list[Any] = []  # keeps the ctypes callbacks alive


def _silence_libxml2() -> None:
    """ModSecurity's XML body processor lets the bundled libxml2 print every parse error of a
    client's body to stderr, where fastgw's own log goes: a client could flood it. Install no-op
    error handlers for this thread and as the default for new threads (libxml2 keeps them per
    thread). Best effort: a wheel without a bundled libxml2 is left alone."""
    _xml_quiet.done = True
    try:
        import ctypes

        import libmodsecurity

        libs = os.path.join(os.path.dirname(os.path.dirname(libmodsecurity.__file__)), "libmodsecurity.libs")
        found = glob.glob(os.path.join(glob.escape(libs), "libxml2*.so*"))
        if not found:
            return
        xml = ctypes.CDLL(found[0])
        if not _XML_CALLBACKS:
            generic = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)(lambda ctx, msg: None)
            structured = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(lambda ctx, err: None)
            _XML_CALLBACKS.extend([generic, structured])
        generic, structured = _XML_CALLBACKS
        xml.xmlSetGenericErrorFunc(None, generic)
        xml.xmlThrDefSetGenericErrorFunc(None, generic)
        xml.xmlSetStructuredErrorFunc(None, structured)
        xml.xmlThrDefSetStructuredErrorFunc(None, structured)
    except Exception:  # pragma: no cover - depends on the wheel's layout
        pass


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


class Waf:
    """One compiled rule set and engine, built once per distinct WafConfig and shared by every
    request of the listeners that use that config. Not for mode "off"."""

    def __init__(self, cfg: WafConfig):
        if cfg.mode not in ("detection", "prevention"):
            raise ValueError(f"Waf is built for mode 'detection' or 'prevention', not {cfg.mode!r}")
        started = time.perf_counter()
        loaded = _load(cfg)
        if loaded.problems:
            raise WafLoadError(loaded.problems)
        from libmodsecurity import ModSecurity, Transaction

        self._Transaction = Transaction
        self.config = cfg
        self.mode = cfg.mode
        self.prevention = cfg.mode == "prevention"
        self.body_limit: int | None = int(cfg.max_request_body_size) if cfg.request_body_check else None
        self.anomaly_threshold = int(cfg.anomaly_threshold)
        self.paranoia_level = int(cfg.paranoia_level)
        self.rule_count = loaded.rule_count
        self.crs_rule_count = loaded.crs_rule_count
        self.crs_version = loaded.crs_version
        self.crs_rules_dir = loaded.crs_rules_dir
        self.files = tuple(loaded.files)
        self.skipped = tuple(loaded.skipped)
        self._custom_files = tuple(cfg.custom_rules)
        self._disruptive = {**loaded.disruptive, **_RECOMMENDED_DISRUPTIVE}
        self._rules = loaded.rules
        self._engine = ModSecurity()
        self._engine.set_connector_information("fastgw")
        # Without a callback every match is printed to stderr; matches are read per transaction.
        self._engine.set_rule_message_callback(_noop)
        self.engine_version = self._engine.who_am_i()
        # metrics: matches by (rule id, action) and verdicts by outcome
        self.rule_matches: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[str] = Counter()
        self._self_test()
        self.load_seconds = time.perf_counter() - started

    def _self_test(self) -> None:
        """A known attack must match: proves the rules really loaded (a glob Include that
        silently loads nothing, a CRS directory of empty files, ...)."""
        verdict = self._inspect(
            client_ip="127.0.0.1", client_port=1, server_ip="127.0.0.1", server_port=80,
            method="GET", uri=_SELF_TEST_URI, http_version="1.1",
            headers=[(b"Host", b"localhost"), (b"User-Agent", b"fastgw-selftest"), (b"Accept", b"*/*")],
        )
        if not any(900_000 <= m.rule_id < 1_000_000 for m in verdict.matches):
            self.close()
            raise WafLoadError([(
                "waf.crs_path",
                f"{self.crs_rule_count} CRS rules loaded from {self.crs_rules_dir} but a known "
                "XSS/SQL injection attack matched none of them",
            )])

    def describe(self) -> str:
        """One line for the startup log."""
        skipped = f", skipped {', '.join(os.path.basename(p) for p, _ in self.skipped)}" if self.skipped else ""
        return (
            f"WAF {self.mode}: OWASP_CRS/{self.crs_version} from {self.crs_rules_dir}, "
            f"{self.rule_count} rules from {len(self.files)} files{skipped}, "
            f"paranoia level {self.paranoia_level}, anomaly threshold {self.anomaly_threshold}, "
            f"body {'up to %d bytes' % self.body_limit if self.body_limit is not None else 'not inspected'}"
            f" ({self.engine_version})"
        )

    # -- inspection ----------------------------------------------------------------------

    def inspect(
        self,
        *,
        client_ip: str,
        client_port: int,
        server_ip: str,
        server_port: int,
        method: bytes | str,
        uri: bytes | str,
        http_version: str = "1.1",
        headers: Iterable[tuple[bytes | str, bytes | str]],
        body: bytes | bytearray | memoryview | Sequence[bytes] | None = None,
        body_truncated: bool = False,
        transaction_id: str | None = None,
        hostname: str | None = None,
    ) -> Verdict:
        """Inspect one request (or WebSocket handshake) and count the outcome.

        `uri` is the request target as received (path and query, raw bytes preferred);
        `http_version` "1.1" (or "HTTP/1.1"); `headers` the (name, value) pairs as received;
        `body` the body bytes (or a list of chunks) up to `waf.body_limit`, None when there is
        none or it is not inspected; `body_truncated` True when the body was longer than the
        limit; `hostname` for the log (default: the Host header without its port).
        """
        verdict = self._inspect(
            client_ip=client_ip, client_port=client_port, server_ip=server_ip,
            server_port=server_port, method=method, uri=uri, http_version=http_version,
            headers=headers, body=body, body_truncated=body_truncated,
            transaction_id=transaction_id, hostname=hostname,
        )
        self._count(verdict)
        return verdict

    def _count(self, verdict: Verdict) -> None:
        self.requests["inspected"] += 1
        if verdict.clean:
            return
        self.requests["matched"] += 1
        if verdict.blocked:
            self.requests["blocked"] += 1
        elif verdict.would_block:
            self.requests["detected"] += 1
        if verdict.body_over_limit:
            self.rule_matches[("request-body-limit", "Blocked" if verdict.blocked else "Detected")] += 1
        for m in verdict.matches:
            self.rule_matches[(str(m.rule_id), _action(verdict, m))] += 1

    def _inspect(
        self,
        *,
        client_ip: str,
        client_port: int,
        server_ip: str,
        server_port: int,
        method: bytes | str,
        uri: bytes | str,
        http_version: str = "1.1",
        headers: Iterable[tuple[bytes | str, bytes | str]],
        body: bytes | bytearray | memoryview | Sequence[bytes] | None = None,
        body_truncated: bool = False,
        transaction_id: str | None = None,
        hostname: str | None = None,
    ) -> Verdict:
        timestamp = time.time()
        started = time.perf_counter()
        if not getattr(_xml_quiet, "done", False):
            _silence_libxml2()
        headers = headers if isinstance(headers, (list, tuple)) else list(headers)
        if hostname is None:
            hostname = ""
            for name, value in headers:
                if _text(name).lower() == "host":
                    hostname = _text(value)
                    if hostname.startswith("["):  # [v6]:port
                        hostname = hostname[: hostname.find("]") + 1]
                    else:
                        hostname = hostname.rsplit(":", 1)[0]
                    break
        limit = self.body_limit
        chunks: list[bytes] = []
        if limit is None:
            body_truncated = False  # the body is not inspected: no limit applies here
        elif body is not None:
            size = 0
            for chunk in ((body,) if isinstance(body, (bytes, bytearray, memoryview)) else body):
                chunk = bytes(chunk)
                if size + len(chunk) > limit:
                    chunk = chunk[: limit - size]
                    body_truncated = True
                if chunk:
                    chunks.append(chunk)
                    size += len(chunk)

        common: _VerdictRequest = dict(
            mode=self.mode, client_ip=client_ip, client_port=client_port, method=_text(method),
            uri=_text(uri), hostname=hostname, crs_version=self.crs_version,
            crs_rules_dir=self.crs_rules_dir, custom_files=self._custom_files,
            timestamp=timestamp, body_limit=limit or 0,
        )
        if body_truncated and self.prevention:
            return Verdict(
                blocked=True, would_block=True, status=413, location=None, anomaly_score=0,
                body_over_limit=True, matches=(),
                transaction_id=transaction_id or os.urandom(8).hex(),
                duration=time.perf_counter() - started, **common,
            )

        t = self._Transaction(self._engine, self._rules, transaction_id)
        intervention = None
        # Phases as a connector drives them; stop at the first disruptive intervention
        # (prevention only: in DetectionOnly the engine never intervenes).
        t.process_connection(client_ip, int(client_port), server_ip, int(server_port))
        intervention = t.intervention()
        if intervention is None or not intervention.disruptive:
            version = http_version[5:] if http_version.startswith("HTTP/") else http_version
            # The binding takes bytes too, as received (the module docstring's quirks); its stubs say str.
            t.process_uri(uri, method, version)  # type: ignore[arg-type]
            intervention = t.intervention()
        if intervention is None or not intervention.disruptive:
            add = t.add_request_header
            for name, value in headers:
                add(name, value)  # type: ignore[arg-type]  # bytes too, as for process_uri
            t.process_request_headers()
            intervention = t.intervention()
        if intervention is None or not intervention.disruptive:
            for chunk in chunks:
                t.append_request_body(chunk)
            t.process_request_body()
            intervention = t.intervention()
        messages = t.get_rule_messages()
        tid = t.id
        del t

        score = 0
        matches = []
        disruptive_ids = self._disruptive
        for rm in messages:
            rule_id = rm.rule_id
            if rule_id in _FASTGW_IDS:
                if rule_id == _ID_SCORE:
                    try:
                        score = max(score, int(float(rm.data)))
                    except ValueError:
                        pass
                continue
            if rule_id in (949110, 949111) or rm.message.startswith("Inbound Anomaly Score Exceeded"):
                found = _TOTAL_SCORE_RE.search(rm.message)
                if found:
                    score = max(score, int(found.group(1)))
            matches.append(Match(
                rule_id=rule_id, message=rm.message, data=rm.data, match=rm.match,
                severity=rm.severity, phase=rm.phase, file=rm.file, line=rm.line,
                tags=tuple(rm.tags), disruptive=rm.disruptive or rule_id in disruptive_ids,
            ))

        blocked = bool(intervention is not None and intervention.disruptive and self.prevention)
        location = None
        if blocked:
            assert intervention is not None  # blocked says so
            status = intervention.status if intervention.status and intervention.status != 200 else 403
            location = intervention.url or None
            would_block = True
        else:
            statuses = [disruptive_ids.get(m.rule_id, 403) for m in matches if m.disruptive]
            would_block = bool(statuses)
            status = statuses[0] if statuses else 0
        return Verdict(
            blocked=blocked, would_block=would_block, status=status, location=location,
            anomaly_score=score, body_over_limit=body_truncated, matches=tuple(matches),
            transaction_id=tid, duration=time.perf_counter() - started, **common,
        )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the engine's callback registration (after a reload has moved every listener
        to the new Waf)."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            try:
                engine.set_rule_message_callback(None)
            except Exception:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
