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

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

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
from .problems import KeyProblem, format_loc, line_for, problems

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
# file systems Spark reads through Hadoop: a source URL with one of these is for the Spark engine
SPARK_SCHEMES = ("s3a", "s3", "abfss", "abfs", "wasbs", "gs", "hdfs", "dbfs", "file")


def source_url(path: str) -> str | None:
    """``path`` when it is a URL of a file system the Spark engine reads (``s3a://…``, ``file:///…``),
    else None (a local path)."""
    if URL_SCHEME.match(path) and path.split("://", 1)[0].lower() in SPARK_SCHEMES:
        return path
    return None


def file_url_path(path: str) -> str | None:
    """The local path a ``file://`` URL names (percent-escapes decoded: ``Path.as_uri`` writes a space
    as ``%20``), else None."""
    if not path.lower().startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(path).path)


def _source_path(v: str) -> str:
    """A local path, or a URL the Spark engine can read (checked against the engine later)."""
    return v if source_url(v) else _local_path(v)  # type: ignore[return-value]


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
    path: str = Field(min_length=1, description="File, folder, glob or .duckdb file, relative to the config file; "
                      "with engine.kind: spark also a URL Spark reads (s3a://, abfss://, gs://, hdfs://, file://).")
    table: str | None = Field(None, description="Table name when path is a .duckdb file.")
    format: Literal["auto", "parquet", "csv", "json", "duckdb"] = "auto"
    csv: CsvOptions | None = None

    _path_is_local_or_spark = field_validator("path")(_source_path)

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
    label: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\r\n]*$",
                              description="Column header in exports (CSV), e.g. 'City'; default the name.")

    @property
    def name(self) -> str:
        return self.as_ or self.column


class MetricConfig(_Model):
    name: str
    agg: Literal["count", "count_units", "sum", "mean"]
    label: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[^\r\n]*$",
                              description="Column header in exports (CSV), e.g. 'Order value'; default the name.")
    unit: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[^\r\n]*$",
                             description="Unit shown in export headers after the label, e.g. INR: 'Order value (INR)'.")
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
            raise KeyProblem(
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
        description="Name of the population the budget belongs to; defaults to the resolved source path. "
        "A release whose source files have the same bytes as files released under another source id "
        "is refused unless this names that id.",
    )
    allow_exact_releases: bool = Field(
        False,
        description="Allow threshold-mode (exact) releases of this source's files by configs sharing the "
        "ledger's folder as their state folder. Off: such a release is refused (exit 3), since exact "
        "numbers bypass the DP budget.",
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


class ProtectionConfig(_Model):
    """How wide the reader's feasible range for every withheld value must be (threshold mode with
    totals or remainder rows): ``interval: 0.1`` = at least ±10% of the value (docs/PRIVACY.md)."""

    interval: float = Field(0.1, ge=0, le=1)


class ExcludeList(_Model):
    """People whose rows are removed before anything else (deleted accounts, opt-outs)."""

    path: str = Field(min_length=1, description="Parquet or CSV file of privacy-unit values, relative to the config file.")
    column: str = Field(min_length=1, description="The file's column holding the privacy-unit values.")

    _path_local = field_validator("path")(_local_path)


class WindowConfig(_Model):
    """A scheduled report's time window: the last complete ``period`` before ``--as-of`` (default
    today, UTC), ``lag`` periods further back. ``start``/``end`` are filled in by the run."""

    column: str = Field(min_length=1, description="Date or timestamp column the window filters on.")
    period: Literal["day", "week", "month"]
    lag: int = Field(0, ge=0, description="Complete periods to step back further (late-arriving data).")
    start: dt.date | None = Field(None, description="Set by the run: first day of the window.")
    end: dt.date | None = Field(None, description="Set by the run: first day after the window.")

    def resolved(self, as_of: dt.date) -> WindowConfig:
        """This window for a run on ``as_of``: [start, end) is the last complete period before
        ``as_of``, moved back ``lag`` periods (ISO weeks start on Monday)."""
        if self.period == "day":
            end = as_of - dt.timedelta(days=self.lag)
            start = end - dt.timedelta(days=1)
        elif self.period == "week":
            end = as_of - dt.timedelta(days=as_of.weekday()) - dt.timedelta(weeks=self.lag)
            start = end - dt.timedelta(weeks=1)
        else:
            y, m = as_of.year, as_of.month - self.lag
            while m < 1:
                y, m = y - 1, m + 12
            end = dt.date(y, m, 1)
            start = dt.date(end.year - (end.month == 1), (end.month - 2) % 12 + 1, 1)
        return self.model_copy(update={"start": start, "end": end})

    def run_id(self) -> str:
        """The window's name: 2026-11-23 (day), 2026-W47 (ISO week), 2026-11 (month)."""
        assert self.start is not None
        if self.period == "day":
            return self.start.isoformat()
        if self.period == "week":
            y, w, _ = self.start.isocalendar()
            return f"{y}-W{w:02d}"
        return self.start.strftime("%Y-%m")


class OutputConfig(_Model):
    dir: str = Field("reports", min_length=1)
    formats: list[Literal["parquet", "csv"]] = Field(
        default_factory=lambda: ["parquet"],
        description="Files of a release: parquet (always: the gated file) and csv, written from the gated "
        "Parquet bytes and listed in the manifest with its sha256.")

    @field_validator("formats")
    @classmethod
    def _parquet_first(cls, v: list[str]) -> list[str]:
        if "parquet" not in v:
            raise ValueError("formats must include parquet (the file the release gate checks); add csv beside it")
        return sorted(set(v), key=["parquet", "csv"].index)

    _dir_local = field_validator("dir")(_local_path)


class EngineConfig(_Model):
    kind: Literal["duckdb", "spark"] = Field(
        "duckdb", description="duckdb (embedded, the default) or spark (both modes, the difference "
        "check included, over Parquet and CSV sources)")
    master: str = Field("local[2]", min_length=1, description="Spark master URL (kind: spark).")
    remote: str | None = Field(None, description="Spark Connect URL, e.g. sc://host:15002 (kind: spark; "
                               "also the SPARK_REMOTE environment variable).")
    conf: dict[str, str] = Field(default_factory=dict, description="Spark settings (kind: spark).")
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
    protection: ProtectionConfig | Literal[False] | None = Field(
        None,
        description="Threshold mode: how wide the reader's feasible range of every withheld value must stay "
        "(docs/PRIVACY.md, 'protection intervals'). Absent: on, with interval 0.1; false: off (the algebraic "
        "check only; recorded in the manifest).",
    )
    consistent: bool = False
    difference_check: bool = Field(
        True,
        description="Threshold mode: withhold cells that differ from an earlier published cell over the "
        "same source columns and values by 1 to min_units-1 people (docs/PRIVACY.md, 'Across releases'). "
        "On by default; false turns it off and the manifest records that.",
    )
    history: str | None = Field(
        None,
        description="DuckDB file of keyed unit hashes and contribution digests per published cell, for "
        "difference checks (threshold mode); default: release_history.duckdb in the state folder (beside "
        "budget.ledger, else state/ beside the output folder).",
    )
    window: WindowConfig | None = Field(None, description="Scheduled window: the last complete period before --as-of.")
    exclude_units: list[ExcludeList] = Field(
        default_factory=list,
        description="Lists of people (deleted accounts, opt-outs) whose rows are removed before any "
        "aggregation; the release gate checks independently that none of them remains.",
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

    @property
    def protection_interval(self) -> float | None:
        """The protection interval every withheld value must keep (threshold mode): the configured
        one, or the default of :class:`ProtectionConfig` when the key is absent; None with
        ``protection: false`` (recorded in the manifest) and in DP mode (noise protects instead)."""
        if self.privacy is not None or self.protection is False:
            return None
        return (self.protection or ProtectionConfig()).interval

    @model_validator(mode="after")
    def _cross_checks(self) -> ReportConfig:
        protected = {self.privacy_unit, *self.identifiers}
        dims: list[DimensionConfig] = self.dimensions  # type: ignore[assignment]
        for i, d in enumerate(dims):
            if d.column in protected:
                raise KeyProblem(
                    ("dimensions", i),
                    f"dimension column {d.column!r} is the privacy unit or an identifier; "
                    "identifiers are never grouped on or published",
                )
        for i, m in enumerate(self.metrics):
            for key, col in (("column", m.column), ("multiply_by", m.multiply_by)):
                if col is not None and col in protected:
                    raise KeyProblem(
                        ("metrics", i, key),
                        f"metric column {col!r} is the privacy unit or an identifier",
                    )
        for col in self.filter:
            if col in protected:
                # Filtering on an identifier would let a config single people out.
                raise KeyProblem(("filter", col), f"filter on identifier column {col!r} is not allowed")
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
                        raise KeyProblem(
                            ("totals", i),
                            f"totals level names {name!r}, which is not a dimension ({', '.join(dim_names)})",
                        )
                if len(set(level)) != len(level):
                    raise KeyProblem(("totals", i), "totals level repeats a dimension")
                if set(level) == set(dim_names):
                    raise KeyProblem(("totals", i), "totals level equals the full table; drop it")
        clamped: dict[tuple[str, str | None], tuple[int, tuple[float, float]]] = {}
        for i, m in enumerate(self.metrics):
            if m.column is None or m.bounds is None:
                continue
            key = (m.column, m.multiply_by)
            first = clamped.setdefault(key, (i, tuple(m.bounds)))
            if first[1] != tuple(m.bounds):
                what = m.column + (f" × {m.multiply_by}" if m.multiply_by else "")
                raise KeyProblem(
                    ("metrics", i, "bounds"),
                    f"metric {m.name!r} clamps {what} to {list(m.bounds)}, but metrics[{first[0]}] clamps it to "
                    f"{list(first[1])}: one value published under two bounds reveals how many rows exceed a bound "
                    "and by how much (the largest contribution, exactly); use the same bounds for every metric of it",
                )
        if self.dominance is not None and not any(m.agg in ("sum", "mean", "count") for m in self.metrics):
            raise KeyProblem(("dominance",), "dominance applies to count, sum and mean metrics; none configured "
                             "(a count of people cannot be dominated: each counts once)")
        if self.privacy is not None and self.budget is None:
            raise KeyProblem(("budget",), "DP mode (privacy:) needs a budget: block with a ledger")
        if self.consistent and (self.privacy is None or self.privacy.public_partitions is None or not self.totals):
            raise KeyProblem(
                ("consistent",),
                "consistent: true is DP post-processing of margins: it needs privacy.public_partitions and totals "
                "(with private partition selection unpublished cells would be misattributed)",
            )
        for i, m in enumerate(self.metrics):
            if m.budget_weight is None:
                continue
            if self.privacy is None:
                raise KeyProblem(
                    ("metrics", i, "budget_weight"),
                    f"metric {m.name!r}: budget_weight splits a DP budget; this report has no privacy: block",
                )
            if m.agg == "count_units" and self.privacy.public_partitions is None:
                raise KeyProblem(
                    ("metrics", i, "budget_weight"),
                    f"metric {m.name!r}: with private partition selection the unit count is the selection's "
                    "own noisy count; set its share with privacy.selection_share instead",
                )
        public = self.privacy is not None and self.privacy.public_partitions is not None
        if public and self.min_units is not None:
            raise KeyProblem(
                ("min_units",),
                "min_units has no effect with privacy.public_partitions: the listed cells are published whatever "
                "their size (their noise protects each person); remove min_units, or remove public_partitions to "
                "select cells privately (min_units then applies to the noisy unit count)",
            )
        if not public and self.min_units is None:
            raise KeyProblem(("min_units",), "required key is missing (the fewest distinct people a published row may aggregate)")
        if self.privacy is not None and self.dominance is not None:
            raise KeyProblem(("dominance",), "dominance is a threshold-mode rule; DP mode bounds contributions instead")
        url = source_url(self.source.path)
        if url and (self.engine is None or self.engine.kind != "spark"):
            scheme = url.split("://", 1)[0]
            raise KeyProblem(("source", "path"), f"{url!r} is a URL ({scheme}://): object storage and cluster "
                             "file systems are not supported by the DuckDB engine; read it with the Spark engine "
                             "(engine.kind: spark, or --engine spark), or copy or mount the files and give a "
                             "local path")
        if self.engine is not None and self.engine.kind == "spark":
            fmt = self.source.format
            if fmt == "auto":
                low = self.source.path.lower()
                fmt = ("duckdb" if low.endswith((".duckdb", ".db")) else
                       "json" if low.endswith((".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")) else "ok")
            if fmt in ("duckdb", "json"):
                raise KeyProblem(("source", "path"), f"the Spark engine reads Parquet and CSV sources, not {fmt} "
                                 "(a DuckDB database file lives on one machine); export the table to Parquet or use "
                                 "engine.kind: duckdb")
        if self.privacy is not None and isinstance(self.protection, ProtectionConfig):
            raise KeyProblem(("protection",), "protection intervals are a threshold-mode rule (secondary "
                             "suppression); DP mode protects withheld values with noise")
        if self.privacy is not None and self.remainder:
            raise KeyProblem(
                ("remainder",),
                "remainder rows are a threshold-mode feature (they aggregate suppressed cells); "
                "DP mode publishes noisy cells, use consistent: true to make margins add up",
            )
        if self.budget is not None and self.privacy is not None:
            if self.privacy.epsilon > self.budget.epsilon_limit:
                raise KeyProblem(
                    ("privacy", "epsilon"),
                    f"epsilon {self.privacy.epsilon} exceeds budget.epsilon_limit {self.budget.epsilon_limit}",
                )
            if self.privacy.delta > self.budget.delta_limit:
                raise KeyProblem(
                    ("privacy", "delta"),
                    f"delta {self.privacy.delta} exceeds budget.delta_limit {self.budget.delta_limit}",
                )
        return self

    @staticmethod
    def _check_output_name(name: str, loc: tuple[Any, ...], seen: dict[str, str]) -> None:
        if not OUTPUT_NAME.fullmatch(name):
            raise KeyProblem(
                loc,
                f"output column name {name!r} must match [A-Za-z_][A-Za-z0-9_]*; "
                "use `as:` to rename a dimension whose source column has other characters",
            )
        if name.lower() in RESERVED_OUTPUT_NAMES or name.startswith("__"):
            raise KeyProblem(loc, f"output column name {name!r} is reserved")
        if name.lower() in seen:
            raise KeyProblem(loc, f"output column name {name!r} is used twice")
        seen[name.lower()] = name

    # ----- derived, read-only views ----------------------------------------------------------
    @property
    def dims(self) -> list[DimensionConfig]:
        return list(self.dimensions)  # type: ignore[arg-type]

    def headers(self) -> dict[str, str]:
        """Export headers of the columns that have a ``label`` or a ``unit``: label (default the
        name) and the unit in parentheses. Columns without either keep their name."""
        out = {d.name: d.label for d in self.dims if d.label}
        for m in self.metrics:
            if m.label or m.unit:
                out[m.name] = (m.label or m.name) + (f" ({m.unit})" if m.unit else "")
        return out

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
        line = line_for(self._lines, tuple(loc))
        name = str(self._config_path) if self._config_path else "config"
        return f"{name}" + (f", line {line}" if line else "") + f": {format_loc(tuple(loc))}"

    def resolve(self, p: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self._base_dir / path)

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output.dir).resolve()

    @property
    def state_dir(self) -> Path:
        """Where operator state lives (exact run counts, the default release history): the folder of
        ``history:`` or ``budget.ledger`` when given, else ``state/`` beside the output folder
        (never inside it)."""
        if self.history:
            return self.resolve(self.history).resolve().parent
        if self.budget is not None:
            return self.resolve(self.budget.ledger).resolve().parent
        return self.output_dir.parent / "state"

    @property
    def ledger_path(self) -> Path | None:
        return self.resolve(self.budget.ledger).resolve() if self.budget else None

    def normalised(self) -> dict[str, Any]:
        """The validated config as plain JSON data (defaults filled, dimensions expanded)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def release_config(self) -> dict[str, Any]:
        """:meth:`normalised` without ``engine``: what decides a release's content. The engine (and
        its threads, memory, Spark master) only decides where it is computed, so a release's
        provenance, its report bytes and its config hash are the same on DuckDB and Spark."""
        return {k: v for k, v in self.normalised().items() if k != "engine"}

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of :meth:`release_config` (stable across key order/comments)."""
        blob = json.dumps(self.release_config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def for_window(self, as_of: dt.date | None = None) -> ReportConfig:
        """This config with its ``window`` resolved for a run on ``as_of`` (default: today, UTC)."""
        if self.window is None:
            return self
        as_of = as_of or dt.datetime.now(dt.UTC).date()
        return self.with_overrides(window=self.window.resolved(as_of).model_dump(mode="json"))

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


# ----- loading ---------------------------------------------------------------------------------


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
        found = problems(exc.errors(), lines, ReportConfig)
        if len(found) == 1:
            raise ConfigError(f"{source_name}{found[0]}") from None
        listed = "; ".join(p.removeprefix(", ").removeprefix(": ") for p in found)
        raise ConfigError(f"{source_name}: {len(found)} problems: {listed}") from None
    cfg._base_dir = Path(base_dir).resolve()
    cfg._lines = dict(lines)
    return cfg
