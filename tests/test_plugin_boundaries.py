"""Plugins meet only through the hook contract: no plugin imports another, or the host."""

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent.parent / "plugins"
SHARED = "shared"  # a library the built-in analyzers share; it has no hooks
PLUGIN_NAMES = sorted(
    folder.name
    for folder in PLUGINS.iterdir()
    if (folder / "__init__.py").exists() and folder.name != SHARED
)


def imported_modules(folder: Path) -> set[str]:
    modules = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
    return modules


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_a_plugin_imports_no_other_plugin_and_not_the_host(plugin):
    allowed = {f"soundspan_plugins.{plugin}", f"soundspan_plugins.{SHARED}"}
    for module in imported_modules(PLUGINS / plugin):
        assert not module.startswith("soundspan_host"), f"{plugin} imports {module}"
        if module.startswith("soundspan_plugins."):
            owner = ".".join(module.split(".")[:2])
            assert owner in allowed, f"{plugin} imports {module}"


def test_the_shared_library_has_no_hooks_and_imports_no_plugin():
    modules = imported_modules(PLUGINS / SHARED)
    assert not any(module.startswith(("soundspan_host", "soundspan_hooks")) for module in modules)
    assert all(
        module.startswith(f"soundspan_plugins.{SHARED}")
        for module in modules
        if module.startswith("soundspan_plugins.")
    )


def test_every_built_in_plugin_is_found():
    assert PLUGIN_NAMES == [
        "clap", "instant_mix", "musicnn", "status_page", "subsonic", "vibe_api", "watcher",
    ]  # fmt: skip
