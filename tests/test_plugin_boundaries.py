"""Plugins meet only through the hook contract: no plugin imports another, or the host."""

import ast
import re
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


@pytest.mark.parametrize("plugin", PLUGIN_NAMES)
def test_a_plugin_package_says_what_it_is_and_imports_nothing(plugin):
    """Its hooks are in plugin.py: every process the plugin spawns imports the package."""
    [docstring] = ast.parse((PLUGINS / plugin / "__init__.py").read_text()).body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    assert "hookimpl" in (PLUGINS / plugin / "plugin.py").read_text()


def test_the_shared_library_has_no_hooks_and_imports_no_plugin():
    """It may use the contract's types (an analyzer skeleton is built of them), never its
    hook markers: a hook implementation belongs to the plugin that registers it."""
    modules = imported_modules(PLUGINS / SHARED)
    assert not any(module.startswith("soundspan_host") for module in modules)
    assert all(
        module.startswith(f"soundspan_plugins.{SHARED}")
        for module in modules
        if module.startswith("soundspan_plugins.")
    )
    for source in (PLUGINS / SHARED).rglob("*.py"):
        names = {
            node.id if isinstance(node, ast.Name) else node.attr
            for node in ast.walk(ast.parse(source.read_text()))
            if isinstance(node, ast.Name | ast.Attribute)
        }
        imported = {
            alias.name
            for node in ast.walk(ast.parse(source.read_text()))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert not {"hookimpl", "hookspec"} & (names | imported), f"{source.name} has hooks"


def test_every_built_in_plugin_is_found():
    assert PLUGIN_NAMES == [
        "clap", "instant_mix", "jellyfin", "lyrion", "musicnn", "status_page", "subsonic",
        "vibe_api", "watcher",
    ]  # fmt: skip


# --- plugins read the host's library views (hooks/library_views.py), never its tables -------

CORE_MIGRATIONS = PLUGINS.parent / "soundspan_host" / "database" / "migrations" / "versions"
# a table named after one of SQL's keywords that take one (quoted, schema-qualified or not)
NAMED_TABLE = re.compile(
    r'\b(?:FROM|JOIN|UPDATE|INTO|TRUNCATE|TABLE)\s+(?:ONLY\s+)?(?:"?public"?\.)?"?(\w+)'
)


def host_tables() -> set[str]:
    """Every table the host's own migrations create, and alembic's."""
    created = {"alembic_version"}
    for source in CORE_MIGRATIONS.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "create_table"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                created.add(node.args[0].value)
    return created


def host_tables_named_in_plugins() -> set[tuple[str, str]]:
    """(file, table) for every string literal in plugins/ whose SQL names a host table;
    adjacent literals are one constant to `ast`, so a query split over lines is read whole."""
    tables = host_tables()
    named = set()
    for source in PLUGINS.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for table in NAMED_TABLE.findall(node.value):
                    if table in tables:
                        named.add((source.relative_to(PLUGINS).as_posix(), table))
    return named


def test_the_host_tables_are_found():
    assert host_tables() >= {"tracks", "contents", "analysis_jobs", "analysis_workers"}


def test_plugin_sql_reads_the_library_views_not_the_host_tables():
    assert host_tables_named_in_plugins() == set(), "read library_tracks, recorded_tracks, ..."
