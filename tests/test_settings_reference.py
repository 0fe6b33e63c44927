"""The README's settings reference is what the schemas render, so it cannot drift from them."""

import tomllib
from pathlib import Path

from soundspan_host.settings_reference import render, replaced

ROOT = Path(__file__).parent.parent


def test_the_readme_lists_the_settings_as_the_schemas_declare_them():
    readme = (ROOT / "README.md").read_text()
    assert replaced(readme) == readme, "the README's settings reference is stale: run `make docs`"


def test_every_key_of_settings_toml_is_in_the_reference_with_its_variables():
    reference = render()
    defaults = tomllib.loads((ROOT / "settings.toml").read_text())
    for key, value in defaults.items():
        for name in value if isinstance(value, dict) else [key]:
            assert f"| `{name}` |" in reference, name
    assert "| `SOUNDSPAN_CLAP__WORKERS` or `CLAP_WORKERS` |" in reference
    assert "| `SOUNDSPAN_API_TOKEN` |" in reference
