"""A process the host spawns imports what it runs, not the host: no web server, database
layer, settings or plugin manager in a worker, the ONNX export or the text tower's process.

multiprocessing's spawn starts each child by running the parent's main script (here the
installed `soundspan-host` command, as `__mp_main__`) and then importing the module of the
function it runs, with that module's package. Each check runs in a fresh interpreter, so
what it finds imported is that chain's alone."""

import subprocess
import sys
from pathlib import Path

import pytest

HOST_STACK = {"aiohttp", "sqlalchemy", "dynaconf", "pluggy", "typer", "soundspan_hooks"}
COMMAND = Path(sys.executable).with_name("soundspan-host")  # the venv's console script

REPORT_IMPORTED = """
import importlib, runpy, sys
runpy.run_path(sys.argv[1], run_name="__mp_main__")
for module in sys.argv[2:]:
    importlib.import_module(module)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
print(" ".join(sorted(name for name in sys.modules if name.startswith("soundspan_host"))))
"""


def imported_by_a_child(*modules: str) -> tuple[set[str], set[str]]:
    """The top-level packages, and the host's own modules, a spawned child of the
    `soundspan-host` command has imported once it can run a function of `modules`."""
    done = subprocess.run(
        [sys.executable, "-c", REPORT_IMPORTED, str(COMMAND), *modules],
        capture_output=True,
        text=True,
        check=True,
    )
    packages, host_modules = done.stdout.splitlines()
    return set(packages.split()), set(host_modules.split())


def test_the_command_script_a_child_runs_first_imports_nothing_of_the_host():
    packages, host_modules = imported_by_a_child()
    assert not packages & HOST_STACK
    assert host_modules <= {"soundspan_host", "soundspan_host.__main__"}


@pytest.mark.parametrize(
    "module",
    [
        "soundspan_plugins.musicnn.worker",  # MusiCNN's workers
        "soundspan_plugins.clap.worker",  # CLAP's audio workers
        "soundspan_plugins.clap.precision",  # CLAP's export check (choose_tower)
        "soundspan_plugins.clap.text_tower",  # CLAP's text tower and its start-up check
    ],
)
def test_an_analyzer_process_imports_its_model_code_and_not_the_host(module):
    packages, host_modules = imported_by_a_child(module)
    assert "soundspan_plugins" in packages  # the chain did import the module
    assert not packages & HOST_STACK, f"{module} brings {packages & HOST_STACK}"
    assert host_modules <= {"soundspan_host", "soundspan_host.__main__"}
