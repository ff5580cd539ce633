"""Configuration contract (DESIGN.md section 5): good files load, every class of bad file is
reported as `FILE:key.path: reason` with exit status 2 and no traceback."""

from __future__ import annotations

import dataclasses
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


def starts(lines: list[str], prefix: str) -> bool:
    return any(line.startswith(prefix) for line in lines)


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
    with pytest.raises(dataclasses.FrozenInstanceError):
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
    assert "probes[0] \"chat-probe\".intervall: unknown key; did you mean 'interval'?" in lines
    assert "gateway.foo: unknown key" in lines
    assert "extra: unknown key" in lines


def test_wrong_types(tmp_path, capsys):
    text = GOOD.replace("port = 8080", 'port = "8080"').replace("cookie_affinity = false",
                                                                  'cookie_affinity = "no"')
    text = text.replace('servers = ["127.0.0.1:9001", "app.internal"]', 'servers = "127.0.0.1"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert starts(lines, 'listeners[0] "public-http".port: must be an integer')
    assert starts(lines, 'backend_settings[0] "chat-settings".cookie_affinity: must be true or '
                         'false')
    assert starts(lines, 'backend_pools[0] "chat".servers: must be an array')


def test_out_of_range_ports(tmp_path, capsys):
    text = GOOD.replace("port = 8080", "port = 70000").replace("port = 80\n", "port = 0\n")
    text = text.replace('"127.0.0.1:9001"', '"127.0.0.1:65536"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert 'listeners[0] "public-http".port: 70000 is out of range (1-65535)' in lines
    assert 'backend_settings[0] "chat-settings".port: 0 is out of range (1-65535)' in lines
    assert starts(lines, 'backend_pools[0] "chat".servers[0]: port 65536')


def test_out_of_range_durations(tmp_path, capsys):
    text = GOOD.replace("request_timeout = 30", "request_timeout = 0").replace(
        "interval = 30", "interval = -5").replace("timeout = 30\nunhealthy", "timeout = 1e9\nunhealthy")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert starts(lines, 'backend_settings[0] "chat-settings".request_timeout: 0 seconds '
                         'is out of range')
    assert starts(lines, 'probes[0] "chat-probe".interval: -5 seconds is out of range')
    assert starts(lines, 'probes[0] "chat-probe".timeout:')


def test_duplicate_names(tmp_path, capsys):
    text = GOOD + """
[[backend_pools]]
name = "chat"
servers = []
"""
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "backend_pools[1] \"chat\".name: duplicate name 'chat' (also backend_pools[0])" in lines


def test_missing_references(tmp_path, capsys):
    text = GOOD.replace('listener = "public-http"', 'listener = "nope"').replace(
        'probe = "chat-probe"', 'probe = "no-probe"')
    text = text.replace('  backend_pool = "chat"\n  backend_settings = "chat-settings"',
                        '  backend_pool = "ghost"\n  backend_settings = "phantom"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert "rules[0] \"chat-rule\".listener: no listener named 'nope'" in lines
    assert ("backend_settings[0] \"chat-settings\".probe: no probe named 'no-probe'; "
            "did you mean 'chat-probe'?") in lines
    assert "rules[0] \"chat-rule\".paths[0].backend_pool: no backend pool named 'ghost'" in lines
    assert ("rules[0] \"chat-rule\".paths[0].backend_settings: no backend settings named "
            "'phantom'") in lines


def test_https_listener_without_readable_certificate(tmp_path, capsys):
    text = GOOD.replace('protocol = "http"\nhost_names', 'protocol = "https"\nhost_names')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert 'listeners[0] "public-http".certificate: is required for an https listener' in lines
    assert 'listeners[0] "public-http".private_key: is required for an https listener' in lines
    text = text.replace("host_names = []", 'host_names = []\ncertificate = "missing.pem"\n'
                                           'private_key = "missing.key"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(line.startswith('listeners[0] "public-http".certificate:')
               and "missing.pem: no such file" in line
               for line in lines)


def test_wildcard_not_at_end(tmp_path, capsys):
    text = GOOD.replace('paths = ["/chat/*", "/ws"]', 'paths = ["/chat/*/x", "ws", "/a*"]')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    rule = 'rules[0] "chat-rule"'
    assert (f"{rule}.paths[0].paths[0]: '/chat/*/x': '*' is allowed only at the end of a path"
            in lines)
    assert f"{rule}.paths[0].paths[1]: 'ws' must start with '/'" in lines
    assert not starts(lines, f"{rule}.paths[0].paths[2]")


def test_bad_choices_and_required(tmp_path, capsys):
    text = GOOD.replace('load_balancing = "round_robin"', 'load_balancing = "random"').replace(
        'name = "chat-rule"\n', "")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert starts(lines, 'backend_pools[0] "chat".load_balancing: must be one of')
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
    assert starts(lines, 'listeners[0] "public-http".host_names[1]: \'*.*.bad\' is not a host name')
    assert ('listeners[0] "public-http".host_names[2]: duplicate host name \'a.example.com\''
            in lines)
    assert starts(lines, 'listeners[1] "second".protocol: port 8080 is http')


def test_all_problems_at_once_and_no_traceback(tmp_path):
    text = GOOD.replace("port = 8080", "port = 0").replace("request_timeout = 30", "request_timeout = \"x\"")
    text = text.replace('listener = "public-http"', 'listener = "nope"')
    path = write(tmp_path, text)
    result = run_cli("check", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert f'{path}:listeners[0] "public-http".port: 0 is out of range (1-65535)' in lines
    assert starts(lines, f'{path}:backend_settings[0] "chat-settings".request_timeout:')
    assert f"{path}:rules[0] \"chat-rule\".listener: no listener named 'nope'" in lines


def test_serve_refuses_bad_config(tmp_path):
    path = write(tmp_path, GOOD.replace("port = 8080", "port = 99999"))
    result = run_cli("serve", path)
    assert result.returncode == 2
    assert (f'{path}:listeners[0] "public-http".port: 99999 is out of range (1-65535)'
            in result.stderr)
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
    assert starts(lines, 'rules[1] "to-https".target_listener: a redirect rule needs exactly one')
    assert ('rules[1] "to-https".status: 305 is not a redirect status (301, 302, 303, 307 or 308)'
            in lines)


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


def test_no_follow_on_errors_for_items_that_exist(tmp_path):
    """A listener (pool, settings, probe) with a problem of its own still exists by name: the
    references to it are not reported a second time."""
    text = GOOD.replace("port = 8080", "port = 70000")
    text = text.replace('load_balancing = "round_robin"', 'load_balancing = "random"')
    text = text.replace("interval = 30", "interval = -1")
    path = write(tmp_path, text)
    result = run_cli("check", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line[len(path) + 1:] for line in result.stderr.splitlines()]
    assert 'listeners[0] "public-http".port: 70000 is out of range (1-65535)' in lines
    assert starts(lines, 'backend_pools[0] "chat".load_balancing: must be one of')
    assert starts(lines, 'probes[0] "chat-probe".interval: -1 seconds is out of range')
    assert len(lines) == 3, lines  # no "no listener named 'public-http'" and the like


def test_did_you_mean_for_unknown_keys(tmp_path):
    text = GOOD.replace("[[listeners]]", "[[listener]]", 1)
    text = text.replace("request_timeout = 30", "request_timout = 30")
    text = text.replace("[gateway]\n", "[gateway]\nworker = 2\nsomething_else = 1\n")
    path = write(tmp_path, text)
    result = run_cli("check", path)
    assert result.returncode == 2
    lines = [line[len(path) + 1:] for line in result.stderr.splitlines()]
    assert "listener: unknown key; did you mean 'listeners'?" in lines
    assert ("backend_settings[0] \"chat-settings\".request_timout: unknown key; did you mean "
            "'request_timeout'?") in lines
    assert "gateway.worker: unknown key; did you mean 'workers'?" in lines
    assert "gateway.something_else: unknown key" in lines  # nothing close: no suggestion


def test_did_you_mean_for_unknown_names(tmp_path, capsys):
    text = GOOD.replace('listener = "public-http"', 'listener = "public-htp"')
    text = text.replace('probe = "chat-probe"', 'probe = "chat-prob"')
    text = text.replace('  backend_pool = "chat"\n  backend_settings = "chat-settings"',
                        '  backend_pool = "chta"\n  backend_settings = "chat-setings"')
    text += '''
[[rules]]
name = "redirect"
type = "redirect"
listener = "public-http"
target_listener = "publik-http"
'''
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    rule = 'rules[0] "chat-rule"'
    assert (f"{rule}.listener: no listener named 'public-htp'; did you mean 'public-http'?"
            in lines)
    assert (f"{rule}.paths[0].backend_pool: no backend pool named 'chta'; did you mean 'chat'?"
            in lines)
    assert (f"{rule}.paths[0].backend_settings: no backend settings named 'chat-setings'; did "
            "you mean 'chat-settings'?") in lines
    assert ("backend_settings[0] \"chat-settings\".probe: no probe named 'chat-prob'; did you "
            "mean 'chat-probe'?") in lines
    assert ("rules[1] \"redirect\".target_listener: no listener named 'publik-http'; did you "
            "mean 'public-http'?") in lines


def test_locations_name_the_item(tmp_path, capsys):
    """FILE:key.path: reason, where an item with a (valid) name is named after its index."""
    text = GOOD.replace('name = "public-http"', 'name = "bad name!"').replace(
        "port = 8080", "port = 0")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    # Without a valid name there is only the index.
    assert starts(lines, "listeners[0].name: 'bad name!' is not a valid name")
    assert "listeners[0].port: 0 is out of range (1-65535)" in lines
    text = GOOD.replace('type = "path_based"', 'type = "basic"\ntarget_url = "http://x"')
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert 'rules[0] "chat-rule".target_url: only applies to rules with type = "redirect"' in lines


@pytest.mark.parametrize("target,ok", [
    ("ARGS:token", True), ("ARGS_GET:id", True), ("ARGS_POST:/^pass/", True),
    ("REQUEST_HEADERS:Authorization", True), ("REQUEST_COOKIES:session", True),
    ("ARGS_NAMES:x", True), ("REQUEST_HEADERS_NAMES:/^x-/", True),
    ("REQUEST_COOKIES_NAMES:sid", True), ("ARGS_GET_NAMES:q", True),
    ("ARGS", False), ("ARGS:", False), ("HEADERS:x", False), ("args:x", False),
    ("ARGS:a b", False), ('ARGS:a"b', False), ("ARGS:/a|b/", False), ("ARGS:x,y", False),
    ("ARGS:!x", False), ("REQUEST_BODY:x", False),
])
def test_waf_exclusions_one_validator(tmp_path, capsys, target, ok):
    """config.py and waf.py check exclusions with one function (waf.py before it loads them;
    tests/test_waf.py runs them through libmodsecurity)."""
    assert (config.exclusion_problem(target) is None) == ok
    text = GOOD.replace("exclusions = []", f"exclusions = [{target!r}]".replace("'", '"')
                        if '"' not in target else f"exclusions = ['{target}']")
    code, lines = check(tmp_path, text, capsys)
    if ok:
        assert code == 0, lines
    else:
        assert code == 2
        assert lines == [f"waf.exclusions[0]: {config.exclusion_problem(target)}"]


@pytest.mark.parametrize("command", ["serve", "check", "demo"])
def test_help_describes_the_arguments(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "examples/gateway.toml" in text
    if command != "demo":
        assert "CONFIG path to the gateway's TOML configuration file" in text
    if command == "serve":
        assert "--log-level {debug,info,warning,error} least severe event" in text
