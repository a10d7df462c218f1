"""synthfilter: keep model-generated and duplicated text from swamping a training corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from synthfilter.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from synthfilter.api import DecideResult, MalformedRecordError, SynthFilter

__all__ = ["Config", "ConfigError", "DecideResult", "MalformedRecordError", "SynthFilter", "load_config", "__version__"]

_API_NAMES = ("DecideResult", "MalformedRecordError", "SynthFilter")


def __getattr__(name: str) -> Any:
    # The Python API loads numpy and the pipeline: import it on first use, so that the CLI
    # (and ``import synthfilter``) stay quick.
    if name in _API_NAMES:
        from synthfilter import api

        return getattr(api, name)
    raise AttributeError(f"module 'synthfilter' has no attribute {name!r}")


# ``synthfilter.gate(records, policy)``: bound after the submodule of the same name is imported,
# so the name means the function (``from synthfilter.gate import ...`` still reaches the module).
from synthfilter.gate import GatePolicy, GateResult, gate  # noqa: E402

__all__ += ["GatePolicy", "GateResult", "gate"]
