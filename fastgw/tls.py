"""TLS: server contexts for https listeners (SNI across multi-site listeners) and client contexts
for https backends and probes.

Listeners: TLS 1.2 and 1.3 only, the Mozilla "intermediate" cipher list for TLS 1.2 (ECDHE with
AES-GCM or ChaCha20), ALPN `http/1.1`. Several https listeners may share a port; the TLS
handshake's SNI picks the certificate (exact host name first, then the longest `*.suffix`), the
Host header then picks the rule as on plain HTTP. A handshake without SNI, or with a name no
listener claims, gets the certificate of the first listener on that port (in file order) — what
nginx does with its default server.

Each listening socket keeps one outer SSLContext for its lifetime; its SNI callback swaps in the
per-listener context that is current. Reloading certificates (SIGHUP) builds new per-listener
contexts: new handshakes use them, established sessions are untouched.

Mutual TLS: `client_ca` (a PEM bundle) and `client_verify` on an https listener. "required":
a client without a certificate the CA signed fails the handshake (CERT_REQUIRED). "optional":
a certificate is asked for and a client may send none (CERT_OPTIONAL); one that is sent must
verify, or the handshake fails as well, since the ssl module cannot accept an unverified
certificate (nginx's `ssl_verify_client optional` does the same). So the verification result a
rewrite rule reads (client_certificate_verification) is "SUCCESS" or "NONE". "off": none is asked
for. Whether a certificate is asked for is decided when the connection is accepted, before SNI
picks the listener, so listeners sharing a port share client_verify (config.py checks it); the
CA, like the certificate, comes from the listener SNI picks, and is re-read on reload.

Backends: `protocol = "https"` settings verify the server against `trusted_root_certificate`
(a PEM bundle) or the system roots, and check its name against `host_name` when set, else the
server's address, which is also sent as SNI (unless it is an IP address).

An encrypted private key is read with the passphrase in the environment variable
FASTGW_TLS_KEY_PASSWORD; without it, `fastgw check` refuses the key with a clear message.
"""

from __future__ import annotations

import os
import ssl
import time

from fastgw.config import Config, ListenerConfig, SettingsConfig

PASSWORD_ENV = "FASTGW_TLS_KEY_PASSWORD"

# Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3 suites are OpenSSL's defaults, all AEAD).
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


class TlsConfigError(Exception):
    """A certificate or key that cannot be used: (key path suffix, reason)."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _password() -> bytes:
    # A callable, so that OpenSSL never prompts on the terminal for an encrypted key.
    return os.environ.get(PASSWORD_ENV, "").encode()


def listener_context(listener: ListenerConfig) -> ssl.SSLContext:
    """The server context of one https listener; TlsConfigError if its files are unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION
    load_chain(ctx, listener.certificate, listener.private_key)
    if listener.client_ca:
        try:
            ctx.load_verify_locations(cafile=listener.client_ca)
        except ssl.SSLError as exc:
            raise TlsConfigError("client_ca", f"{listener.client_ca}: not a PEM CA bundle "
                                 f"({exc.reason or exc})") from None
        except OSError as exc:
            raise TlsConfigError("client_ca", f"{listener.client_ca}: cannot read: "
                                 f"{exc.strerror}") from None
    ctx.verify_mode = _VERIFY_MODES[listener.client_verify]
    return ctx


_VERIFY_MODES = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
                 "off": ssl.CERT_NONE}


def load_chain(ctx: ssl.SSLContext, certificate: str | None, private_key: str | None) -> None:
    if not certificate or not private_key:
        raise TlsConfigError("certificate", "an https listener needs certificate and private_key")
    try:
        with open(private_key, "rb") as f:
            key_pem = f.read()
    except OSError as exc:
        raise TlsConfigError("private_key", f"{private_key}: cannot read: {exc.strerror}") from None
    encrypted = b"ENCRYPTED" in key_pem
    try:
        ctx.load_cert_chain(certificate, private_key, password=_password)
    except ssl.SSLError as exc:
        text = str(exc)
        if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
            raise TlsConfigError("private_key", f"{private_key} does not match the certificate "
                                 f"{certificate}") from None
        if encrypted:
            hint = ("wrong passphrase in " + PASSWORD_ENV) if os.environ.get(PASSWORD_ENV) else \
                f"the key is encrypted: set {PASSWORD_ENV} to its passphrase, or use an unencrypted key"
            raise TlsConfigError("private_key", f"{private_key}: {hint}") from None
        if "PEM" in text or "NO_START_LINE" in text:
            raise TlsConfigError("certificate", f"{certificate} / {private_key}: not a PEM "
                                 f"certificate chain and key ({exc.reason or text})") from None
        raise TlsConfigError("certificate", f"{certificate}: {exc.reason or text}") from None
    except OSError as exc:
        raise TlsConfigError("certificate", f"{certificate}: cannot read: {exc.strerror}") from None


def expiry_warning(certificate: str, now: float | None = None) -> str | None:
    """A warning text if the (first) certificate in the file has expired or is not yet valid."""
    try:
        decoded = ssl._ssl._test_decode_cert(certificate)  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - private API missing, or not parseable
        return None
    now = time.time() if now is None else now
    not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
    if now > not_after:
        return f"{certificate}: certificate expired on {decoded['notAfter']}"
    if now < not_before:
        return f"{certificate}: certificate is not valid before {decoded['notBefore']}"
    return None


def _matches(pattern: str, name: str) -> bool:
    return pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:]))


class TlsManager:
    """The TLS contexts of one gateway, rebuilt on reload."""

    def __init__(self, config: Config):
        self.outer: dict[tuple[str, int], ssl.SSLContext] = {}
        self.client_contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Build contexts from the current certificate files (raises TlsConfigError)."""
        sites: dict[tuple[str, int], list[tuple[ListenerConfig, ssl.SSLContext]]] = {}
        for listener in config.listeners:
            if listener.protocol == "https":
                sites.setdefault((listener.bind, listener.port), []).append(
                    (listener, listener_context(listener)))
        self.sites = sites
        self.client_contexts = {}
        # A connection takes its verify mode from the outer context it is accepted with (SNI
        # swaps the CA and certificate, not the mode): keep the outer ones current.
        for key, outer in self.outer.items():
            if key in sites:
                outer.verify_mode = sites[key][0][1].verify_mode

    def server_context(self, key: tuple[str, int]) -> ssl.SSLContext:
        """The outer context of a listening socket (created once, kept across reloads)."""
        outer = self.outer.get(key)
        if outer is None:
            outer = self.sites[key][0][1]  # its own certificate: the default site's
            outer.sni_callback = lambda obj, name, ctx, key=key: self._select(obj, name, key)
            self.outer[key] = outer
        return outer

    def _select(self, ssl_object, server_name: str | None, key: tuple[str, int]):
        sites = self.sites.get(key)
        if not sites:
            return None
        chosen = sites[0][1]  # no SNI, or an unknown name: the first listener's certificate
        if server_name:
            name = server_name.lower().rstrip(".")
            best = -1
            for listener, ctx in sites:
                for pattern in listener.host_names:
                    if _matches(pattern, name):
                        score = 1000 if pattern == name else len(pattern)
                        if score > best:
                            best, chosen = score, ctx
        if ssl_object.context is not chosen:
            ssl_object.context = chosen
        return None

    def client_context(self, settings: SettingsConfig) -> ssl.SSLContext:
        """Verification context for https backends with these settings."""
        cache_key = (settings.name, settings.trusted_root_certificate)
        ctx = self.client_contexts.get(cache_key)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=settings.trusted_root_certificate or None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_alpn_protocols(["http/1.1"])
            self.client_contexts[cache_key] = ctx
        return ctx
