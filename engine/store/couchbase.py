"""The production store: Couchbase, key-value on the hot path, SQL++ for queries, XDCR across clouds.

Same contract as SqliteStore (tests/engine/test_store_contract.py runs both). The design decisions:

Layout. One scope per writer (default `wojak`) in the bucket, one collection per record kind:

    collection   key                          document
    orders       client_order_id              {client_order_id, content_hash, state PENDING|DECIDED,
                                               account, symbol, status, ts, intent, order, decision}
    trades       trade_id                     a Trade
    positions    account|symbol               a PositionRow
    day_pnl      account|day                  {account, day, realised}
    ticks        symbol|ts|n|ltp              a Tick (n: its rank among equal (symbol, ts) in a batch)
    last_prices  symbol                       {symbol, ltp, ts}
    outbox       escalation_id                {escalation, attempts, next_ns, delivered_ns, last_error}
    settings     key                          {key, value}
    checkpoints  key                          {key, value}
    anomalies    ts|n|digest                  {kind, client_order_id, detail, ts, seq}
    journal      "last"                       the last commit batch, msgpack (binary, not queried)
    lease        "writer"                     {holder}, expiring: the writer lease (engine/store/lease.py)

Key parts are percent-quoted (`doc_key`), so `|` never appears inside a part and keys are injective;
a key that would pass Couchbase's 250-byte limit becomes a SHA-256 digest. Every document id is a
function of the record itself, never a counter, so writing a record twice converges on one document.

Atomic commit without multi-document transactions. SQLite commits a batch in one transaction;
Couchbase is atomic per document only. Distributed ACID transactions would give atomicity at the
price of staging every document, an ATR write and an unstaging pass: several durable round trips
per batch, growing with its size, on the hot path. Instead `commit` is a redo log of one document:
1. the whole batch is written to `journal/last` as one document with durability MAJORITY: one
   durable round trip, atomic by construction (chunked, header last, if it passes 16 MiB);
2. its effects are applied with durability MAJORITY, every collection's multi-op in parallel;
3. only then does `commit` return, and only then does the engine answer.
Every effect is an absolute value under a deterministic key (a position's new totals, not a delta;
a decision by its client_order_id; an outbox row inserted if absent), so applying the last batch
again is harmless, and replaying the journal finishes a batch a crash cut
short (the writer replays it before its first read or write of engine state; other connections
never do). Only the *last* batch is kept: an older one, replayed, would roll positions back. A failed
apply marks the journal unapplied and the next write replays it first. A dropped intent is removed
by its CAS as read at commit time, so a replay never removes a newer intent for the same id.
Between steps 1 and 3 an outside reader may see part of a batch; the engine never answers before
step 3, and over XDCR documents arrive in no particular order anyway (see below).

`commit_intents` inserts the PENDING order documents with durability MAJORITY before the broker is
called. An id already there with the same content hash is a retry that converges; another hash
is an error, as SQLite's primary key raises.

Queries. Every SQL++ read uses scan_consistency REQUEST_PLUS: start-up (pending intents,
positions, last prices, settings) and the outbox must see every write acknowledged before them,
and index updates are asynchronous. Statements are prepared (adhoc=False) and parameterised.
`lookup`, `get_decision` and checkpoints are key-value reads: always consistent with this cluster.

XDCR. Each cloud's cluster replicates to the other document by document, eventually and in no
order: the remote side may hold a decision without its trade for a moment, and a conflict on one
key is resolved by revision (most updates wins), not by our semantics. So exactly one engine writes
a scope at a time: within a cluster, the writer lease (`writer_lease`, engine/store/lease.py; the
engines that do not hold it stand by, engine/server.py); across clouds, a scope of its own per
cloud's engines (the platform names them `wojak-aws`, `wojak-gcp`), since a lease replicated by
XDCR would be granted in both clusters at once. Taking over the other cloud's scope after a region
loss: fence the old writer, wait for XDCR to drain (or accept losing the unreplicated tail), then
start an engine on that scope: it replays the journal and reconciles every pending intent against
the broker by client_order_id, which never executes an order twice.

Failures. An unreachable cluster fails at open within `connect_timeout_s` (bootstrap_timeout;
connect_timeout alone still waits 10 s). SDK exceptions become StoreUnavailable (timeouts,
unreachable services: retry later) or StoreError (anything else), with the operation named.
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator, Sequence

import msgspec

# couchbase.cluster first: importing couchbase.scope first is a circular import inside the SDK.
from couchbase.cluster import Cluster
from couchbase.auth import PasswordAuthenticator
from couchbase.durability import Durability, ServerDurability
from couchbase.exceptions import (AmbiguousTimeoutException, AuthenticationException, BucketNotFoundException,
                                  CasMismatchException, CollectionAlreadyExistsException,
                                  CollectionNotFoundException, CouchbaseException, DocumentExistsException,
                                  DocumentNotFoundException, ScopeAlreadyExistsException,
                                  ScopeNotFoundException, ServiceUnavailableException, TimeoutException,
                                  UnAmbiguousTimeoutException)
from couchbase.management.options import CreatePrimaryQueryIndexOptions, CreateQueryIndexOptions
from couchbase.n1ql import QueryScanConsistency
from couchbase.options import (ClusterOptions, ClusterTimeoutOptions, GetOptions, InsertMultiOptions,
                               InsertOptions, MutateInOptions, QueryOptions, RemoveOptions, ReplaceOptions,
                               UpsertMultiOptions, UpsertOptions)
from couchbase import subdocument as SD
from couchbase.transcoder import RawBinaryTranscoder

from engine.config import StoreSection
from engine.models import Decision, Escalation, Tick, Trade
from engine.store.base import CommitBatch, EscalationState, Intent, Known, OutboxItem, PositionRow
from engine.store.lease import LeaseLost, LeaseUnavailable, WriterLease

SCOPE = "wojak"
COLLECTIONS = ("orders", "trades", "positions", "day_pnl", "ticks", "last_prices", "outbox", "settings",
               "checkpoints", "anomalies", "journal", "lease")
LEASE_KEY = "writer"
JOURNAL_KEY = "last"
MAX_KEY_BYTES = 250  # Couchbase's document id limit
JOURNAL_CHUNK = 16 * 1024 * 1024  # below the 20 MiB document limit, with room for metadata

# (collection, index name, keys, condition): every query's predicate starts with the leading key.
INDEXES: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("orders", "orders_state", ("state", "ts", "seq", "client_order_id"), None),
    ("orders", "orders_account", ("account", "state", "ts", "client_order_id"), None),
    ("trades", "trades_order", ("client_order_id", "ts", "trade_id"), None),
    ("trades", "trades_ts", ("ts", "trade_id"), None),
    ("positions", "positions_account", ("account", "symbol"), None),
    ("day_pnl", "day_pnl_day", ("day", "account"), None),
    ("ticks", "ticks_symbol", ("symbol", "ts DESC"), None),
    ("last_prices", "last_prices_symbol", ("symbol",), None),
    ("outbox", "outbox_due", ("next_ns",), "delivered_ns IS NULL"),
    ("settings", "settings_key", ("`key`",), None),
    ("anomalies", "anomalies_ts", ("ts", "seq"), None),
)


class StoreError(RuntimeError):
    """The store refused or failed an operation; the message names it."""


class StoreUnavailable(StoreError):
    """The cluster could not be reached or did not answer in time: retry later."""


_UNAVAILABLE = (TimeoutException, AmbiguousTimeoutException, UnAmbiguousTimeoutException,
                ServiceUnavailableException)


@contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except _UNAVAILABLE as e:
        raise StoreUnavailable(f"couchbase: {what}: no answer in time ({_short(e)})") from e
    except AuthenticationException as e:
        raise StoreError(f"couchbase: {what}: authentication failed (check username/password)") from e
    except (BucketNotFoundException, ScopeNotFoundException, CollectionNotFoundException) as e:
        raise StoreError(f"couchbase: {what}: {_short(e)} (create it with CouchbaseStore.ensure_schema())") from e
    except CouchbaseException as e:
        raise StoreError(f"couchbase: {what}: {_short(e)}") from e


def _short(e: BaseException) -> str:
    """The SDK's message without its C source locations."""
    msg = getattr(e, "message", None) or str(e)
    return f"{type(e).__name__}: {msg}"[:300]


# -- pure helpers: keys and documents ---------------------------------------------------------------
def doc_key(*parts: object) -> str:
    """Injective document id from parts: each part percent-quoted, joined by `|`; over 250 bytes, a digest."""
    key = "|".join(urllib.parse.quote(str(p), safe="") for p in parts)
    if not key:
        return "%"  # an empty id is invalid; quote() never emits a bare "%"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def position_key(account: str, symbol: str) -> str:
    return doc_key(account, symbol)


def to_json(obj: Any) -> Any:
    """A msgspec Struct (nested) as plain JSON-able builtins, as stored in a document."""
    return msgspec.to_builtins(obj)


def decision_from_json(doc: dict) -> Decision:
    return msgspec.convert(doc, Decision)


def intent_from_json(doc: dict) -> Intent:
    return msgspec.convert(doc, Intent)


def escalation_from_json(doc: dict) -> Escalation:
    return msgspec.convert(doc, Escalation)


def intent_document(i: Intent, seq: int = 0) -> dict:
    """seq: rank in its commit_intents call, so pending intents come back in the order committed."""
    return {"client_order_id": i.client_order_id, "content_hash": i.content_hash, "state": "PENDING",
            "account": i.order.get("account"), "symbol": i.order.get("symbol"), "status": None, "ts": i.ts,
            "seq": seq,
            "intent": to_json(i), "order": i.order, "decision": None}


def decision_document(d: Decision, content_hash: str, order: dict | None) -> dict:
    return {"client_order_id": d.client_order_id, "content_hash": content_hash, "state": "DECIDED",
            "account": d.account, "symbol": d.symbol, "status": d.status, "ts": d.ts, "intent": None,
            "order": order, "decision": to_json(d)}


def outbox_document(e: Escalation) -> dict:
    return {"escalation_id": e.escalation_id, "client_order_id": e.client_order_id, "escalation": to_json(e),
            "attempts": 0, "next_ns": e.ts, "delivered_ns": None, "last_error": None}


def plan_effects(b: CommitBatch) -> dict[str, dict[str, dict]]:
    """Upserts per collection for a batch (decisions, escalations and dropped intents aside)."""
    plan: dict[str, dict[str, dict]] = {}
    if b.trades:
        plan["trades"] = {doc_key(t.trade_id): to_json(t) for t in b.trades}
    if b.positions:
        plan["positions"] = {position_key(p.account, p.symbol): to_json(p) for p in b.positions}
    if b.day_pnl:
        plan["day_pnl"] = {doc_key(a, day): {"account": a, "day": day, "realised": r} for a, day, r in b.day_pnl}
    if b.ticks:
        # Key: symbol, ts, rank among equal (symbol, ts) in the batch, and the price - so a tick of
        # another batch at the same time and rank but another price never overwrites this one (an
        # identical tick, redelivered, lands on the same document).
        ticks: dict[str, dict] = {}
        rank: dict[tuple[str, int | None], int] = {}
        for t in b.ticks:
            n = rank[(t.symbol, t.ts)] = rank.get((t.symbol, t.ts), -1) + 1
            ticks[doc_key(t.symbol, t.ts, n, repr(t.ltp))] = {"symbol": t.symbol, "ltp": t.ltp, "ts": t.ts, "n": n}
        plan["ticks"] = ticks
    if b.settings:
        plan["settings"] = {doc_key(k): {"key": k, "value": v} for k, v in b.settings.items()}
    if b.checkpoints:
        plan["checkpoints"] = {doc_key(k): {"key": k, "value": v} for k, v in b.checkpoints.items()}
    if b.anomalies:
        plan["anomalies"] = {
            doc_key(ts, n, hashlib.sha256(f"{kind}\0{coid}\0{detail}".encode()).hexdigest()[:16]):
                {"kind": kind, "client_order_id": coid, "detail": detail, "ts": ts, "seq": n}
            for n, (kind, coid, detail, ts) in enumerate(b.anomalies)}
    return plan


def newest_prices(ticks: Sequence[Tick]) -> dict[str, tuple[float, int]]:
    """symbol -> (ltp, ts) of its newest tick in the batch (the last one wins a tie, as in SQLite)."""
    out: dict[str, tuple[float, int]] = {}
    for t in ticks:
        ts = t.ts or 0
        if t.symbol not in out or ts >= out[t.symbol][1]:
            out[t.symbol] = (t.ltp, ts)
    return out


class Journal(msgspec.Struct):
    """The last commit batch, with the CAS of each PENDING document it drops."""

    batch: CommitBatch
    drop_cas: dict[str, int] = {}
    parts: int = 0  # >0: the encoded journal lies in that many chunk documents


_enc = msgspec.msgpack.Encoder()
_dec_journal = msgspec.msgpack.Decoder(Journal)


def encode_journal(j: Journal) -> bytes:
    return _enc.encode(j)


def decode_journal(data: bytes) -> Journal:
    return _dec_journal.decode(data)


_DURABILITY = {"none": Durability.NONE, "majority": Durability.MAJORITY,
               "majority_and_persist_active": Durability.MAJORITY_AND_PERSIST_TO_ACTIVE,
               "persist_to_majority": Durability.PERSIST_TO_MAJORITY}


def check_connstr(connstr: str) -> str:
    if not connstr.startswith(("couchbase://", "couchbases://")):
        raise StoreError(f"couchbase: connection string must start with couchbase:// or couchbases://, "
                         f"got {connstr[:40]!r}")
    return connstr


# -- the store ------------------------------------------------------------------------------------
class CouchbaseStore:
    def __init__(self, connstr: str, username: str, password: str, bucket: str = "wojak", scope: str = SCOPE,
                 durability: str = "majority", connect_timeout_s: float = 5.0,
                 kv_timeout_s: float = 10.0, query_timeout_s: float = 30.0) -> None:
        if durability not in _DURABILITY:
            raise StoreError(f"couchbase: durability must be one of {', '.join(_DURABILITY)}, got {durability!r}")
        check_connstr(connstr)
        self.bucket_name, self.scope_name = bucket, scope
        level = _DURABILITY[durability]
        self._durable = ServerDurability(level) if level != Durability.NONE else None
        timeouts = ClusterTimeoutOptions(bootstrap_timeout=timedelta(seconds=connect_timeout_s),
                                         connect_timeout=timedelta(seconds=connect_timeout_s),
                                         kv_timeout=timedelta(seconds=kv_timeout_s),
                                         kv_durable_timeout=timedelta(seconds=kv_timeout_s),
                                         query_timeout=timedelta(seconds=query_timeout_s),
                                         management_timeout=timedelta(seconds=query_timeout_s))
        where = connstr.split("?", 1)[0]
        with _errors(f"connect to {where}"):
            self.cluster = Cluster(connstr, ClusterOptions(PasswordAuthenticator(username, password),
                                                           timeout_options=timeouts))
        try:
            with _errors(f"open bucket {bucket!r}"):
                self.bucket = self.cluster.bucket(bucket)
                self.scope = self.bucket.scope(scope)
                self.c = {name: self.scope.collection(name) for name in COLLECTIONS}
            # A writer per collection kind: one batch's multi-ops run side by side, not one after another.
            self._pool = ThreadPoolExecutor(max_workers=len(COLLECTIONS), thread_name_prefix="wojak-cb")
            self._unapplied = False
            self._replayed = False
            # Fail now, not on the first order: the journal's collection answers a key-value read.
            with _errors(f"open {bucket}.{scope}"):
                self.c["journal"].exists(JOURNAL_KEY)
        except BaseException:
            self.cluster.close()
            raise

    @classmethod
    def from_config(cls, cfg: StoreSection, role: str = "reader") -> "CouchbaseStore":
        """Connection string and credentials from the env vars that [store] names; never from the file.
        The engine creates the schema first when [store] create_schema says so."""
        connstr, user, password = _env(cfg.connstr_env), _env(cfg.username_env), _env(cfg.password_env)
        if cfg.create_schema and role == "engine":
            ensure_schema(connstr, user, password, cfg.bucket, cfg.scope)
        return cls(connstr, user, password, bucket=cfg.bucket, scope=cfg.scope)

    @classmethod
    def from_env(cls, scope: str | None = None, create_schema: bool = True) -> "CouchbaseStore":
        """For the contract tests: COUCHBASE_CONNSTR/USERNAME/PASSWORD, COUCHBASE_BUCKET (default wojak),
        COUCHBASE_SCOPE (default wojak), COUCHBASE_DURABILITY (default majority; `none` for a one-node
        cluster whose bucket has replicas). Creates the schema unless told not to."""
        connstr = _env("COUCHBASE_CONNSTR")
        store_args = dict(bucket=os.environ.get("COUCHBASE_BUCKET") or "wojak",
                          scope=scope or os.environ.get("COUCHBASE_SCOPE") or SCOPE,
                          durability=os.environ.get("COUCHBASE_DURABILITY") or "majority")
        user, password = _env("COUCHBASE_USERNAME"), _env("COUCHBASE_PASSWORD")
        if create_schema:
            ensure_schema(connstr, user, password, store_args["bucket"], store_args["scope"])
        return cls(connstr, user, password, **store_args)

    def ensure_schema(self) -> None:
        """Create this store's scope, collections and indexes where missing (idempotent)."""
        _create_schema(self.bucket, self.scope_name)

    def writer_lease(self, ttl_s: int, holder: str | None = None) -> WriterLease:
        """The lease that makes this process the scope's one writer (see engine/store/lease.py)."""
        return WriterLease(_LeaseDocument(self.c["lease"], self._durable, ttl_s), ttl_s, holder)

    # -- hot path -----------------------------------------------------------------------------
    def lookup(self, client_order_ids: Sequence[str]) -> dict[str, Known]:
        self._ensure_replayed()
        ids = list(dict.fromkeys(client_order_ids))
        if not ids:
            return {}
        with _errors("lookup orders"):
            docs = self._get_multi("orders", ids)
        return {coid: Known(doc["content_hash"], decision_from_json(doc["decision"]) if doc.get("decision") else None)
                for coid, doc in docs.items()}

    def commit_intents(self, intents: Sequence[Intent], resolved: Sequence[str] = ()) -> None:
        # `resolved` needs nothing here: an intent is its order document, replaced by the decision.
        if not intents:
            return
        self._catch_up()
        docs = {doc_key(i.client_order_id): intent_document(i, n) for n, i in enumerate(intents)}
        with _errors("commit intents"):
            res = self.c["orders"].insert_multi(docs, InsertMultiOptions(durability=self._durable,
                                                                         return_exceptions=True))
            for key, exc in res.exceptions.items():
                if not isinstance(exc, DocumentExistsException):
                    raise exc
                # A retry of an insert that landed converges; another order under this id does not.
                have = self.c["orders"].get(key).content_as[dict]
                if have.get("state") != "PENDING" or have.get("content_hash") != docs[key]["content_hash"]:
                    raise StoreError(f"couchbase: commit intents: client_order_id "
                                     f"{docs[key]['client_order_id']!r} is already recorded")

    def commit(self, b: CommitBatch) -> None:
        if b.empty():
            return
        self._catch_up()
        with _errors("commit batch"):
            drop_cas = {}
            for coid in b.dropped_intents:
                try:
                    got = self.c["orders"].get(doc_key(coid))
                except DocumentNotFoundException:
                    continue
                if got.content_as[dict].get("state") == "PENDING":
                    drop_cas[coid] = got.cas
            self._write_journal(Journal(b, drop_cas))
            self._unapplied = True
            self._apply(Journal(b, drop_cas))
            self._unapplied = False

    # -- the redo log -------------------------------------------------------------------------
    def _write_journal(self, j: Journal) -> None:
        data = encode_journal(j)
        col, opts = self.c["journal"], dict(durability=self._durable, transcoder=RawBinaryTranscoder())
        if len(data) <= JOURNAL_CHUNK:
            col.upsert(JOURNAL_KEY, data, UpsertOptions(**opts))
            return
        # Too big for one document: chunks first, then the header that makes them the journal.
        chunks = [data[i:i + JOURNAL_CHUNK] for i in range(0, len(data), JOURNAL_CHUNK)]
        for n, chunk in enumerate(chunks):
            col.upsert(doc_key(JOURNAL_KEY, n), chunk, UpsertOptions(**opts))
        col.upsert(JOURNAL_KEY, encode_journal(Journal(CommitBatch(), parts=len(chunks))), UpsertOptions(**opts))

    def _read_journal(self) -> Journal | None:
        col, tc = self.c["journal"], RawBinaryTranscoder()
        try:
            head = decode_journal(col.get(JOURNAL_KEY, GetOptions(transcoder=tc)).value)
        except DocumentNotFoundException:
            return None
        if not head.parts:
            return head
        data = b"".join(col.get(doc_key(JOURNAL_KEY, n), GetOptions(transcoder=tc)).value for n in range(head.parts))
        return decode_journal(data)

    def _replay_journal(self) -> None:
        with _errors(f"replay journal of {self.bucket_name}.{self.scope_name}"):
            j = self._read_journal()
            if j is not None:
                self._apply(j)
        self._unapplied = False

    def _ensure_replayed(self) -> None:
        """The writer finishes the last batch before its first read or write of engine state.

        Lazily, not at open: a second connection (the outbox worker's, a CLI query) must never replay,
        or it could rewrite a batch the writer has already superseded."""
        if not self._replayed:
            self._replay_journal()
            self._replayed = True

    def _catch_up(self) -> None:
        """A batch whose apply failed is finished before anything newer is written."""
        self._ensure_replayed()
        if self._unapplied:
            self._replay_journal()

    def _apply(self, j: Journal) -> None:
        b = j.batch
        jobs = [(self._upsert, name, docs) for name, docs in plan_effects(b).items()]
        if b.decisions:
            jobs.append((self._upsert, "orders", {doc_key(d.client_order_id): decision_document(d, h, o)
                                                  for d, h, o in b.decisions}))
        if b.escalations:
            jobs.append((self._insert_absent, "outbox", {doc_key(e.escalation_id): outbox_document(e)
                                                         for e in b.escalations}))
        futures = [self._pool.submit(*job) for job in jobs]
        if b.ticks:
            futures.append(self._pool.submit(self._advance_prices, newest_prices(b.ticks)))
        for f in futures:
            f.result()  # re-raises the first failure
        for coid, cas in j.drop_cas.items():
            try:
                self.c["orders"].remove(doc_key(coid), RemoveOptions(cas=cas, durability=self._durable))
            except (DocumentNotFoundException, CasMismatchException):
                pass  # already removed, or no longer the intent that was dropped

    def _upsert(self, name: str, docs: dict[str, dict]) -> None:
        res = self.c[name].upsert_multi(docs, UpsertMultiOptions(durability=self._durable, return_exceptions=True))
        for exc in res.exceptions.values():
            raise exc

    def _insert_absent(self, name: str, docs: dict[str, dict]) -> None:
        res = self.c[name].insert_multi(docs, InsertMultiOptions(durability=self._durable, return_exceptions=True))
        for exc in res.exceptions.values():
            if not isinstance(exc, DocumentExistsException):
                raise exc

    def _advance_prices(self, newest: dict[str, tuple[float, int]]) -> None:
        """Last prices only move forward in time (a late tick never overwrites a newer one)."""
        have = self._get_multi("last_prices", list(newest))
        docs = {s: {"symbol": s, "ltp": ltp, "ts": ts} for s, (ltp, ts) in newest.items()
                if s not in have or ts >= have[s]["ts"]}
        if docs:
            self._upsert("last_prices", {doc_key(s): d for s, d in docs.items()})

    def _get_multi(self, name: str, keys: list[str]) -> dict[str, dict]:
        """key (as given) -> document, for the keys that exist."""
        by_key = {doc_key(k): k for k in keys}
        res = self.c[name].get_multi(list(by_key))
        for key, exc in res.exceptions.items():
            if not isinstance(exc, DocumentNotFoundException):
                raise exc
        return {by_key[key]: r.content_as[dict] for key, r in res.results.items()}

    def _query(self, statement: str, *params: Any) -> list:
        res = self.scope.query(statement, QueryOptions(scan_consistency=QueryScanConsistency.REQUEST_PLUS,
                                                       positional_parameters=list(params), adhoc=False))
        return list(res.rows())

    # -- start-up -----------------------------------------------------------------------------
    def pending_intents(self) -> list[Intent]:
        self._ensure_replayed()
        with _errors("read pending intents"):
            rows = self._query("SELECT RAW o.intent FROM `orders` AS o WHERE o.state = 'PENDING' "
                               "ORDER BY o.ts, o.seq, o.client_order_id")
        return [intent_from_json(r) for r in rows]

    def positions(self, account: str | None = None) -> list[PositionRow]:
        self._ensure_replayed()
        q = "SELECT p.account, p.symbol, p.net_qty, p.avg_price, p.realised_pnl FROM `positions` AS p "
        with _errors("read positions"):
            rows = (self._query(q + "WHERE p.account = $1 ORDER BY p.symbol", account) if account else
                    self._query(q + "WHERE p.account IS NOT MISSING ORDER BY p.account, p.symbol"))
        return [PositionRow(r["account"], r["symbol"], int(r["net_qty"]), float(r["avg_price"]),
                            float(r["realised_pnl"])) for r in rows]

    def last_prices(self) -> dict[str, tuple[float, int]]:
        self._ensure_replayed()
        with _errors("read last prices"):
            rows = self._query("SELECT l.symbol, l.ltp, l.ts FROM `last_prices` AS l WHERE l.symbol IS NOT MISSING")
        return {r["symbol"]: (float(r["ltp"]), int(r["ts"])) for r in rows}

    def day_pnl(self, day: str) -> dict[str, float]:
        self._ensure_replayed()
        with _errors("read day P&L"):
            rows = self._query("SELECT d.account, d.realised FROM `day_pnl` AS d WHERE d.day = $1", day)
        return {r["account"]: float(r["realised"]) for r in rows}

    def settings(self) -> dict[str, str]:
        self._ensure_replayed()
        with _errors("read settings"):
            rows = self._query("SELECT s.`key`, s.`value` FROM `settings` AS s WHERE s.`key` IS NOT MISSING")
        return {r["key"]: r["value"] for r in rows}

    # -- queries ------------------------------------------------------------------------------
    def get_decision(self, client_order_id: str) -> Decision | None:
        with _errors("get decision"):
            try:
                doc = self.c["orders"].get(doc_key(client_order_id)).content_as[dict]
            except DocumentNotFoundException:
                return None
        return decision_from_json(doc["decision"]) if doc.get("decision") else None

    def decisions(self, account: str | None = None, limit: int = 1000) -> list[Decision]:
        with _errors("read decisions"):
            if account:
                rows = self._query("SELECT RAW o.decision FROM `orders` AS o WHERE o.account = $1 AND "
                                   "o.state = 'DECIDED' ORDER BY o.ts DESC, o.client_order_id DESC LIMIT $2",
                                   account, limit)
            else:
                rows = self._query("SELECT RAW o.decision FROM `orders` AS o WHERE o.state = 'DECIDED' "
                                   "ORDER BY o.ts DESC, o.client_order_id DESC LIMIT $1", limit)
        return [decision_from_json(r) for r in reversed(rows)]  # the latest, in time order

    def trades(self, client_order_id: str | None = None) -> list[Trade]:
        q = "SELECT RAW t FROM `trades` AS t "
        with _errors("read trades"):
            # the order's own trades and those of its slices (`<id>#<n>`: ids never hold '#')
            rows = (self._query(q + "WHERE t.client_order_id = $1 OR (t.client_order_id >= $2 AND "
                                "t.client_order_id < $3) ORDER BY t.ts, t.trade_id",
                                client_order_id, client_order_id + "#", client_order_id + "$")
                    if client_order_id else self._query(q + "WHERE t.ts IS NOT MISSING ORDER BY t.ts, t.trade_id"))
        return [msgspec.convert(r, Trade) for r in rows]

    def ticks(self, symbol: str, limit: int = 100) -> list[Tick]:
        with _errors("read ticks"):
            rows = self._query("SELECT t.symbol, t.ltp, t.ts FROM `ticks` AS t WHERE t.symbol = $1 "
                               "ORDER BY t.ts DESC, t.n DESC LIMIT $2", symbol, limit)  # a tie: the later first
        return [Tick(symbol=r["symbol"], ltp=float(r["ltp"]), ts=int(r["ts"])) for r in rows]

    def anomalies(self) -> list[tuple[str, str, str, int]]:
        with _errors("read anomalies"):
            rows = self._query("SELECT a.kind, a.client_order_id, a.detail, a.ts FROM `anomalies` AS a "
                               "WHERE a.ts IS NOT MISSING ORDER BY a.ts, a.seq, META(a).id")
        return [(r["kind"], r["client_order_id"], r["detail"], int(r["ts"])) for r in rows]

    def counts(self) -> dict[str, int]:
        with _errors("count records"):
            rows = self._query(
                "SELECT (SELECT RAW COUNT(*) FROM `orders` AS o WHERE o.state = 'DECIDED')[0] AS orders,"
                " (SELECT RAW COUNT(*) FROM `orders` AS o WHERE o.state = 'PENDING')[0] AS pending,"
                " (SELECT RAW COUNT(*) FROM `trades` AS t WHERE t.ts IS NOT MISSING)[0] AS trades,"
                " (SELECT RAW COUNT(*) FROM `ticks` AS k WHERE k.symbol IS NOT MISSING)[0] AS ticks,"
                " (SELECT RAW COUNT(*) FROM `outbox` AS x WHERE x.delivered_ns IS NULL"
                " AND x.next_ns IS NOT MISSING)[0] AS outbox_pending")
        row = rows[0] if rows else {}
        return {k: int(row.get(k) or 0) for k in ("orders", "pending", "trades", "ticks", "outbox_pending")}

    # -- escalation outbox --------------------------------------------------------------------
    def escalations(self, limit: int = 100) -> list[EscalationState]:
        with _errors("read escalations"):
            rows = self._query("SELECT x.escalation, x.attempts, x.delivered_ns, x.last_error FROM `outbox` AS x "
                               "WHERE x.escalation_id IS NOT MISSING "
                               "ORDER BY x.escalation.ts DESC, x.escalation_id DESC LIMIT $1", limit)
        return [EscalationState(escalation_from_json(r["escalation"]), int(r["attempts"]), r.get("delivered_ns"),
                                r.get("last_error")) for r in reversed(rows)]

    def outbox_due(self, now_ns: int, limit: int = 100) -> list[OutboxItem]:
        with _errors("read due escalations"):
            rows = self._query("SELECT x.escalation, x.attempts FROM `outbox` AS x WHERE x.next_ns <= $1 "
                               "AND x.delivered_ns IS NULL ORDER BY x.next_ns LIMIT $2", now_ns, limit)
        return [OutboxItem(escalation_from_json(r["escalation"]), int(r["attempts"])) for r in rows]

    def outbox_delivered(self, escalation_ids: Sequence[str], now_ns: int) -> None:
        with _errors("mark escalations delivered"):
            for e in escalation_ids:
                self._mutate_outbox(e, [SD.upsert("delivered_ns", now_ns), SD.increment("attempts", 1)])

    def outbox_retry(self, escalation_id: str, next_ns: int, error: str) -> None:
        with _errors("reschedule escalation"):
            self._mutate_outbox(escalation_id, [SD.increment("attempts", 1), SD.upsert("next_ns", next_ns),
                                                SD.upsert("last_error", error[:500])])

    def _mutate_outbox(self, escalation_id: str, specs: list) -> None:
        try:
            self.c["outbox"].mutate_in(doc_key(escalation_id), specs, MutateInOptions(durability=self._durable))
        except DocumentNotFoundException:
            pass  # as SQL's UPDATE of no row: nothing to mark

    # -- checkpoints --------------------------------------------------------------------------
    def get_checkpoint(self, key: str) -> str | None:
        with _errors("get checkpoint"):
            try:
                return self.c["checkpoints"].get(doc_key(key)).content_as[dict]["value"]
            except DocumentNotFoundException:
                return None

    def set_checkpoint(self, key: str, value: str) -> None:
        with _errors("set checkpoint"):
            self.c["checkpoints"].upsert(doc_key(key), {"key": key, "value": value},
                                         UpsertOptions(durability=self._durable))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.cluster.close()


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise StoreError(f"couchbase: environment variable {name} is not set")
    return value


class _LeaseDocument:
    """The writer lease as one document with an expiry: created if absent, replaced and removed by
    CAS, durably (a lease lost in a failover could be granted twice). A renewal waits at most a
    sixth of the lease, so a hanging one still leaves the holder time to stop itself.

    An ambiguous timeout may hide a write that landed: the next create then finds the document, or
    the next renewal a CAS it did not expect. If the document names this holder (host and pid: no
    other process's), it is ours - renewed from its current CAS, which also gives it a fresh expiry
    counted from now, as the protocol assumes."""

    def __init__(self, collection: Any, durability: Any, ttl_s: int) -> None:
        self.c = collection
        self.durability = durability
        self.timeout = timedelta(seconds=max(1.0, ttl_s / 6))

    def create(self, holder: str, ttl_s: int) -> object | None:
        with _lease_errors("take the writer lease"):
            try:
                return self.c.insert(LEASE_KEY, {"holder": holder}, InsertOptions(
                    expiry=timedelta(seconds=ttl_s), durability=self.durability, timeout=self.timeout)).cas
            except DocumentExistsException:
                try:
                    return self._renew_if_ours(holder, ttl_s)
                except (CasMismatchException, DocumentNotFoundException):
                    return None  # changed meanwhile: not ours; try again later

    def replace(self, version: object, holder: str, ttl_s: int) -> object:
        try:
            with _lease_errors("renew the writer lease"):
                try:
                    return self._replace(version, holder, ttl_s)
                except CasMismatchException:
                    got = self._renew_if_ours(holder, ttl_s)
                    if got is None:
                        raise
                    return got
        except (CasMismatchException, DocumentNotFoundException) as e:
            raise LeaseLost(f"the writer lease is another engine's now ({self._holder_or_unknown()}): "
                            f"{type(e).__name__}") from e

    def _replace(self, version: object, holder: str, ttl_s: int) -> object:
        return self.c.replace(LEASE_KEY, {"holder": holder}, ReplaceOptions(
            cas=version, expiry=timedelta(seconds=ttl_s), durability=self.durability, timeout=self.timeout)).cas

    def _renew_if_ours(self, holder: str, ttl_s: int) -> object | None:
        got = self.c.get(LEASE_KEY, GetOptions(timeout=self.timeout))
        if got.content_as[dict].get("holder") != holder:
            return None
        return self._replace(got.cas, holder, ttl_s)

    def remove(self, version: object) -> None:
        try:
            self.c.remove(LEASE_KEY, RemoveOptions(cas=version, durability=self.durability, timeout=self.timeout))
        except (CasMismatchException, DocumentNotFoundException):
            pass  # lapsed already, or another's: not ours to remove

    def holder(self) -> str | None:
        try:
            with _lease_errors("read the writer lease"):
                return str(self.c.get(LEASE_KEY, GetOptions(timeout=self.timeout)).content_as[dict].get("holder"))
        except DocumentNotFoundException:
            return None

    def _holder_or_unknown(self) -> str:
        try:
            return self.holder() or "lapsed"
        except (LeaseUnavailable, StoreError):
            return "holder unknown"


@contextmanager
def _lease_errors(what: str) -> Iterator[None]:
    """No answer in time is LeaseUnavailable (tried again); anything else but the outcomes the
    lease handles itself is a StoreError."""
    try:
        yield
    except (DocumentExistsException, DocumentNotFoundException, CasMismatchException):
        raise
    except _UNAVAILABLE as e:
        raise LeaseUnavailable(f"couchbase: {what}: no answer in time ({_short(e)})") from e
    except CouchbaseException as e:
        raise StoreError(f"couchbase: {what}: {_short(e)}") from e


def ensure_schema(connstr: str, username: str, password: str, bucket: str = "wojak", scope: str = SCOPE,
                  connect_timeout_s: float = 5.0) -> None:
    """Create the scope, collections and indexes where missing (idempotent); the bucket must exist.

    Needs a user allowed to manage collections and indexes, which an engine's user should not be:
    run it at deployment, not from the engine."""
    check_connstr(connstr)
    timeouts = ClusterTimeoutOptions(bootstrap_timeout=timedelta(seconds=connect_timeout_s),
                                     management_timeout=timedelta(seconds=60))
    with _errors(f"connect to {connstr.split('?', 1)[0]}"):
        cluster = Cluster(connstr, ClusterOptions(PasswordAuthenticator(username, password), timeout_options=timeouts))
    try:
        _create_schema(cluster.bucket(bucket), scope)
    finally:
        cluster.close()


def _create_schema(bucket: Any, scope: str) -> None:
    manager = bucket.collections()
    with _errors(f"create scope {scope!r}"):
        try:
            manager.create_scope(scope)
        except ScopeAlreadyExistsException:
            pass
    for name in COLLECTIONS:
        with _errors(f"create collection {scope}.{name}"):
            try:
                manager.create_collection(scope, name)
            except CollectionAlreadyExistsException:
                pass
    sc = bucket.scope(scope)
    for name in COLLECTIONS:
        if name in ("journal", "lease"):
            continue  # read by key only
        with _errors(f"create primary index on {scope}.{name}"):
            sc.collection(name).query_indexes().create_primary_index(
                CreatePrimaryQueryIndexOptions(ignore_if_exists=True))
    for name, index, keys, condition in INDEXES:
        with _errors(f"create index {index}"):
            sc.collection(name).query_indexes().create_index(
                index, list(keys), CreateQueryIndexOptions(ignore_if_exists=True, condition=condition))
