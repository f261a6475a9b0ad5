"""Privacy-budget ledger: a DuckDB file of every DP release, hash-chained and keyed with a secret.

Files (all beside each other):
- ``<ledger>``          DuckDB database: ``entries`` (one per release) and ``release_files``
                        (the release's bytes, so an interrupted publication can be completed
                        with exactly the bytes that were charged for).
- ``<ledger>.lock``     advisory lock (``flock``): every access holds it, so processes serialise.
- ``<ledger>.secret``   32 random bytes, mode 0600: keys the entry MACs and the bounding seeds;
                        followed by a MAC'd record of the last entry (the secret's commitment to
                        the ledger's state).
- ``<ledger>.head``     the last entry's sequence number and hash, MAC'd: detects deleted tails.

Guarantees:
- An entry is written (with the release bytes) in one DuckDB transaction *before* the release is
  renamed into view; a crash in between is completed by the next run with the same run id, which
  publishes the recorded bytes and spends nothing more. Budget is never spent twice for one
  (source, report, run id) and never under-counted.
- Spend is checked against the limits under the lock, so concurrent runs cannot overspend.
- ``verify`` detects an edited, deleted or reordered entry (chain + HMAC + head), and a ledger
  deleted or rolled back to an earlier copy (with its head) while the secret remains (the
  secret's commitment); a ledger that fails verification refuses all further spending.
- A DuckDB file that is not a ledger (other tables, other columns) is refused, never modified.
- The budget is keyed by the population: :meth:`check_population` refuses a release whose source
  files have the same bytes as files released under another source id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LedgerError, PrivacyRefusal
from .files import file_lock, load_or_create_secret, read_commitment, write_commitment

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq BIGINT PRIMARY KEY,
    source_id VARCHAR NOT NULL,
    report VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    epsilon DOUBLE NOT NULL,
    delta DOUBLE NOT NULL,
    rho DOUBLE,
    source_fingerprint VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    report_sha256 VARCHAR NOT NULL,
    created_utc VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    entry_hash VARCHAR NOT NULL,
    mac VARCHAR NOT NULL,
    content_digests VARCHAR DEFAULT '',
    UNIQUE (source_id, report, run_id)
);
CREATE TABLE IF NOT EXISTS release_files (
    seq BIGINT NOT NULL,
    name VARCHAR NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (seq, name)
);
"""
HASHED_FIELDS = (
    "seq", "source_id", "report", "run_id", "mode", "epsilon", "delta", "rho",
    "source_fingerprint", "config_hash", "report_sha256", "created_utc", "prev_hash",
)
# stored and hashed too, after HASHED_FIELDS, when not empty (entries of earlier versions lack it)
STORED_FIELDS = (*HASHED_FIELDS, "entry_hash", "mac", "content_digests")
LEDGER_TABLES = {
    "entries": {*STORED_FIELDS},
    "release_files": {"seq", "name", "content"},
}


@dataclass(frozen=True)
class Entry:
    seq: int
    source_id: str
    report: str
    run_id: str
    mode: str
    epsilon: float
    delta: float
    rho: float | None
    source_fingerprint: str
    config_hash: str
    report_sha256: str
    created_utc: str
    prev_hash: str
    entry_hash: str = ""
    mac: str = ""
    content_digests: str = ""  # JSON list of the sha256 of each source file's bytes, sorted

    def payload(self) -> bytes:
        values = [getattr(self, f) for f in HASHED_FIELDS]
        if self.content_digests:
            values.append(self.content_digests)
        return json.dumps(values, separators=(",", ":")).encode()

    def digests(self) -> set[str]:
        return set(json.loads(self.content_digests)) if self.content_digests else set()

    def compute_hash(self) -> str:
        return hashlib.sha256(self.payload()).hexdigest()

    def public(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in (*HASHED_FIELDS, "entry_hash")}


class Ledger:
    """Access to one ledger file. Use :meth:`locked` around every read-check-write sequence."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.secret_path = self.path.with_name(self.path.name + ".secret")
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._held = 0
        self._entries: list[Entry] | None = None  # valid only while the lock is held (nobody else writes)
        self._secret: bytes | None = None  # likewise

    # ----- locking and secrets -----------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[Ledger]:
        """Hold the ledger's exclusive lock (re-entrant within this object). Raises LedgerError on timeout."""
        if self._held:
            self._held += 1
            try:
                yield self
            finally:
                self._held -= 1
            return
        with file_lock(self.lock_path, what=f"ledger {self.path}", timeout=timeout):
            self._held, self._entries, self._secret = 1, None, None
            try:
                yield self
            finally:
                self._held, self._entries, self._secret = 0, None, None

    def _require_lock(self) -> None:
        if not self._held:
            raise RuntimeError("ledger access without holding its lock")

    def secret(self) -> bytes:
        """The ledger's secret (created with mode 0600 on first use). Never logged or published."""
        self._require_lock()
        if self._secret is None:
            self._secret = load_or_create_secret(self.secret_path)
        return self._secret

    def _mac(self, text: str) -> str:
        return hmac.new(self.secret(), text.encode(), hashlib.sha256).hexdigest()

    # ----- database ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self, *, write: bool) -> Iterator[Any]:
        import duckdb

        self._require_lock()
        if not write and not self.path.exists():
            yield None
            return
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.Error as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {str(exc).splitlines()[0]}") from None
        try:
            self._check_tables(con)
            con.execute(SCHEMA)
            con.execute("ALTER TABLE entries ADD COLUMN IF NOT EXISTS content_digests VARCHAR DEFAULT ''")
            yield con
        except duckdb.Error as exc:  # a ledger that cannot be read or written is a ledger problem (exit 3)
            raise LedgerError(f"ledger {self.path}: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()

    def _check_tables(self, con: Any) -> None:
        """Refuse a DuckDB file that is not a ledger (before anything is created in it)."""
        cols: dict[str, set[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
        ).fetchall():
            cols.setdefault(table, set()).add(column)
        views = [r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal").fetchall()]
        foreign = sorted(set(cols) - set(LEDGER_TABLES)) + sorted(views)
        legacy = {"content_digests"}  # columns later versions added
        wrong = sorted(t for t, c in cols.items() if t in LEDGER_TABLES and not (
            LEDGER_TABLES[t] - legacy <= c <= LEDGER_TABLES[t]))
        if foreign or wrong:
            what = ", ".join([*(f"table {t}" for t in foreign), *(f"table {t} with other columns" for t in wrong)])
            raise LedgerError(
                f"{self.path} is not a privacy-budget ledger of this tool (it holds {what}): a wrong or "
                "tampered file; point budget.ledger at the ledger (or at a new path to start one)"
            )

    def entries(self) -> list[Entry]:
        """Every entry in order. Read once per lock hold: while this process holds the lock no
        other process can write, and :meth:`record` drops the copy when it adds an entry."""
        with self.locked():
            if self._entries is None:
                with self._db(write=False) as con:
                    rows = [] if con is None else con.execute(
                        f"SELECT {', '.join(STORED_FIELDS[:-1])}, coalesce(content_digests, '') FROM entries ORDER BY seq"
                    ).fetchall()
                # ordered here by seq: a fetched result's order is not relied on
                self._entries = sorted((Entry(*r) for r in rows), key=lambda e: e.seq)
            return list(self._entries)

    # ----- verification ------------------------------------------------------------------------
    def verify(self) -> int:
        """Check chain, MACs and head. Returns the number of entries; raises LedgerError if tampered."""
        with self.locked():
            entries = self.entries()
            committed = self._read_commitment()
            cseq = int(committed.get("seq", 0)) if committed else 0
            if not entries:
                if self.head_path.exists() and self._read_head().get("seq", 0) > 0:
                    raise LedgerError(f"ledger {self.path} lost all its entries (head records some): tampered")
                self._check_commitment(cseq, 0)
                return 0
            prev = GENESIS
            for i, e in enumerate(entries, start=1):
                if e.seq != i:
                    raise LedgerError(f"ledger {self.path}: entry {i} is missing or out of order (found seq {e.seq}): tampered")
                if e.prev_hash != prev:
                    raise LedgerError(f"ledger {self.path}: entry {e.seq} does not follow entry {e.seq - 1} (chain broken): tampered")
                if e.compute_hash() != e.entry_hash:
                    raise LedgerError(f"ledger {self.path}: entry {e.seq} was edited (hash mismatch): tampered")
                if not hmac.compare_digest(self._mac(e.entry_hash), e.mac):
                    raise LedgerError(f"ledger {self.path}: entry {e.seq} has an invalid MAC (not written by this ledger's key): tampered")
                prev = e.entry_hash
            self._check_commitment(cseq, len(entries))
            head = self._read_head()
            hseq = int(head.get("seq", 0))
            if hseq > len(entries):
                raise LedgerError(f"ledger {self.path}: entries after {len(entries)} were deleted (head records {hseq}): tampered")
            if hseq and entries[hseq - 1].entry_hash != head.get("entry_hash"):
                raise LedgerError(f"ledger {self.path}: entry {hseq} does not match the head record: tampered")
            if cseq and entries[cseq - 1].entry_hash != committed.get("entry_hash"):  # type: ignore[union-attr]
                raise LedgerError(f"ledger {self.path}: entry {cseq} does not match the secret's record: "
                                  "replaced by another ledger: tampered")
            if hseq < len(entries):
                # an entry was committed but the process died before updating the head; entries
                # only add spend, so bring the head forward
                self._write_head(entries[-1])
            if cseq < len(entries):  # likewise (or a ledger from before the secret recorded its state)
                self._commit(entries[-1])
            return len(entries)

    def _check_commitment(self, cseq: int, n: int) -> None:
        if cseq > n:
            raise LedgerError(
                f"ledger {self.path} holds {n} entries but its secret records {cseq}: the ledger "
                "was deleted or rolled back to an earlier copy, which would spend the budget again; "
                "restore the latest ledger from backup (nothing was published)"
            )

    def _read_commitment(self) -> dict[str, Any] | None:
        self.secret()  # created (or checked) first
        record = read_commitment(self.secret_path)
        if record is None:
            return None
        expected = self._mac(f"state:{record.get('seq')}:{record.get('entry_hash')}")
        if not hmac.compare_digest(expected, str(record.get("mac", ""))):
            raise LedgerError(f"{self.secret_path}: its record of the ledger's state has an invalid MAC: tampered")
        return record

    def _commit(self, e: Entry) -> None:
        write_commitment(self.secret_path, self.secret(), {
            "seq": e.seq, "entry_hash": e.entry_hash, "mac": self._mac(f"state:{e.seq}:{e.entry_hash}")})

    def _read_head(self) -> dict[str, Any]:
        if not self.head_path.exists():
            return {}
        try:
            head = json.loads(self.head_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise LedgerError(f"{self.head_path} is unreadable: tampered or damaged") from None
        expected = self._mac(f"head:{head.get('seq')}:{head.get('entry_hash')}")
        if not hmac.compare_digest(expected, str(head.get("mac", ""))):
            raise LedgerError(f"{self.head_path} has an invalid MAC: tampered")
        return head

    def _write_head(self, e: Entry) -> None:
        data = {"seq": e.seq, "entry_hash": e.entry_hash, "mac": self._mac(f"head:{e.seq}:{e.entry_hash}")}
        tmp = self.head_path.with_name(self.head_path.name + f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.head_path)

    # ----- queries -----------------------------------------------------------------------------
    def find(self, source_id: str, report: str, run_id: str) -> Entry | None:
        for e in self.entries():
            if (e.source_id, e.report, e.run_id) == (source_id, report, run_id):
                return e
        return None

    def files(self, seq: int) -> dict[str, bytes]:
        with self.locked(), self._db(write=False) as con:
            if con is None:
                return {}
            rows = con.execute("SELECT name, content FROM release_files WHERE seq = ? ORDER BY name", [seq]).fetchall()
        return {name: bytes(content) for name, content in rows}

    def spent(self, source_id: str) -> tuple[float, float, float]:
        """(epsilon, delta, rho) spent on ``source_id`` by basic composition (sums)."""
        eps = delta = rho = 0.0
        for e in self.entries():
            if e.source_id == source_id:
                eps += e.epsilon
                delta += e.delta
                rho += e.rho or 0.0
        return eps, delta, rho

    def check_budget(self, source_id: str, epsilon: float, delta: float, limits: dict[str, float]) -> dict[str, Any]:
        """Raise PrivacyRefusal if spending (epsilon, delta) would pass the limits; else the budget view."""
        eps_spent, delta_spent, _ = self.spent(source_id)
        eps_limit, delta_limit = limits["epsilon_limit"], limits["delta_limit"]
        tol = 1e-12
        if eps_spent + epsilon > eps_limit * (1 + tol):
            raise PrivacyRefusal(
                f"privacy budget exhausted for source {source_id}: spent ε={eps_spent:.6g}, this release needs "
                f"ε={epsilon:.6g}, limit {eps_limit:.6g} (ledger {self.path}); nothing was published"
            )
        if delta_spent + delta > delta_limit * (1 + tol):
            raise PrivacyRefusal(
                f"privacy budget exhausted for source {source_id}: spent δ={delta_spent:.3g}, this release needs "
                f"δ={delta:.3g}, limit {delta_limit:.3g} (ledger {self.path}); nothing was published"
            )
        return {
            "source_id": source_id,
            "epsilon_spent_before": eps_spent,
            "delta_spent_before": delta_spent,
            "epsilon_limit": eps_limit,
            "delta_limit": delta_limit,
        }

    def record(self, fields: dict[str, Any], files: dict[str, bytes]) -> Entry:
        """Append one entry (and its release bytes) atomically; returns it with hash and MAC."""
        with self.locked():
            prior = self.entries()
            seq = len(prior) + 1
            prev = prior[-1].entry_hash if prior else GENESIS
            e = Entry(
                seq=seq,
                source_id=fields["source_id"],
                report=fields["report"],
                run_id=fields["run_id"],
                mode=fields.get("mode", "dp"),
                epsilon=float(fields["epsilon"]),
                delta=float(fields["delta"]),
                rho=None if fields.get("rho") is None else float(fields["rho"]),
                source_fingerprint=fields["source_fingerprint"],
                config_hash=fields["config_hash"],
                report_sha256=fields["report_sha256"],
                created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                prev_hash=prev,
                content_digests=json.dumps(sorted(fields.get("content_digests") or [])) if fields.get("content_digests") else "",
            )
            h = e.compute_hash()
            e = Entry(**{**e.__dict__, "entry_hash": h, "mac": self._mac(h)})
            from ..progress import fault_point

            self._entries = None  # re-read after this write, whatever happens to it
            with self._db(write=True) as con:
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(
                        f"INSERT INTO entries ({', '.join(STORED_FIELDS)}) "
                        f"VALUES ({', '.join('?' * len(STORED_FIELDS))})",
                        [getattr(e, f) for f in STORED_FIELDS],
                    )
                    for name, content in files.items():
                        con.execute("INSERT INTO release_files VALUES (?, ?, ?)", [seq, name, content])
                    fault_point("ledger.before_commit")
                    con.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        con.execute("ROLLBACK")
                    raise
                con.execute("CHECKPOINT")
            fault_point("ledger.committed")
            self._write_head(e)
            self._commit(e)
            return e

    def check_population(self, source_id: str, digests: list[str]) -> None:
        """Refuse (PrivacyRefusal) spending on ``source_id`` when a source file has the same bytes as
        one released under another source id: the same people would get a second, fresh budget."""
        mine = set(digests)
        for e in self.entries():
            if e.source_id != source_id and mine & e.digests():
                raise PrivacyRefusal(
                    f"the source's data is already under the budget of source id {e.source_id!r} (a file with "
                    f"the same bytes was released as {e.report}/{e.run_id}); spending under {source_id!r} would "
                    f"give the same people a second budget; nothing was published. Set budget.source_id: "
                    f"{e.source_id!r} to charge that budget"
                )

    def spend(self, limits: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """Per source: releases, epsilon/delta spent and (with limits) left."""
        with self.locked():
            self.verify()
            out: dict[str, dict[str, Any]] = {}
            for e in self.entries():
                s = out.setdefault(e.source_id, {"source_id": e.source_id, "releases": 0, "epsilon_spent": 0.0,
                                                 "delta_spent": 0.0, "rho_spent": 0.0, "last_release": None})
                s["releases"] += 1
                s["epsilon_spent"] += e.epsilon
                s["delta_spent"] += e.delta
                s["rho_spent"] += e.rho or 0.0
                s["last_release"] = f"{e.report}/{e.run_id} at {e.created_utc}"
        rows = list(out.values())
        for s in rows:
            if limits:
                s["epsilon_limit"] = limits["epsilon_limit"]
                s["delta_limit"] = limits["delta_limit"]
                s["epsilon_left"] = max(0.0, limits["epsilon_limit"] - s["epsilon_spent"])
                s["delta_left"] = max(0.0, limits["delta_limit"] - s["delta_spent"])
        return rows


def format_spend(rows: list[dict[str, Any]], path: Path) -> str:
    if not rows:
        return f"{path}: no releases recorded"
    lines = [f"ledger {path}"]
    for s in rows:
        line = (f"  {s['source_id']}: {s['releases']} release(s), ε spent {s['epsilon_spent']:.4g}, "
                f"δ spent {s['delta_spent']:.3g}")
        if "epsilon_left" in s:
            line += (f"; left ε {s['epsilon_left']:.4g} of {s['epsilon_limit']:.4g}, "
                     f"δ {s['delta_left']:.3g} of {s['delta_limit']:.3g}")
        lines.append(line)
        lines.append(f"    last: {s['last_release']}")
    return "\n".join(lines)
