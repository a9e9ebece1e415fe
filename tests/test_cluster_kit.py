"""The cluster kit's static pieces (cluster/README.md), checked in seconds without a network, Docker
or Kubernetes: cluster/local-cluster.yaml against Ray's own cluster-config validator; the KubeRay
manifests in cluster/k8s/ against what the kit promises (one Ray version everywhere, token auth from
a Secret, /dev/shm, the shared runs volume, a head without CPUs, command lines that the coagents
CLI accepts); cluster/runtime_env.yaml against Ray's runtime-env fields; the shell scripts' option
handling (a stand-in `ray` proves that no Ray is ever started), and what they print, record and
stop around a stand-in `ray start` whose "raylet" is a sleeping shell; the token command of the
README (with the real `ray get-auth-token`, in a temporary HOME); the Dockerfile's text.

What the scripts do with a real Ray is tests/test_cluster_scripts.py's job.
"""

import contextlib
import copy
import functools
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from async_coagents import cli
from async_coagents.experiment import config as cfg

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
MANIFESTS = sorted((CLUSTER / "k8s").glob("*.yaml"))
SCRIPTS = sorted(path for path in CLUSTER.glob("*.sh") if path.name != "common.sh")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SECRET = {"name": "coagents-ray-token", "key": "auth_token"}
RUNS_CLAIM = "coagents-runs"


# ---- readers ---------------------------------------------------------------------------------------
@functools.cache
def documents(name: str) -> tuple:
    """The YAML documents of cluster/k8s/<name> (empty documents dropped)."""
    text = (CLUSTER / "k8s" / name).read_text(encoding="utf-8")
    return tuple(doc for doc in yaml.safe_load_all(text) if doc is not None)


def ray_objects() -> list[tuple[str, dict]]:
    """(file name, document) of every KubeRay object in cluster/k8s/."""
    return [(path.name, doc) for path in MANIFESTS for doc in documents(path.name)
            if str(doc.get("apiVersion", "")).startswith("ray.io/")]


RAY_OBJECTS = ray_objects()
RAY_IDS = [f"{name}:{doc['kind']}" for name, doc in RAY_OBJECTS]


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def groups(doc: dict) -> list[tuple[str, dict]]:
    """(group name, group spec) for the head group and every worker group."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [
        (group["groupName"], group) for group in spec.get("workerGroupSpecs", [])]


def ray_containers(doc: dict) -> list[tuple[str, dict, dict]]:
    """(group name, pod spec, container) of every container that runs Ray."""
    return [(name, group["template"]["spec"], container) for name, group in groups(doc)
            for container in group["template"]["spec"]["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {var["name"]: var for var in container.get("env", [])}


def walk(node):
    """Every (key, value) pair of a parsed YAML tree, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


QUANTITY = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text) -> float:
    """A Kubernetes quantity ("500m", "4", "8Gi") as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(text))
    assert match, f"not a Kubernetes quantity: {text!r}"
    return float(match[1]) * QUANTITY[match[2] or ""]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of cluster/Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for line in (CLUSTER / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def ray_pin() -> str:
    """The version in pyproject's `ray==` (or `ray[...]==`) dependency."""
    pins = [m[2] for dep in PYPROJECT["project"]["dependencies"]
            if (m := re.fullmatch(r"ray(\[[\w,\s-]*\])?\s*==\s*(\S+)", dep.strip()))]
    assert len(pins) == 1, PYPROJECT["project"]["dependencies"]
    return pins[0]


def parse_cli(argv: list[str]):
    """``coagents ARGV...`` through the project's own argument parser."""
    try:
        return cli._parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"the coagents CLI rejects {shlex.join(argv)!r} (exit {exc.code})")


def check_train_command(argv: list[str], runs_dir: str):
    """A `coagents train ...` line: the parser accepts it, the config is a built-in one, and it
    loads with its overrides exactly as `coagents train` would load it."""
    assert argv[0] == "coagents", argv
    args = parse_cli(argv[1:])
    assert args.command == "train", argv
    assert args.config in cfg.builtin_names(), f"{args.config!r} is not a built-in config"
    runs = cfg.load(args.config, cli.train_overrides(args))
    assert len(runs) == 1, "a cluster command line should start one run, not a sweep"
    backend = runs[0][0]["backend"]
    assert (backend["kind"], backend["address"]) == ("ray", "auto"), backend
    assert args.out and args.out.startswith(runs_dir + "/"), "the run directory must be shared"
    if backend["checkpoint_dir"]:
        assert backend["checkpoint_dir"].startswith(runs_dir + "/")
    return args, runs[0][0]


# ---- cluster/local-cluster.yaml: `ray up` --------------------------------------------------------
def local_cluster() -> dict:
    return yaml.safe_load((CLUSTER / "local-cluster.yaml").read_text(encoding="utf-8"))


def test_local_cluster_yaml_passes_rays_own_validator():
    raw = local_cluster()
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)  # raises jsonschema.ValidationError on a bad config
    assert config["head_node_type"] in config["available_node_types"]
    provider = raw["provider"]
    assert provider["type"] == "local"
    assert raw["min_workers"] == raw["max_workers"] == len(provider["worker_ips"]) > 0


@pytest.mark.parametrize("change, message", [
    ({"worker_count": 2}, "Additional properties are not allowed"),
    ({"idle_timeout_minutes": "five"}, "'five' is not of type 'number'"),
    ({"head_start_ray_commands": [1]}, "1 is not of type 'string'"),
], ids=["unknown key", "number as text", "command not a string"])
def test_the_validator_rejects_a_broken_local_cluster_yaml(change, message):
    """Proves the validator above really runs: the same file, broken, is refused."""
    broken = {**local_cluster(), **change}
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        validate_config(prepare_config(copy.deepcopy(broken)))


def test_local_cluster_yaml_starts_ray_with_the_kit_scripts():
    raw = local_cluster()
    head, worker = raw["head_start_ray_commands"], raw["worker_start_ray_commands"]
    assert "cluster/stop.sh" in head[0] and "cluster/stop.sh" in worker[0], \
        "each node first stops what the kit started there before"
    assert any("cluster/start-head.sh" in command for command in head)
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in command for command in head)
    assert any("cluster/start-worker.sh" in command and "$RAY_HEAD_IP" in command
               for command in worker)
    for command in raw["setup_commands"] + head + worker:
        assert not re.search(r"\bray\s+stop\b", command), \
            f"`ray stop` stops every Ray on the machine: {command!r}"
    assert any(f"ray[default]=={ray.__version__}" in command for command in raw["setup_commands"])
    assert "~/.ray/auth_token" in raw["file_mounts"], "every node needs the head's token"


def readme_token_command() -> str:
    """The command of README section 5 that creates ~/.ray/auth_token (its comment dropped)."""
    readme = (CLUSTER / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## 5. ")[1].split("\n## ")[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S)
             for line in block.splitlines() if "get-auth-token" in line]
    assert len(lines) == 1, lines
    return lines[0].split("  #")[0].strip()


def test_the_token_command_is_the_same_in_the_readme_and_local_cluster_yaml():
    command = readme_token_command()
    assert command == "(umask 077 && RAY_AUTH_MODE=token ray get-auth-token --generate >/dev/null)"
    shown = [line.lstrip("# ").split("  #")[0].strip()
             for line in (CLUSTER / "local-cluster.yaml").read_text(encoding="utf-8").splitlines()
             if "get-auth-token" in line]
    assert shown == [command]


def test_the_readme_token_command_creates_a_private_token_and_prints_none(tmp_path):
    """With the real `ray get-auth-token` in an empty HOME: the file is mode 600 (Ray alone writes
    644 under umask 022), ~/.ray is 700, and stdout is empty (Ray prints the token there)."""
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{ray_cli.parent}{os.pathsep}{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0")
    result = subprocess.run(["bash", "-c", f"umask 022; {readme_token_command()}"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    token_file = home / ".ray" / "auth_token"
    token = token_file.read_text(encoding="utf-8")
    assert re.fullmatch(r"[0-9a-f]{32,}", token), "not a token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert result.stdout == ""
    assert token not in result.stderr


# ---- cluster/k8s/*.yaml: KubeRay -------------------------------------------------------------
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifest_parses_into_kubernetes_objects(path):
    docs = documents(path.name)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"]["name"], doc
    assert path.read_text(encoding="utf-8").startswith("#"), "a manifest opens with its comment"
    assert "UNTESTED" in path.read_text(encoding="utf-8").split("\napiVersion")[0]


def test_the_kit_has_a_raycluster_and_a_rayjob():
    kinds = {(doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) for _, doc in RAY_OBJECTS}
    assert kinds == {("ray.io/v1", "RayCluster", "coagents"),
                     ("ray.io/v1", "RayJob", "coagents-fashion")}


def test_one_ray_version_everywhere():
    """Installed Ray, pyproject's pin, the Dockerfile's base image and every manifest agree."""
    base = [args for instruction, args in dockerfile_instructions() if instruction == "FROM"]
    assert base == [f"rayproject/ray:{ray.__version__}-py311"], base
    assert ray_pin() == ray.__version__
    for name, doc in RAY_OBJECTS:
        assert cluster_spec(doc)["rayVersion"] == ray.__version__, name


@pytest.mark.parametrize("doc", [doc for _, doc in RAY_OBJECTS], ids=RAY_IDS)
def test_every_ray_container_authenticates_with_the_token_secret(doc):
    containers = [container for _, _, container in ray_containers(doc)]
    if doc["kind"] == "RayJob":  # its submitter pod talks to the dashboard too
        containers += doc["spec"]["submitterPodTemplate"]["spec"]["containers"]
    for container in containers:
        env = env_of(container)
        assert env["RAY_AUTH_MODE"].get("value") == "token", container["name"]
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, "the token must come from the Secret, not the manifest"
        assert token["valueFrom"]["secretKeyRef"] == SECRET, container["name"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_no_token_is_written_into_a_manifest(path):
    docs = documents(path.name)
    assert not [doc for doc in docs if doc["kind"] == "Secret"], "create the Secret with kubectl"
    tokens = [item for key, value in walk(list(docs)) if key == "env"
              for item in value if item.get("name") == "RAY_AUTH_TOKEN"]
    assert tokens, path.name
    for variable in tokens:
        assert "value" not in variable and "valueFrom" in variable, path.name


def test_the_manifests_show_how_to_create_the_secret():
    text = (CLUSTER / "k8s" / "raycluster.yaml").read_text(encoding="utf-8")
    command = (f"kubectl create secret generic {SECRET['name']} "
               f'--from-file={SECRET["key"]}="$HOME/.ray/auth_token"')
    assert command in text  # from the private token file: never on a command line
    assert command in (CLUSTER / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", [doc for _, doc in RAY_OBJECTS], ids=RAY_IDS)
def test_every_ray_pod_has_shared_memory_and_the_runs_volume(doc):
    claims = {d["metadata"]["name"] for d in documents("raycluster.yaml")
              if d["kind"] == "PersistentVolumeClaim"}
    assert claims == {RUNS_CLAIM}
    for group, pod, container in ray_containers(doc):
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
        memory = quantity(container["resources"]["limits"]["memory"])
        shm = mounts["/dev/shm"]["emptyDir"]
        assert shm["medium"] == "Memory", group
        # Ray's object store takes 30% of the memory by default and must fit into /dev/shm; a
        # memory-backed volume counts against the limit, so it must leave room for the rest.
        assert 0.3 * memory <= quantity(shm["sizeLimit"]) < memory, group
        assert mounts["/runs"]["persistentVolumeClaim"]["claimName"] == RUNS_CLAIM, group
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], f"{group}: requests = limits"
        assert set(resources["limits"]) >= {"cpu", "memory"}, group
        assert env_of(container)["OPENBLAS_NUM_THREADS"]["value"] == "1", group


def test_the_runs_volume_is_shared_by_all_pods():
    (claim,) = [doc for doc in documents("raycluster.yaml") if doc["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0


@pytest.mark.parametrize("doc", [doc for _, doc in RAY_OBJECTS], ids=RAY_IDS)
def test_layer_actors_run_on_a_fixed_worker_group_not_on_the_head(doc):
    spec = cluster_spec(doc)
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "no LoadBalancer or NodePort"
    (workers,) = spec["workerGroupSpecs"]
    assert workers["groupName"] == "layers"
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    images = {container["image"] for _, _, container in ray_containers(doc)}
    assert images == {f"REGISTRY/coagents:{PYPROJECT['project']['version']}"}
    for key, value in walk(doc):
        assert not (key == "type" and value in ("LoadBalancer", "NodePort")), key


def test_the_long_lived_cluster_keeps_its_dashboard_on_localhost():
    (doc,) = [doc for _, doc in RAY_OBJECTS if doc["kind"] == "RayCluster"]
    assert doc["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def rayjob() -> dict:
    (doc,) = [doc for _, doc in RAY_OBJECTS if doc["kind"] == "RayJob"]
    return doc


def test_the_rayjob_entrypoint_is_a_coagents_command_line():
    spec = rayjob()["spec"]
    args, config = check_train_command(shlex.split(spec["entrypoint"]), "/runs")
    assert args.no_progress, "a job's log wants log lines, not a progress bar"
    assert config["data"]["dataset"] == "fashion-mnist"
    assert not spec.get("entrypointNumCpus"), "the head offers no CPU for the entrypoint"


def test_the_rayjob_cleans_up_and_gives_the_operator_the_token():
    spec = rayjob()["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 300
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": SECRET["name"]}
    # the submitter and the operator reach the dashboard over the pod network
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_the_rayjob_runtime_env_is_valid_and_finds_the_dataset():
    env = yaml.safe_load(rayjob()["spec"]["runtimeEnvYAML"])
    assert set(env) <= set(RuntimeEnv.known_fields), set(env) - set(RuntimeEnv.known_fields)
    assert "working_dir" not in env, "the code is in the image"
    RuntimeEnv(**env)  # Ray's own type checks (env_vars must be Dict[str, str])
    variables = env["env_vars"]
    assert all(isinstance(value, str) for value in variables.values()), variables
    assert not [name for name in variables if name.startswith("RAY_AUTH")]
    assert variables["COAGENTS_DATA_DIR"].startswith("/runs/")
    for group, _, container in ray_containers(rayjob()):
        assert env_of(container)["COAGENTS_DATA_DIR"]["value"] == variables["COAGENTS_DATA_DIR"], group


def commands_in_comments(path: Path) -> list[list[str]]:
    """The `... -- coagents ...` command lines shown in a manifest's comments."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") and (match := re.search(r"(?:^|\s)-- (coagents .*)$", line)):
            found.append(shlex.split(match[1].split("  #")[0]))
    return found


def test_the_commands_in_the_manifests_comments_are_real():
    commands = [command for path in MANIFESTS for command in commands_in_comments(path)]
    assert len(commands) >= 3, commands
    for argv in commands:
        if argv[1] == "train":
            check_train_command(argv, "/runs")
        else:
            args = parse_cli(argv[1:])
            assert args.command in ("resume", "datasets"), argv
            if args.command == "resume":
                assert args.run_dir.startswith("/runs/"), argv


# ---- cluster/runtime_env.yaml: `ray job submit --runtime-env` ------------------------------------
def test_runtime_env_yaml_holds_valid_fields_and_no_token():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text(encoding="utf-8"))
    assert set(env) <= set(RuntimeEnv.known_fields), set(env) - set(RuntimeEnv.known_fields)
    assert set(env) >= {"working_dir", "excludes", "env_vars"}
    RuntimeEnv(**env)
    assert isinstance(env["working_dir"], str)
    assert all(isinstance(pattern, str) for pattern in env["excludes"])
    assert all(isinstance(value, str) for value in env["env_vars"].values()), env["env_vars"]
    for key, value in walk(env):
        assert "RAY_AUTH_TOKEN" not in f"{key} {value}", "a runtime env is shown by the dashboard"


# ---- cluster/*.sh: option handling, never starting Ray --------------------------------------------
needs_linux_tools = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("setsid") is None,
    reason="the cluster scripts need bash and setsid (Linux)")


@pytest.fixture
def script_env(tmp_path):
    """An environment without RAY_*/COAGENTS_RAY_* variables, an empty HOME (no
    ~/.ray/auth_token), a short private state dir, and a stand-in `ray` first on PATH that only
    records that it was called."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    called = tmp_path / "ray-was-called"
    fake = bin_dir / "ray"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{called}"\nexit 97\n')
    fake.chmod(0o755)
    # short: the scripts refuse temp dirs (state dir + node name) over 40 characters
    state_dir = Path(tempfile.mkdtemp(prefix="ck-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RAY_", "COAGENTS_RAY_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HOME=str(home),
               COAGENTS_RAY_STATE_DIR=str(state_dir))
    yield {"env": env, "called": called, "state_dir": state_dir, "bin": bin_dir, "home": home}
    shutil.rmtree(state_dir, ignore_errors=True)


def run_script(path: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(path), *args], env=env, capture_output=True, text=True, timeout=30,
                          check=False)


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.sh")), ids=lambda path: path.name)
def test_shell_script_parses(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_is_executable_and_uses_the_shared_library(path):
    assert os.access(path, os.X_OK), f"chmod +x {path.relative_to(ROOT)}"
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    assert 'source "$HERE/common.sh"' in path.read_text(encoding="utf-8")


def test_the_kit_has_its_scripts():
    assert {path.name for path in SCRIPTS} >= {"start-head.sh", "start-worker.sh", "stop.sh"}


@needs_linux_tools
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_help_shows_usage(path, script_env):
    result = run_script(path, "--help", env=script_env["env"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: {path.name}"), result.stdout
    assert not script_env["called"].exists()


@needs_linux_tools
@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_names_an_unknown_option(path, script_env):
    result = run_script(path, "--no-such-option", env=script_env["env"])
    assert result.returncode != 0
    assert f"{path.name}: error: unknown option '--no-such-option'" in result.stderr, result.stderr
    assert not script_env["called"].exists()


@needs_linux_tools
def test_start_worker_requires_the_head_address(script_env):
    result = run_script(CLUSTER / "start-worker.sh", env=script_env["env"])
    assert result.returncode != 0
    assert "--address HEAD:PORT is required" in result.stderr, result.stderr
    assert not script_env["called"].exists()


@needs_linux_tools
@pytest.mark.parametrize("token_env", [{}, {"RAY_AUTH_TOKEN_PATH": "/nonexistent/auth_token"}],
                         ids=["no token anywhere", "token path to no file"])
def test_start_worker_without_a_token_stops_before_starting_anything(token_env, script_env):
    env = {**script_env["env"], **token_env}
    result = run_script(CLUSTER / "start-worker.sh", "--address", "127.0.0.1:1", env=env)
    assert result.returncode != 0
    assert "no Ray authentication token" in result.stderr, result.stderr
    assert not script_env["called"].exists(), "ray was started"
    assert not list(script_env["state_dir"].iterdir()), "a node was recorded"


@needs_linux_tools
def test_start_worker_with_a_token_gets_past_the_token_check(script_env):
    """The control for the test above: with a token, the script goes on (and stops at the head,
    which does not exist) and never prints the token message."""
    env = {**script_env["env"], "RAY_AUTH_TOKEN": "0" * 64}
    result = run_script(CLUSTER / "start-worker.sh", "--address", "127.0.0.1:1", env=env)
    assert result.returncode != 0
    assert "no Ray authentication token" not in result.stderr
    assert "cannot reach the head's GCS at 127.0.0.1:1" in result.stderr, result.stderr
    assert not script_env["called"].exists()


@needs_linux_tools
def test_stop_list_says_so_when_no_node_was_started(script_env):
    for args, expected in [(["--list"], "no node started by this kit is running here"),
                           ([], "nothing to stop")]:
        result = run_script(CLUSTER / "stop.sh", *args, env=script_env["env"])
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout, (args, result.stdout)
        assert str(script_env["state_dir"]) in result.stdout
    assert not script_env["called"].exists()


# A stand-in `ray`: `get-auth-token` records the umask it runs under and the mode of the file it
# creates, then prints the token like Ray 2.60 does; `start` prints the lines of Ray's banner that
# matter here, in Ray's format, and leaves behind a "raylet": a shell whose command line looks
# like Ray's raylet (.../raylet/raylet ... --node_ip_address=IP ... TEMP_DIR/session_...), so that
# the scripts find, record and stop it like a real node. FAKE_RAY_FAIL=MESSAGE makes `start` fail.
FAKE_TOKEN = "f" * 64
FAKE_RAY = r"""#!/usr/bin/env bash
echo "$@" >> "$STATE/ray-was-called"
case "$1" in
    get-auth-token)
        umask > "$STATE/umask"
        mkdir -p "$HOME/.ray"
        [[ -f "$HOME/.ray/auth_token" ]] || printf %s "$TOKEN" > "$HOME/.ray/auth_token"
        stat -c %a "$HOME/.ray/auth_token" > "$STATE/token-mode"
        echo "Generating new authentication token..." >&2
        printf %s "$TOKEN"
        echo >&2
        ;;
    start)
        temp_dir="" ip=127.0.0.1
        for arg in "$@"; do
            case "$arg" in
                --temp-dir=*) temp_dir=${arg#*=} ;;
                --node-ip-address=*) ip=${arg#*=} ;;
            esac
        done
        echo "Local node IP: $ip"
        if [[ -n "${FAKE_RAY_FAIL:-}" ]]; then
            echo "ConnectionError: $FAKE_RAY_FAIL; to reset it, run \`ray stop\` or restart Ray"
            exit 1
        fi
        "$STATE/raylet/raylet" -c 'sleep 30; :' raylet "--node_ip_address=$ip" \
            "--session_dir=$temp_dir/session_fake" </dev/null >/dev/null 2>&1 &
        # as Ray 2.60 writes them when its output is not a terminal
        log() { printf '2026-01-01 00:00:00,000\tINFO scripts.py:1142 -- %b\n' "$1"; }
        log '\033[32mRay runtime started.\033[39m'
        log 'To terminate the Ray runtime, run'
        log '\033[1m  ray stop\033[22m'
        log 'To view the status of the cluster, use'
        log '  \033[1mray status\033[22m\033[26m'
        ;;
    *) exit 97 ;;
esac
"""


@pytest.fixture
def fake_ray(script_env, tmp_path):
    """script_env with the stand-in `ray` above; stops what it started (stop.sh, then SIGKILL to
    the recorded sessions for what a failed test left behind)."""
    state = tmp_path / "fake-ray"
    (state / "raylet").mkdir(parents=True)
    (state / "raylet" / "raylet").symlink_to(shutil.which("bash"))
    script_env["called"] = state / "ray-was-called"
    fake = script_env["bin"] / "ray"
    fake.write_text(FAKE_RAY)
    fake.chmod(0o755)
    script_env["env"].update(STATE=str(state), TOKEN=FAKE_TOKEN)
    script_env["fake"] = state
    yield script_env
    sessions = [int(line.split("=", 1)[1]) for file in script_env["state_dir"].glob("*.env")
                for line in file.read_text().splitlines() if line.startswith("sid=")]
    run_script(CLUSTER / "stop.sh", "--grace", "1", env=script_env["env"])
    for sid in sessions:  # setsid made the session's first process its process-group leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGKILL)


def ray_stop_advice(output: str) -> list[str]:
    """Lines that tell the user to run a bare `ray stop` (Ray's banner does)."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return [line for line in plain.splitlines()
            if re.search(r"(^|-- )\s*ray stop\s*$", line) or "To terminate the Ray runtime" in line]


@needs_linux_tools
@pytest.mark.parametrize("dashboard", ["off", "auto"])
def test_start_head_prints_the_dashboard_only_when_it_is_on(dashboard, fake_ray):
    env = {**fake_ray["env"], "RAY_AUTH_TOKEN": FAKE_TOKEN}
    result = run_script(CLUSTER / "start-head.sh", "--port", "6390", "--node-ip", "127.0.0.2",
                        "--dashboard", dashboard, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "head node 'head-6390' started" in result.stdout, result.stdout
    assert "cluster address:  127.0.0.2:6390" in result.stdout
    state = (fake_ray["state_dir"] / "head-6390.env").read_text()
    if dashboard == "off":
        assert "--include-dashboard=false" in fake_ray["called"].read_text()
        assert "http://" not in result.stdout, result.stdout
        assert "dashboard / Jobs: off" in result.stdout
        assert "'ray job submit' cannot reach this cluster" in result.stdout
        assert "dashboard=off\n" in state
    else:
        assert "dashboard / Jobs: http://127.0.0.1:8265 (Jobs API only with ray[default])" \
            in result.stdout
        assert "dashboard=http://127.0.0.1:8265\n" in state
    stop = run_script(CLUSTER / "stop.sh", "--list", env=env)
    assert re.search(r"^head-6390  head  \S+  running \(session \d+\)$", stop.stdout, re.M), \
        stop.stdout


@needs_linux_tools
def test_start_scripts_replace_rays_ray_stop_advice_with_stop_sh(fake_ray):
    env = {**fake_ray["env"], "RAY_AUTH_TOKEN": FAKE_TOKEN}
    head = run_script(CLUSTER / "start-head.sh", "--port", "6391", "--dashboard", "off", env=env)
    assert head.returncode == 0, head.stdout + head.stderr
    with socket.socket() as gcs:  # start-worker.sh first checks that the head's port answers
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        address = f"127.0.0.1:{gcs.getsockname()[1]}"
        worker = run_script(CLUSTER / "start-worker.sh", "--address", address, "--name", "w1",
                            env=env)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    for name, result in [("head-6391", head), ("w1", worker)]:
        output = result.stdout + result.stderr
        assert not ray_stop_advice(output), output
        command = f"{CLUSTER}/stop.sh --name {name}"
        ray_part, _, summary = result.stdout.partition("\ncoagents: ")
        assert command in ray_part, "where Ray advised `ray stop`"
        assert command in summary and "(not with 'ray stop', which stops every Ray instance" \
            in summary, "in the kit's own summary at the end"
        for line in ("Ray runtime started.", "To view the status of the cluster, use"):
            assert line in ray_part, "Ray's other lines are shown"
    stop = run_script(CLUSTER / "stop.sh", "--grace", "1", env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped node 'w1'" in stop.stdout and "stopped node 'head-6391'" in stop.stdout
    assert stop.stdout.index("'w1'") < stop.stdout.index("'head-6391'"), "workers first"
    listed = run_script(CLUSTER / "stop.sh", "--list", env=env)
    assert "no node started by this kit is running here" in listed.stdout, listed.stdout


@needs_linux_tools
def test_a_failed_ray_start_still_shows_rays_errors(fake_ray):
    env = {**fake_ray["env"], "RAY_AUTH_TOKEN": FAKE_TOKEN, "FAKE_RAY_FAIL": "no GCS at 1.2.3.4"}
    result = run_script(CLUSTER / "start-head.sh", "--port", "6392", env=env)
    assert result.returncode != 0
    assert ("ConnectionError: no GCS at 1.2.3.4; to reset it, run `ray stop` or restart Ray"
            in result.stdout), result.stdout
    assert "ray start failed (exit code 1)" in result.stderr, result.stderr
    assert not list(fake_ray["state_dir"].glob("*.env")), "a failed node was recorded"


@needs_linux_tools
def test_start_head_creates_a_private_token_without_printing_it(fake_ray):
    result = run_script(CLUSTER / "start-head.sh", "--port", "6393", "--dashboard", "off",
                        env=fake_ray["env"])
    assert result.returncode == 0, result.stdout + result.stderr
    token_file = fake_ray["home"] / ".ray" / "auth_token"
    assert token_file.read_text() == FAKE_TOKEN
    assert (fake_ray["fake"] / "umask").read_text().strip() == "0077", "created under umask 077"
    assert (fake_ray["fake"] / "token-mode").read_text().strip() == "600", "mode 600 at once"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert "created ~/.ray/auth_token" in result.stderr
    assert "token:            from the file ~/.ray/auth_token" in result.stdout


# ---- cluster/Dockerfile --------------------------------------------------------------------------
def test_dockerfile_installs_the_project_over_the_pinned_ray_image():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", f"rayproject/ray:{ray.__version__}-py311")
    copied = " ".join(args for instruction, args in instructions if instruction == "COPY")
    for needed in ("pyproject.toml", PYPROJECT["project"]["readme"], "async_coagents"):
        assert needed in copied, f"pip install . needs {needed}"
    (run,) = [args for instruction, args in instructions
              if instruction == "RUN" and "pip install" in args]
    install = re.search(r"pip install --no-cache-dir -c (\S+) ", run)
    assert install, "pip install with a constraints file, so that pip cannot replace the image's Ray"
    assert f'echo "ray=={ray.__version__}" > {install[1]}' in run[:install.start()]
    assert f"ray.__version__ == '{ray.__version__}'" in run[install.end():], "checked after install"
    env = " ".join(args for instruction, args in instructions if instruction == "ENV")
    for setting in ("OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "RAY_USAGE_STATS_ENABLED=0"):
        assert setting in env
    header = (CLUSTER / "Dockerfile").read_text(encoding="utf-8").split("\nFROM ")[0]
    assert "UNTESTED" in header and "--shm-size" in header
    assert f"docker build -f cluster/Dockerfile -t coagents:{PYPROJECT['project']['version']} ." \
        in header


def test_dockerignore_keeps_local_state_out_of_the_image():
    patterns = {line.strip() for line in
                (CLUSTER / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")}
    assert patterns >= {".git", ".venv", "runs", "**/__pycache__", "*.egg-info", ".pytest_cache",
                        ".ruff_cache"}

