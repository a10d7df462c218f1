"""synthfilter: keep model-generated and duplicated text from swamping a training corpus."""

from __future__ import annotations

__version__ = "0.1.0"

from synthfilter.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config", "__version__"]
