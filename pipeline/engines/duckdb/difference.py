"""The difference check's SQL: keyed unit hashes and contribution digests of candidate cells,
compared with everything already published into the same release history.

The store itself (file, lock, secret) is :mod:`pipeline.state.history`; the rule (populations or
contributions differing by 1 to k − 1 people) is :func:`pipeline.privacy.rules.difference_window`.

Guarantees (docs/PRIVACY.md, "Across releases"):
- A cell is identified by what it aggregates, never by output names: the source columns and time
  grains of its kept dimensions, in canonical (sorted) order, with their values. A renamed
  dimension (``as:``), dimensions in another order, a margin of one report and a plain cell of
  another, and the same data under another file name, glob or report name all get the same key.
  Filters and metrics are not part of the key: cells over the same dimension values are compared
  whatever rows they select, so "searches" against "searches and orders" is compared too.
- Per (cell, person) the history keeps, besides the keyed unit hash, one digest per published
  quantity (row count, clamped sum and value count of each value column with its bounds; 0 where
  the person does not contribute to it). Two cells are *close* when, for some quantity both
  releases publish, the people contributing to it in only one of them plus the people present in
  both whose digest of it differs number 1 to k − 1 (each quantity judged on its own: people who
  changed only in rows, or newcomers with no value, do not hide one who changed only in a value):
  then the new cell is withheld (reason ``difference``).
- Every earlier release in the history is compared, whatever its source id: a day file and the
  next day's file are the same population under two names. Only cell keys, hashes and counts are
  compared in DuckDB; no identifier is written to the history.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

from ...config import ReportConfig
from ...errors import LedgerError, first_line
from ...privacy.levels import levels
from ...privacy.rules import difference_window
from ...state.history import History
from .cells import dim_key, value_slots
from .sql import literal

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    release_id VARCHAR PRIMARY KEY, source_id VARCHAR, report VARCHAR, run_id VARCHAR, created_utc VARCHAR
);
CREATE TABLE IF NOT EXISTS cell_units (release_id VARCHAR, cell_key VARCHAR, uh VARCHAR);
ALTER TABLE releases ADD COLUMN IF NOT EXISTS components VARCHAR[];
ALTER TABLE cell_units ADD COLUMN IF NOT EXISTS ch UBIGINT[];
ALTER TABLE releases ADD COLUMN IF NOT EXISTS digest_format INTEGER;
CREATE TABLE IF NOT EXISTS release_levels (release_id VARCHAR, signature VARCHAR);
CREATE TABLE IF NOT EXISTS remainder_members (release_id VARCHAR, remainder_key VARCHAR, cell_key VARCHAR);
CREATE TABLE IF NOT EXISTS cell_sketch (release_id VARCHAR, cell_key VARCHAR, n BIGINT, SKETCH_COLUMNS);
ALTER TABLE cell_sketch ADD COLUMN IF NOT EXISTS quantity VARCHAR;
"""
# Releases recorded with DIGEST_FORMAT (``releases.digest_format``) store a non-contribution to a
# quantity (no value in the cell) as digest 0 (so a person present in one cell only is counted in a quantity's residual
# only where they contribute to it: a newcomer with searches only does not hide a corrected order
# value) and keep, per published cell and value quantity, a sketch of the people contributing to
# it (``cell_sketch.quantity``; NULL: everyone present). Releases recorded before (NULL) are
# compared as then: presence counted in every quantity (a limit, docs/PRIVACY.md).
DIGEST_FORMAT = 2
VALUE_QUANTITIES = ("sum:", "vals:")  # the quantities not everyone present contributes to
# Per published cell the history also keeps a presence sketch: its people counted in 32 buckets
# of their unit hash. |count difference| and the L1 distance of two sketches are lower bounds of
# the number of people present in only one of two cells (each such person moves one bucket count
# by one), so a pair whose bound passes k − 1 needs no person-level comparison.
SKETCH_BUCKETS = 32
SCHEMA = SCHEMA.replace("SKETCH_COLUMNS", ", ".join(f"b{b} INTEGER" for b in range(SKETCH_BUCKETS)))
SKETCH_INSERT = ("INSERT INTO __hist.cell_sketch (release_id, cell_key, quantity, n, "
                 + ", ".join(f"b{b}" for b in range(SKETCH_BUCKETS)) + ") ")
# the bucket of a unit hash (hex text): from its first two hex digits, portable SQL
BUCKET_SQL = ("(16 * ((strpos('0123456789abcdef', substr({col}, 1, 1)) - 1) % 2) "
              "+ strpos('0123456789abcdef', substr({col}, 2, 1)) - 1)")


def unit_hash_sql(salt: str, unit: str) -> str:
    """The history's keyed hash of a person (``salt``: the history secret as an SQL literal)."""
    return f"left(sha256({salt} || CAST({unit} AS VARCHAR)), 16)"


def _salt_tag(salt: str) -> str:
    """A short tag of the secret, stored beside ``__uh``'s hashes so a table made under another
    history's secret is never joined (a tag, not the secret)."""
    import hashlib

    return hashlib.sha256(f"anonymize/uh/{salt}".encode()).hexdigest()[:16]


def unit_hashes(con: Any, salt: str, *, replace: bool) -> None:
    """``__uh``: every person of ``__per_unit`` with their keyed hash, computed once per run (by
    the entry points: the check, the remainder check, the record; :func:`_uh` reads it) instead
    of once per (cell, person) row of each statement that stores or compares hashes
    (DuckDB: about 0.15 µs per row saved against a join; on Spark a join would shuffle, so
    its statements keep hashing per row, see :func:`_uh`)."""
    if con.name == "spark":
        return
    verb = "CREATE OR REPLACE TEMP TABLE" if replace else "CREATE TEMP TABLE IF NOT EXISTS"
    con.execute(f"{verb} __uh AS SELECT {literal(_salt_tag(salt))} AS tag, __u, {unit_hash_sql(salt, '__u')} AS uh "
                "FROM (SELECT DISTINCT __u FROM __per_unit WHERE __u IS NOT NULL)")


def _uh(con: Any, salt: str, alias: str) -> tuple[str, str]:
    """(expression, join) for the keyed hash of ``alias.__u``: looked up in ``__uh`` where it is
    there (same secret), computed where not, so the value is the same either way."""
    own = unit_hash_sql(salt, f"{alias}.__u")
    if con.name == "spark":
        return own, ""
    return (f"coalesce(__uh.uh, {own})",
            f" LEFT JOIN __uh ON __uh.__u = {alias}.__u AND __uh.tag = {literal(_salt_tag(salt))}")


def sketch_sql(table: str, key: str, unit: str = "uh", where: str = "TRUE") -> str:
    """Per ``key`` of ``table``: ``n`` (rows: one per person) and the bucket counts ``b0``..``b31``,
    of the rows where ``where`` holds (a condition on ``t``; every key keeps its row, zeros
    where none holds)."""
    buckets = ", ".join(f"count(*) FILTER (WHERE __bk = {b} AND __in) AS b{b}" for b in range(SKETCH_BUCKETS))
    return (f"SELECT {key} AS cell_key, count(*) FILTER (WHERE __in) AS n, {buckets} FROM "
            f"(SELECT t.{key}, {BUCKET_SQL.format(col='t.' + unit)} AS __bk, coalesce({where}, TRUE) AS __in "
            f"FROM {table} t) GROUP BY {key}")


def sketched_quantities(comps: list[Component]) -> list[tuple[str | None, str]]:
    """(sketch quantity, condition on ``t.ch``) per sketch a cell of these quantities keeps: its
    people (NULL: a lower bound for presence, rows and units, which everyone present contributes
    to) and, per value quantity, the people contributing to it (digest not 0)."""
    return [(None, "TRUE")] + [(c.name, f"t.ch[{k + 1}] <> 0") for k, c in enumerate(digested(comps))
                               if c.name.startswith(VALUE_QUANTITIES)]


def sketches_sql(table: str, key: str, comps: list[Component]) -> str:
    """:func:`sketch_sql` of ``table`` once per :func:`sketched_quantities`, as rows
    (cell_key, quantity, n, b0..b31)."""
    buckets = ", ".join(f"s.b{b}" for b in range(SKETCH_BUCKETS))
    parts = []
    for q, cond in sketched_quantities(comps):
        name = "NULL" if q is None else literal(q)
        parts.append(f"SELECT s.cell_key, CAST({name} AS VARCHAR) AS quantity, s.n, {buckets} "
                     f"FROM ({sketch_sql(table, key, where=cond)}) s")
    return " UNION ALL ".join(parts)


def digested(comps: list[Component]) -> list[Component]:
    """The quantities of ``comps`` with a digest, in digest-list order (all but ``units``)."""
    return [c for c in comps if c.expr]


def digest_position(names: list[str] | tuple[str, ...], q: str) -> int:
    """The 1-based position of quantity ``q``'s digest in the list of a release publishing ``names``."""
    return [n for n in names if n != "units"].index(q) + 1


def values_sql(comps: list[Component]) -> str:
    """Select-list items (each after ``, ``) of a person's contribution to each digested quantity of
    ``comps`` (``__x0``..) and whether they contribute to it (``__y0``..), over rows ``p`` of a
    ``__per_unit``-like table grouped by person; ``''`` for none."""
    return "".join(f", {c.expr} AS __x{k}, {c.contributes} AS __y{k}" for k, c in enumerate(digested(comps)))


def digests_sql(comps: list[Component]) -> str:
    """The digest list of a person's contributions (:func:`values_sql`, with ``uh``): a keyed
    64-bit hash per quantity, 0 where the person does not contribute to it."""
    return ", ".join(f"hash(uh, {literal(c.name)}, __x{k})" if c.contributes == "TRUE" else
                     f"CASE WHEN coalesce(__y{k}, FALSE) THEN hash(uh, {literal(c.name)}, __x{k}) "
                     f"ELSE CAST(0 AS UBIGINT) END" for k, c in enumerate(digested(comps)))


def lower_bound_sql(a: str, b: str) -> str:
    """A lower bound of the people in only one of the cells sketched in ``a`` and ``b`` (present, or
    contributing to a quantity: whatever the sketches counted)."""
    l1 = " + ".join(f"abs({a}.b{i} - {b}.b{i})" for i in range(SKETCH_BUCKETS))
    return f"greatest(abs({a}.n - {b}.n), {l1})"
SEP = "\x1f"
# a time grain's length in days, to tell which grains are finer (a week is finer than a month even
# though weeks straddle months: the sub-cell of a month is then the part of a week inside it)
GRAIN_DAYS = {"day": 1, "week": 7, "month": 28, "quarter": 90, "year": 365}
# the signature of a stored cell key: its ``column/grain`` parts without the values
SIGNATURE_SQL = "regexp_replace(cell_key, '=[^\x1f]*', '', 'g')"
Pair = tuple[str, str]  # (source column, grain or '')
# a remainder row's key: the prefix and its level's signature (no dimension values; its members,
# the withheld cells it aggregates, are recorded in ``remainder_members``)
REMAINDER_PREFIX = "\x1eremainder="


def remainder_key(cfg: ReportConfig, keep: list[int]) -> str:
    return REMAINDER_PREFIX + signature(level_pairs(cfg, keep))


def _bound(b: float) -> str:
    return repr(float(b))


class Component(NamedTuple):
    """A quantity a release publishes per cell: its canonical name, a person's contribution to it
    and whether the person contributes to it (per-unit SQL over ``__per_unit`` rows ``p``)."""

    name: str
    expr: str
    contributes: str


def components(cfg: ReportConfig) -> list[Component]:
    """The quantities a release publishes per cell, in a fixed order (by name): ``rows`` for counts
    and means, and per value column (with its multiplier and bounds) its clamped ``sum`` and, for
    means, its value count ``vals``; metrics that publish the same quantity share one entry;
    ``count_units`` publishes presence (``units``: 1 for everyone present, so it never differs for
    a person present in both and has no digest: ``expr`` empty). A person contributes
    to ``rows`` and ``units`` by being present and to a value column's quantities by having a
    value there (the people the k rule per number counts: a value of 0 is a contribution, a row
    without a value is none)."""
    slots = value_slots(cfg)
    out: dict[str, Component] = {}
    for i, m in enumerate(cfg.metrics):
        if m.agg == "count":
            out.setdefault("rows", Component("rows", "sum(p.__n)", "TRUE"))
        if m.agg == "count_units":
            out.setdefault("units", Component("units", "", "TRUE"))  # no digest: 1 for everyone present
        if m.agg in ("sum", "mean"):
            j = slots[i]
            bounds = "none" if m.bounds is None else f"{_bound(m.bounds[0])}..{_bound(m.bounds[1])}"
            what = f"{m.column}*{m.multiply_by or 1}[{bounds}]"
            has = f"coalesce(sum(p.__c{j}), 0) > 0"
            out.setdefault(f"sum:{what}", Component(f"sum:{what}", f"round(sum(p.__s{j}), 6)", has))
            if m.agg == "mean":
                out.setdefault(f"vals:{what}", Component(f"vals:{what}", f"sum(p.__c{j})", has))
    if not out:  # every metric publishes a quantity: an aggregation without one would compare nothing
        raise LedgerError(f"report {cfg.report!r}: no published quantity the difference check knows")
    return [out[k] for k in sorted(out)]


def level_pairs(cfg: ReportConfig, keep: list[int]) -> tuple[Pair, ...]:
    """The (column, grain) pairs a level's cell key is made of, in key order."""
    return tuple(sorted((cfg.dims[i].column, cfg.dims[i].grain or "") for i in keep))


def signature(pairs: tuple[Pair, ...]) -> str:
    return SEP.join(f"{c}/{g}" for c, g in sorted(pairs))


def parse_signature(sig: str) -> tuple[Pair, ...]:
    if not sig:
        return ()
    return tuple(sorted(tuple(p.rsplit("/", 1)) for p in sig.split(SEP)))  # type: ignore[misc]


def finer(f: tuple[Pair, ...], lv: tuple[Pair, ...]) -> bool:
    """Whether cells keyed by ``f`` subdivide cells keyed by ``lv``: another key that has every column
    of ``lv`` (plain columns as they are, time columns at the same or a shorter grain)."""
    if set(f) == set(lv):
        return False
    for c, g in lv:
        if not any(c2 == c and ((g == g2 == "") or (g and g2 and GRAIN_DAYS[g2] <= GRAIN_DAYS[g])) for c2, g2 in f):
            return False
    return True


def _key_sql(items: list[tuple[Pair, str]]) -> str:
    """A cell key (the format of :func:`cell_key_expr`) from ((column, grain), SQL value) items."""
    parts = []
    for (c, g), value in sorted(items, key=lambda t: t[0]):
        v = f"CAST({value} AS DATE)" if g else value
        parts.append(f"{literal(f'{c}/{g}=')} || coalesce(CAST({v} AS VARCHAR), '\x1d')")
    return " || '\x1f' || ".join(parts) or "''"


def cell_key_expr(cfg: ReportConfig) -> str:
    """SQL for a cell's comparable key: ``column/grain=value`` of its kept dimensions, sorted by
    column and grain (output names, dimension order and level names do not enter)."""
    parts = []
    for lv in levels(cfg):
        keep = sorted(lv.kept(cfg), key=lambda i: (cfg.dims[i].column, cfg.dims[i].grain or ""))
        items = []
        for i in keep:
            d = cfg.dims[i]
            value = f"CAST({dim_key(i)} AS DATE)" if d.grain else dim_key(i)
            label = literal(f"{d.column}/{d.grain or ''}=")
            items.append(f"{label} || coalesce(CAST({value} AS VARCHAR), '\x1d')")
        parts.append(f"WHEN {lv.index} THEN " + (" || '\x1f' || ".join(items) or "''"))
    return f"CASE __level {' '.join(parts)} END"


def candidate_units_sql(cfg: ReportConfig, salt_hex: str, con: Any) -> str:
    """``__cand_units``: (cell_key, unit hash, digests) for every cell still publishable in ``__cells``.

    The digests are one keyed 64-bit hash per entry of :func:`components` of the person's
    contribution to the cell (summed over the person's rows of the full table under the cell)."""
    comps = components(cfg)
    values = values_sql(comps)
    digests = digests_sql(comps)
    selects = []
    for lv in levels(cfg):
        keep = lv.kept(cfg)
        on = " AND ".join(f"p.{dim_key(i)} IS NOT DISTINCT FROM c.{dim_key(i)}" for i in keep) or "TRUE"
        selects.append(
            f"SELECT c.__cell_key AS cell_key, p.__u{values} "
            f"FROM __per_unit p JOIN __cells c ON {on} "
            f"WHERE p.__u IS NOT NULL AND c.__level = {lv.index} AND c.__reason IS NULL "
            f"GROUP BY c.__cell_key, p.__u"
        )
    # a cell key can occur at two levels of one report only for the same cells (same kept columns)
    uh, join = _uh(con, literal(salt_hex), "x")
    hashed = f"SELECT x.*, {uh} AS uh FROM ({' UNION ALL '.join(selects)}) x{join}"
    return (f"CREATE OR REPLACE TEMP TABLE __cand_units AS SELECT DISTINCT cell_key, uh, "
            f"[{digests}]::UBIGINT[] AS ch FROM ({hashed})")


def _ids(con: Any, table: str, ids: list[str] | tuple[str, ...], groups: dict[str, int] | None = None) -> str:
    """A temp table of release ids (with their component group), for a semi-join (a list literal
    would be searched once per row)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (release_id VARCHAR, grp INTEGER)")
    if ids:
        con.executemany(f"INSERT INTO {table} VALUES (?, ?)", [[i, (groups or {}).get(i, 0)] for i in ids])
    return f"(SELECT release_id FROM {table})"


class Published(NamedTuple):
    """What an earlier release published: its quantities (:func:`components` names, in digest
    order) and whether its digests are of :data:`DIGEST_FORMAT` (non-contributions as 0)."""

    names: tuple[str, ...]
    exact: bool


def earlier_releases(con: Any, release_id: str) -> dict[str, Published]:
    """Every release of the attached history but ``release_id``, with what it published (a
    history written before digests: no quantities, presence only)."""
    cols = set(con.columns("releases", "__hist"))
    comp_col = "components" if "components" in cols else "NULL::VARCHAR[]"
    fmt_col = "digest_format" if "digest_format" in cols else "NULL::INTEGER"
    rows = con.execute(f"SELECT release_id, {comp_col}, {fmt_col} FROM __hist.releases WHERE release_id <> $1",
                       [release_id]).fetchall()
    digests = "ch" in set(con.columns("cell_units", "__hist"))
    return {rid: Published(tuple(comps or ()) if digests else (), fmt == DIGEST_FORMAT) for rid, comps, fmt in rows}


def quantity_conditions(mine: list[str], theirs: Published) -> list[tuple[str, str, str]]:
    """Per quantity both releases publish, SQL over a person of this release (``n``) and of the
    earlier one (``h``): (their contributions differ, ``n`` contributes, ``h`` contributes).
    Presence only — ``("FALSE", "TRUE", "TRUE")`` — when they publish none in common.

    A residual is counted per quantity: a reader subtracts one quantity at a time, so people who
    changed only in rows must not hide one person who changed only in a value (counted together
    they could pass k − 1 while the value's residual is one). A person present on one side only
    is in a quantity's residual when they contribute to it there (a newcomer with searches only
    adds nothing to a value sum); for releases recorded before :data:`DIGEST_FORMAT` who contributes
    cannot be told apart, and presence counts in every quantity."""
    out = [quantity_condition(c, mine, theirs) for c in theirs.names if c in mine]
    return out or [("FALSE", "TRUE", "TRUE")]


def quantity_condition(q: str, mine: list[str], theirs: Published) -> tuple[str, str, str]:
    """:func:`quantity_conditions` of one quantity ``q`` both publish."""
    if q == "units":
        return "FALSE", "TRUE", "TRUE"  # presence: the people present on one side only
    i, j = digest_position(mine, q), digest_position(theirs.names, q)
    differs = f"h.ch[{j}] <> n.ch[{i}]"
    if not q.startswith(VALUE_QUANTITIES):  # everyone present contributes to rows
        return differs, "TRUE", "TRUE"
    if theirs.exact:
        return differs, f"n.ch[{i}] <> 0", f"h.ch[{j}] <> 0"
    # an earlier format hashed a non-contribution too (a sum of no values: NULL; a count: 0): a
    # person without a value on both sides has not changed
    legacy_none = ", ".join(f"hash(h.uh, {literal(q)}, {v})" for v in
                            ("CAST(NULL AS DOUBLE)", "CAST(0 AS HUGEINT)", "CAST(0 AS BIGINT)"))
    return f"({differs} AND NOT (n.ch[{i}] = 0 AND h.ch[{j}] IN ({legacy_none})))", "TRUE", "TRUE"


def _per_quantity(conds: list[tuple[str, str, str]]) -> tuple[str, str, str, str]:
    """The residual of each quantity of ``conds`` (:func:`quantity_conditions`) as SQL pieces: the
    aggregates of this release's people per cell (``na…``, a CTE ``a`` over ``n``), of the earlier
    release's (``nb…``, ``b`` over ``h``) and of the people on both sides (``nia…``, ``nib…``,
    ``nd…``: contributing on each side, differing; ``i`` over ``n`` joined to ``h``), and the
    condition that some quantity's residual — contributors on one side only plus those whose
    contribution differs — is ``$1``..``$2`` people."""
    a = ", ".join(f"count(*) FILTER (WHERE {nz_n}) AS na{q}" for q, (_, nz_n, _) in enumerate(conds))
    b = ", ".join(f"count(*) FILTER (WHERE {nz_h}) AS nb{q}" for q, (_, _, nz_h) in enumerate(conds))
    i = ", ".join(f"count(*) FILTER (WHERE {nz_n}) AS nia{q}, count(*) FILTER (WHERE {nz_h}) AS nib{q}, "
                  f"count(*) FILTER (WHERE coalesce({d}, FALSE)) AS nd{q}" for q, (d, nz_n, nz_h) in enumerate(conds))
    window = " OR ".join(
        f"coalesce(a.na{q}, 0) - coalesce(i.nia{q}, 0) + coalesce(b.nb{q}, 0) - coalesce(i.nib{q}, 0) "
        f"+ coalesce(i.nd{q}, 0) BETWEEN $1 AND $2" for q in range(len(conds)))
    return a, b, i, f"({window})"


def _close_sql(conds: list[tuple[str, str, str]], ids: str) -> str:
    """Cells of ``__cand_units`` close to a cell with the same key in one of the releases ``ids``
    (each quantity both publish judged on its own: :func:`quantity_conditions`)."""
    na, nb, ni, window = _per_quantity(conds)
    return f"""
        WITH a AS (SELECT n.cell_key, {na} FROM __cand_units n GROUP BY n.cell_key),
        b AS (
            SELECT h.release_id, h.cell_key, {nb} FROM __hist.cell_units h
            JOIN __need USING (release_id, cell_key) WHERE h.release_id IN {ids}
            GROUP BY ALL
        ),
        i AS (
            SELECT h.release_id, h.cell_key, {ni}
            FROM __hist.cell_units h JOIN __need USING (release_id, cell_key)
            JOIN __cand_units n ON n.cell_key = h.cell_key AND n.uh = h.uh
            WHERE h.release_id IN {ids}
            GROUP BY ALL
        )
        SELECT DISTINCT a.cell_key FROM a JOIN b USING (cell_key) LEFT JOIN i USING (release_id, cell_key)
        WHERE {window}
    """


def apply_difference_check(
    cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str, schema: dict[str, str] | None = None
) -> None:
    """Withhold publishable cells close to a published cell of any earlier release in the history,
    and cells that earlier releases' finer cells subdivide with a residual of 1 to k − 1 people
    (module docstring)."""
    con.execute("ALTER TABLE __cells ADD COLUMN IF NOT EXISTS __cell_key VARCHAR")
    con.execute(f"UPDATE __cells SET __cell_key = {cell_key_expr(cfg)}")
    unit_hashes(con, literal(hist.secret_hex()), replace=True)
    con.execute(candidate_units_sql(cfg, hist.secret_hex(), con))
    if not con.history_exists(hist):
        return
    con.attach_history(hist, write=False)
    mine = [c.name for c in components(cfg)]
    close: set[str] = set()
    try:
        comps_of = earlier_releases(con, release_id)
        groups: dict[Published, list[str]] = {}
        for rid, theirs in sorted(comps_of.items()):
            groups.setdefault(theirs, []).append(rid)
        lo, hi = difference_window(cfg)  # the rule (privacy.rules): 1 .. k - 1
        _ids(con, "__diff_all", sorted(comps_of))
        _needed_pairs(cfg, con, sorted(comps_of), hi)
        for theirs, ids in sorted(groups.items()):
            conds = quantity_conditions(mine, theirs)
            close.update(r[0] for r in con.execute(_close_sql(conds, _ids(con, "__diff_ids", ids)), [lo, hi]).fetchall())
        if schema is not None and comps_of:
            close.update(_nested_close(cfg, con, hist, schema, comps_of, lo, hi))
        _withhold(con, close)
        if schema is not None and comps_of:
            _complements_for_earlier_cells(cfg, con, hist, schema, comps_of, lo, hi)
            _complements_for_earlier_remainders(cfg, con, hist, comps_of, lo, hi)
    finally:
        con.detach_history()


def _has_sketch_table(con: Any) -> bool:
    return "cell_sketch" in con.tables("__hist")


def _sketched(con: Any) -> set[str]:
    """Releases whose cells have presence sketches (recorded since sketches exist)."""
    if not _has_sketch_table(con):
        return set()
    return {r[0] for r in con.execute("SELECT DISTINCT release_id FROM __hist.cell_sketch").fetchall()}


def _sketch_quantity(con: Any) -> str:
    """The quantity of a stored sketch ``h`` (NULL, everyone present, in histories before quantities)."""
    return "h.quantity" if "quantity" in set(con.columns("cell_sketch", "__hist")) else "CAST(NULL AS VARCHAR)"


def _needed_pairs(cfg: ReportConfig, con: Any, ids: list[str], hi: int) -> None:
    """``__need``: the (earlier release, cell key) pairs whose person-level comparison with this
    release's same-key cell can find 1 to ``hi`` people: every pair of a release without sketches,
    and the pairs where some quantity's sketch lower bound (people present, or contributing to a
    value quantity both publish: :func:`sketched_quantities`) is at most ``hi``."""
    sketched = _sketched(con) & set(ids)
    legacy = sorted(set(ids) - sketched)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __cand_sk AS {sketches_sql('__cand_units', 'cell_key', components(cfg))}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE __need AS
        SELECT DISTINCT h.release_id, h.cell_key FROM __hist.cell_sketch h
        JOIN __cand_sk c ON c.cell_key = h.cell_key AND c.quantity IS NOT DISTINCT FROM {_sketch_quantity(con)}
        WHERE h.release_id IN {_ids(con, '__sk_ids', sorted(sketched))} AND {lower_bound_sql('c', 'h')} <= {int(hi)}
    """) if sketched else con.execute("CREATE OR REPLACE TEMP TABLE __need (release_id VARCHAR, cell_key VARCHAR)")
    if legacy:
        con.execute(f"""
            INSERT INTO __need SELECT DISTINCT release_id, cell_key FROM __hist.cell_units
            WHERE release_id IN {_ids(con, '__legacy_pair_ids', legacy)} AND cell_key IN (SELECT cell_key FROM __cand_sk)
        """)


def _unit_values_sql(cfg: ReportConfig, con: Any, lv: Any, salt: str, cells: str) -> str:
    """Per (cell key, person) of level ``lv``: the person's rows and value sums (the columns of
    ``__per_unit``) in each cell of ``__cells`` that ``cells`` (a condition on ``c``) selects."""
    keep = lv.kept(cfg)
    on = " AND ".join(f"p.{dim_key(i)} IS NOT DISTINCT FROM c.{dim_key(i)}" for i in keep) or "TRUE"
    sums = ", ".join(f"sum(p.{c}) AS {c}" for c in ["__n", *_value_columns(con, "__per_unit")])
    uh, join = _uh(con, salt, "p")
    return (f"SELECT c.__cell_key AS cell_key, {uh} AS uh, {sums} "
            f"FROM __per_unit p JOIN __cells c ON {on}{join} "
            f"WHERE p.__u IS NOT NULL AND c.__level = {lv.index} AND ({cells}) GROUP BY c.__cell_key, p.__u, {uh}")


def _complements_for_earlier_remainders(
    cfg: ReportConfig, con: Any, hist: History, comps_of: dict[str, Published], lo: int, hi: int,
) -> None:
    """Withhold further cells of this release where they would be subtracted from an earlier
    release's remainder row of the same level, leaving 1 to k − 1 people: the reader subtracts this
    release's published cells that the remainder aggregated (its recorded members) and compares what
    is left with nothing. Residual: the people whose recorded contribution to the remainder differs
    from their summed contribution to those cells. While some earlier remainder's residual is 1 to
    k − 1 people, its member cell published here with the fewest people is withheld (ties by key)."""
    if "remainder_members" not in con.tables("__hist"):
        return
    comps = components(cfg)
    mine = [c.name for c in comps]
    values = values_sql(comps)
    digests = digests_sql(comps)
    salt = literal(hist.secret_hex())
    for lv in levels(cfg):
        key = remainder_key(cfg, lv.kept(cfg))
        # this level's remainder rows of earlier releases, and the implicit ones of their margins
        # (a margin minus its published children at this level); one id per (release, remainder)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE __rr_members AS
            SELECT m.release_id || '\x1c' || m.remainder_key AS release_id, m.release_id AS rel,
                   m.remainder_key, m.cell_key FROM __hist.remainder_members m
            WHERE (m.remainder_key = $1 OR starts_with(m.remainder_key, $1 || '\x1d'))
              AND m.release_id IN (SELECT release_id FROM __diff_all)
        """, [key])
        if not con.execute("SELECT count(*) FROM __rr_members").fetchall()[0][0]:
            continue
        con.execute("""
            CREATE OR REPLACE TEMP TABLE __rr_prior AS
            SELECT r.release_id, h.uh, h.ch FROM __hist.cell_units h
            JOIN (SELECT DISTINCT release_id, rel, remainder_key FROM __rr_members) r
              ON h.release_id = r.rel AND h.cell_key = r.remainder_key
        """)
        groups: dict[Published, list[str]] = {}
        for rid, rel in con.execute("SELECT DISTINCT release_id, rel FROM __rr_members ORDER BY 1").fetchall():
            groups.setdefault(comps_of[rel], []).append(rid)
        for _round in range(MAX_ROUNDS + 1):
            con.execute(f"CREATE OR REPLACE TEMP TABLE __rr_vals AS "
                        f"{_unit_values_sql(cfg, con, lv, salt, 'c.__reason IS NULL')}")
            flagged: set[str] = set()
            for theirs, gids in groups.items():
                na, nb, ni, window = _per_quantity(quantity_conditions(mine, theirs))
                _ids(con, "__rr_ids", gids)
                flagged.update(r[0] for r in con.execute(f"""
                    WITH now AS (
                        SELECT release_id, uh, [{digests}]::UBIGINT[] AS ch FROM (
                            SELECT m.release_id, v.uh{values.replace('p.', 'v.')}
                            FROM __rr_members m JOIN __rr_vals v ON v.cell_key = m.cell_key
                            WHERE m.release_id IN (SELECT release_id FROM __rr_ids) GROUP BY m.release_id, v.uh
                        )
                    ),
                    b AS (SELECT h.release_id, {nb} FROM __rr_prior h
                          WHERE h.release_id IN (SELECT release_id FROM __rr_ids) GROUP BY ALL),
                    a AS (SELECT n.release_id, {na} FROM now n GROUP BY ALL),
                    i AS (SELECT h.release_id, {ni}
                          FROM __rr_prior h JOIN now n ON n.release_id = h.release_id AND n.uh = h.uh GROUP BY ALL)
                    SELECT b.release_id FROM b LEFT JOIN a USING (release_id) LEFT JOIN i USING (release_id)
                    WHERE {window}
                """, [lo, hi]).fetchall())
            if not flagged:
                break
            _ids(con, "__rr_flagged", sorted(flagged))
            last = _round == MAX_ROUNDS
            pick = "DISTINCT c.__cell_key" if last else "first(c.__cell_key ORDER BY c.__units, c.__cell_key)"
            keys = {r[0] for r in con.execute(f"""
                SELECT {pick} FROM __cells c JOIN __rr_members m ON m.cell_key = c.__cell_key
                WHERE m.release_id IN (SELECT release_id FROM __rr_flagged) AND c.__level = {lv.index}
                  AND c.__reason IS NULL {'' if last else 'GROUP BY m.release_id'}
            """).fetchall() if r[0] is not None}
            if not keys:
                break
            _withhold(con, keys)


def check_new_remainders(cfg: ReportConfig, con: Any, hist: History, release_id: str) -> int:
    """Drop this release's remainder rows that earlier releases let a reader take apart: minus the
    earlier published cells with the keys of the withheld cells it aggregates (each part: the
    earlier cell or nothing, the fewest people), or minus an earlier remainder row of the same level
    (the people whose contribution differs), leaving 1 to k − 1 people. Call after
    :func:`pipeline.engines.duckdb.remainder.apply_remainder`; returns how many were dropped."""
    if not con.history_exists(hist):
        return 0
    levels_left = [r[0] for r in con.execute("SELECT DISTINCT __level FROM __remainder").fetchall()]
    if not levels_left:
        return 0
    unit_hashes(con, literal(hist.secret_hex()), replace=False)  # made by the check of this run, if it ran
    con.attach_history(hist, write=False)
    dropped = 0
    try:
        comps_of = earlier_releases(con, release_id)
        if not comps_of:
            return 0
        ids = sorted(comps_of)
        lo, hi = difference_window(cfg)
        comps = components(cfg)
        mine = [c.name for c in comps]
        values = values_sql(comps)
        digests = digests_sql(comps)
        salt = literal(hist.secret_hex())
        by_index = {lv.index: lv for lv in levels(cfg)}
        for index in sorted(levels_left):
            lv = by_index[int(index)]
            key = remainder_key(cfg, lv.kept(cfg))
            # parts: the withheld cells it aggregates (against earlier cells with their keys), and
            # the whole (against earlier remainder rows of the level, which share its key)
            parts = _unit_values_sql(cfg, con, lv, salt, "c.__suppressed")
            whole = (f"SELECT {literal(key)} AS cell_key, uh, {', '.join(f'sum({c}) AS {c}' for c in ['__n', *_value_columns(con, '__per_unit')])} "
                     f"FROM ({parts}) GROUP BY uh")
            for body in (parts, whole):
                con.execute(f"""
                    CREATE OR REPLACE TEMP TABLE __nest_sub AS
                    SELECT {literal(key)} AS parent_key, cell_key AS sub_key, uh, [{digests}]::UBIGINT[] AS ch FROM (
                        SELECT cell_key, uh{values} FROM ({body}) p GROUP BY cell_key, uh)
                """)
                if _subtraction_flags(con, ids, comps_of, mine, lo, hi):
                    con.execute(f"DELETE FROM __remainder WHERE __level = {int(index)}")
                    dropped += 1
                    break
    finally:
        con.detach_history()
    return dropped


def _withhold(con: Any, keys: set[str]) -> None:
    if keys:
        con.execute("CREATE OR REPLACE TEMP TABLE __diff_keys (cell_key VARCHAR)")
        con.executemany("INSERT INTO __diff_keys VALUES (?)", [[c] for c in sorted(keys)])
        con.execute(
            "UPDATE __cells SET __reason = 'difference' WHERE __reason IS NULL AND __cell_key IN (SELECT cell_key FROM __diff_keys)"
        )


def _family_signatures(con: Any, ids: list[str]) -> dict[str, list[str]]:
    """Signature of each level of the releases ``ids`` -> their ids (recorded at publication;
    derived from the stored cell keys for releases recorded before signatures were)."""
    rows: list[tuple[str, str]] = []
    if "release_levels" in con.tables("__hist"):
        rows = con.execute("SELECT DISTINCT release_id, signature FROM __hist.release_levels "
                           "WHERE list_contains($1, release_id)", [ids]).fetchall()
    missing = sorted(set(ids) - {r[0] for r in rows})
    if missing:
        rows += con.execute(f"SELECT DISTINCT release_id, {SIGNATURE_SQL} FROM __hist.cell_units "
                            f"WHERE release_id IN {_ids(con, '__legacy_ids', missing)} "
                            f"AND NOT starts_with(cell_key, {literal(REMAINDER_PREFIX)})").fetchall()
    out: dict[str, list[str]] = {}
    for rid, sig in sorted(rows):
        out.setdefault(sig, []).append(rid)
    return out


def _nested_close(
    cfg: ReportConfig, con: Any, hist: History, schema: dict[str, str],
    comps_of: dict[str, Published], lo: int, hi: int,
) -> set[str]:
    """Cells that earlier releases' finer cells subdivide (a month and its weeks or days, a total
    and its cells, a margin and the cells of another report), with a residual of ``lo``..``hi``
    people: a reader subtracts the earlier cells from the new one and is left with those people's
    contributions.

    Per new cell C and finer family F (the cells of earlier releases with one signature), C's rows
    are split into sub-cells by F's key (rows of a week inside a month, a city's categories). For
    each sub-cell the reader either subtracts an earlier published cell with that key (residual:
    the people whose presence or contribution differs between the two, as in the pairwise check)
    or nothing (residual: the sub-cell's contributors to the quantity); the choice with the fewest people is taken, and
    C is withheld when the people of all chosen residuals together number ``lo``..``hi``."""
    families = _family_signatures(con, sorted(comps_of))
    mine = [c.name for c in components(cfg)]
    close: set[str] = set()
    salt = literal(hist.secret_hex())
    for lv in levels(cfg):
        mine_pairs = level_pairs(cfg, lv.kept(cfg))
        for sig, ids in sorted(families.items()):
            fam = parse_signature(sig)
            if not finer(fam, mine_pairs) or any(c not in schema for c, _ in fam):
                continue  # not a subdivision of this level, or cells of another data set
            at = _derived_per_unit(cfg, con, schema, sorted(set(fam) | set(mine_pairs)), "__nest_pu")
            if at is None:
                continue
            comps = components(cfg)
            values = values_sql(comps)
            digests = digests_sql(comps)
            sub_key = _key_sql([(pr, f"p.{at[pr]}") for pr in fam])
            parent_key = _key_sql([(pr, f"p.{at[pr]}") for pr in mine_pairs])
            uh, join = _uh(con, salt, "p")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE __nest_sub AS
                SELECT parent_key, sub_key, uh, [{digests}]::UBIGINT[] AS ch FROM (
                    SELECT {parent_key} AS parent_key, {sub_key} AS sub_key, {uh} AS uh{values}
                    FROM __nest_pu p{join} WHERE p.__u IS NOT NULL GROUP BY ALL
                ) WHERE parent_key IN (SELECT __cell_key FROM __cells WHERE __level = {lv.index} AND __reason IS NULL)
            """)
            close |= _subtraction_flags(con, ids, comps_of, mine, lo, hi)
    return close


def _subtraction_flags(
    con: Any, ids: list[str], comps_of: dict[str, Published], mine: list[str], lo: int, hi: int,
) -> set[str]:
    """The parents of ``__nest_sub`` (parent_key, sub_key, uh, ch: this release's people per part of
    a new aggregate) that the cells of the earlier releases ``ids`` with the parts' keys leave with
    a residual of ``lo``..``hi`` people (the rule of :func:`_nested_close`)."""
    groups: dict[Published, list[str]] = {}
    for rid in ids:
        groups.setdefault(comps_of[rid], []).append(rid)
    grp_of = {rid: g for g, gids in enumerate(groups.values()) for rid in gids}
    _ids(con, "__fam_ids", ids, grp_of)
    if not set(ids) - _sketched(con):
        _drop_unreachable_parents(con, ids, comps_of, mine, hi)
    if not con.execute("SELECT count(*) FROM __nest_sub").fetchall()[0][0]:
        return set()
    con.execute("""
        CREATE OR REPLACE TEMP TABLE __nest_prior AS
        SELECT h.release_id, f.grp, h.cell_key AS sub_key, h.uh, h.ch
        FROM __hist.cell_units h JOIN __fam_ids f USING (release_id) WHERE h.cell_key IN (SELECT DISTINCT sub_key FROM __nest_sub)
    """)
    # one quantity at a time (:func:`quantity_conditions`): for each of this release's quantities
    # (every config has one: metrics are required), the earlier releases that publish it are the
    # reader's options; a release recorded without quantities publishes presence (``units``)
    flagged: set[str] = set()
    for q in mine:
        differs: dict[int, tuple[str, str, str]] = {}
        for g, (theirs, _gids) in enumerate(groups.items()):
            if q in theirs.names or (q == "units" and not theirs.names):
                differs[g] = quantity_condition(q, mine, theirs)
        nothing = f"n.ch[{digest_position(mine, q)}] <> 0" if q.startswith(VALUE_QUANTITIES) else "TRUE"
        flagged |= _subtraction_flags_of(con, differs, nothing, lo, hi)
    return flagged


def _drop_unreachable_parents(con: Any, ids: list[str], comps_of: dict[str, Published], mine: list[str],
                              hi: int) -> None:
    """Delete from ``__nest_sub`` the parents whose residual passes ``hi`` for every quantity by the
    sketches alone: a quantity's residual is at least, over the parent's sub-cells, the least of
    the sub-cell's contributors and the sketch bounds against each earlier cell with its key
    (people present for presence, rows and units; contributors for a value quantity, which only
    releases of :data:`DIGEST_FORMAT` sketch: with an earlier one among ``ids``, nothing is
    dropped)."""
    keep: list[str] = []
    skeys = sorted({q if q.startswith(VALUE_QUANTITIES) else None for q in mine}, key=lambda s: s or "")
    buckets = ", ".join(f"count(*) FILTER (WHERE __bk = {b} AND __in) AS b{b}" for b in range(SKETCH_BUCKETS))
    for skey in skeys:
        if skey is not None and not all(comps_of[r].exact for r in ids):
            return
        where = "TRUE" if skey is None else f"ch[{digest_position(mine, skey)}] <> 0"
        quantity = "NULL" if skey is None else literal(skey)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __nest_sk{len(keep)} AS
            SELECT parent_key, sub_key, count(*) FILTER (WHERE __in) AS n, {buckets}
            FROM (SELECT parent_key, sub_key, {BUCKET_SQL.format(col='uh')} AS __bk,
                         coalesce({where}, TRUE) AS __in FROM __nest_sub) GROUP BY ALL
        """)
        keep.append(f"""
            SELECT s.parent_key FROM __nest_sk{len(keep)} s LEFT JOIN (
                SELECT s.parent_key, s.sub_key, min({lower_bound_sql('s', 'h')}) AS best
                FROM __nest_sk{len(keep)} s JOIN __hist.cell_sketch h ON h.cell_key = s.sub_key
                 AND {_sketch_quantity(con)} IS NOT DISTINCT FROM CAST({quantity} AS VARCHAR)
                WHERE h.release_id IN (SELECT release_id FROM __fam_ids) GROUP BY ALL) p USING (parent_key, sub_key)
            GROUP BY s.parent_key HAVING max(least(s.n, coalesce(p.best, s.n))) <= {int(hi)}""")
    con.execute(f"DELETE FROM __nest_sub WHERE parent_key NOT IN ({' UNION '.join(keep)})")


def _subtraction_flags_of(con: Any, differs: dict[int, tuple[str, str, str]], nothing: str, lo: int,
                          hi: int) -> set[str]:
    """The parents of ``__nest_sub`` left with a residual of ``lo``..``hi`` people for one quantity,
    whose earlier releases (component group → :func:`quantity_condition`: differs, ``n``
    contributes, ``h`` contributes) are ``differs`` and whose contributors in a sub-cell are the
    rows of ``__nest_sub n`` where ``nothing`` holds: per sub-cell the reader's best option
    (nothing, or one earlier cell with its key), then the people of all chosen residuals together."""
    # the reader's options per sub-cell: subtract nothing ('' = residual: its contributors) or an earlier cell
    opts = [f"SELECT parent_key, sub_key, '' AS rid, -1 AS grp, count(*) FILTER (WHERE {nothing}) AS d "
            "FROM __nest_sub n GROUP BY ALL"]
    for g, (diff, nz_n, nz_h) in differs.items():
        opts.append(f"""
            SELECT t.parent_key, t.sub_key, b.release_id AS rid, {g} AS grp,
                   t.na - coalesce(i.nia, 0) + b.nb - coalesce(i.nib, 0) + coalesce(i.nd, 0) AS d
            FROM (SELECT parent_key, sub_key, count(*) FILTER (WHERE {nz_n}) AS na FROM __nest_sub n GROUP BY ALL) t
            JOIN (SELECT release_id, sub_key, count(*) FILTER (WHERE {nz_h}) AS nb FROM __nest_prior h
                  WHERE grp = {g} GROUP BY ALL) b USING (sub_key)
            LEFT JOIN (SELECT n.parent_key, n.sub_key, h.release_id, count(*) FILTER (WHERE {nz_n}) AS nia,
                              count(*) FILTER (WHERE {nz_h}) AS nib,
                              count(*) FILTER (WHERE coalesce({diff}, FALSE)) AS nd
                       FROM __nest_sub n JOIN __nest_prior h ON h.sub_key = n.sub_key AND h.uh = n.uh
                       WHERE h.grp = {g} GROUP BY ALL) i
              ON i.parent_key = t.parent_key AND i.sub_key = t.sub_key AND i.release_id = b.release_id""")
    if len(opts) == 1:
        return set()  # no earlier release publishes this quantity: nothing to subtract
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE __nest_best AS
        SELECT parent_key, sub_key, first(rid ORDER BY d, rid) AS rid, first(grp ORDER BY d, rid) AS grp
        FROM ({' UNION ALL '.join(opts)}) GROUP BY ALL
    """)
    residual = ["SELECT n.parent_key, n.uh FROM __nest_sub n JOIN __nest_best b USING (parent_key, sub_key) "
                f"WHERE b.rid = '' AND {nothing}"]
    for g, (diff, nz_n, nz_h) in differs.items():
        residual.append(
            "SELECT n.parent_key, n.uh FROM __nest_sub n JOIN __nest_best b USING (parent_key, sub_key) "
            "LEFT JOIN __nest_prior h ON h.release_id = b.rid AND h.sub_key = n.sub_key AND h.uh = n.uh "
            f"WHERE b.grp = {g} AND ((h.uh IS NULL AND {nz_n}) OR coalesce({diff}, FALSE))")
        residual.append(
            "SELECT b.parent_key, h.uh FROM __nest_best b JOIN __nest_prior h "
            "ON h.release_id = b.rid AND h.sub_key = b.sub_key "
            f"WHERE b.grp = {g} AND {nz_h} AND NOT EXISTS (SELECT 1 FROM __nest_sub n WHERE n.parent_key = b.parent_key "
            "AND n.sub_key = b.sub_key AND n.uh = h.uh)")
    flagged = con.execute(f"""
        SELECT parent_key FROM ({' UNION ALL '.join(residual)})
        WHERE parent_key IN (SELECT parent_key FROM __nest_best WHERE rid <> '')
        GROUP BY parent_key HAVING count(DISTINCT uh) BETWEEN $1 AND $2
    """, [lo, hi]).fetchall()
    return {r[0] for r in flagged}


def _derived_per_unit(
    cfg: ReportConfig, con: Any, schema: dict[str, str], pairs: list[Pair], table: str
) -> dict[Pair, str] | None:
    """``table``: this release's rows per (unit, values of ``pairs``) (the quantities of
    ``__per_unit``, same filter and metrics); returns each pair's key column, or None when this
    config cannot group by those columns (then the family is another data set's)."""
    from ...errors import ConfigError
    from .cells import per_unit_sql

    own = {(d.column, d.grain or ""): i for i, d in enumerate(cfg.dims)}
    if all(pr in own for pr in pairs):  # this release's own dimensions: regroup __per_unit, no new scan
        keys = ", ".join(f"{dim_key(own[pr])} AS {dim_key(k)}" for k, pr in enumerate(pairs))
        sums = ", ".join(f"sum({c}) AS {c}" for c in ["__n", *_value_columns(con, "__per_unit")])
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {keys}, __u, {sums} FROM __per_unit GROUP BY ALL")
        return {pair: dim_key(k) for k, pair in enumerate(pairs)}
    dims = [{"column": c, **({"grain": g} if g else {}), "as": f"nest_{k}"} for k, (c, g) in enumerate(pairs)]
    try:
        derived = cfg.with_overrides(dimensions=dims, totals=None, remainder=False)
    except ConfigError:
        return None  # (e.g. a column this config declares an identifier): not comparable here
    con.run(per_unit_sql(derived, schema, table=table))
    return {pair: dim_key(k) for k, pair in enumerate(pairs)}


def _complements_for_earlier_cells(
    cfg: ReportConfig, con: Any, hist: History, schema: dict[str, str],
    comps_of: dict[str, Published], lo: int, hi: int,
) -> None:
    """Withhold further cells of this release where they would subdivide a coarser cell of an
    earlier release (its month, its total, its margin) leaving 1 to k − 1 people: the earlier cell
    minus this release's published cells inside it would isolate them.

    Per earlier coarse cell R the reader subtracts this release's published cells that have rows
    in R: all of them, or only those with no rows outside R (two strategies). The residual is the
    people whose contribution to R (as recorded) differs from their summed contribution to the
    subtracted cells (as published now), present in one only included where they contribute
    (:func:`quantity_conditions`). While some R's residual is
    1 to k − 1 people, the published cell with rows in R with the fewest people is withheld
    (ties by key) and the check repeats; after ``MAX_ROUNDS`` every cell with rows in such an R
    is withheld."""
    families = _family_signatures(con, sorted(comps_of))
    salt = literal(hist.secret_hex())
    for lv in levels(cfg):
        mine_pairs = level_pairs(cfg, lv.kept(cfg))
        for sig, ids in sorted(families.items()):
            fam = parse_signature(sig)
            if not finer(mine_pairs, fam) or any(c not in schema for c, _ in fam):
                continue
            at = _derived_per_unit(cfg, con, schema, sorted(set(fam) | set(mine_pairs)), "__rev_pu")
            if at is None:
                continue
            sums = ["sum(p.__n) AS __n"] + [
                f"sum(p.{c}) AS {c}" for c in _value_columns(con, "__rev_pu")]
            region = _key_sql([(pr, f"p.{at[pr]}") for pr in fam])
            cell = _key_sql([(pr, f"p.{at[pr]}") for pr in mine_pairs])
            uh, join = _uh(con, salt, "p")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE __rev_piece AS
                SELECT {region} AS region_key, {cell} AS cell_key, {uh} AS uh, {', '.join(sums)}
                FROM __rev_pu p{join} WHERE p.__u IS NOT NULL GROUP BY ALL
            """)
            groups: dict[Published, list[str]] = {}
            for rid in ids:
                groups.setdefault(comps_of[rid], []).append(rid)
            grp_of = {rid: g for g, gids in enumerate(groups.values()) for rid in gids}
            _ids(con, "__fam_ids", ids, grp_of)
            unsketched = sorted(set(ids) - _sketched(con))
            comps = components(cfg)
            values = values_sql(comps)
            digests = digests_sql(comps)
            for _round in range(MAX_ROUNDS + 1):
                flagged = _flagged_regions(con, lv.index, list(groups), comps, values, digests, lo, hi, unsketched)
                if not flagged:
                    break
                con.execute("CREATE OR REPLACE TEMP TABLE __rev_flagged (region_key VARCHAR)")
                con.executemany("INSERT INTO __rev_flagged VALUES (?)", [[r] for r in sorted(flagged)])
                last = _round == MAX_ROUNDS
                pick = ("SELECT DISTINCT c.__cell_key FROM" if last else
                        "SELECT first(c.__cell_key ORDER BY c.__units, c.__cell_key) FROM")
                keys = {r[0] for r in con.execute(f"""
                    {pick} __cells c JOIN (SELECT DISTINCT p.region_key, p.cell_key FROM __rev_piece p
                                            JOIN __rev_flagged f USING (region_key)) x ON x.cell_key = c.__cell_key
                    WHERE c.__level = {lv.index} AND c.__reason IS NULL
                    {'' if last else 'GROUP BY x.region_key'}
                """).fetchall() if r[0] is not None}
                if not keys:
                    break
                _withhold(con, keys)


MAX_ROUNDS = 20


def _value_columns(con: Any, table: str) -> list[str]:
    """The per-unit value columns (``__s{i}``, ``__c{i}``) of a ``per_unit_sql`` table."""
    return [c for c in con.columns(table) if c.startswith(("__s", "__c"))]


def _flagged_regions(
    con: Any, level: int, groups: list[Published], comps: list[Component],
    values: str, digests: str, lo: int, hi: int, unsketched: list[str],
) -> set[str]:
    """Earlier coarse cells of the releases in ``__fam_ids`` whose residual after subtracting this
    release's published cells of ``level`` (both strategies) is ``lo``..``hi`` people. Only the
    (release, coarse cell) pairs whose sketch bound allows such a residual (and those of releases
    in ``unsketched``) are compared person by person."""
    mine = [c.name for c in comps]
    published = f"(SELECT __cell_key FROM __cells WHERE __level = {level} AND __reason IS NULL)"
    inside = "(SELECT cell_key FROM __rev_piece GROUP BY cell_key HAVING count(DISTINCT region_key) = 1)"
    out: set[str] = set()
    for strategy in (f"cell_key IN {published}", f"cell_key IN {published} AND cell_key IN {inside}"):
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __rev_now AS
            WITH chosen AS (SELECT DISTINCT region_key, cell_key FROM __rev_piece WHERE {strategy}),
            tot AS (SELECT c.region_key, p.uh{values} FROM chosen c JOIN __rev_piece p ON p.cell_key = c.cell_key
                    GROUP BY c.region_key, p.uh)
            SELECT region_key, uh, [{digests}]::UBIGINT[] AS ch FROM tot
        """)
        # regions the subtraction leaves empty on this side still count: their residual is the earlier cell
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __rev_now_sk AS
            SELECT r.region_key AS cell_key, q.quantity, coalesce(s.n, 0) AS n,
                   {', '.join(f'coalesce(s.b{b}, 0) AS b{b}' for b in range(SKETCH_BUCKETS))}
            FROM (SELECT DISTINCT region_key FROM __rev_piece) r
            CROSS JOIN ({' UNION ALL '.join(
                f"SELECT CAST({'NULL' if q is None else literal(q)} AS VARCHAR) AS quantity"
                for q, _ in sketched_quantities(comps))}) q
            LEFT JOIN ({sketches_sql('__rev_now', 'region_key', comps)}) s
              ON s.cell_key = r.region_key AND s.quantity IS NOT DISTINCT FROM q.quantity
        """)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __rev_need AS
            SELECT DISTINCT h.release_id, h.cell_key FROM __hist.cell_sketch h
            JOIN __rev_now_sk c ON c.cell_key = h.cell_key AND c.quantity IS NOT DISTINCT FROM {_sketch_quantity(con)}
            WHERE h.release_id IN (SELECT release_id FROM __fam_ids) AND {lower_bound_sql('c', 'h')} <= {int(hi)}
        """) if _has_sketch_table(con) else con.execute(
            "CREATE OR REPLACE TEMP TABLE __rev_need (release_id VARCHAR, cell_key VARCHAR)")
        if unsketched:
            con.execute(f"""
                INSERT INTO __rev_need SELECT DISTINCT release_id, cell_key FROM __hist.cell_units
                WHERE release_id IN {_ids(con, '__rev_legacy', unsketched)}
                  AND cell_key IN (SELECT cell_key FROM __rev_now_sk)
            """)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE __rev_prior AS
            SELECT h.release_id, f.grp, h.cell_key AS region_key, h.uh, h.ch
            FROM __hist.cell_units h JOIN __rev_need USING (release_id, cell_key) JOIN __fam_ids f USING (release_id)
        """)
        for g, theirs in enumerate(groups):
            na, nb, ni, window = _per_quantity(quantity_conditions(mine, theirs))
            out.update(r[0] for r in con.execute(f"""
                WITH b AS (SELECT h.release_id, h.region_key, {nb} FROM __rev_prior h
                           WHERE h.grp = {g} GROUP BY ALL),
                a AS (SELECT n.region_key, {na} FROM __rev_now n GROUP BY ALL),
                i AS (SELECT h.release_id, h.region_key, {ni}
                      FROM __rev_prior h JOIN __rev_now n ON n.region_key = h.region_key AND n.uh = h.uh
                      WHERE h.grp = {g} GROUP BY ALL)
                SELECT DISTINCT b.region_key FROM b LEFT JOIN a USING (region_key)
                LEFT JOIN i USING (release_id, region_key)
                WHERE {window}
            """, [lo, hi]).fetchall())
    return out


def _record_remainders(cfg: ReportConfig, con: Any, hist: History, release_id: str) -> None:
    """Store each published remainder row like a cell (per-person digests and a sketch, under its
    level's remainder key) and the withheld cells it aggregates (``remainder_members``)."""
    comps = components(cfg)
    values = values_sql(comps)
    digests = digests_sql(comps)
    salt = literal(hist.secret_hex())
    by_index = {lv.index: lv for lv in levels(cfg)}
    for (index,) in con.execute("SELECT DISTINCT __level FROM __remainder ORDER BY 1").fetchall():
        lv = by_index[int(index)]
        key = remainder_key(cfg, lv.kept(cfg))
        parts = _unit_values_sql(cfg, con, lv, salt, "c.__suppressed")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE __rem_units AS
            SELECT {literal(key)} AS cell_key, uh, [{digests}]::UBIGINT[] AS ch
            FROM (SELECT uh{values} FROM ({parts}) p GROUP BY uh)
        """)
        con.execute("INSERT INTO __hist.cell_units (release_id, cell_key, uh, ch) "
                    "SELECT $1, cell_key, uh, ch FROM __rem_units", [release_id])
        con.execute(SKETCH_INSERT + f"SELECT $1, s.* FROM ({sketches_sql('__rem_units', 'cell_key', comps)}) s",
                    [release_id])
        con.execute(f"INSERT INTO __hist.remainder_members SELECT $1, $2, __cell_key FROM __cells "
                    f"WHERE __level = {int(index)} AND __suppressed", [release_id, key])


def _record_margin_remainders(cfg: ReportConfig, con: Any, hist: History, release_id: str) -> None:
    """Store, per published margin cell and finer level, what a reader gets by subtracting the
    margin's published children from it: the withheld children's people and contributions (an
    implicit remainder row, keyed by the finer level's remainder key and the margin's cell key),
    with those children as its members. A later release publishing one of them is then checked
    against it (:func:`_complements_for_earlier_remainders`)."""
    comps = components(cfg)
    values = values_sql(comps)
    digests = digests_sql(comps)
    salt = literal(hist.secret_hex())
    lvls = levels(cfg)
    for m_lv in lvls[1:]:
        m_keep = set(m_lv.kept(cfg))
        for f_lv in lvls:
            if not set(f_lv.kept(cfg)) > m_keep:
                continue
            on = " AND ".join(f"w.{dim_key(i)} IS NOT DISTINCT FROM m.{dim_key(i)}" for i in sorted(m_keep)) or "TRUE"
            prefix = literal(remainder_key(cfg, f_lv.kept(cfg)) + "\x1d")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE __mr_link AS
                SELECT {prefix} || m.__cell_key AS rkey, w.__cell_key AS fkey
                FROM __cells w JOIN __cells m ON {on}
                WHERE w.__level = {f_lv.index} AND w.__suppressed AND m.__level = {m_lv.index} AND NOT m.__suppressed
            """)
            if not con.execute("SELECT count(*) FROM __mr_link").fetchall()[0][0]:
                continue
            parts = _unit_values_sql(cfg, con, f_lv, salt, "c.__suppressed")
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE __rem_units AS
                SELECT rkey AS cell_key, uh, [{digests}]::UBIGINT[] AS ch FROM (
                    SELECT l.rkey, v.uh{values.replace('p.', 'v.')} FROM __mr_link l JOIN ({parts}) v ON v.cell_key = l.fkey
                    GROUP BY l.rkey, v.uh)
            """)
            con.execute("INSERT INTO __hist.cell_units (release_id, cell_key, uh, ch) "
                        "SELECT $1, cell_key, uh, ch FROM __rem_units", [release_id])
            con.execute(SKETCH_INSERT + f"SELECT $1, s.* FROM ({sketches_sql('__rem_units', 'cell_key', comps)}) s",
                        [release_id])
            con.execute("INSERT INTO __hist.remainder_members SELECT $1, rkey, fkey FROM __mr_link", [release_id])


def record_release(cfg: ReportConfig, con: Any, hist: History, release_id: str, source_id: str, run_id: str) -> None:
    """Store the unit hashes and digests of the cells that end up published (replacing an earlier
    record of this id), with the release's component names."""
    import datetime as dt

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    comps = components(cfg)
    unit_hashes(con, literal(hist.secret_hex()), replace=False)  # made by the check of this run, if it ran
    con.attach_history(hist, write=True)
    try:
        con.execute(SCHEMA.replace("TABLE IF NOT EXISTS ", "TABLE IF NOT EXISTS __hist.").replace(
            "ALTER TABLE ", "ALTER TABLE __hist."))
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM __hist.cell_units WHERE release_id = $1", [release_id])
        con.execute("DELETE FROM __hist.releases WHERE release_id = $1", [release_id])
        con.execute(
            "INSERT INTO __hist.releases (release_id, source_id, report, run_id, created_utc, components, "
            "digest_format) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [release_id, source_id, cfg.report, run_id, now, [c.name for c in comps], DIGEST_FORMAT],
        )
        con.execute(
            "INSERT INTO __hist.cell_units (release_id, cell_key, uh, ch) SELECT $1, u.cell_key, u.uh, u.ch "
            "FROM __cand_units u WHERE u.cell_key IN (SELECT __cell_key FROM __cells WHERE __reason IS NULL)",
            [release_id],
        )
        con.execute("DELETE FROM __hist.cell_sketch WHERE release_id = $1", [release_id])
        con.execute(
            SKETCH_INSERT + f"SELECT $1, s.* FROM ({sketches_sql('__cand_units', 'cell_key', comps)}) s "
            "WHERE s.cell_key IN (SELECT __cell_key FROM __cells WHERE __reason IS NULL)",
            [release_id],
        )
        con.execute("DELETE FROM __hist.remainder_members WHERE release_id = $1", [release_id])
        if cfg.remainder:
            _record_remainders(cfg, con, hist, release_id)
        if cfg.totals:
            _record_margin_remainders(cfg, con, hist, release_id)
        con.execute("DELETE FROM __hist.release_levels WHERE release_id = $1", [release_id])
        con.executemany("INSERT INTO __hist.release_levels VALUES (?, ?)",
                        [[release_id, signature(level_pairs(cfg, lv.kept(cfg)))] for lv in levels(cfg)])
        con.execute("COMMIT")
    except con.Error as exc:
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise LedgerError(f"cannot record the release in {hist.path}: {first_line(exc)}") from None
    finally:
        con.detach_history()
