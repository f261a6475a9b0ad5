"""The Spark implementation of the engine boundary (issue 17, in progress): the statements the
DuckDB builders write, translated by :mod:`pipeline.engines.spark.dialect` and run by PySpark.

What DuckDB does with tables, Spark does with cached DataFrames registered as temporary views:

- ``CREATE [OR REPLACE] TEMP TABLE t AS SELECT …`` → the SELECT's DataFrame, cached, as view ``t``;
  ``CREATE TEMP TABLE t (columns)`` → an empty view with that schema;
- ``INSERT INTO t SELECT …`` / ``VALUES`` → ``t`` ∪ the rows (a new cached view);
- ``UPDATE t SET c = v WHERE p`` → ``t`` with ``c`` replaced by ``CASE WHEN p THEN v ELSE c END``;
- ``ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c T`` → ``t`` with a null column ``c``;
- ``DROP TABLE [IF EXISTS] t`` → the view dropped.

Values are bound by replacing ``$n`` / ``?`` placeholders with typed literals in the syntax tree
(never by text substitution). Only aggregates are collected to the driver: results are read with
``toArrow`` or ``collect`` of what a query returns, and temp tables stay in Spark.
"""

from __future__ import annotations

from typing import Any

from .dialect import UnsupportedSQL, to_spark


class SparkResult:
    """A query result (read once), the same surface as the DuckDB engine's."""

    def __init__(self, df: Any) -> None:
        self._df = df

    @property
    def description(self) -> Any:
        return [(f.name, str(f.dataType)) for f in self._df.schema.fields] if self._df is not None else None

    def fetchall(self) -> list[tuple]:
        return [] if self._df is None else [tuple(r) for r in self._df.collect()]

    def fetchone(self) -> tuple | None:
        rows = [] if self._df is None else self._df.take(1)
        return tuple(rows[0]) if rows else None

    def arrow(self) -> Any:
        return self._df.toArrow()

    def fetchnumpy(self) -> dict[str, Any]:
        table = self.arrow()
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _literal(value: Any) -> Any:
    from sqlglot import exp

    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return exp.Literal.number(repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, (list, tuple)):
        return exp.Array(expressions=[_literal(v) for v in value])
    return exp.Literal.string(str(value))


def bind(tree: Any, params: Any) -> Any:
    """Replace ``$n`` and ``?`` placeholders of a parsed statement with literals of ``params``."""
    from sqlglot import exp

    if not params:
        return tree
    params = list(params)
    position = [0]

    def swap(node: Any) -> Any:
        if isinstance(node, exp.Parameter):
            return _literal(params[int(node.name) - 1])
        if isinstance(node, exp.Placeholder):
            if node.name and node.name.isdigit():
                return _literal(params[int(node.name) - 1])
            position[0] += 1
            return _literal(params[position[0] - 1])
        return node

    return tree.transform(swap)


class SparkEngine:
    """One Spark session's view of a run: temp views live in it; only aggregates leave it."""

    name = "spark"

    def __init__(self, spark: Any) -> None:
        from pyspark.errors import PySparkException

        self.spark = spark
        self.Error: type[Exception] = PySparkException
        self._cached: dict[str, Any] = {}

    # ----- statements ------------------------------------------------------------------------
    def execute(self, sql: str, params: Any = None) -> SparkResult:
        import sqlglot
        from sqlglot import exp
        from sqlglot.errors import ErrorLevel

        result: Any = None
        for tree in sqlglot.parse(sql, read="duckdb", error_level=ErrorLevel.RAISE):
            if tree is None:
                continue
            tree = bind(tree, params)
            if isinstance(tree, exp.Create) and tree.kind == "TABLE":
                self._create(tree)
            elif isinstance(tree, exp.Insert):
                self._insert(tree)
            elif isinstance(tree, exp.Update):
                self._update(tree)
            elif isinstance(tree, exp.Alter):
                self._alter(tree)
            elif isinstance(tree, exp.Drop):
                self.spark.catalog.dropTempView(tree.this.name)
                self._cached.pop(tree.this.name, None)
            elif isinstance(tree, exp.Query):
                result = self._df(tree)
            else:
                raise UnsupportedSQL(f"cannot run on Spark: {tree.key} statements ({' '.join(sql.split())[:80]})")
        return SparkResult(result)

    def executemany(self, sql: str, rows: Any) -> None:
        for row in rows:
            self.execute(sql, row)

    def run(self, q: Any) -> SparkResult:
        return self.execute(q.sql, q.params)

    # ----- helpers ---------------------------------------------------------------------------
    def _df(self, tree: Any) -> Any:
        """A query's DataFrame. ``WITH`` blocks become cached views first (DuckDB's ``MATERIALIZED``
        hint is kept in spirit: each is computed once), and ``UNION ALL BY NAME`` (which Spark SQL
        lacks) becomes ``unionByName`` with missing columns as nulls, as DuckDB fills them."""
        from sqlglot import exp

        tree = tree.copy()
        w = tree.args.get("with_") or tree.args.get("with")
        if w is not None:
            for cte in w.expressions:
                self._register(cte.alias, self._df(cte.this))
            tree.set("with_", None)
            tree.set("with", None)
        if isinstance(tree, exp.Union) and tree.args.get("by_name"):
            if tree.args.get("distinct"):
                raise UnsupportedSQL("cannot run on Spark: UNION BY NAME without ALL")
            return self._df(tree.this).unionByName(self._df(tree.expression), allowMissingColumns=True)
        return self.spark.sql(_spark_sql(tree))

    def _register(self, name: str, df: Any) -> None:
        old = self._cached.get(name)
        df = df.cache()
        df.count()  # materialise now: later statements replace the views it was computed from
        df.createOrReplaceTempView(name)
        self._cached[name] = df
        if old is not None:
            old.unpersist()

    def _table(self, name: str) -> Any:
        return self.spark.table(name)

    def _create(self, tree: Any) -> None:
        from sqlglot import exp

        name = tree.this.this.name if isinstance(tree.this, exp.Schema) else tree.this.name
        if tree.expression is not None:
            self._register(name, self._df(tree.expression))
            return
        cols = [c for c in tree.this.expressions if isinstance(c, exp.ColumnDef)]
        ddl = ", ".join(f"`{c.name}` {_spark_type(c.args['kind'])}" for c in cols)
        self._register(name, self.spark.createDataFrame([], ddl))

    def _insert(self, tree: Any) -> None:
        from sqlglot import exp

        name = tree.this.this.name if isinstance(tree.this, exp.Schema) else tree.this.name
        target = self._table(name)
        src = tree.expression
        if isinstance(src, exp.Values):
            rows = [[_python(v) for v in t.expressions] for t in src.expressions]
            new = self.spark.createDataFrame(rows, target.schema)
        else:
            new = self._df(src)
            if isinstance(tree.this, exp.Schema):
                names = [c.name for c in tree.this.expressions]
                new = new.toDF(*names).select(*target.columns)
        self._register(name, target.unionByName(new))

    def _update(self, tree: Any) -> None:
        """``UPDATE t SET c = v WHERE p``: ``c`` becomes ``CASE WHEN p THEN v ELSE c END``. A
        ``x IN (SELECT …)`` in ``p`` (Spark allows those only in filters) is a left join with the
        subquery's distinct values instead; under a NOT (where null and false differ) it is refused."""
        from pyspark.sql import functions as F  # noqa: N812
        from sqlglot import exp

        name = tree.this.name
        df = self._table(name)
        where = tree.args.get("where")
        cond_tree = where.this.copy() if where is not None else exp.true()
        subqueries = [n for n in cond_tree.find_all(exp.In)
                      if n.args.get("query") is not None and n.find_ancestor(exp.Select) is None]
        if len(subqueries) > 1:
            raise UnsupportedSQL("cannot run on Spark: UPDATE with more than one IN subquery")
        if subqueries:
            node = subqueries[0]
            if any(isinstance(a, exp.Not) for a in node.iter_expressions()) or node.find_ancestor(exp.Not):
                raise UnsupportedSQL("cannot run on Spark: UPDATE with NOT IN (subquery)")
            query = node.args["query"]
            query = query.this if isinstance(query, exp.Subquery) else query
            sub = self._df(query)
            sub = sub.select(sub.columns[0]).distinct().withColumnRenamed(sub.columns[0], "__upd_k")
            sub = sub.withColumn("__upd_hit", F.lit(True))
            df = df.withColumn("__upd_k", F.expr(_spark_sql(node.this))).join(F.broadcast(sub), "__upd_k", "left")
            node.replace(exp.func("coalesce", exp.column("__upd_hit"), exp.false()))
        cond = _spark_sql(cond_tree)
        for eq in tree.expressions:
            col, value = eq.this.name, _spark_sql(eq.expression)
            df = df.withColumn(col, F.expr(f"CASE WHEN {cond} THEN {value} ELSE `{col}` END"))
        self._register(name, df.drop("__upd_k", "__upd_hit"))

    def _alter(self, tree: Any) -> None:
        from pyspark.sql import functions as F  # noqa: N812
        from sqlglot import exp

        name = tree.this.name
        df = self._table(name)
        for action in tree.args.get("actions") or []:
            if not isinstance(action, exp.ColumnDef):
                raise UnsupportedSQL(f"cannot run on Spark: ALTER TABLE {action.key}")
            if action.name not in df.columns:
                df = df.withColumn(action.name, F.lit(None).cast(_spark_type(action.args["kind"])))
        self._register(name, df)

    # ----- sources ---------------------------------------------------------------------------
    def register(self, name: str, table: Any) -> None:
        """An Arrow table (aggregates only) as view ``name``."""
        self._register(name, self.spark.createDataFrame(table.to_pandas()))

    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)

    def close(self) -> None:
        for df in self._cached.values():
            df.unpersist()
        self._cached.clear()


def _spark_sql(node: Any) -> str:
    [text] = to_spark(node.sql(dialect="duckdb"))
    return text


def _spark_type(kind: Any) -> str:
    from sqlglot import exp

    return exp.DataType.build(kind.sql(dialect="duckdb"), dialect="duckdb").sql(dialect="spark")


def _python(value: Any) -> Any:
    from sqlglot import exp

    if isinstance(value, exp.Null):
        return None
    if isinstance(value, exp.Boolean):
        return bool(value.this)
    if isinstance(value, exp.Literal):
        if value.is_string:
            return value.this
        text = value.this
        return float(text) if any(ch in text for ch in ".eE") else int(text)
    raise UnsupportedSQL(f"cannot run on Spark: VALUES with {value.sql(dialect='duckdb')}")
