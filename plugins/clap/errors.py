"""The one error a user meets when CLAP cannot load, and how it names the setting to change."""

from __future__ import annotations

import importlib.util

# what `pip install 'soundspan-host[clap]'` brings (pyproject.toml's clap extra), by module:
# none is imported before the plugin starts, so a host without them still starts
EXTRA_MODULES = ("torch", "transformers", "huggingface_hub", "httpx2", "onnx", "onnxruntime")
INSTALL_EXTRA = "pip install 'soundspan-host[clap]'"


def setting(name: str) -> str:
    """How a user sets a [clap] key, for error messages: `[clap] model (SOUNDSPAN_CLAP__MODEL)`."""
    return f"[clap] {name} (SOUNDSPAN_CLAP__{name.upper()})"


class ClapUnavailable(RuntimeError):
    """No CLAP model can be loaded; the message says why and which setting fixes it."""

    def __init__(self, reason: str, setting_name: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.setting = setting_name


def missing_packages() -> list[str]:
    """The modules of CLAP's extra that are not installed here."""
    return [name for name in EXTRA_MODULES if not _installed(name)]


def missing_extra() -> ClapUnavailable | None:
    """Why CLAP cannot run here when a package of its extra is not installed; None when all are."""
    if not (missing := missing_packages()):
        return None
    return ClapUnavailable(
        f"CLAP needs Python packages not installed here ({', '.join(missing)}): "
        f"{INSTALL_EXTRA}, or set {setting('enabled')} = false",
        setting("enabled"),
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install is no install
        return False
