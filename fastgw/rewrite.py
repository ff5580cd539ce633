"""Rewrite rule sets (the cloud gateway's model): conditions, substitutions, header edit plans.

Pure: values in, values out; compiled (native.py, rewrite.pxd), and its own twin. The router
compiles each `[[rewrite_rule_sets]]` once per loaded configuration (`compile_set`: every pattern
compiled there); the dispatcher asks `rewrite_request` for the request's edits (headers, URL,
reroute) and the exchange asks `rewrite_response` for the response's header edits. A route
without a set carries None and never reaches this module.

Semantics, where the cloud gateway's documentation leaves a choice open:
- A set's rules run in ascending `sequence` (file order breaks ties). A rule applies when all of
  its conditions hold (AND); a rule without conditions always applies. Every applying rule's
  actions are applied; a later rule's action on the same header (or URL part) wins.
- Conditions and substitutions see the request as the client sent it and the response as the
  backend sent it, never the values an earlier rule produced.
- A condition's value is the variable's value, "" when absent (a header not sent); `pattern`
  is a Python regular expression searched anywhere in it (anchor with ^ and $), `ignore_case`
  flags it, `negate` inverts the outcome. A header sent several times reads as its values
  joined with ", " (RFC 9110 section 5.3).
- `{var_<variable>}` in a value is the variable's value; the cloud gateway's short forms
  `{http_req_<Header>}` and `{http_resp_<Header>}` work as well. `{var_<variable>_<n>}` is
  capture group n of the pattern of this rule's condition on that variable (the first such
  condition); "" when the group did not take part, or the condition was negated.
- A header action sets the header (all earlier values replaced by one) or, with "", deletes it.
- `url.path` / `url.query` absent: kept. `url.query = ""` drops the query. Substituted text is
  percent-encoded where it is not allowed in a request target (RFC 3986 section 3.3, 3.4).
- A rule whose conditions read the response (`http_resp_*`) can only edit response headers:
  the request has left by then.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from typing import Any
from urllib.parse import quote

from fastgw.http1 import HOP_BY_HOP

SERVER_VARIABLES = ("client_ip", "client_port", "host", "http_method", "request_uri", "uri_path",
                    "query_string", "server_port", "ssl_enabled")
CERTIFICATE_VARIABLES = ("client_certificate", "client_certificate_subject",
                         "client_certificate_issuer", "client_certificate_serial",
                         "client_certificate_fingerprint", "client_certificate_verification")
_KNOWN = frozenset(SERVER_VARIABLES + CERTIFICATE_VARIABLES)
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 section 5.6.2
_PLACEHOLDER_RE = re.compile(r"\{(var|http_req|http_resp)_([^{}\s]+)\}")
_CAPTURE_RE = re.compile(r"^(.+)_(\d{1,2})$")

# What a rewrite may not touch. Hop-by-hop headers and the upgrade headers belong to one
# connection (RFC 9110 section 7.6.1, RFC 6455 section 4); the framing headers would let a rule
# make a message read two ways (RFC 9112 section 6.3); the gateway sets Host (or the settings'
# host_name), the forwarding headers and X-Request-Id itself.
_REQUEST_FIXED = HOP_BY_HOP | {b"content-length", b"host", b"x-forwarded-for",
                               b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host",
                               b"x-request-id"}
_RESPONSE_FIXED = HOP_BY_HOP | {b"content-length"}


def variable_problem(name: str) -> str | None:
    """Why `name` is not a variable, or None."""
    if name in _KNOWN:
        return None
    for prefix in ("http_req_", "http_resp_"):
        if name.startswith(prefix):
            header = name[len(prefix):]
            return None if _TOKEN_RE.match(header) else f"{header!r} is not a header name"
    return (f"unknown variable {name!r} (server variables: {', '.join(SERVER_VARIABLES)}; "
            f"{', '.join(CERTIFICATE_VARIABLES)}; http_req_<Header>, http_resp_<Header>)")


def header_problem(name: str, response: bool) -> str | None:
    """Why a rule may not set or delete the header `name`, or None."""
    if not _TOKEN_RE.match(name):
        return f"{name!r} is not a header name"
    lname = name.lower().encode("latin-1")
    if lname.startswith(b"sec-websocket-") or lname in (_RESPONSE_FIXED if response else _REQUEST_FIXED):
        why = ("a WebSocket handshake header" if lname.startswith(b"sec-websocket-") else
               "hop-by-hop" if lname in HOP_BY_HOP else
               "message framing" if lname == b"content-length" else "set by the gateway")
        return f"{name!r} cannot be rewritten ({why})"
    return None


class Template:
    """A value with placeholders: `parts` are literal strings, (variable,) or (variable, group)."""

    __slots__ = ("parts", "constant")

    def __init__(self, parts: tuple):
        self.parts = parts
        self.constant = all(isinstance(p, str) for p in parts)

    def render(self, source: Any, captures: dict) -> str:
        if self.constant:
            return "".join(self.parts)
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif len(part) == 1:
                out.append(source.get(part[0]))
            else:
                groups = captures.get(part[0], ())
                out.append((groups[part[1] - 1] or "") if part[1] <= len(groups) else "")
        return "".join(out)


def parse_template(text: str, groups: dict[str, int]) -> Template | str:
    """The template of `text`, or why it is not one. `groups`: the rule's condition variables
    and how many capture groups each condition's pattern has."""
    parts: list = []
    at = 0
    for m in _PLACEHOLDER_RE.finditer(text):
        kind, name = m.group(1), m.group(2)
        if kind != "var":
            name = f"{kind}_{name}"
        if m.start() > at:
            parts.append(text[at:m.start()])
        at = m.end()
        capture = _CAPTURE_RE.match(name)
        if capture is not None and capture.group(1) in groups:
            variable, n = capture.group(1), int(capture.group(2))
            if not 1 <= n <= groups[variable]:
                return (f"{m.group(0)}: the condition on {variable!r} has "
                        f"{groups[variable]} capture group(s)")
            parts.append((variable, n))
            continue
        why = variable_problem(name)
        if why is not None:
            if capture is not None and variable_problem(capture.group(1)) is None:
                return f"{m.group(0)}: no condition on {capture.group(1)!r} in this rule"
            return f"{m.group(0)}: {why}"
        parts.append((name,))
    if at < len(text):
        parts.append(text[at:])
    return Template(tuple(parts))


def _uses(template: Template | None, prefixes: tuple) -> bool:
    return template is not None and any(
        not isinstance(p, str) and p[0].startswith(prefixes) for p in template.parts)


class Condition:
    __slots__ = ("variable", "regex", "negate")

    def __init__(self, variable: str, regex: re.Pattern, negate: bool):
        self.variable = variable
        self.regex = regex
        self.negate = negate


class Rule:
    """One compiled rewrite rule."""

    __slots__ = ("name", "conditions", "request_headers", "response_headers", "path", "query",
                 "reroute")

    def __init__(self, name: str, conditions: tuple, request_headers: tuple,
                 response_headers: tuple, path: Template | None, query: Template | None,
                 reroute: bool):
        self.name = name
        self.conditions = conditions
        self.request_headers = request_headers  # ((lower-case name, name, Template or None), ...)
        self.response_headers = response_headers
        self.path = path
        self.query = query
        self.reroute = reroute

    def captures(self, source: Any) -> dict | None:
        """The capture groups by variable when every condition holds, else None."""
        captures: dict = {}
        for cond in self.conditions:
            m = cond.regex.search(source.get(cond.variable))
            if (m is None) != cond.negate:
                return None
            if m is not None and cond.variable not in captures:
                captures[cond.variable] = m.groups()
        return captures


class RuleSet:
    """A compiled `[[rewrite_rule_sets]]`: the rules that edit requests, those that edit
    responses (each in sequence order), and whether any reads a client certificate variable."""

    __slots__ = ("name", "request_rules", "response_rules", "needs_certificate")

    def __init__(self, name: str, rules: list[Rule]):
        self.name = name
        self.request_rules = tuple(r for r in rules if r.request_headers or r.path or r.query)
        self.response_rules = tuple(r for r in rules if r.response_headers)
        templates = [t for r in rules for _, _, t in r.request_headers + r.response_headers]
        templates += [r.path for r in rules] + [r.query for r in rules]
        self.needs_certificate = any(
            _uses(t, ("client_certificate",)) for t in templates) or any(
            c.variable.startswith("client_certificate") for r in rules for c in r.conditions)


def compile_set(cfg: Any) -> RuleSet:
    """A validated config.RewriteRuleSetConfig, compiled (config.py has checked every part)."""
    rules = []
    for rule in sorted(cfg.rules, key=lambda r: r.sequence):  # sorted() is stable: file order
        conditions = []
        groups: dict[str, int] = {}
        for c in rule.conditions:
            regex = re.compile(c.pattern, re.IGNORECASE if c.ignore_case else 0)
            conditions.append(Condition(c.variable, regex, c.negate))
            groups.setdefault(c.variable, regex.groups)

        def template(text: str | None, groups: dict = groups) -> Template | None:
            if text is None:
                return None
            parsed = parse_template(text, groups)
            assert isinstance(parsed, Template), parsed
            return parsed

        def headers(table: tuple) -> tuple:
            return tuple((name.lower().encode("latin-1"), name.encode("latin-1"),
                          template(value) if value else None) for name, value in table)

        url = rule.url
        rules.append(Rule(rule.name, tuple(conditions), headers(rule.request_headers),
                          headers(rule.response_headers),
                          template(url.path) if url is not None else None,
                          template(url.query) if url is not None else None,
                          url is not None and url.reroute))
    return RuleSet(cfg.name, rules)


# --------------------------------------------------------------------------------------------
# The values of the variables.


def _joined(headers: list, lnames: list, lname: bytes) -> str:
    values = [headers[i][1] for i in range(len(lnames)) if lnames[i] == lname]
    return b", ".join(values).decode("latin-1")


class Request:
    """A request under a rewrite set: its variables, read as the client sent it, and the header
    edits still to be made on its way to the backend. `certificate` is the client_certificate_*
    values (certificate_variables), or None when no rule of the set reads them."""

    __slots__ = ("ruleset", "client_ip", "client_port", "server_port", "tls", "method", "url",
                 "host", "headers", "lnames", "certificate", "response", "edits")

    def __init__(self, ruleset: RuleSet, client_ip: str, client_port: int, server_port: int,
                 tls: bool, method: bytes, url: bytes, host: bytes | None, headers: list,
                 lnames: list, certificate: dict | None):
        self.ruleset = ruleset
        self.edits: tuple = ()  # request header edits not made yet
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_port = server_port
        self.tls = tls
        self.method = method
        self.url = url
        self.host = host
        self.headers = headers  # the client's list: the exchange replaces, never edits, it
        self.lnames = lnames
        self.certificate = certificate
        self.response: tuple | None = None  # (headers, lnames) while a response is rewritten

    def get(self, name: str) -> str:
        if name.startswith("http_req_"):
            return _joined(self.headers, self.lnames, name[9:].lower().encode("latin-1"))
        if name.startswith("http_resp_"):
            if self.response is None:
                return ""
            return _joined(self.response[0], self.response[1], name[10:].lower().encode("latin-1"))
        if name.startswith("client_certificate"):
            return self.certificate.get(name, "") if self.certificate else ""
        url = self.url.split(b"#", 1)[0]
        if name == "uri_path":
            return url.split(b"?", 1)[0].decode("latin-1")
        if name == "query_string":
            return url.partition(b"?")[2].decode("latin-1")
        if name == "request_uri":
            return url.decode("latin-1")
        if name == "client_ip":
            return self.client_ip
        if name == "client_port":
            return str(self.client_port)
        if name == "server_port":
            return str(self.server_port)
        if name == "host":
            return (self.host or b"").decode("latin-1")
        if name == "http_method":
            return self.method.decode("latin-1")
        return "On" if self.tls else ""  # ssl_enabled, as the cloud gateway spells it


# Characters a substituted value may not carry into a header (RFC 9110 section 5.5): a client's
# own bytes never hold CR or LF, but a certificate's names may hold any control character.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _bytes(text: str) -> bytes:
    """Text back to the bytes it was read as (a request's bytes are read as latin-1); a
    certificate's names may hold other characters: those are sent as UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _header_value(text: str) -> bytes:
    if not text.isprintable():  # the common case is one C scan
        text = _CONTROL_RE.sub("", text)
    return _bytes(text)


class RequestPlan:
    """What a set does to a request: header edits ((lower-case name, name, value or None), ...),
    the new URL (None: unchanged) and whether routing runs again on it."""

    __slots__ = ("headers", "url", "reroute")

    def __init__(self, headers: tuple, url: bytes | None, reroute: bool):
        self.headers = headers
        self.url = url
        self.reroute = reroute


def _edit(edits: dict, table: tuple, source: Any, captures: dict) -> None:
    for lname, name, template in table:
        edits[lname] = (name, None if template is None else
                        _header_value(template.render(source, captures)))


def _edit_list(edits: dict) -> tuple:
    """{lower-case name: (name, value)} as ((lower-case name, name, value), ...)."""
    return tuple([(lname, pair[0], pair[1]) for lname, pair in edits.items()])


def rewrite_request(source: Request) -> RequestPlan | None:
    """The request's edits by its set, or None when no rule of the set changes it."""
    edits: dict = {}
    path: str | None = None
    query: str | None = None
    reroute = False
    for rule in source.ruleset.request_rules:
        captures = rule.captures(source)
        if captures is None:
            continue
        _edit(edits, rule.request_headers, source, captures)
        if rule.path is not None:
            path = quote(_bytes(rule.path.render(source, captures)), safe=_PATH_SAFE)
            reroute = reroute or rule.reroute
        if rule.query is not None:
            query = quote(_bytes(rule.query.render(source, captures)), safe=_QUERY_SAFE)
    url = None
    if path is not None or query is not None:
        if path is None:
            path = source.get("uri_path")
        if not path.startswith("/"):
            path = "/" + path
        if query is None:
            query = source.get("query_string")
        url = (path + ("?" + query if query else "")).encode("latin-1")
    if not edits and url is None:
        return None
    return RequestPlan(_edit_list(edits), url, reroute)


def rewrite_response(source: Request, headers: list, lnames: list) -> tuple:
    """The response's header edits by the request's set ((lower-case name, name, value or
    None), ...)."""
    source.response = (headers, lnames)
    edits: dict = {}
    for rule in source.ruleset.response_rules:
        captures = rule.captures(source)
        if captures is not None:
            _edit(edits, rule.response_headers, source, captures)
    source.response = None
    return _edit_list(edits)


def apply_headers(headers: list, lnames: list, edits: tuple) -> tuple[list, list]:
    """New (headers, lnames) lists with the edits made: an edited header's values are removed,
    then the set ones appended in the order of the edits."""
    touched = {lname for lname, _, _ in edits}
    kept = [i for i in range(len(lnames)) if lnames[i] not in touched]
    new_headers = [headers[i] for i in kept]
    new_lnames = [lnames[i] for i in kept]
    for lname, name, value in edits:
        if value is not None:
            new_headers.append((name, value))
            new_lnames.append(lname)
    return new_headers, new_lnames


# --------------------------------------------------------------------------------------------
# client_certificate_*: what the TLS layer hands over, in the variables' forms.

# Attribute names as RFC 4514 section 3 writes them; others keep the name OpenSSL gives.
_DN_NAMES = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST",
             "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}


def _dn_value(value: str) -> str:
    """RFC 4514 section 2.4 escaping."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 32:
            out.append("\\%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def distinguished_name(rdns: tuple) -> str:
    """The ssl module's name ((("commonName", "x"),), ...) as an RFC 4514 string: the most
    specific RDN first, multi-valued RDNs joined with "+"."""
    return ",".join("+".join(f"{_DN_NAMES.get(k, k)}={_dn_value(v)}" for k, v in rdn)
                    for rdn in reversed(rdns))


def peer_certificate(ssl_object: Any) -> dict:
    """The client_certificate_* variables of a connection's ssl.SSLObject ({} for None: plain
    HTTP). A certificate is only ever accepted verified (tls.py): present means SUCCESS."""
    if ssl_object is None:
        return {}
    der = ssl_object.getpeercert(True)
    return certificate_variables(der, ssl_object.getpeercert() if der else None,
                                 "SUCCESS" if der else "NONE")


def certificate_variables(der: bytes | None, decoded: dict | None, verification: str) -> dict:
    """The client_certificate_* values of a TLS connection: `der` and `decoded` are the peer
    certificate as ssl.SSLObject.getpeercert(True) / getpeercert() give it (None without one).
    client_certificate is the PEM, percent-encoded as nginx's $ssl_client_escaped_cert (what the
    cloud gateway forwards); the fingerprint is the SHA-1 of the DER, in hex (as nginx's
    $ssl_client_fingerprint)."""
    if der is None:
        return {"client_certificate_verification": verification}
    decoded = decoded or {}
    return {
        "client_certificate": quote(ssl.DER_cert_to_PEM_cert(der), safe=""),
        "client_certificate_subject": distinguished_name(decoded.get("subject", ())),
        "client_certificate_issuer": distinguished_name(decoded.get("issuer", ())),
        "client_certificate_serial": decoded.get("serialNumber", ""),
        "client_certificate_fingerprint": hashlib.sha1(der).hexdigest(),
        "client_certificate_verification": verification,
    }
