"""What exchanges and probes ask the gateway for: WAF policies, TLS contexts, passive health.

`Services` implements contracts.ExchangeServices (and the probes' TLS and counting). It owns the
things that are built once per configuration and shared by every request: one Waf per distinct
policy in use (loading the CRS takes ~75 ms: never per request), the firewall log, and the TLS
contexts (tls.TlsManager, built on first use: a gateway without https never loads them).
"""

from __future__ import annotations

from typing import Any

from fastgw import log
from fastgw.backends import Backend, Endpoint
from fastgw.config import Config, ListenerConfig, ProbeConfig
from fastgw.contracts import ExchangeServices
from fastgw.logfile import LogFile
from fastgw.stats import Histo, Stats


class Services(ExchangeServices):
    __slots__ = ("config", "stats", "loop", "wafs", "firewall_log", "tls", "shortage_logged")

    def __init__(self, config: Config, stats: Stats, loop: Any) -> None:
        self.config = config
        self.stats = stats
        self.loop = loop
        self.wafs: dict = {}  # WafConfig -> fastgw.waf.Waf, one per distinct policy in use
        self.firewall_log: LogFile | None = None
        self.tls: Any = None  # fastgw.tls.TlsManager, built on first use
        self.shortage_logged = 0.0  # loop time of the last gateway_shortage warning
        self.configure(config)

    def configure(self, config: Config) -> None:
        """A (re)load: WAF policies and the firewall log for `config` (reopened: log
        rotation); TLS contexts from the current certificate files (renewed ones are used)."""
        self.config = config
        if self.firewall_log is not None:
            self.firewall_log.reopen()  # log rotation: SIGHUP, as for the access log
        self._build_wafs(config)
        if self.tls is not None:
            self.tls.reload(config)

    def close(self) -> None:
        if self.firewall_log is not None:
            self.firewall_log.close()
            self.firewall_log = None

    # -- the web application firewall ------------------------------------------------------

    def _build_wafs(self, config: Config) -> None:
        policies = {config.waf} | {lst.waf for lst in config.listeners if lst.waf is not None}
        policies = {p for p in policies if p.mode != "off"}
        old = self.wafs
        wafs = {}
        for policy in policies:
            waf = old.get(policy)
            if waf is None:
                from fastgw.waf import Waf  # only with the WAF on: the binding is an extra
                waf = Waf(policy)
                log.event(log.INFO, "waf_loaded", policy=waf.describe())
            wafs[policy] = waf
        self.wafs = wafs
        for policy, waf in old.items():
            if policy not in wafs:
                waf.close()
        destination = config.gateway.firewall_log
        # Per-client rate limits write their refusals there too.
        wanted = bool(wafs) or any(lst.requests_per_ip for lst in config.listeners)
        if self.firewall_log is not None \
                and (not wanted or self.firewall_log.destination != destination):
            self.firewall_log.close()
            self.firewall_log = None
        if wanted and self.firewall_log is None and destination != "off":
            self.firewall_log = LogFile(destination, "firewall", self.loop, self.stats)

    def waf_for(self, listener: ListenerConfig) -> Any:
        if not self.wafs:
            return None
        policy = listener.waf if listener.waf is not None else self.config.waf
        return self.wafs.get(policy)

    def waf_verdict(self, verdict: Any) -> None:
        if not verdict.matches and verdict.clean:
            return
        from fastgw.waf import firewall_log_records
        for record in firewall_log_records(verdict):
            self.stats.waf[(str(record.get("ruleId", "")), record.get("action", ""))] += 1
            self.firewall_record(record)

    def firewall_record(self, record: dict) -> None:
        """One record for the firewall log (the WAF's, and per-client rate limits')."""
        if self.firewall_log is not None:
            level = "warning" if record.get("action") == "Blocked" else "info"
            self.firewall_log.write_record(record, level)

    # -- TLS ---------------------------------------------------------------------------------

    def _tls(self) -> Any:
        if self.tls is None:
            from fastgw.tls import TlsManager  # only with https somewhere
            self.tls = TlsManager(self.config)
        return self.tls

    def listener_tls(self, key: tuple[str, int]) -> Any:
        """The SSL context of an https listening socket."""
        return self._tls().server_context(key)

    def upstream_tls(self, backend: Backend) -> tuple:
        settings = backend.settings
        if settings.protocol != "https":
            return None, None
        return self._tls().client_context(settings), settings.host_name or None

    def probe_tls(self, backend: Backend, probe: ProbeConfig) -> tuple:
        """(SSL context, server name) for an https probe; (None, None) for http."""
        if probe.protocol != "https":
            return None, None
        sni = probe.host or backend.settings.host_name or None
        return self._tls().client_context(backend.settings), sni

    # -- health and timing -----------------------------------------------------------------

    def endpoint_failed(self, endpoint: Endpoint, reason: str) -> None:
        log.event(log.WARNING, "server_failed", pool=endpoint.backend.pool.name,
                  settings=endpoint.backend.settings.name, server=endpoint.name, cause=reason)
        endpoint.failed(reason)

    def gateway_shortage(self, reason: str) -> None:
        self.stats.connect_errors[(reason,)] += 1
        now = self.loop.time()
        if now - self.shortage_logged >= 1.0:  # one warning a second at most
            self.shortage_logged = now
            log.event(log.WARNING, "gateway_out_of_descriptors" if reason in ("EMFILE", "ENFILE")
                      else "gateway_out_of_socket_memory", error=reason,
                      total=sum(self.stats.connect_errors.values()))

    def probe_done(self, endpoint: Endpoint, ok: bool) -> None:
        backend = endpoint.backend
        self.stats.probes[(backend.pool.name, backend.settings.name, "ok" if ok else "fail")] += 1

    def latency_histo(self, backend: Backend) -> Histo:
        return self.stats.latency_histo(backend.pool.name)
