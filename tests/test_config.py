"""Configuration contract (DESIGN.md section 5): good files load, every class of bad file is
reported as `FILE:key.path: reason` with exit status 2 and no traceback."""

from __future__ import annotations

import os
import textwrap

import pytest

from fastgw import cli, config
from support import run_cli

GOOD = """
[gateway]
workers = 1
admin = "127.0.0.1:9100"

[[listeners]]
name = "public-http"
port = 8080
bind = "0.0.0.0"
protocol = "http"
host_names = []

[[backend_pools]]
name = "chat"
servers = ["127.0.0.1:9001", "app.internal"]
load_balancing = "round_robin"

[[backend_settings]]
name = "chat-settings"
protocol = "http"
port = 80
request_timeout = 30
probe = "chat-probe"
cookie_affinity = false
affinity_cookie_name = "ApplicationGatewayAffinity"
connection_draining = 0
host_name = ""
trusted_root_certificate = ""
max_message_size = 0
max_frame_size = 0

[[probes]]
name = "chat-probe"
type = "http"
protocol = "http"
host = ""
path = "/"
interval = 30
timeout = 30
unhealthy_threshold = 3
match_status = ["200-399"]
match_body = ""

[[rules]]
name = "chat-rule"
type = "path_based"
priority = 100
listener = "public-http"
backend_pool = "chat"
backend_settings = "chat-settings"
  [[rules.paths]]
  paths = ["/chat/*", "/ws"]
  backend_pool = "chat"
  backend_settings = "chat-settings"

[waf]
mode = "off"
paranoia_level = 1
anomaly_threshold = 5
request_body_check = true
max_request_body_size = 131072
disabled_rules = []
exclusions = []
custom_rules = []
"""


def write(tmp_path, text: str, name: str = "gw.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def check(tmp_path, text: str, capsys) -> tuple[int, list[str]]:
    path = write(tmp_path, text)
    code = cli.main(["check", path])
    err = capsys.readouterr().err
    lines = [line[len(path) + 1:] for line in err.splitlines() if line.startswith(path + ":")]
    return code, lines


def test_design_example_loads(tmp_path, capsys):
    code, lines = check(tmp_path, GOOD, capsys)
    assert code == 0 and lines == []
    out = capsys.readouterr().out
    cfg = config.load(write(tmp_path, GOOD))
    assert cfg.gateway.admin == ("127.0.0.1", 9100)
    assert cfg.backend_pools[0].servers[1].port is None
    assert cfg.rules[0].paths[0].paths == ("/chat/*", "/ws")
    assert cfg.probes[0].match_status == ((200, 399),)
    del out


def test_dataclasses_are_frozen(tmp_path):
    cfg = config.load(write(tmp_path, GOOD))
    with pytest.raises(Exception):
        cfg.listeners[0].port = 1  # type: ignore[misc]


def test_syntax_error(tmp_path, capsys):
    code, lines = check(tmp_path, "[[listeners]\nname = 1\n", capsys)
    assert code == 2 and lines and lines[0].startswith("(syntax):")


def test_missing_file(tmp_path, capsys):
    code = cli.main(["check", str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.toml:(file): cannot read" in err


def test_unknown_keys(tmp_path, capsys):
    text = GOOD.replace('name = "chat-probe"\ntype', 'name = "chat-probe"\nintervall = 3\ntype')
    text = text.replace("[gateway]", "[gateway]\nfoo = 1")
    text += "\n[extra]\nx = 1\n"
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "probes[0].intervall: unknown key" in lines
    assert "gateway.foo: unknown key" in lines
    assert "extra: unknown key" in lines


def test_wrong_types(tmp_path, capsys):
    text = GOOD.replace("port = 8080", 'port = "8080"').replace("cookie_affinity = false",
                                                                  'cookie_affinity = "no"')
    text = text.replace('servers = ["127.0.0.1:9001", "app.internal"]', 'servers = "127.0.0.1"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("listeners[0].port: must be an integer") for line in lines)
    assert any(line.startswith("backend_settings[0].cookie_affinity: must be true or false") for line in lines)
    assert any(line.startswith("backend_pools[0].servers: must be an array") for line in lines)


def test_out_of_range_ports(tmp_path, capsys):
    text = GOOD.replace("port = 8080", "port = 70000").replace("port = 80\n", "port = 0\n")
    text = text.replace('"127.0.0.1:9001"', '"127.0.0.1:65536"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "listeners[0].port: 70000 is out of range (1-65535)" in lines
    assert "backend_settings[0].port: 0 is out of range (1-65535)" in lines
    assert any(line.startswith("backend_pools[0].servers[0]: port 65536") for line in lines)


def test_out_of_range_durations(tmp_path, capsys):
    text = GOOD.replace("request_timeout = 30", "request_timeout = 0").replace(
        "interval = 30", "interval = -5").replace("timeout = 30\nunhealthy", "timeout = 1e9\nunhealthy")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("backend_settings[0].request_timeout: 0 seconds is out of range") for line in lines)
    assert any(line.startswith("probes[0].interval: -5 seconds is out of range") for line in lines)
    assert any(line.startswith("probes[0].timeout:") for line in lines)


def test_duplicate_names(tmp_path, capsys):
    text = GOOD + """
[[backend_pools]]
name = "chat"
servers = []
"""
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "backend_pools[1].name: duplicate name 'chat' (also backend_pools[0])" in lines


def test_missing_references(tmp_path, capsys):
    text = GOOD.replace('listener = "public-http"', 'listener = "nope"').replace(
        'probe = "chat-probe"', 'probe = "no-probe"')
    text = text.replace('  backend_pool = "chat"\n  backend_settings = "chat-settings"',
                        '  backend_pool = "ghost"\n  backend_settings = "phantom"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "rules[0].listener: no listener named 'nope'" in lines
    assert "backend_settings[0].probe: no probe named 'no-probe'" in lines
    assert "rules[0].paths[0].backend_pool: no backend pool named 'ghost'" in lines
    assert "rules[0].paths[0].backend_settings: no backend settings named 'phantom'" in lines


def test_https_listener_without_readable_certificate(tmp_path, capsys):
    text = GOOD.replace('protocol = "http"\nhost_names', 'protocol = "https"\nhost_names')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "listeners[0].certificate: is required for an https listener" in lines
    assert "listeners[0].private_key: is required for an https listener" in lines
    text = text.replace("host_names = []", 'host_names = []\ncertificate = "missing.pem"\n'
                                           'private_key = "missing.key"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("listeners[0].certificate:") and "missing.pem: no such file" in line
               for line in lines)


def test_wildcard_not_at_end(tmp_path, capsys):
    text = GOOD.replace('paths = ["/chat/*", "/ws"]', 'paths = ["/chat/*/x", "ws", "/a*"]')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "rules[0].paths[0].paths[0]: '/chat/*/x': '*' is allowed only at the end of a path" in lines
    assert "rules[0].paths[0].paths[1]: 'ws' must start with '/'" in lines
    assert not any(line.startswith("rules[0].paths[0].paths[2]") for line in lines)


def test_bad_choices_and_required(tmp_path, capsys):
    text = GOOD.replace('load_balancing = "round_robin"', 'load_balancing = "random"').replace(
        'name = "chat-rule"\n', "")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("backend_pools[0].load_balancing: must be one of") for line in lines)
    assert "rules[0].name: is required" in lines


def test_host_names_and_shared_ports(tmp_path, capsys):
    text = GOOD.replace("host_names = []", 'host_names = ["a.example.com", "*.*.bad", "a.example.com"]')
    text += """
[[listeners]]
name = "second"
port = 8080
protocol = "https"
certificate = "c.pem"
private_key = "k.pem"
"""
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("listeners[0].host_names[1]: '*.*.bad' is not a host name") for line in lines)
    assert "listeners[0].host_names[2]: duplicate host name 'a.example.com'" in lines
    assert any(line.startswith("listeners[1].protocol: port 8080 is http") for line in lines)


def test_all_problems_at_once_and_no_traceback(tmp_path):
    text = GOOD.replace("port = 8080", "port = 0").replace("request_timeout = 30", "request_timeout = \"x\"")
    text = text.replace('listener = "public-http"', 'listener = "nope"')
    path = write(tmp_path, text)
    result = run_cli("check", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert f"{path}:listeners[0].port: 0 is out of range (1-65535)" in lines
    assert any(line.startswith(f"{path}:backend_settings[0].request_timeout:") for line in lines)
    assert f"{path}:rules[0].listener: no listener named 'nope'" in lines


def test_serve_refuses_bad_config(tmp_path):
    path = write(tmp_path, GOOD.replace("port = 8080", "port = 99999"))
    result = run_cli("serve", path)
    assert result.returncode == 2
    assert f"{path}:listeners[0].port: 99999 is out of range (1-65535)" in result.stderr
    assert "Traceback" not in result.stderr


def test_redirect_rule_validation(tmp_path, capsys):
    text = GOOD + """
[[listeners]]
name = "plain"
port = 8081

[[rules]]
name = "to-https"
type = "redirect"
listener = "plain"
status = 305
"""
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith("rules[1].target_listener: a redirect rule needs exactly one") for line in lines)
    assert "rules[1].status: 305 is not a redirect status (301, 302, 303, 307 or 308)" in lines


def test_relative_paths_resolve_against_config_file(tmp_path):
    text = GOOD.replace('host_name = ""\ntrusted_root_certificate = ""',
                        'host_name = ""\ntrusted_root_certificate = "ca/root.pem"')
    cfg = config.load(write(tmp_path, text))
    assert cfg.backend_settings[0].trusted_root_certificate == str(tmp_path / "ca" / "root.pem")


def test_version_and_python_m():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("fastgw ")


def test_examples_check_clean():
    import glob
    files = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "examples", "*.toml")))
    assert files
    for path in files:
        result = run_cli("check", path)
        assert result.returncode == 0, result.stderr
