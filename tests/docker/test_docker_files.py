"""Docker files, read (no engine here): compose properties, Dockerfile pins and entrypoint, ignore files."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib

import yaml

from service.cli import build_parser
from service.settings import Settings
from tests.conftest import REPO

DOCKER = REPO / "docker"


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` tag."""


ComposeLoader.add_constructor("!reset", lambda loader, node: {"__reset__": True})


def compose(name: str = "docker-compose.yml") -> dict:
    return yaml.load((DOCKER / name).read_text(), Loader=ComposeLoader)


def service() -> dict:
    return compose()["services"]["headstart"]


def seconds(text: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", text).groups()
    return float(value) * (60 if unit == "m" else 1)


def test_gpu_is_reserved_the_compose_way_with_a_configurable_count():
    devices = service()["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "${HEADSTART_GPU_COUNT" in str(devices[0]["count"])


def test_port_is_published_on_loopback_only():
    ports = service()["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports)


def test_data_is_mounted_read_only_at_the_data_root_and_home_is_a_named_volume():
    svc = service()
    binds = [v for v in svc["volumes"] if isinstance(v, dict)]
    assert any(v["target"] == "/data" and v["read_only"] is True for v in binds)
    assert svc["environment"]["HEADSTART_DATA_ROOT"] == "/data"
    named = [v for v in svc["volumes"] if isinstance(v, str) and v.endswith(":/var/lib/headstart")]
    assert named and named[0].split(":")[0] in compose()["volumes"]
    assert svc["environment"]["HEADSTART_HOME"] == "/var/lib/headstart"


def test_healthcheck_restart_and_grace_period():
    svc = service()
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["restart"] in ("unless-stopped", "always")
    grace = float(svc["environment"]["HEADSTART_SHUTDOWN_GRACE_S"])
    assert seconds(svc["stop_grace_period"]) >= 2 * grace  # draining connections, then the job checkpoint
    assert Settings.model_fields["shutdown_grace_s"].default <= grace


def test_no_secret_is_committed():
    assert service()["env_file"] == [".env"]
    assert "HEADSTART_API_KEY" not in service()["environment"]
    example = (DOCKER / ".env.example").read_text()
    key = re.search(r"^HEADSTART_API_KEY=(.*)$", example, re.M).group(1)
    assert key.startswith("replace-with")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert "docker/.env" not in tracked and ".env" not in tracked
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0


def test_cpu_variant_drops_the_gpu_reservation():
    cpu = compose("docker-compose.cpu.yml")["services"]["headstart"]
    assert cpu["deploy"] == {"__reset__": True}
    assert cpu["build"]["args"]["VARIANT"] == "cpu"


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_dockerfile_pins_agree_with_the_project():
    text = dockerfile()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    makefile = (REPO / "Makefile").read_text()
    for pin in re.findall(r"torch(?:vision)?==[\d.]+", makefile):
        assert text.count(pin) == 2, pin  # both variants install what the tests ran with
    python = re.search(r"FROM python:(\d+)\.(\d+)\.\d+-slim", text).groups()
    assert tuple(map(int, python)) >= (3, 11) and project["requires-python"] == ">=3.11"
    assert 'RUN pip install ".[ray]"\n' in text  # the package, its dependencies and the ray extra (pyproject)
    assert "ray" in project["optional-dependencies"]
    assert ":latest" not in text and re.search(r"FROM python:\d+\.\d+\.\d+", text)


def test_dockerfile_runs_as_non_root_with_healthcheck_and_prefetch():
    text = dockerfile()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r"ARG PREFETCH_WEIGHTS=.*\n(?:.*\n)*RUN .*headstart weights fetch \$PREFETCH_WEIGHTS", text)
    assert "AS torch-gpu" in text and "AS torch-cpu" in text and "FROM torch-${VARIANT}" in text


def test_entrypoint_command_exists_in_the_installed_cli():
    cmd = re.search(r'^CMD \[(.*)\]$', dockerfile(), re.M).group(1)
    argv = [part.strip().strip('"') for part in cmd.split(",")]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert argv[0] in project["scripts"] and argv[1:] == ["serve"]
    parser = build_parser()
    assert parser.parse_args(argv[1:]).command == "serve"
    fetch = re.search(r"RUN .*(headstart weights fetch \$PREFETCH_WEIGHTS)", dockerfile()).group(1)
    assert parser.parse_args(shlex.split(fetch.replace("$PREFETCH_WEIGHTS", "vgg16"))[1:]).names == ["vgg16"]


def test_dockerignore_keeps_venv_caches_and_data_out():
    patterns = (REPO / ".dockerignore").read_text().split()
    for needed in (".venv", "**/__pycache__", ".pytest_cache", "data", "demo-output", "docker/.env", ".git"):
        assert needed in patterns, needed


def test_the_ray_profile_keeps_ray_private_and_shares_home_and_data():
    spec = compose()
    head, worker = spec["services"]["ray-head"], spec["services"]["ray-worker"]
    assert head["profiles"] == worker["profiles"] == ["ray"] and "profiles" not in service()
    assert spec["networks"]["ray-private"]["internal"] is True
    for ray_service in (head, worker):
        assert "ports" not in ray_service and ray_service["networks"] == ["ray-private"]
        mounts = {m if isinstance(m, str) else m["target"] for m in ray_service["volumes"]}
        assert "headstart-home:/var/lib/headstart" in mounts and "/data" in mounts  # the service's paths
        assert ray_service["environment"]["HEADSTART_HOME"] == service()["environment"]["HEADSTART_HOME"]
    assert "--include-dashboard=false" in head["command"] and "--address=ray-head:6379" in worker["command"]
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    env = service()["environment"]
    assert env["HEADSTART_ENGINE"] == "${HEADSTART_ENGINE:-local}" and "ray-head:6379" in env["HEADSTART_RAY_ADDRESS"]
    assert "ray-private" in service()["networks"]
    assert set(Settings.model_fields) >= {"engine", "ray_address"}


def test_the_wheel_the_image_installs_carries_the_page_and_the_zoo_table(tmp_path):
    """`pip install .` (the Dockerfile's) builds a wheel: the page's files and the zoo table must be in it, or the
    image serves /ui as a 404 and `backbones --all` fails. Built without build isolation (no network here)."""
    import sys
    import zipfile

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "absent from the `packages` configuration" not in built.stderr  # every data folder declared
    names = set(zipfile.ZipFile(next(tmp_path.glob("headstart-*.whl"))).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "service" / "ui").rglob("*") if p.is_file()}
    assert shipped and shipped <= names and "extractor/zoo_table.json" in names
