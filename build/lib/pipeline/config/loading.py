"""Config files: YAML with line numbers, loaded and validated; the JSON Schema of the models.

Guarantees: a config that loads is valid (:mod:`pipeline.config.models`); every error names the
file, the key and, where the YAML parser knows it, the line, and is a :class:`ConfigError`, never a
traceback; a missing file names the path it looked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .models import ReportConfig, config_from_dict


def _line_index(node: yaml.Node | None, path: tuple[Any, ...] = (), out: dict | None = None) -> dict:
    """Map every key path in a composed YAML document to its 1-based line number."""
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), out)
    return out


def load_config(path: str | Path) -> ReportConfig:
    """Read and validate a YAML report config. Raises :class:`ConfigError` (never a traceback)."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a config file" if p.is_dir() else "config file not found"
        raise ConfigError(f"{p}: {what} (looked for {p.expanduser().resolve()})")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: config is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{p}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: YAML syntax error: {exc}") from None
    if data is None:
        raise ConfigError(f"{p}: config is empty")
    cfg = config_from_dict(data, base_dir=p.resolve().parent, source_name=str(p), lines=_line_index(node))
    cfg._config_path = p.resolve()
    return cfg


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the report config, generated from the models."""
    schema = ReportConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "anonymize report config"
    return schema
