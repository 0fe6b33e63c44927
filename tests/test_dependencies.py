"""What the code imports is what pyproject.toml declares, where the importer lives: the host's
and the model-free plugins' third-party modules in the core dependencies, an analyzer's in its
extra (`soundspan-host[clap]`), the tests' and benchmarks' in [test]. A clean install then works
by declaration, not by the luck of another package's dependencies.

And an analyzer enabled without its extra leaves the host running: its status and the doctor
say it is unavailable and name the command that installs the extra. Those runs block the
extras' modules in the subprocesses (a sitecustomize puts None in sys.modules for each, which
is what `import` and `find_spec` make of a package that is not installed).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from soundspan_plugins.clap import errors as clap_errors
from soundspan_plugins.musicnn import network as musicnn_network
from tests.harness.processes import start_host_process, wait_healthy

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"soundspan_host", "soundspan_hooks", "soundspan_plugins", "tests"}
CODE = ("soundspan_host", "hooks", "plugins")
# where code lives -> the extras its imports may come from, besides the core dependencies
EXTRAS_OF = {
    "plugins/clap": ("clap",),
    "plugins/musicnn": ("musicnn",),
    "plugins/vibe_api": ("umap",),  # only when installed: vibe_map.py asks find_spec first
    "tests": ("test", "clap", "musicnn"),
    "bench": ("test", "clap", "musicnn"),
    "bench/musicnn_openvino.py": ("test", "musicnn", "openvino-bench"),
}
# a module of an extra that no install here holds, so importlib.metadata cannot name its
# distribution
NOT_INSTALLED = {"umap": "umap-learn", "openvino": "openvino", "nncf": "nncf"}
# development tools that run in a throwaway venv of their own (their docstrings say how)
OWN_VENV = {"bench/musicnn_reference.py", "tests/fixtures/laion_clap/record_checkpoint_keys.py"}
MODEL_LIBRARIES = {"torch", "transformers", "onnx", "onnxruntime", "huggingface-hub"}
ANALYZER_GUARDS = {"clap": clap_errors, "musicnn": musicnn_network}


def declared(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


CORE = declared(PROJECT["dependencies"])
EXTRAS = {name: declared(lines) for name, lines in PROJECT["optional-dependencies"].items()}


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() not in OWN_VENV:
                yield path


def third_party_imports(path: Path) -> set[str]:
    """The top-level modules `path` imports that are neither the standard library, ours, nor
    a file beside it (a benchmark imports its neighbours by name)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return {
        module
        for module in modules
        if module not in sys.stdlib_module_names
        and module not in FIRST_PARTY
        and not (path.parent / f"{module}.py").exists()
        and not (path.parent / module / "__init__.py").exists()
    }


@cache
def installed_modules() -> dict[str, list[str]]:
    """Each importable top-level module and the distributions that install it."""
    return packages_distributions()


def distributions_of(module: str) -> tuple[str, ...]:
    found = installed_modules().get(module) or [NOT_INSTALLED.get(module, "")]
    return tuple(canonicalize_name(name) for name in found if name)


def allowed_for(path: Path) -> tuple[set[str], tuple[str, ...]]:
    """The distributions `path` may import from, and the extras among them."""
    relative = path.relative_to(ROOT).as_posix()
    extras = next(
        (
            names
            for where, names in sorted(EXTRAS_OF.items(), reverse=True)  # a file before its folder
            if relative == where or relative.startswith(f"{where}/")
        ),
        (),
    )
    return CORE.union(*(EXTRAS[name] for name in extras)), extras


def undeclared_imports(*folders: str) -> list[str]:
    problems = []
    for path in sources(*folders):
        allowed, extras = allowed_for(path)
        for module in sorted(third_party_imports(path)):
            names = distributions_of(module)
            if not names:
                problems.append(f"{path.relative_to(ROOT)}: {module} is installed by nothing here")
            elif not allowed.intersection(names):
                where = " or ".join(["[project] dependencies", *(f"[{e}]" for e in extras)])
                problems.append(
                    f"{path.relative_to(ROOT)} imports {module} ({', '.join(names)}), "
                    f"declared in neither {where}"
                )
    return problems


def test_the_host_and_plugins_import_only_what_their_install_declares():
    assert undeclared_imports(*CODE) == []


def test_the_tests_and_benchmarks_import_only_what_test_installs():
    assert undeclared_imports("tests", "bench") == []


def modules_imported(path: Path) -> set[str]:
    """The full names of the modules `path` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "tests":  # `from tests import test_x`
                found.update(f"tests.{alias.name}" for alias in node.names)
    return found


def test_test_modules_share_helpers_through_the_harness_and_benchmarks_never_import_tests():
    """A helper two test modules need lives in tests/harness (fixtures in conftest.py), so a
    test module can be read, moved or deleted alone; bench/ runs without tests/."""
    crossing = {
        path.relative_to(ROOT).as_posix(): sorted(
            name
            for name in modules_imported(path)
            if name.startswith(("tests.test_", "tests.conftest"))
        )
        for path in sources("tests")
    }
    assert {path: names for path, names in crossing.items() if names} == {}
    from_bench = {
        path.relative_to(ROOT).as_posix(): sorted(
            name for name in modules_imported(path) if name.split(".")[0] == "tests"
        )
        for path in sources("bench")
    }
    assert {path: names for path, names in from_bench.items() if names} == {}


def test_a_plain_install_carries_no_model_library():
    assert CORE.isdisjoint(MODEL_LIBRARIES), CORE & MODEL_LIBRARIES
    assert {"torch", "transformers", "huggingface-hub"} <= EXTRAS["clap"]
    assert {"onnx", "onnxruntime"} <= EXTRAS["musicnn"] & EXTRAS["clap"]
    assert "torch" not in EXTRAS["musicnn"]


@pytest.mark.parametrize("analyzer", sorted(ANALYZER_GUARDS))
def test_an_analyzer_checks_every_module_of_its_extra_and_names_it(analyzer):
    """The modules an analyzer's guard looks for are all those of its extra that it imports,
    so the host never meets one of them missing at an import instead of in the guard."""
    guard = ANALYZER_GUARDS[analyzer]
    extra_only = EXTRAS[analyzer] - CORE
    imported = {
        module
        for path in sources(f"plugins/{analyzer}")
        for module in third_party_imports(path)
        if extra_only.intersection(distributions_of(module))
    }
    assert imported <= set(guard.EXTRA_MODULES)
    assert f"pip install 'soundspan-host[{analyzer}]'" == guard.INSTALL_EXTRA


def modules_of(extra: str) -> list[str]:
    """The top-level modules the distributions of `extra` (and not of the core) install."""
    wanted = EXTRAS[extra] - CORE
    return sorted(
        module
        for module, names in installed_modules().items()
        if wanted.intersection(canonicalize_name(name) for name in names)
    )


def without_extras(tmp_path: Path, *extras: str) -> dict[str, str]:
    """Variables for a subprocess in which the extras' modules cannot be imported, with both
    analyzers enabled."""
    blocked = sorted({module for extra in extras for module in modules_of(extra)})
    shim = tmp_path / "without-extras"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        f"import sys\n\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    )
    return {
        "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]),
        "SOUNDSPAN_MUSICNN__ENABLED": "true",
        "SOUNDSPAN_CLAP__ENABLED": "true",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens: no hub, whatever happens
    }


def test_the_blocked_modules_cannot_be_imported(tmp_path):
    env = without_extras(tmp_path, "clap", "musicnn")
    for module in ("torch", "onnxruntime", "huggingface_hub"):
        tried = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "ModuleNotFoundError" in tried.stderr, module


def analyzers_settled(port: int, timeout: float = 60) -> dict[str, dict]:
    """The analyzers of the host's status, once none is loading any more."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/vibe/status", timeout=10) as r:
            analyzers = {item["name"]: item for item in json.load(r)["analyzers"]}
        if all(item["state"] != "loading" for item in analyzers.values()):
            return analyzers
        assert time.monotonic() < deadline, analyzers
        time.sleep(0.2)


def test_analyzers_without_their_extras_leave_the_host_running_and_say_what_to_install(
    tmp_path, music_dir, database_url
):
    env = without_extras(tmp_path, "clap", "musicnn")
    process, port = start_host_process(
        tmp_path, music_dir, SOUNDSPAN_DATABASE_URL=database_url, **env
    )
    try:
        wait_healthy(process, port)
        analyzers = analyzers_settled(port)
        for name in ("clap", "musicnn"):
            assert analyzers[name]["state"] == "unavailable", analyzers[name]
            assert f"pip install 'soundspan-host[{name}]'" in analyzers[name]["reason"]
        assert "onnxruntime" in analyzers["musicnn"]["reason"]
        assert "torch" in analyzers["clap"]["reason"]

        status = subprocess.run(
            [sys.executable, "-m", "soundspan_host", "status"],
            env={**os.environ, **env, "SOUNDSPAN_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        words = " ".join(status.stdout.split())  # a reason may wrap
        for name in ("clap", "musicnn"):
            assert f"pip install 'soundspan-host[{name}]'" in words
        assert process.poll() is None
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def doctor_without_extras(tmp_path_factory) -> subprocess.CompletedProcess:
    """`soundspan-host doctor` without the analyzers' extras (and with no database to reach,
    which fails at once and leaves the plugins' checks to run)."""
    tmp_path = tmp_path_factory.mktemp("doctor")
    (tmp_path / "music").mkdir()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SOUNDSPAN_")},
        **without_extras(tmp_path, "clap", "musicnn"),
        "SOUNDSPAN_MUSIC_DIR": str(tmp_path / "music"),
        "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
        "SOUNDSPAN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "COLUMNS": "40",  # a pipe has no width: each check stays one row
    }
    return subprocess.run(
        [sys.executable, "-m", "soundspan_host", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def doctor_row(done: subprocess.CompletedProcess, check: str) -> str:
    """The check's row and the lines under it (its finding and what to do, where they wrap)."""
    lines = done.stdout.splitlines()
    first = next((index for index, line in enumerate(lines) if line.startswith(check)), None)
    assert first is not None, done.stdout + done.stderr
    row = [lines[first]]
    for line in lines[first + 1 :]:
        if not line.startswith(" "):
            break
        row.append(line)
    return " ".join(" ".join(row).split())


def test_the_doctor_says_clap_needs_its_extra(doctor_without_extras):
    assert doctor_without_extras.returncode == 1
    row = doctor_row(doctor_without_extras, "clap packages")
    assert "FAIL" in row and "torch" in row
    assert "pip install 'soundspan-host[clap]'" in row


def test_the_doctor_says_musicnn_needs_its_extra(doctor_without_extras):
    row = doctor_row(doctor_without_extras, "musicnn packages")
    assert "FAIL" in row and "onnxruntime" in row
    assert "pip install 'soundspan-host[musicnn]'" in row
