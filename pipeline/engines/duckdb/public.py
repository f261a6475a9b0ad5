"""Public partitions (DP mode): the listed cells loaded into DuckDB and expanded to every level.

Guarantees: the list is read into ``__public`` keyed like the cells (its values cast to the
dimension types, a row that does not convert refused as a config error); every listed cell is a
row of ``__dp_cells``, empty or not (zeros where no bounded unit contributed), and each margin
level lists the distinct projections of the listed cells.
"""

from __future__ import annotations

from typing import Any

from ...config import ReportConfig
from ...errors import ConfigError, first_line
from ...privacy.levels import levels
from ..base import Source
from .cells import dim_key, dimension_expr
from .sql import ident


def load_public_partitions(cfg: ReportConfig, con: Any, source: Source) -> int:
    """Load ``privacy.public_partitions`` into ``__public`` keyed like the cells. Returns its size."""
    import duckdb

    assert cfg.privacy is not None and cfg.privacy.public_partitions is not None
    path = cfg.resolve(cfg.privacy.public_partitions)
    if not path.is_file():
        raise ConfigError(f"privacy.public_partitions: file not found ({path})")
    try:  # the list is public configuration, not data: read here (any engine), then registered
        local = duckdb.connect()
        rel = local.read_csv(str(path)) if path.suffix.lower() in (".csv", ".txt") else local.read_parquet(str(path))
        listed = rel.arrow()
        listed = listed.read_all() if hasattr(listed, "read_all") else listed
        local.close()
    except duckdb.Error as exc:
        raise ConfigError(f"privacy.public_partitions: cannot read {path}: {first_line(exc)}") from None
    cols = list(listed.column_names)
    names = [d.name for d in cfg.dims]
    missing = [n for n in names if n not in cols]
    if missing:
        raise ConfigError(
            f"privacy.public_partitions: {path} lacks column(s) {', '.join(missing)} (needs one column per dimension: {', '.join(names)})"
        )
    con.register("__public_raw", listed)
    keys = con.execute(
        "SELECT " + ", ".join(
            f"{dimension_expr(d, source.schema.get(d.column, 'VARCHAR'))} AS {dim_key(i)}" for i, d in enumerate(cfg.dims)
        ) + " FROM __src LIMIT 0"
    ).arrow()
    key_types = [(f.name, duckdb_type_of(f.type)) for f in keys.schema]
    casts = ", ".join(f"TRY_CAST({ident(n)} AS {t[1]}) AS {dim_key(i)}" for i, (n, t) in enumerate(zip(names, key_types, strict=True)))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __public AS SELECT DISTINCT {casts} FROM __public_raw")
        bad = con.execute(
            "SELECT count(*) FROM __public_raw r WHERE " + " OR ".join(
                f"(r.{ident(n)} IS NOT NULL AND TRY_CAST(r.{ident(n)} AS {t[1]}) IS NULL)"
                for n, t in zip(names, key_types, strict=True))
        ).fetchall()[0][0]
    except con.Error as exc:
        raise ConfigError(f"privacy.public_partitions: {first_line(exc)}") from None
    if bad:
        raise ConfigError(f"privacy.public_partitions: {bad} row(s) of {path} do not match the dimension types")
    return int(con.execute("SELECT count(*) FROM __public").fetchall()[0][0])


def duckdb_type_of(t: Any) -> str:
    """An Arrow type in DuckDB's names (the SQL builders' vocabulary), for the casts of the list."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
    if pa.types.is_floating(t):
        return "DOUBLE" if t.bit_width == 64 else "FLOAT"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP WITH TIME ZONE" if t.tz else "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    raise ConfigError(f"privacy.public_partitions: a dimension of type {t} cannot be listed; list text, "
                      "number or date dimensions")


def expand_public(cfg: ReportConfig, con: Any) -> None:
    """Every public cell, empty or not (zeros where no bounded unit contributed).

    Margin levels list the distinct projections of the public cells (public as well).
    """
    keys = [dim_key(i) for i in range(len(cfg.dims))]
    described = con.execute("SELECT * FROM __dp_cells LIMIT 0").description  # column names, on any engine
    cols = [c[0] for c in described if c[0] not in keys and c[0] != "__level"]
    selects = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        proj = ", ".join([keys[i] if i in keep else f"NULL AS {keys[i]}" for i in range(len(keys))])
        pub = f"(SELECT DISTINCT {proj} FROM __public)"
        on = " AND ".join([f"p.{k} IS NOT DISTINCT FROM c.{k}" for k in keys] + [f"c.__level = {lv.index}"])
        sel = ", ".join([f"{lv.index} AS __level"] + [f"p.{k}" for k in keys] + [f"coalesce(c.{c}, 0) AS {c}" for c in cols])
        selects.append(f"SELECT {sel} FROM {pub} p LEFT JOIN __dp_cells c ON {on}")
    con.execute("CREATE OR REPLACE TEMP TABLE __dp_cells AS " + " UNION ALL BY NAME ".join(selects))
