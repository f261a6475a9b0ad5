"""DuckDB SQL (what the builders of :mod:`pipeline.engines.duckdb` write) → Spark SQL.

sqlglot does the translation at ``ErrorLevel.RAISE`` for both parse and unsupported constructs:
its default (WARN) silently drops arguments, e.g. the ``n`` of ``max(x, n)``, which would turn a
top-n list into one value. Before generating Spark SQL, the project's rewrite rules replace the
DuckDB constructs sqlglot cannot express in Spark:

- ``max(x, n)`` / ``min(x, n)`` (DuckDB: the ``n`` largest / smallest non-null values as a list)
  → ``slice(sort_array(collect_list(x), false|true), 1, n)`` (``collect_list`` skips nulls too).
- ``min_by(v, r, n)`` / ``max_by(v, r, n)`` (DuckDB: the ``v`` of the ``n`` rows with the smallest
  / largest ``r``, rows with a null ``v`` or ``r`` skipped) → ``transform(slice(sort_array(filter(
  collect_list(struct(r, v)), s -> s.v IS NOT NULL AND s.r IS NOT NULL), asc), 1, n), s -> s.v)``.
- ``isfinite(x)`` → ``NOT (isnan(x) OR abs(x) = CAST('Infinity' AS DOUBLE))`` (null for null).
- ``HUGEINT`` (DuckDB's 128-bit integer) → ``DECIMAL(38,0)``.
- ``row_number() OVER ()`` (no order: the builders use it only as a row identity within one
  materialised table) → ``monotonically_increasing_id()`` (unique, not consecutive).
- ``list_sum(l)`` → ``aggregate(l, CAST(0 AS DECIMAL(38,6)), (acc, v) -> CAST(acc + v AS
  DECIMAL(38,6)))``: exact, as DuckDB's sum of a DECIMAL(18|38, 6) or BIGINT list (the builders sum
  clamped values and row counts only), so Linf-bounded sums equal DuckDB's to the last digit.
- ``CAST(('0x' || s) AS BIGINT)`` (DuckDB reads a hex string) → ``CAST(conv(s, 16, 10) AS BIGINT)``
  (the keyed hashes of DP bounding; the builders use at most 8 hex digits, so both are exact).
- ``hash(a, …)`` (DuckDB: a 64-bit hash; Spark's ``hash`` is 32-bit Murmur3) → ``xxhash64(a, …)``,
  and ``UBIGINT`` → ``BIGINT`` (xxhash64 is signed). The builders use ``hash`` only for the
  difference check's per-person digests, compared for equality within one engine's history
  (:meth:`pipeline.state.history.History.store`), so 64 bits either way and the same collision odds.
- ``first(x ORDER BY k1, …)`` (ascending keys only) → ``min_by(x, named_struct('k0', k1, …))``:
  the value on the row with the smallest keys (the builders' keys are never null, and end with a
  unique one, so there is no tie to break differently).

Guarantee: :func:`to_spark` either returns Spark SQL for every statement of ``sql`` or raises
:class:`UnsupportedSQL` naming the construct; it never returns a statement with a dropped part.
"""

from __future__ import annotations

from typing import Any


class UnsupportedSQL(ValueError):
    """A DuckDB statement that the translation cannot express in Spark SQL."""


def _top_n(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, (exp.Max, exp.Min)) and node.args.get("count") is not None:
        descending = isinstance(node, exp.Max)
        collected = exp.Anonymous(this="collect_list", expressions=[node.this.copy()])
        ordered = exp.Anonymous(this="sort_array", expressions=[collected, exp.Boolean(this=not descending)])
        return exp.Anonymous(this="slice", expressions=[ordered, exp.Literal.number(1), node.args["count"].copy()])
    return node


def _by_n(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, (exp.ArgMin, exp.ArgMax)) and node.args.get("count") is not None:
        value, key = node.this.copy(), node.expression.copy()
        s = exp.to_identifier("__s")
        pair = exp.Anonymous(this="named_struct", expressions=[
            exp.Literal.string("r"), key, exp.Literal.string("v"), value])
        not_null = exp.and_(
            exp.Not(this=exp.Is(this=exp.Dot(this=exp.column(s), expression=exp.to_identifier("v")), expression=exp.Null())),
            exp.Not(this=exp.Is(this=exp.Dot(this=exp.column(s), expression=exp.to_identifier("r")), expression=exp.Null())),
        )
        kept = exp.Anonymous(this="filter", expressions=[
            exp.Anonymous(this="collect_list", expressions=[pair]), exp.Lambda(this=not_null, expressions=[s])])
        ordered = exp.Anonymous(this="sort_array", expressions=[kept, exp.Boolean(this=isinstance(node, exp.ArgMin))])
        first_n = exp.Anonymous(this="slice", expressions=[ordered, exp.Literal.number(1), node.args["count"].copy()])
        pick = exp.Lambda(this=exp.Dot(this=exp.column(s), expression=exp.to_identifier("v")), expressions=[s])
        return exp.Anonymous(this="transform", expressions=[first_n, pick])
    return node


def _list_sum(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "list_sum" and len(node.expressions) == 1:
        acc, v = exp.to_identifier("__acc"), exp.to_identifier("__v")
        exact = exp.DataType.build("DECIMAL(38,6)")
        total = exp.Cast(this=exp.Add(this=exp.column(acc), expression=exp.column(v)), to=exact)
        merge = exp.Lambda(this=total, expressions=[acc, v])
        zero = exp.Cast(this=exp.Literal.number(0), to=exact.copy())
        return exp.Anonymous(this="aggregate", expressions=[node.expressions[0].copy(), zero, merge])
    return node


def _isfinite(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "isfinite" and len(node.expressions) == 1:
        x = node.expressions[0]
        inf = exp.Cast(this=exp.Literal.string("Infinity"), to=exp.DataType.build("DOUBLE"))
        nan = exp.Anonymous(this="isnan", expressions=[x.copy()])
        return exp.Not(this=exp.Paren(this=exp.or_(nan, exp.EQ(this=exp.Abs(this=x.copy()), expression=inf))))
    return node


def _hugeint(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.INT128, exp.DataType.Type.UINT128):
        return exp.DataType.build("DECIMAL(38,0)")
    return node


def _row_identity(node: Any) -> Any:
    from sqlglot import exp

    if (isinstance(node, exp.Window) and isinstance(node.this, exp.RowNumber)
            and not node.args.get("partition_by") and not node.args.get("order")):
        return exp.Anonymous(this="monotonically_increasing_id", expressions=[])
    return node


def _hex_cast(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.BIGINT:
        inner = node.this.this if isinstance(node.this, exp.Paren) else node.this
        if (isinstance(inner, exp.DPipe) and isinstance(inner.this, exp.Literal) and inner.this.is_string
                and inner.this.this.lower() == "0x"):
            conv = exp.Anonymous(this="conv", expressions=[
                inner.expression.copy(), exp.Literal.number(16), exp.Literal.number(10)])
            return exp.Cast(this=conv, to=exp.DataType.build("BIGINT"))
    return node


def _hash64(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous) and str(node.this).lower() == "hash" and node.expressions:
        return exp.Anonymous(this="xxhash64", expressions=[e.copy() for e in node.expressions])
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.UBIGINT:
        return exp.DataType.build("BIGINT")
    return node


def _ordered_first(node: Any) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.First) and isinstance(node.this, exp.Order):
        keys = node.this.expressions
        if any(k.args.get("desc") for k in keys):
            raise UnsupportedSQL("cannot translate to Spark SQL: first(… ORDER BY … DESC)")
        fields: list[Any] = []
        for i, k in enumerate(keys):
            fields += [exp.Literal.string(f"k{i}"), k.this.copy()]
        return exp.Anonymous(this="min_by", expressions=[
            node.this.this.copy(), exp.Anonymous(this="named_struct", expressions=fields)])
    return node


RULES = (_top_n, _by_n, _list_sum, _isfinite, _hugeint, _row_identity, _hex_cast, _hash64, _ordered_first)


def to_spark(sql: str) -> list[str]:
    """Every statement of the DuckDB ``sql`` as Spark SQL (raises :class:`UnsupportedSQL`)."""
    import sqlglot
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        trees = sqlglot.parse(sql, read="duckdb", error_level=ErrorLevel.RAISE)
        out = []
        for tree in trees:
            if tree is None:
                continue
            for rule in RULES:
                tree = tree.transform(rule)
            out.append(tree.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE))
        return out
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedSQL(f"cannot translate to Spark SQL: {first}") from None
