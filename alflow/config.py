"""Validated configuration: the pydantic base model and the YAML loader.

Every config model of alflow derives from :class:`StrictModel` (unknown fields are errors),
and every YAML file is read through :func:`load_yaml_model`, which uses ``yaml.safe_load`` and
turns validation errors into a :class:`~alflow.errors.ConfigError` naming the file, the field
and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from alflow.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of all alflow configs: unknown fields are rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render a pydantic error as one line per problem: ``source: field.path: message (got X)``."""
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling)"
        got = e.get("input")
        got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{got_s}")
    return "\n".join(lines)


def validate_model(model: type[M], data: Any, source: str = "<config>") -> M:
    """Validate ``data`` as ``model``; raise ConfigError naming ``source`` and each bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with ``yaml.safe_load``; unreadable or malformed files raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); expected "
                          "a YAML configuration") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_yaml_model(model: type[M], path: str | Path) -> M:
    """Read ``path`` as YAML and validate it as ``model``."""
    return validate_model(model, read_yaml(path), source=str(path))
