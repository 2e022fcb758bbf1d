"""Job configuration: TOML files validated by pydantic models, plus ``--set`` overrides.

Each job defines a pydantic model ``Config`` (``extra="forbid"``, ranges as ``Field`` bounds).
A config file is TOML with a top-level ``job = "<name>"`` key and the model's fields. With no
file, the job's embedded default ``configs/<job>.toml`` is used (or the model's own defaults
when the package is installed without the ``configs/`` folder).

Every validation failure becomes a :class:`~riskdask.errors.ConfigError` that names the file
and the dotted key, e.g. ``configs/x.toml: key 'simulation.n_scenarios': Input should be
greater than 0 (got -5)``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

__all__ = ["CONFIG_DIR", "default_config_path", "parse_override", "apply_overrides",
           "validate_config", "load_config", "config_hash", "LoadedConfig"]

#: Repository folder that holds one TOML file per job and size.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def default_config_path(job: str) -> Path | None:
    """The embedded default config of ``job``, if the ``configs/`` folder is present."""
    path = CONFIG_DIR / f"{job}.toml"
    return path if path.is_file() else None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as a TOML value.

    ``n=5`` gives the integer 5, ``levels=[0.99, 0.999]`` a list, ``name=abc`` (not valid
    TOML) the string ``"abc"``.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}", key=text)
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of ``data`` with each dotted ``key=value`` override set."""
    out = json.loads(json.dumps(data))  # deep copy of plain TOML data
    for text in overrides:
        key, value = parse_override(text)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set '{key}': '{part}' is not a section (from --set)",
                                  key=key)
            node = child
        node[parts[-1]] = value
    return out


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names allowed at the section named by ``loc`` (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) if loc else "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = f" (known keys here: {', '.join(allowed)})" if allowed else ""
        return key, f"unknown key{hint}{listing}"
    if error["type"] == "missing":
        return key, "required key is missing"
    got = error.get("input")
    got_text = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    return key, f"{error['msg']}{got_text}"


def validate_config(model: type[BaseModel], data: Mapping[str, Any], *,
                    source: str = "<config>") -> BaseModel:
    """Validate plain config data against ``model``; raise :class:`ConfigError` on failure.

    The message names the source file and the first offending key, and says how many other
    problems there are.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors()
        key, message = _describe(errors[0], model)
        more = len(errors) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(message, file=source, key=key) from None


class LoadedConfig(BaseModel):
    """A validated config with where it came from."""

    model_config = {"arbitrary_types_allowed": True}

    config: Any
    source: str
    overrides: list[str]
    hash: str


def read_toml(path: Path) -> dict:
    """Read a TOML file, turning syntax and I/O errors into :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found", file=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from None


def load_config(job: str, model: type[BaseModel], config: str | Path | Mapping | BaseModel | None,
                overrides: Sequence[str] = ()) -> LoadedConfig:
    """Resolve ``config`` (path, mapping, model instance or None) plus overrides for ``job``.

    ``None`` means the job's embedded default. A file's ``job`` key must name this job.
    """
    if isinstance(config, BaseModel):
        data = config.model_dump(mode="json")
        source = "<object>"
    elif isinstance(config, Mapping):
        data = dict(config)
        source = "<mapping>"
    else:
        path = Path(config) if config is not None else default_config_path(job)
        if path is None:
            data, source = {}, f"<embedded default of {job}>"
        else:
            data, source = read_toml(path), str(path)
    data = dict(data)
    named = data.pop("job", job)
    if named != job:
        raise ConfigError(f"this config is for job '{named}', not '{job}'", file=source, key="job")
    data = apply_overrides(data, overrides)
    cfg = validate_config(model, data, source=source + (" (with --set)" if overrides else ""))
    return LoadedConfig(config=cfg, source=source, overrides=list(overrides),
                        hash=config_hash(job, cfg))


def config_hash(job: str, cfg: BaseModel) -> str:
    """Short stable hash of the resolved config (names run directories and locks)."""
    canonical = json.dumps({"job": job, **cfg.model_dump(mode="json")}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
