"""The Spark implementation of the engine boundary (issue 17, in progress): the statements the
DuckDB builders write, translated by :mod:`pipeline.engines.spark.dialect` and run by PySpark.

What DuckDB does with tables, Spark does with cached DataFrames registered as temporary views:

- ``CREATE [OR REPLACE] TEMP TABLE t AS SELECT …`` → the SELECT's DataFrame, cached, as view ``t``;
- ``CREATE [OR REPLACE] TEMP VIEW v AS SELECT …`` → the SELECT's DataFrame as view ``v`` (not cached);
  ``CREATE TEMP TABLE t (columns)`` → an empty view with that schema;
- ``INSERT INTO t SELECT …`` / ``VALUES`` → ``t`` ∪ the rows (a new cached view);
- ``UPDATE t SET c = v WHERE p`` → ``t`` with ``c`` replaced by ``CASE WHEN p THEN v ELSE c END``;
- ``ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c T`` → ``t`` with a null column ``c``;
- ``DROP TABLE [IF EXISTS] t`` → the view dropped;
- ``DELETE FROM t WHERE p`` → ``t`` without the rows where ``p`` is true (kept where false or null);
- the release history's tables ``__hist.<t>`` (:meth:`SparkEngine.attach_history`) → views
  ``__hist__<t>`` over Parquet segments; ``BEGIN`` … ``COMMIT`` writes the rows appended as one
  new segment per table (a table changed otherwise is written whole) and then switches
  ``CURRENT.json`` to them in one rename (a crash before leaves the previous history whole);
  ``DELETE … WHERE release_id = …`` of a stored table drops that release from the segment lists;
  ``ROLLBACK`` drops the changes.

Values are bound by replacing ``$n`` / ``?`` placeholders with typed literals in the syntax tree
(never by text substitution). Only aggregates are collected to the driver: results are read with
``toArrow`` or ``collect`` of what a query returns, and temp tables stay in Spark.
"""

from __future__ import annotations

import math
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
        """The result as Arrow, every column nullable (as DuckDB returns it: the published files'
        schemas do not depend on the engine)."""
        import pyarrow as pa

        table = self._df.toArrow()
        return table.cast(pa.schema([f.with_nullable(True) for f in table.schema]))

    def fetchnumpy(self) -> dict[str, Any]:
        table = self.arrow()
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _literal(value: Any) -> Any:
    from sqlglot import exp

    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, float) and not math.isfinite(value):  # ±inf and NaN: Spark's special DOUBLE strings
        text = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))
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
        self._hist: Any = None  # the attached history's store (a folder), if any
        self._hist_tables: set[str] = set()  # its tables, as views __hist__<t>
        self._hist_dirty: set[str] = set()  # tables rewritten since the attach (written whole at COMMIT)
        self._hist_segments: dict[str, Any] = {}  # per table: its schema and stored segments (CURRENT.json)
        self._hist_added: dict[str, list[Any]] = {}  # per table: rows appended since the attach
        self._hist_removed: dict[str, set[str]] = {}  # per table: releases deleted since the attach

    # ----- statements ------------------------------------------------------------------------
    def execute(self, sql: str, params: Any = None) -> SparkResult:
        import sqlglot
        from sqlglot import exp
        from sqlglot.errors import ErrorLevel

        result: Any = None
        for tree in sqlglot.parse(sql, read="duckdb", error_level=ErrorLevel.RAISE):
            if tree is None:
                continue
            tree = bind(tree, params).transform(_history_view)
            if isinstance(tree, exp.Transaction):
                continue  # the history's changes are kept apart until COMMIT anyway
            if isinstance(tree, exp.Commit):
                self._commit_history()
            elif isinstance(tree, exp.Rollback):
                self._load_history_views()  # the stored history again, the changes dropped
            elif isinstance(tree, exp.Delete):
                self._delete(tree)
            elif isinstance(tree, exp.Create) and tree.kind == "TABLE":
                self._create(tree)
            elif isinstance(tree, exp.Create) and tree.kind == "VIEW" and tree.expression is not None:
                self._view(tree)
            elif isinstance(tree, exp.Insert):
                self._insert(tree)
            elif isinstance(tree, exp.Update):
                self._update(tree)
            elif isinstance(tree, exp.Alter):
                self._alter(tree)
            elif isinstance(tree, exp.Drop):
                for table in tree.args.get("tables") or ([tree.this] if tree.this is not None else []):
                    self.spark.catalog.dropTempView(table.name)
                    old = self._cached.pop(table.name, None)
                    if old is not None:
                        old.unpersist()
            elif isinstance(tree, exp.Query):
                result = self._df(tree)
            else:
                raise UnsupportedSQL(f"cannot run on Spark: {tree.key} statements ({' '.join(sql.split())[:80]})")
        return SparkResult(result)

    def executemany(self, sql: str, rows: Any) -> None:
        """``sql`` once per row of parameters; ``INSERT … VALUES`` of all rows as one DataFrame."""
        import sqlglot
        from sqlglot import exp
        from sqlglot.errors import ErrorLevel

        rows = [list(r) for r in rows]
        trees = [t for t in sqlglot.parse(sql, read="duckdb", error_level=ErrorLevel.RAISE) if t is not None]
        if len(trees) == 1 and isinstance(trees[0], exp.Insert) and isinstance(trees[0].expression, exp.Values):
            if not rows:
                return
            values = [bind(trees[0].expression.copy(), r).expressions[0] for r in rows]
            tree = trees[0].copy()
            tree.set("expression", exp.Values(expressions=values))
            self._insert(tree.transform(_history_view))
            return
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
        for w in list(tree.find_all(exp.With)):  # outer blocks first; the builders' CTE names are unique
            for cte in w.expressions:
                self._register(cte.alias, self._df(cte.this))
            w.pop()
        if isinstance(tree, exp.Union) and tree.args.get("by_name"):
            if tree.args.get("distinct"):
                raise UnsupportedSQL("cannot run on Spark: UNION BY NAME without ALL")
            return self._df(tree.this).unionByName(self._df(tree.expression), allowMissingColumns=True)
        return self.spark.sql(_spark_sql(tree))

    def _register(self, name: str, df: Any) -> None:
        if name.startswith(HISTORY_PREFIX):
            if self._hist is None:
                raise UnsupportedSQL(f"cannot run on Spark: {name} changed while no release history is attached")
            self._hist_tables.add(name[len(HISTORY_PREFIX):])
            self._hist_dirty.add(name[len(HISTORY_PREFIX):])  # any change but an append or a release's delete
        old = self._cached.get(name)
        # materialised now, with its lineage cut: a table is its rows, as in DuckDB. A cache()
        # would not do: replacing (unpersisting) any table it was computed from makes Spark
        # recompute it from that lineage later, every statement slower than the one before
        # (and monotonically_increasing_id ids drawn again)
        df = df.localCheckpoint(eager=True)
        df.createOrReplaceTempView(name)
        self._cached[name] = df
        if old is not None:
            old.unpersist()

    def _table(self, name: str) -> Any:
        return self.spark.table(name)

    def _create(self, tree: Any) -> None:
        from sqlglot import exp

        name = tree.this.this.name if isinstance(tree.this, exp.Schema) else tree.this.name
        if tree.args.get("exists") and self.spark.catalog.tableExists(name):
            return  # CREATE TABLE IF NOT EXISTS of a table that exists
        if tree.expression is not None:
            self._register(name, self._df(tree.expression))
            return
        cols = [c for c in tree.this.expressions if isinstance(c, exp.ColumnDef)]
        ddl = ", ".join(f"`{c.name}` {_spark_type(c.args['kind'])}" for c in cols)
        self._register(name, self.spark.createDataFrame([], ddl))

    def _view(self, tree: Any) -> None:
        """``CREATE [OR REPLACE] TEMP VIEW v AS SELECT …``: the SELECT's DataFrame as view ``v``, not
        cached (its inputs are resolved now; the builders never replace a view's inputs after it)."""
        name = tree.this.name
        old = self._cached.pop(name, None)
        self._df(tree.expression).createOrReplaceTempView(name)
        if old is not None:
            old.unpersist()

    def _insert(self, tree: Any) -> None:
        from sqlglot import exp

        name = tree.this.this.name if isinstance(tree.this, exp.Schema) else tree.this.name
        from pyspark.sql import functions as F  # noqa: N812
        from pyspark.sql import types as T  # noqa: N812

        target = self._table(name)
        # the columns given, else all of them in table order (DuckDB's INSERT is positional)
        names = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else target.columns
        types = {f.name: f.dataType for f in target.schema.fields}
        src = tree.expression
        if isinstance(src, exp.Values):
            rows = [[_python(v) for v in t.expressions] for t in src.expressions]
            new = self.spark.createDataFrame(rows, T.StructType([T.StructField(n, types[n]) for n in names]))
        else:
            new = self._df(src)
            if len(new.columns) != len(names):
                raise UnsupportedSQL(f"cannot run on Spark: INSERT INTO {name} of {len(new.columns)} columns "
                                     f"into {len(names)}")
            new = new.toDF(*names)
        new = new.select(*[(F.col(f"`{c}`").cast(types[c]) if c in names else F.lit(None).cast(types[c])).alias(c)
                           for c in target.columns])
        table = self._stored_history_table(name)
        if table is not None:
            # an append to a stored history table: only the new rows are kept (and written at
            # COMMIT as a segment of their own), the table read lazily over its stored segments
            new = new.localCheckpoint(eager=True)
            self._hist_added.setdefault(table, []).append(new)
            target.unionByName(new).createOrReplaceTempView(name)
            return
        # a union's partitions are both inputs' partitions: coalesce, or repeated inserts (one per
        # row of executemany, one per history record) make every later scan slower
        self._register(name, target.unionByName(new).coalesce(self._partitions()))

    def _stored_history_table(self, name: str) -> str | None:
        """The history table a view ``name`` holds, when it is stored and not rewritten since the
        attach (its appends and release deletes are kept apart for COMMIT), else None."""
        table = name[len(HISTORY_PREFIX):]
        if name.startswith(HISTORY_PREFIX) and table not in self._hist_dirty and table in self._hist_segments:
            return table
        return None

    def _partitions(self) -> int:
        return max(1, int(self.spark.conf.get("spark.sql.shuffle.partitions") or 8))

    def _delete(self, tree: Any) -> None:
        """``DELETE FROM t WHERE p``: ``t`` keeps the rows where ``p`` is false or null."""
        from sqlglot import exp

        name = tree.this.name
        where = tree.args.get("where")
        table = self._stored_history_table(name)
        release = _release_equals(where)
        if table is not None and release is not None:
            # a release's rows deleted from a stored history table (a rerun re-records its id):
            # dropped from the segments' list of live releases at COMMIT, not rewritten
            from pyspark.sql import functions as F  # noqa: N812

            self._hist_removed.setdefault(table, set()).add(release)
            self._hist_added[table] = [df.where(F.col("release_id") != release) for df in self._hist_added.get(table, [])]
            self._table(name).where(F.col("release_id") != release).createOrReplaceTempView(name)
            return
        keep = exp.select("*").from_(exp.to_table(name))
        if where is not None:
            keep = keep.where(exp.Not(this=exp.Paren(this=exp.func("coalesce", where.this.copy(), exp.false()))))
        else:
            keep = keep.where(exp.false())
        self._register(name, self._df(keep))

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
        changed = False
        for action in tree.args.get("actions") or []:
            if not isinstance(action, exp.ColumnDef):
                raise UnsupportedSQL(f"cannot run on Spark: ALTER TABLE {action.key}")
            if action.name not in df.columns:
                df = df.withColumn(action.name, F.lit(None).cast(_spark_type(action.args["kind"])))
                changed = True
        if changed:  # ADD COLUMN IF NOT EXISTS of a column that exists changes nothing
            self._register(name, df)

    # ----- sources ---------------------------------------------------------------------------
    def open_source(self, cfg: Any) -> Any:
        """``__src`` over the configured Parquet files (Spark reads them; only footers are read
        here, for the per-file row counts), with the schema in DuckDB's type names (the builders'
        vocabulary) and the same fingerprint as the DuckDB engine computes."""
        import hashlib
        import os

        from ...config import source_url
        from ...errors import ConfigError
        from ..base import Source, default_source_id, detect_format

        fmt = detect_format(cfg)
        if fmt not in ("parquet", "csv"):
            raise ConfigError(f"{cfg.where('source', 'format')}: the Spark engine reads Parquet and CSV sources "
                              f"(this one is {fmt}); convert it or use engine.kind: duckdb")
        url = source_url(cfg.source.path)
        stats = self._list_url(url) if url else self._list_local(cfg, fmt)
        files = [f.path for f in stats]
        if fmt == "csv":
            df = self._read_csv(cfg, [str(f) for f in files])
        else:
            df = self.spark.read.parquet(*[str(f) for f in files])
        df.createOrReplaceTempView("__src")
        schema = {field.name: duckdb_type(field.dataType) for field in df.schema.fields}
        exclusions: list[dict[str, Any]] = []
        if cfg.exclude_units and cfg.privacy_unit in schema:
            from ..duckdb.exclusions import apply_exclusions

            df.createOrReplaceTempView("__src_all")  # the unfiltered rows; __src becomes the filtered view
            exclusions = apply_exclusions(cfg, self, schema)  # before anything else reads the source
            df = self.spark.table("__src")
        if not df.take(1):
            from ...errors import SourceError

            raise SourceError(f"source {cfg.source.path!r} holds no rows ({len(files)} file(s)); "
                              "an empty export is refused rather than published as an empty report: check the export")
        fp = hashlib.sha256()
        real = (lambda p: p) if url else os.path.realpath  # noqa: E731 - a URL is its own name
        for f in sorted(stats, key=lambda f: real(f.path)):
            fp.update(f"{real(f.path)}\x00{f.size_bytes}\x00{f.mtime_ns}\x00{f.rows}\n".encode())
        return Source(format=fmt, files=stats, schema=schema, table=None, source_id=default_source_id(cfg),
                      fingerprint=fp.hexdigest(), extra={"exclusions": exclusions} if exclusions else {})

    @staticmethod
    def _list_local(cfg: Any, fmt: str) -> list[Any]:
        """The source's local files (:func:`~pipeline.engines.base.resolve_files`) with their size,
        time and, for Parquet, the row count in their footer; an empty or unreadable file refused."""
        import os

        import pyarrow.parquet as pq

        from ...errors import SourceError
        from ..base import SourceFile, resolve_files

        stats = []
        for f in resolve_files(cfg):
            st = os.stat(f)
            if st.st_size == 0:
                raise SourceError(f"source file {f} is empty (0 bytes); re-export it or remove it from the source")
            rows = None
            if fmt == "parquet":
                try:
                    rows = pq.ParquetFile(f).metadata.num_rows
                except Exception as exc:  # noqa: BLE001 - any unreadable footer is the same problem
                    raise SourceError(f"source file {f} is not a readable Parquet file ({exc}); re-export it") from None
            stats.append(SourceFile(str(f), st.st_size, st.st_mtime_ns, rows))
        return stats

    def _list_url(self, url: str) -> list[Any]:
        """The files a source URL names (a file, a folder read recursively, or a glob), listed by
        Spark's file system (``binaryFile``: path, size and modification time only, never the
        content), hidden files (``_SUCCESS``, ``.crc``) skipped, sorted. Row counts per file are
        not read (their footers are remote): the manifest shows them as unknown."""
        from pyspark.sql import functions as F  # noqa: N812

        from ...errors import SourceError, first_line
        from ..base import SourceFile

        try:
            listing = (self.spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(url)
                       .select("path", "length", "modificationTime")
                       .where(~F.element_at(F.split("path", "/"), -1).rlike(r"^[._]")).collect())
        except self.Error as exc:
            raise SourceError(f"source.path {url!r}: cannot list it ({first_line(exc)}); check the URL and "
                              "that the cluster can reach it") from None
        if not listing:
            raise SourceError(f"source.path {url!r}: no files there; check the URL and that the export ran")
        out = []
        for row in sorted(listing, key=lambda r: r["path"]):
            if not row["length"]:
                raise SourceError(f"source file {row['path']} is empty (0 bytes); re-export it or remove it "
                                  "from the source")
            mtime_ns = int(row["modificationTime"].timestamp() * 1_000_000) * 1000
            out.append(SourceFile(str(row["path"]), int(row["length"]), mtime_ns, None))
        return out

    def _read_csv(self, cfg: Any, names: list[str]) -> Any:
        """The CSV files as a DataFrame with the strictness of the DuckDB reader, checked inside Spark
        (only file names, column names and counts reach the driver, never a line's content):

        - the dialect is pinned (``source.csv`` or its defaults), never guessed; a quoted empty field
          is the empty string, an empty field NULL; a doubled quote is a quote;
        - every file's header line must equal the first file's, and name no column twice;
        - a line with more or fewer fields than the header, or a broken quote, is refused (Spark's
          malformed-record flag), naming the file and how many lines (Spark cannot tell the line);
        - bytes that are not UTF-8 (Spark reads them as U+FFFD) are refused;
        - each column's type is the first of BIGINT, DOUBLE, BOOLEAN, DATE, TIMESTAMP that every
          non-null value of it converts to exactly (checked over all rows), else VARCHAR. DuckDB's
          sniffer decides from a sample and refuses lines that disagree; on files whose columns
          are uniformly typed both engines read the same types and values.
        """
        from pyspark.sql import functions as F  # noqa: N812
        from pyspark.sql import types as T  # noqa: N812

        from ...config.models import CsvOptions
        from ...errors import SourceError

        opts = cfg.source.csv
        if opts is None:
            tsv = cfg.source.path.lower().endswith((".tsv", ".tsv.gz"))
            opts = CsvOptions(delimiter="\t" if tsv else ",")
        read = {"sep": opts.delimiter, "quote": opts.quote, "escape": opts.quote, "multiLine": "true",
                "encoding": "UTF-8", "nullValue": None, "emptyValue": "", "ignoreLeadingWhiteSpace": "false",
                "ignoreTrailingWhiteSpace": "false"}
        read = {k: v for k, v in read.items() if v is not None}
        heads = []
        for n in names:  # the header rows (column names: metadata), one small job per file
            first = self.spark.read.options(**read).csv(n, header=False).limit(1).collect()
            heads.append([None if v is None else str(v) for v in first[0]] if first else [])
        header = heads[0]
        for n, h in zip(names[1:], heads[1:], strict=True):
            if h != header:
                missing = [c for c in header if c not in h][:3]
                extra = [c for c in h if c not in header][:3]
                detail = "; ".join([f"column {c!r} is missing" for c in missing]
                                   + [f"column {c!r} is not in the first file" for c in extra]) or \
                    "the columns are in a different order"
                raise SourceError(f"source file {n} has a different header from {names[0]} (schema drift: {detail}); "
                                  "make the files of one source agree or read them as separate sources")
        if not opts.header:
            header = [f"column{i}" for i in range(len(header))]  # DuckDB's names for a headerless file
        dups = sorted({h for h in header if header.count(h) > 1})
        if dups or any(h is None or h == "" for h in header):
            raise SourceError(f"source file {names[0]}: the header repeats or omits column name(s) "
                              f"{', '.join(map(repr, dups)) or '(an empty name)'}; give every column its own name")
        schema = T.StructType([T.StructField(h, T.StringType()) for h in header]
                              + [T.StructField("__corrupt", T.StringType())])
        raw = (self.spark.read.options(**read, mode="PERMISSIVE", columnNameOfCorruptRecord="__corrupt")
               .schema(schema).csv(names, header=opts.header)
               .withColumn("__file", F.input_file_name()).cache())  # the file name exists at scan time only
        bad = raw.where(F.col("__corrupt").isNotNull() | F.concat_ws("", *[F.col(f"`{h}`") for h in header])
                        .contains("\ufffd"))
        found = bad.groupBy("__file").agg(F.count("*").alias("n"),
                                          F.count(F.when(F.col("__corrupt").isNotNull(), 1)).alias("ragged")).collect()
        if found:
            row = sorted(found, key=lambda r: r["__file"])[0]
            total = sum(r["n"] for r in found)
            what = ("a line with more or fewer fields than the header, or a quote in the wrong place"
                    if row["ragged"] else "bytes that are not valid UTF-8 (re-encode the file as UTF-8, e.g. with iconv)")
            more = f" ({total} bad lines in all)" if total > 1 else ""
            raise SourceError(f"source file {row['__file']}: {what}{more}; fix the file "
                              "(bad lines are refused, never skipped silently; Spark does not report line numbers: "
                              "engine.kind: duckdb does)")
        return self._typed_csv(raw, header)

    def _typed_csv(self, raw: Any, header: list[str]) -> Any:
        """Each text column cast to the first type every non-null value of it converts to."""
        from pyspark.sql import functions as F  # noqa: N812

        checks = {
            "BIGINT": lambda c: c.rlike(r"^[+-]?[0-9]+$") & c.try_cast("bigint").isNotNull(),
            "DOUBLE": lambda c: c.rlike(r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"),
            "BOOLEAN": lambda c: F.lower(c).isin("true", "false"),
            "DATE": lambda c: c.rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$") & c.try_cast("date").isNotNull(),
            "TIMESTAMP": lambda c: (c.rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?$")
                                    & c.try_cast("timestamp_ntz").isNotNull()),
        }
        aggs = []
        for i, h in enumerate(header):
            col = F.col(f"`{h}`")
            aggs.append(F.count(col).alias(f"n{i}"))
            aggs += [F.count(F.when(check(col), 1)).alias(f"{t}{i}") for t, check in checks.items()]
        counts = raw.agg(*aggs).collect()[0]  # per column: how many values fit each type (counts only)
        spark_type = {"BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean", "DATE": "date",
                      "TIMESTAMP": "timestamp_ntz"}
        cols = []
        for i, h in enumerate(header):
            fits = [t for t in checks if counts[f"n{i}"] > 0 and counts[f"{t}{i}"] == counts[f"n{i}"]]
            col = F.col(f"`{h}`")
            cols.append(col.cast(spark_type[fits[0]]).alias(h) if fits else col.alias(h))
        return raw.select(*cols)

    def check_columns(self, cfg: Any, source: Any) -> None:
        from ..duckdb.sources import check_columns

        check_columns(cfg, source.schema)

    def content_digests(self, paths: list[str]) -> list[str]:
        """sha256 of each source file's bytes, sorted: local files (and ``file://`` URLs) read on
        the driver, other URLs (object storage) hashed by Spark (``binaryFile``; only the digests
        reach the driver)."""
        from ...config import file_url_path, source_url
        from ...state.protected import content_digests

        remote = [p for p in paths if source_url(p) and file_url_path(p) is None]
        local = [p for p in paths if p not in remote]
        return sorted(content_digests(local) + (self._digests_in_spark(remote) if remote else []))

    def _digests_in_spark(self, urls: list[str]) -> list[str]:
        """sha256 of each file's bytes, never read into Python: files up to ``BINARY_FILE_MAX``
        bytes hashed by Spark's executors (each one ``binaryFile`` row, which cannot hold more than
        2 GiB), larger ones streamed through a digest in the driver's JVM (Hadoop's file system:
        the bytes stay in the JVM). A Spark Connect session has no driver JVM to reach: a larger
        file there is refused, naming it and the fix."""
        from pyspark.sql import functions as F  # noqa: N812

        from ...errors import SourceError

        read = self.spark.read.format("binaryFile")
        sizes = {r["path"]: int(r["length"]) for r in read.load(urls).select("path", "length").collect()}
        small = [p for p, n in sizes.items() if n <= BINARY_FILE_MAX]
        large = sorted(p for p, n in sizes.items() if n > BINARY_FILE_MAX)
        digests = ([r[0] for r in read.load(small).select(F.sha2("content", 256)).collect()] if small else [])
        if large:
            jvm = getattr(getattr(self.spark, "_jvm", None), "org", None)
            if jvm is None:
                raise SourceError(
                    f"source file {large[0]} is {sizes[large[0]]:,} bytes: over Spark's 2 GiB per-file limit "
                    "for hashing it in the cluster, and a Spark Connect session cannot stream it through the "
                    "driver; write the export as files under 2 GiB (e.g. Spark's maxRecordsPerFile) or run "
                    "with a classic session (engine.master)")
            conf = self.spark._jsc.hadoopConfiguration()
            for url in large:
                path = jvm.apache.hadoop.fs.Path(url)
                stream = path.getFileSystem(conf).open(path)
                try:
                    digests.append(str(jvm.apache.commons.codec.digest.DigestUtils.sha256Hex(stream)))
                finally:
                    stream.close()
        return sorted(digests)

    # ----- the release history (pipeline.state.history) --------------------------------------
    def history_exists(self, hist: Any) -> bool:
        """Whether this engine's store of the history exists (refuses the DuckDB engine's)."""
        return (hist.store(self.name) / CURRENT).exists()

    def attach_history(self, hist: Any, *, write: bool) -> None:
        """The history's tables as views ``__hist__<t>`` (SQL names them ``__hist.<t>``), read by
        Spark from the Parquet segments ``CURRENT.json`` names. Only that small file is read here."""
        store = hist.store(self.name)
        self.detach_history()
        self._hist = store
        self._load_history_views()
        if not (store / CURRENT).exists() and write:
            store.mkdir(parents=True, exist_ok=True)

    def _load_history_views(self) -> None:
        """Every stored table as a view over its segments (each segment: one commit's rows, read
        where its release is still live); pending changes dropped."""
        import json

        from pyspark.sql import functions as F  # noqa: N812
        from pyspark.sql import types as T  # noqa: N812

        from ...errors import LedgerError, first_line

        store = self._hist
        if store is None:
            return
        for table in self._hist_tables:
            self.spark.catalog.dropTempView(HISTORY_PREFIX + table)
            old = self._cached.pop(HISTORY_PREFIX + table, None)
            if old is not None:
                old.unpersist()
        segments: dict[str, Any] = {}
        if (store / CURRENT).exists():
            try:
                current = json.loads((store / CURRENT).read_text(encoding="utf-8"))
                for table, info in current["tables"].items():
                    if "dir" in info:  # format 1: one folder of every release's rows
                        info = {"schema": info["schema"], "segments": [{"dir": info["dir"], "releases": None}]}
                    schema = T.StructType.fromJson(info["schema"])
                    parts = []
                    for seg in info["segments"]:
                        df = self.spark.read.schema(schema).parquet(str(store / seg["dir"]))
                        parts.append(df if seg["releases"] is None else df.where(F.col("release_id").isin(seg["releases"])))
                    view = parts[0] if parts else self.spark.createDataFrame([], schema)
                    for df in parts[1:]:
                        view = view.unionByName(df)
                    view.createOrReplaceTempView(HISTORY_PREFIX + table)
                    segments[table] = info
            except (OSError, ValueError, KeyError, TypeError, self.Error) as exc:
                raise LedgerError(f"cannot open the release history {store}: {first_line(exc)}") from None
        self._hist_segments = segments
        self._hist_tables = set(segments)
        self._hist_dirty, self._hist_added, self._hist_removed = set(), {}, {}

    def _commit_history(self) -> None:
        """Write what changed, then point ``CURRENT.json`` at it with one atomic rename; folders
        no longer named are removed afterwards. A table that was only appended to (and had
        releases deleted, as a rerun does) gets one new segment of the appended rows and its
        deleted releases dropped from the older segments' lists: a release costs its own rows, not
        the history's. Any other change, or more than ``HISTORY_SEGMENTS_MAX`` segments, writes the
        table whole as one segment (which also drops the deleted releases' rows from disk)."""
        import json
        import os
        import shutil
        import uuid

        store = self._hist
        changed = self._hist_dirty | {t for t, a in self._hist_added.items() if a} | {
            t for t, r in self._hist_removed.items() if r}
        if store is None or not changed:
            return

        def write(table: str, df: Any) -> dict[str, Any]:
            folder = f"{table}.{uuid.uuid4().hex}"
            df.write.parquet(str(store / folder))
            releases = sorted(r[0] for r in self.spark.read.parquet(str(store / folder))
                              .select("release_id").distinct().collect())  # release ids: metadata, not rows
            return {"dir": folder, "releases": releases}

        tables = dict(self._hist_segments)
        for table in sorted(changed):
            df = self.spark.table(HISTORY_PREFIX + table)
            info = tables.get(table)
            removed = self._hist_removed.get(table, set())
            old = [] if info is None else info["segments"]
            whole = (info is None or table in self._hist_dirty or len(old) >= HISTORY_SEGMENTS_MAX
                     # a format-1 folder does not list its releases: a delete there rewrites it
                     or (bool(removed) and any(seg["releases"] is None for seg in old)))
            if whole:
                segments = [write(table, df)]
            else:
                segments = [{"dir": seg["dir"], "releases": kept} for seg in old
                            if seg["releases"] is None or (kept := [r for r in seg["releases"] if r not in removed])]
                added = self._hist_added.get(table, [])
                if added:
                    rows = added[0]
                    for more in added[1:]:
                        rows = rows.unionByName(more)
                    if rows.limit(1).count():
                        segments.append(write(table, rows.coalesce(1)))
            tables[table] = {"schema": df.schema.jsonValue(), "segments": segments}
        tmp = store / f".{CURRENT}.{uuid.uuid4().hex}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"format": 2, "tables": tables}, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, store / CURRENT)
        keep = {seg["dir"] for info in tables.values() for seg in info["segments"]}
        for entry in store.iterdir():  # superseded folders and leftovers of an interrupted commit
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
        self._load_history_views()

    def detach_history(self) -> None:
        for table in self._hist_tables:
            name = HISTORY_PREFIX + table
            self.spark.catalog.dropTempView(name)
            old = self._cached.pop(name, None)
            if old is not None:
                old.unpersist()
        self._hist, self._hist_tables, self._hist_dirty = None, set(), set()
        self._hist_segments, self._hist_added, self._hist_removed = {}, {}, {}

    def tables(self, database: str) -> set[str]:
        """The tables of the attached history (``__hist``)."""
        return set(self._hist_tables) if database == "__hist" else set()

    def columns(self, table: str, database: str | None = None) -> list[str]:
        """The columns of ``table`` (of the history when ``database`` is ``__hist``), in order."""
        name = HISTORY_PREFIX + table if database == "__hist" else table
        return list(self.spark.table(name).columns)

    def query_progress(self) -> float:
        return -1.0

    def interrupt(self) -> None:
        self.spark.sparkContext.cancelAllJobs()

    def file_view(self, name: str, path: str) -> None:
        """View ``name`` over a Parquet file, or a CSV file (header, every column text), read by Spark."""
        if path.lower().endswith((".csv", ".txt", ".tsv")):
            df = self.spark.read.options(header="true", escape='"', multiLine="true").csv(path)
        else:
            df = self.spark.read.parquet(path)
        df.createOrReplaceTempView(name)

    def register(self, name: str, table: Any) -> None:
        """An Arrow table (aggregates only) as view ``name``."""
        self._register(name, self.spark.createDataFrame(table))  # Arrow directly: nulls stay nulls

    def unregister(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)

    def close(self) -> None:
        for df in self._cached.values():
            df.unpersist()
        self._cached.clear()


def duckdb_type(dt: Any) -> str:
    """A Spark column type in DuckDB's names (what the SQL builders and config checks speak)."""
    from pyspark.sql import types as T  # noqa: N812

    simple = {T.LongType: "BIGINT", T.IntegerType: "INTEGER", T.ShortType: "SMALLINT", T.ByteType: "TINYINT",
              T.DoubleType: "DOUBLE", T.FloatType: "FLOAT", T.StringType: "VARCHAR", T.BooleanType: "BOOLEAN",
              T.DateType: "DATE", T.TimestampType: "TIMESTAMP WITH TIME ZONE", T.TimestampNTZType: "TIMESTAMP",
              T.BinaryType: "BLOB"}
    for cls, name in simple.items():
        if isinstance(dt, cls):
            return name
    if isinstance(dt, T.DecimalType):
        return f"DECIMAL({dt.precision},{dt.scale})"
    return dt.simpleString().upper()


def connect(cfg: Any) -> SparkEngine:
    """A Spark session for one run: ``engine.remote`` (or ``SPARK_REMOTE``) for Spark Connect, else
    ``engine.master``; UTC session time zone; ``engine.conf`` on top."""
    import os

    from ...errors import ConfigError

    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("engine.kind: spark needs the Spark extra: pip install 'anonymize-pipeline[spark]' "
                          "(and a Java 17+ runtime)") from None
    builder = SparkSession.builder.appName(f"anonymize {cfg.report}")
    remote = cfg.engine.remote or os.environ.get("SPARK_REMOTE")
    builder = builder.remote(remote) if remote else builder.master(cfg.engine.master)
    settings = {"spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false",
                "spark.sql.shuffle.partitions": "8", **cfg.engine.conf}
    for key, value in settings.items():
        builder = builder.config(key, value)
    return SparkEngine(builder.getOrCreate())


HISTORY_PREFIX = "__hist__"  # the views of the attached history's tables
CURRENT = "CURRENT.json"  # names each history table's Parquet folder and schema
# the largest file hashed as one ``binaryFile`` row (a row's content is a Java byte array: at most
# 2^31 - 1 bytes, less the array header); larger files are streamed through the driver's JVM
BINARY_FILE_MAX = 2**31 - 2**20
HISTORY_SEGMENTS_MAX = 64  # a history table of more segments is written whole (compacted) at its next commit


def _release_equals(where: Any) -> str | None:
    """The release id of ``WHERE release_id = '<id>'`` (a bound literal), else None."""
    from sqlglot import exp

    cond = where.this if where is not None else None
    if (isinstance(cond, exp.EQ) and isinstance(cond.this, exp.Column) and cond.this.name == "release_id"
            and isinstance(cond.expression, exp.Literal) and cond.expression.is_string):
        return str(cond.expression.this)
    return None


def _history_view(node: Any) -> Any:
    """``__hist.<t>`` (a table of DuckDB's attached history) → the view ``__hist__<t>``."""
    from sqlglot import exp

    if isinstance(node, exp.Table) and node.args.get("db") is not None and node.db == "__hist":
        return exp.Table(this=exp.to_identifier(HISTORY_PREFIX + node.name), alias=node.args.get("alias"))
    return node


def _spark_sql(node: Any) -> str:
    [text] = to_spark(node.sql(dialect="duckdb"))
    return text


def _spark_type(kind: Any) -> str:
    from sqlglot import exp

    from .dialect import RULES

    tree = exp.DataType.build(kind.sql(dialect="duckdb"), dialect="duckdb")
    for rule in RULES:  # HUGEINT, UBIGINT: the dialect's type rules
        tree = tree.transform(rule)
    return tree.sql(dialect="spark")


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
    if isinstance(value, exp.Array):
        return [_python(v) for v in value.expressions]
    raise UnsupportedSQL(f"cannot run on Spark: VALUES with {value.sql(dialect='duckdb')}")
