"""Report configuration: pydantic models, YAML loading with line numbers, JSON Schema export.

Guarantees:
- A config that loads is internally consistent: names are safe, every sum/mean has bounds,
  no dimension or metric reads an identifier or the privacy unit, ``min_units >= 2``,
  DP parameters are in range. Checks that need the source schema live in ``sources``.
- Every error names the key (``metrics[2].bounds``), the file and, where the YAML parser knows
  it, the line; it is raised as :class:`ConfigError`, never as a traceback.
- Configs are immutable; :meth:`ReportConfig.with_overrides` returns a new, re-validated one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError

REPORT_NAME = re.compile(r"^[a-z0-9_]+$")
OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_OUTPUT_NAMES = {"level", "is_remainder"}
# |bounds| limit: clamped values are summed as DECIMAL(38,6) (integer part < 1e32), so 1e14 rows fit
MAX_BOUND = 1e18
Grain = Literal["day", "week", "month", "quarter", "year"]
# Per-release epsilon above this is refused unless privacy.allow_large_epsilon (docs/PRIVACY.md)
EPSILON_CEILING = 10.0
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def url_problem(value: str | None) -> str | None:
    """Why a path setting is refused when it is a URL (``s3://…``, ``https://…``), else None.

    Object storage is not supported yet: a URL must not silently become a local folder named
    ``s3:`` (output) or a confusing glob error (source)."""
    if value is None or not URL_SCHEME.match(value):
        return None
    scheme = value.split("://", 1)[0]
    return (f"{value!r} is a URL ({scheme}://); object storage and remote paths are not supported yet: "
            "copy or mount the files and give a local path")


def _local_path(v: str | None) -> str | None:
    problem = url_problem(v)
    if problem:
        raise ValueError(problem)
    return v


class CsvOptions(_Model):
    """Options passed to DuckDB's CSV reader (types are never guessed silently: see docs)."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    header: bool = True
    quote: str = Field('"', min_length=1, max_length=1)


class SourceConfig(_Model):
    path: str = Field(min_length=1, description="File, glob or .duckdb file, relative to the config file.")
    table: str | None = Field(None, description="Table name when path is a .duckdb file.")
    format: Literal["auto", "parquet", "csv", "json", "duckdb"] = "auto"
    csv: CsvOptions | None = None

    _path_is_local = field_validator("path")(_local_path)

    @model_validator(mode="after")
    def _table_only_for_duckdb(self) -> SourceConfig:
        is_db = self.format == "duckdb" or self.path.endswith((".duckdb", ".db"))
        if is_db and not self.table:
            raise ValueError("source.table is required when source.path is a DuckDB database")
        if self.table and not is_db:
            raise ValueError("source.table is only allowed when source.path is a DuckDB database")
        return self


class DimensionConfig(_Model):
    column: str = Field(min_length=1)
    grain: Grain | None = Field(None, description="Truncate a timestamp/date column to this grain.")
    as_: str | None = Field(None, alias="as", description="Output column name.")

    @property
    def name(self) -> str:
        return self.as_ or self.column


class MetricConfig(_Model):
    name: str
    agg: Literal["count", "count_units", "sum", "mean"]
    column: str | None = None
    multiply_by: str | None = Field(
        None, description="Optional second numeric column: the value is column × multiply_by (e.g. quantity × price)."
    )
    bounds: tuple[float, float] | None = Field(
        None, description="[low, high]: values are clamped into this range before aggregation."
    )
    budget_weight: float | None = Field(
        None,
        gt=0,
        description="DP mode: relative weight of this metric's share of the budget left after partition "
        "selection (default 1 each).",
    )

    @field_validator("budget_weight")
    @classmethod
    def _finite_weight(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("budget_weight must be a finite number")
        return v

    @model_validator(mode="after")
    def _check(self) -> MetricConfig:
        if self.agg in ("sum", "mean"):
            if self.column is None:
                raise ValueError(f"metric {self.name!r}: agg {self.agg} needs a column")
            if self.bounds is None:
                raise ValueError(
                    f"metric {self.name!r}: agg {self.agg} needs bounds: [low, high] "
                    "(values are clamped into them; they set the sensitivity)"
                )
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"metric {self.name!r}: bounds must be finite numbers")
            if max(abs(lo), abs(hi)) > MAX_BOUND:
                raise ValueError(
                    f"metric {self.name!r}: bounds must lie within ±{MAX_BOUND:g} (sums are exact decimals "
                    "that must not overflow); rescale the column, e.g. to thousands"
                )
            if lo > hi:
                raise ValueError(f"metric {self.name!r}: bounds low {lo} is greater than high {hi}")
        else:
            if self.column is not None:
                raise ValueError(f"metric {self.name!r}: agg {self.agg} takes no column")
            if self.bounds is not None:
                raise ValueError(f"metric {self.name!r}: agg {self.agg} takes no bounds")
            if self.multiply_by is not None:
                raise ValueError(f"metric {self.name!r}: agg {self.agg} takes no multiply_by")
        return self


class RangeFilter(_Model):
    """Structured filter on one column; all given conditions must hold."""

    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    min: Scalar | None = None
    max: Scalar | None = None

    @model_validator(mode="after")
    def _non_empty(self) -> RangeFilter:
        if self.in_ is None and self.not_in is None and self.min is None and self.max is None:
            raise ValueError("a filter needs at least one of: in, not_in, min, max")
        return self


FilterValue = list[Scalar] | RangeFilter | Scalar


class PrivacyConfig(_Model):
    """Differential-privacy mode. Its presence switches the report to DP mode."""

    epsilon: float = Field(gt=0, description="Total epsilon for this report.")
    delta: float = Field(1e-6, ge=0, lt=1)
    max_groups_per_unit: int = Field(1, ge=1, description="L0 bound: cells one unit may touch.")
    max_rows_per_group: int = Field(1, ge=1, description="Linf bound: rows per unit per cell.")
    noise: Literal["laplace", "gaussian"] = "laplace"
    public_partitions: str | None = Field(
        None, description="CSV/Parquet file of dimension combinations that may be published."
    )
    selection_share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of epsilon (and rho) spent on partition selection and the unit count.",
    )
    allow_large_epsilon: bool = Field(
        False,
        description=f"Accept a per-release epsilon above {EPSILON_CEILING:g} (refused otherwise: the guarantee says "
        "little there).",
    )

    _partitions_local = field_validator("public_partitions")(_local_path)

    @field_validator("epsilon")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("epsilon must be a finite number")
        return v

    @model_validator(mode="after")
    def _ceiling(self) -> PrivacyConfig:
        if self.epsilon > EPSILON_CEILING and not self.allow_large_epsilon:
            raise _KeyError(
                ("privacy", "epsilon"),
                f"epsilon {self.epsilon:g} per release is above {EPSILON_CEILING:g}, where differential privacy "
                f"promises little (e^ε ≈ {math.exp(min(self.epsilon, 700)):.3g}: what a reader believes about one "
                "person may shift by that factor); lower it, or set privacy.allow_large_epsilon: true to accept "
                "it knowingly",
            )
        return self

    @model_validator(mode="after")
    def _gaussian_needs_delta(self) -> PrivacyConfig:
        if self.noise == "gaussian" and self.delta <= 0:
            raise ValueError("privacy.noise gaussian needs delta > 0")
        if self.public_partitions is None and self.delta <= 0:
            raise ValueError(
                "privacy.delta must be > 0 for private partition selection "
                "(or give privacy.public_partitions)"
            )
        return self


class BudgetConfig(_Model):
    ledger: str = Field(min_length=1, description="DuckDB ledger file, relative to the config file.")
    epsilon_limit: float = Field(gt=0)
    delta_limit: float = Field(0.0, ge=0, lt=1)
    source_id: str | None = Field(
        None,
        description="Name of the population the budget belongs to; defaults to the resolved source path.",
    )

    _ledger_local = field_validator("ledger")(_local_path)


class DominanceConfig(_Model):
    n: int = Field(1, ge=1)
    max_share: float | None = Field(None, gt=0, le=1)
    p_percent: float | None = Field(None, gt=0, lt=100)

    @model_validator(mode="after")
    def _one_rule(self) -> DominanceConfig:
        if (self.max_share is None) == (self.p_percent is None):
            raise ValueError("dominance needs exactly one of max_share or p_percent")
        return self


class OutputConfig(_Model):
    dir: str = Field("reports", min_length=1)

    _dir_local = field_validator("dir")(_local_path)


class EngineConfig(_Model):
    threads: int | None = Field(None, ge=1)
    memory_limit: str | None = Field(None, pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    temp_directory: str | None = None

    _temp_local = field_validator("temp_directory")(_local_path)


class ReportConfig(_Model):
    """One report definition. Paths are resolved against the config file's folder."""

    report: str = Field(description="Report name: [a-z0-9_]+ only.")
    description: str | None = None
    source: SourceConfig
    privacy_unit: str = Field(min_length=1)
    identifiers: list[str] = Field(default_factory=list)
    filter: dict[str, FilterValue] = Field(default_factory=dict)
    dimensions: list[Annotated[DimensionConfig, Field()] | str] = Field(min_length=1)
    metrics: list[MetricConfig] = Field(min_length=1)
    min_units: int | None = Field(
        None,
        ge=2,
        description="k: fewest distinct privacy units a published row may aggregate (threshold mode); in DP mode "
        "with private partition selection, the fewest noisy units a published cell may show. Required, except "
        "in DP mode with privacy.public_partitions, where it is refused (listed cells are published whatever "
        "their size).",
    )
    totals: list[list[str]] | None = None
    dominance: DominanceConfig | None = None
    remainder: bool = False
    consistent: bool = False
    difference_check: bool = True
    history: str | None = Field(
        None,
        description="DuckDB file of keyed unit hashes per published cell, for difference checks "
        "(threshold mode); default: beside budget.ledger when there is one.",
    )
    output: OutputConfig = Field(default_factory=OutputConfig)
    privacy: PrivacyConfig | None = None
    budget: BudgetConfig | None = None
    engine: EngineConfig = Field(default_factory=EngineConfig)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _config_path: Path | None = PrivateAttr(default=None)
    _lines: dict = PrivateAttr(default_factory=dict)

    # ----- validation -------------------------------------------------------------------------
    _history_local = field_validator("history")(_local_path)

    @field_validator("report")
    @classmethod
    def _report_name(cls, v: str) -> str:
        if not REPORT_NAME.fullmatch(v):
            raise ValueError(f"report name {v!r} may only hold a-z, 0-9 and _")
        return v

    @field_validator("dimensions")
    @classmethod
    def _normalise_dimensions(cls, v: list[Any]) -> list[DimensionConfig]:
        return [DimensionConfig(column=d) if isinstance(d, str) else d for d in v]

    @model_validator(mode="after")
    def _cross_checks(self) -> ReportConfig:
        protected = {self.privacy_unit, *self.identifiers}
        dims: list[DimensionConfig] = self.dimensions  # type: ignore[assignment]
        for i, d in enumerate(dims):
            if d.column in protected:
                raise _KeyError(
                    ("dimensions", i),
                    f"dimension column {d.column!r} is the privacy unit or an identifier; "
                    "identifiers are never grouped on or published",
                )
        for i, m in enumerate(self.metrics):
            for key, col in (("column", m.column), ("multiply_by", m.multiply_by)):
                if col is not None and col in protected:
                    raise _KeyError(
                        ("metrics", i, key),
                        f"metric column {col!r} is the privacy unit or an identifier",
                    )
        for col in self.filter:
            if col in protected:
                # Filtering on an identifier would let a config single people out.
                raise _KeyError(("filter", col), f"filter on identifier column {col!r} is not allowed")
        names: dict[str, str] = {}
        for i, d in enumerate(dims):
            self._check_output_name(d.name, ("dimensions", i), names)
        for i, m in enumerate(self.metrics):
            self._check_output_name(m.name, ("metrics", i, "name"), names)
        if self.totals is not None:
            dim_names = [d.name for d in dims]
            for i, level in enumerate(self.totals):
                for name in level:
                    if name not in dim_names:
                        raise _KeyError(
                            ("totals", i),
                            f"totals level names {name!r}, which is not a dimension ({', '.join(dim_names)})",
                        )
                if len(set(level)) != len(level):
                    raise _KeyError(("totals", i), "totals level repeats a dimension")
                if set(level) == set(dim_names):
                    raise _KeyError(("totals", i), "totals level equals the full table; drop it")
        if self.dominance is not None and not any(m.agg in ("sum", "mean") for m in self.metrics):
            raise _KeyError(("dominance",), "dominance applies to sum/mean metrics; none configured")
        if self.privacy is not None and self.budget is None:
            raise _KeyError(("budget",), "DP mode (privacy:) needs a budget: block with a ledger")
        if self.consistent and (self.privacy is None or self.privacy.public_partitions is None or not self.totals):
            raise _KeyError(
                ("consistent",),
                "consistent: true is DP post-processing of margins: it needs privacy.public_partitions and totals "
                "(with private partition selection unpublished cells would be misattributed)",
            )
        for i, m in enumerate(self.metrics):
            if m.budget_weight is None:
                continue
            if self.privacy is None:
                raise _KeyError(
                    ("metrics", i, "budget_weight"),
                    f"metric {m.name!r}: budget_weight splits a DP budget; this report has no privacy: block",
                )
            if m.agg == "count_units" and self.privacy.public_partitions is None:
                raise _KeyError(
                    ("metrics", i, "budget_weight"),
                    f"metric {m.name!r}: with private partition selection the unit count is the selection's "
                    "own noisy count; set its share with privacy.selection_share instead",
                )
        public = self.privacy is not None and self.privacy.public_partitions is not None
        if public and self.min_units is not None:
            raise _KeyError(
                ("min_units",),
                "min_units has no effect with privacy.public_partitions: the listed cells are published whatever "
                "their size (their noise protects each person); remove min_units, or remove public_partitions to "
                "select cells privately (min_units then applies to the noisy unit count)",
            )
        if not public and self.min_units is None:
            raise _KeyError(("min_units",), "required key is missing (the fewest distinct people a published row may aggregate)")
        if self.privacy is not None and self.dominance is not None:
            raise _KeyError(("dominance",), "dominance is a threshold-mode rule; DP mode bounds contributions instead")
        if self.privacy is not None and self.remainder:
            raise _KeyError(
                ("remainder",),
                "remainder rows are a threshold-mode feature (they aggregate suppressed cells); "
                "DP mode publishes noisy cells, use consistent: true to make margins add up",
            )
        if self.budget is not None and self.privacy is not None:
            if self.privacy.epsilon > self.budget.epsilon_limit:
                raise _KeyError(
                    ("privacy", "epsilon"),
                    f"epsilon {self.privacy.epsilon} exceeds budget.epsilon_limit {self.budget.epsilon_limit}",
                )
            if self.privacy.delta > self.budget.delta_limit:
                raise _KeyError(
                    ("privacy", "delta"),
                    f"delta {self.privacy.delta} exceeds budget.delta_limit {self.budget.delta_limit}",
                )
        return self

    @staticmethod
    def _check_output_name(name: str, loc: tuple[Any, ...], seen: dict[str, str]) -> None:
        if not OUTPUT_NAME.fullmatch(name):
            raise _KeyError(
                loc,
                f"output column name {name!r} must match [A-Za-z_][A-Za-z0-9_]*; "
                "use `as:` to rename a dimension whose source column has other characters",
            )
        if name.lower() in RESERVED_OUTPUT_NAMES or name.startswith("__"):
            raise _KeyError(loc, f"output column name {name!r} is reserved")
        if name.lower() in seen:
            raise _KeyError(loc, f"output column name {name!r} is used twice")
        seen[name.lower()] = name

    # ----- derived, read-only views ----------------------------------------------------------
    @property
    def dims(self) -> list[DimensionConfig]:
        return list(self.dimensions)  # type: ignore[arg-type]

    @property
    def k(self) -> int:
        """``min_units`` where it applies; 2 (the smallest k) in DP mode with public partitions, where
        no threshold applies to cells and only the gate's quasi-identifier rule needs a floor."""
        return int(self.min_units) if self.min_units is not None else 2

    @property
    def mode(self) -> str:
        return "dp" if self.privacy is not None else "threshold"

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    def where(self, *loc: Any) -> str:
        """``"<config file>, line N: <key>"`` for a config key path (line when the YAML had it)."""
        line = _line_for(self._lines, tuple(loc))
        name = str(self._config_path) if self._config_path else "config"
        return f"{name}" + (f", line {line}" if line else "") + f": {_format_loc(tuple(loc))}"

    def resolve(self, p: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self._base_dir / path)

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output.dir).resolve()

    @property
    def ledger_path(self) -> Path | None:
        return self.resolve(self.budget.ledger).resolve() if self.budget else None

    def normalised(self) -> dict[str, Any]:
        """The validated config as plain JSON data (defaults filled, dimensions expanded)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`normalised` (stable across key order/comments)."""
        blob = json.dumps(self.normalised(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def with_overrides(self, **changes: Any) -> ReportConfig:
        """A new config with top-level keys replaced (nested dicts are merged), re-validated."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key, value in changes.items():
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(value, Mapping) and isinstance(data.get(key), dict):
                merged = dict(data[key])
                merged.update(value)
                data[key] = merged
            else:
                data[key] = value
        return config_from_dict(data, base_dir=self._base_dir, source_name=str(self._config_path or "<overrides>"))


class _KeyError(ValueError):
    """A cross-field error that knows the config key it belongs to."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


# ----- loading ---------------------------------------------------------------------------------


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


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


def _line_for(lines: dict, loc: tuple[Any, ...]) -> int | None:
    loc = tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


# pydantic inserts union member tags into error locations; they are not config keys
_UNION_TAGS = {
    "DimensionConfig", "str", "list[union[str,int,float,bool]]", "RangeFilter",
    "int", "float", "bool", "function-after[_normalise_dimensions(), list[union[DimensionConfig,str]]]",
}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        p for p in loc
        if not (isinstance(p, str) and (p in _UNION_TAGS or p.startswith(("list[", "function-"))))
    )


def _message(err: dict) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check spelling; see the config reference in the README)"
    elif err.get("type") == "missing":
        msg = "required key is missing"
    return msg


def config_from_dict(
    data: Any, *, base_dir: Path | str = ".", source_name: str = "<dict>", lines: dict | None = None
) -> ReportConfig:
    """Validate a plain mapping as a report config; raises :class:`ConfigError` listing every problem.

    Each problem names the key and, where the YAML parser knows it, the line; an unknown key or an
    invalid choice comes with the closest valid one ("did you mean `min_units`?")."""
    lines = lines or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source_name}: the config must be a YAML mapping of keys to values")
    try:
        cfg = ReportConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = _problems(exc.errors(), lines)
        if len(problems) == 1:
            raise ConfigError(f"{source_name}{problems[0]}") from None
        listed = "; ".join(p.removeprefix(", ").removeprefix(": ") for p in problems)
        raise ConfigError(f"{source_name}: {len(problems)} problems: {listed}") from None
    cfg._base_dir = Path(base_dir).resolve()
    cfg._lines = dict(lines)
    return cfg


def _problems(errors: list[dict], lines: dict) -> list[str]:
    """One text per config key with errors (union alternatives give several errors for one key:
    the most specific is kept), in file order: ``", line 7: min_unit: unknown key …"``."""
    by_loc: dict[tuple, list[dict]] = {}
    for e in errors:
        loc = _clean_loc(tuple(e.get("loc", ())))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyError):
            loc = cause.loc
        by_loc.setdefault(loc, []).append(e)
    # a union member's errors under a deeper key make the bare key's own alternatives noise
    for loc in list(by_loc):
        if any(other[: len(loc)] == loc and len(other) > len(loc) for other in by_loc):
            if all(e.get("type") != "value_error" for e in by_loc[loc]):
                del by_loc[loc]
    out = []
    for loc, errs in by_loc.items():
        err = _pick_error(errs)
        line = _line_for(lines, loc)
        where = f", line {line}" if line else ""
        out.append((line or 10**9, f"{where}: {_format_loc(loc)}: {_message(err, loc)}"))
    return [text for _, text in sorted(out, key=lambda t: t[0])]


def did_you_mean(word: Any, choices: Any) -> str:
    """`` (did you mean `x`?)`` for the closest of ``choices`` to ``word``, or ``""``."""
    import difflib

    options = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[str(word).lower()]] if str(word).lower() in lowered else []
    return f" (did you mean `{close[0]}`?)" if close and close[0] != str(word) else ""


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the mapping at ``loc`` (a config path), from the models; [] when unknown."""
    import typing

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for a in typing.get_args(annotation) for m in models_in(a)]

    model: type[BaseModel] | None = ReportConfig
    skip_key = False
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        if skip_key:  # a free-form mapping key (a filter's column name)
            skip_key = False
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        found = models_in(field.annotation)
        skip_key = typing.get_origin(field.annotation) is dict
        if skip_key:
            found = models_in(typing.get_args(field.annotation)[1])
        model = found[0] if found else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _message(err: dict, loc: tuple[Any, ...] = ()) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    kind = err.get("type")
    if kind == "extra_forbidden":
        hint = did_you_mean(loc[-1], _keys_at(loc[:-1])) if loc else ""
        msg = "unknown key" + (hint or " (check spelling; see the config reference in the README)")
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        msg += did_you_mean(err.get("input"), expected) if expected else ""
    return msg


def _pick_error(errors: list[dict]) -> dict:
    def score(e: dict) -> tuple[int, int]:
        loc = _clean_loc(tuple(e.get("loc", ())))
        # value errors (ours) are most informative; then deeper locations
        return (1 if e.get("type") == "value_error" else 0, len(loc))

    return max(errors, key=score)


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
