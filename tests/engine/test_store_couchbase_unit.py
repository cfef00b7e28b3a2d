"""What of the Couchbase store runs without a cluster: configuration errors, failing fast against a
closed port, and the pure key and document helpers. The behaviour against a real cluster is the
shared contract suite (tests/engine/test_store_contract.py, skipped without COUCHBASE_CONNSTR)."""
from __future__ import annotations

import socket
import time

import msgspec
import pytest
from hypothesis import given, strategies as st

from engine.broker.base import BrokerOrder
from engine.config import StoreSection
from engine.models import Child, Decision, Escalation, Tick, Trade
from engine.store import couchbase as cb
from engine.store.base import CommitBatch, Intent, PositionRow

ENV = ("COUCHBASE_CONNSTR", "COUCHBASE_USERNAME", "COUCHBASE_PASSWORD", "COUCHBASE_BUCKET", "COUCHBASE_SCOPE")


@pytest.fixture
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.fixture
def no_couchbase_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _decision() -> Decision:
    return Decision("ord-1", "FILLED", reasons=["QTY_ABOVE_FREEZE: qty=1950 freeze=1800"], fill_price=24012.5,
                    trade_id="T-1", filled_qty=1950, account="acct-1", symbol="NIFTY26JANFUT", side="BUY",
                    quantity=1950, children=[Child("ord-1.1", 1755, "FILLED", 24012.5, "T-1"),
                                             Child("ord-1.2", 195, "FAILED", reason="BROKER_REJECTED: no margin")],
                    ts=1_767_000_000_123_456_789)


def _intent() -> Intent:
    order = {"client_order_id": "ord-2", "symbol": "NIFTY26JANFUT", "side": "SELL", "quantity": 65,
             "price": 24000.05, "account": "acct-1"}
    return Intent("ord-2", "h" * 64, order,
                  [BrokerOrder("ord-2", "acct-1", "NIFTY26JANFUT", "SELL", 65, "LIMIT", 24000.05)], 1_767_000_000_0)


# -- configuration and connection ---------------------------------------------------------------
def test_from_env_when_connstr_unset_then_clear_error(no_couchbase_env):
    with pytest.raises(cb.StoreError, match="COUCHBASE_CONNSTR is not set"):
        cb.CouchbaseStore.from_env()


def test_from_config_when_named_env_var_unset_then_error_names_it(monkeypatch):
    monkeypatch.delenv("WOJAK_TEST_CB_CONNSTR", raising=False)
    cfg = StoreSection(kind="couchbase", connstr_env="WOJAK_TEST_CB_CONNSTR")
    with pytest.raises(cb.StoreError, match="WOJAK_TEST_CB_CONNSTR is not set"):
        cb.CouchbaseStore.from_config(cfg)


def test_connect_when_scheme_not_couchbase_then_error_without_connecting():
    with pytest.raises(cb.StoreError, match="must start with couchbase://"):
        cb.CouchbaseStore("http://127.0.0.1:8091", "u", "p")


def test_connect_when_durability_unknown_then_error_lists_choices():
    with pytest.raises(cb.StoreError, match="majority"):
        cb.CouchbaseStore("couchbase://127.0.0.1", "u", "p", durability="quorum")


def test_connect_when_nothing_listens_then_unavailable_within_seconds(closed_port):
    started = time.monotonic()
    with pytest.raises(cb.StoreUnavailable, match=rf"connect to couchbase://127.0.0.1:{closed_port}.*no answer"):
        cb.CouchbaseStore(f"couchbase://127.0.0.1:{closed_port}", "u", "p", connect_timeout_s=1.0)
    # The SDK's default is a 10 s hang: the bootstrap timeout must be what ends the attempt.
    assert time.monotonic() - started < 8


def test_from_config_when_env_points_at_closed_port_then_unavailable(monkeypatch, closed_port):
    monkeypatch.setenv("WOJAK_TEST_CB_CONNSTR", f"couchbase://127.0.0.1:{closed_port}")
    monkeypatch.setenv("WOJAK_TEST_CB_USER", "engine")
    monkeypatch.setenv("WOJAK_TEST_CB_PASSWORD", "secret")
    cfg = StoreSection(kind="couchbase", connstr_env="WOJAK_TEST_CB_CONNSTR", username_env="WOJAK_TEST_CB_USER",
                       password_env="WOJAK_TEST_CB_PASSWORD", bucket="wojak")
    with pytest.raises(cb.StoreUnavailable) as e:
        # from_config uses the production bootstrap timeout (5 s): still far from a hang.
        cb.CouchbaseStore.from_config(cfg)
    assert "secret" not in str(e.value)


def test_ensure_schema_when_nothing_listens_then_unavailable(closed_port):
    with pytest.raises(cb.StoreUnavailable):
        cb.ensure_schema(f"couchbase://127.0.0.1:{closed_port}", "admin", "pw", connect_timeout_s=1.0)


# -- keys -----------------------------------------------------------------------------------------
def test_doc_key_when_parts_plain_then_readable():
    assert cb.doc_key("acct-1", "NIFTY26JANFUT") == "acct-1|NIFTY26JANFUT"
    assert cb.position_key("acct-1", "NIFTY26JAN24000CE") == "acct-1|NIFTY26JAN24000CE"


def test_doc_key_when_part_contains_separator_then_no_collision():
    assert cb.doc_key("a|b", "c") != cb.doc_key("a", "b|c")
    assert cb.doc_key("a%7Cb") != cb.doc_key("a|b")


def test_doc_key_when_empty_then_valid_id():
    assert cb.doc_key("") == "%"
    assert cb.doc_key("") != cb.doc_key("%")


def test_doc_key_when_over_250_bytes_then_digest():
    key = cb.doc_key("acct", "ॐ" * 200)
    assert key.startswith("sha256:") and len(key.encode()) <= 250
    assert key != cb.doc_key("acct", "ॐ" * 201)


@given(st.lists(st.text(max_size=80), min_size=1, max_size=3), st.lists(st.text(max_size=80), min_size=1, max_size=3))
def test_doc_key_when_parts_differ_then_keys_differ(a, b):
    key_a, key_b = cb.doc_key(*a), cb.doc_key(*b)
    assert len(key_a.encode()) <= 250 and key_a
    assert (key_a == key_b) == (a == b or (a == [""] and b == [""]))


# -- documents ------------------------------------------------------------------------------------
def test_decision_document_when_round_tripped_through_json_then_equal():
    d = _decision()
    doc = cb.decision_document(d, "c" * 64, {"client_order_id": "ord-1"})
    wire = msgspec.json.decode(msgspec.json.encode(doc))  # as the document comes back from the cluster
    assert wire["state"] == "DECIDED" and wire["account"] == "acct-1" and wire["intent"] is None
    assert cb.decision_from_json(wire["decision"]) == d


def test_decision_from_json_when_query_renders_float_as_int_then_float():
    d = cb.decision_from_json({"client_order_id": "x", "status": "FILLED", "fill_price": 24000, "ts": 5})
    assert d.fill_price == 24000.0 and isinstance(d.fill_price, float)


def test_intent_document_when_round_tripped_then_equal_and_pending():
    i = _intent()
    wire = msgspec.json.decode(msgspec.json.encode(cb.intent_document(i)))
    assert (wire["state"], wire["account"], wire["symbol"], wire["ts"]) == ("PENDING", "acct-1", "NIFTY26JANFUT", i.ts)
    assert cb.intent_from_json(wire["intent"]) == i


def test_outbox_document_when_round_tripped_then_escalation_equal_and_due_at_its_time():
    e = Escalation("esc-1", "ord-3", "acct-1", ["MAX_NOTIONAL: value=9e7 max=5e7"], {"quantity": 1800}, 42)
    wire = msgspec.json.decode(msgspec.json.encode(cb.outbox_document(e)))
    assert (wire["attempts"], wire["next_ns"], wire["delivered_ns"]) == (0, 42, None)
    assert cb.escalation_from_json(wire["escalation"]) == e


def test_journal_when_round_tripped_then_batch_equal():
    b = CommitBatch(decisions=[(_decision(), "c" * 64, {"client_order_id": "ord-1"}), (_decision(), "d", None)],
                    trades=[Trade("T-1", "ord-1", "acct-1", "NIFTY26JANFUT", "BUY", 1755, 24012.5, 7)],
                    positions=[PositionRow("acct-1", "NIFTY26JANFUT", 1755, 24012.5, 0.0)],
                    day_pnl=[("acct-1", "2026-01-05", -120.5)], ticks=[Tick("NIFTY26JANFUT", 24010.0, 8)],
                    escalations=[Escalation("esc-1", "ord-3", "acct-1", ["MAX_NOTIONAL"], {}, 9)],
                    settings={"halted": "1"}, dropped_intents=["ord-9"], anomalies=[("bad_request", "", "x", 10)])
    j = cb.decode_journal(cb.encode_journal(cb.Journal(b, {"ord-9": 123456789})))
    assert j.batch == b and j.drop_cas == {"ord-9": 123456789} and j.parts == 0


def test_plan_effects_when_equal_ticks_in_batch_then_each_kept_under_its_own_key():
    b = CommitBatch(ticks=[Tick("NIFTY26JANFUT", 24000.0, 5), Tick("NIFTY26JANFUT", 24001.0, 5),
                           Tick("BANKNIFTY26JANFUT", 51000.0, 5)])
    ticks = cb.plan_effects(b)["ticks"]
    assert sorted(ticks) == ["BANKNIFTY26JANFUT|5|0|51000.0", "NIFTY26JANFUT|5|0|24000.0",
                             "NIFTY26JANFUT|5|1|24001.0"]
    assert [d["n"] for d in ticks.values()] == [0, 1, 0]  # ranks: the later of equal times sorts first
    assert cb.plan_effects(b) == cb.plan_effects(b)  # a replayed batch writes the same documents


def test_plan_effects_when_another_batch_has_a_tick_at_the_same_time_then_not_overwritten():
    first = cb.plan_effects(CommitBatch(ticks=[Tick("NIFTY26JANFUT", 24000.0, 5)]))["ticks"]
    other = cb.plan_effects(CommitBatch(ticks=[Tick("NIFTY26JANFUT", 24002.5, 5)]))["ticks"]
    again = cb.plan_effects(CommitBatch(ticks=[Tick("NIFTY26JANFUT", 24000.0, 5)]))["ticks"]
    assert not set(first) & set(other)  # both kept
    assert again == first  # the same tick redelivered: the same document


def test_plan_effects_when_batch_has_every_kind_then_keys_are_deterministic_ids():
    b = CommitBatch(trades=[Trade("T-1", "ord-1", "acct-1", "S", "BUY", 65, 10.0, 7)],
                    positions=[PositionRow("acct-1", "S", 65, 10.0, 0.0)], day_pnl=[("acct-1", "2026-01-05", 1.5)],
                    settings={"halt_reason": "ops"},
                    anomalies=[("tick_rejected", "S", "PRICE", 10), ("tick_rejected", "S", "PRICE", 10)])
    plan = cb.plan_effects(b)
    assert set(plan) == {"trades", "positions", "day_pnl", "settings", "anomalies"}
    assert plan["trades"]["T-1"]["quantity"] == 65
    assert plan["positions"]["acct-1|S"] == {"account": "acct-1", "symbol": "S", "net_qty": 65, "avg_price": 10.0,
                                             "realised_pnl": 0.0}
    assert plan["day_pnl"]["acct-1|2026-01-05"]["realised"] == 1.5
    assert plan["settings"]["halt_reason"] == {"key": "halt_reason", "value": "ops"}
    assert [a["seq"] for a in plan["anomalies"].values()] == [0, 1]  # two equal anomalies stay two


def test_newest_prices_when_ticks_out_of_order_then_latest_time_wins():
    ticks = [Tick("S", 10.0, 5), Tick("S", 9.0, 3), Tick("S", 11.0, 5), Tick("T", 1.0, 1)]
    assert cb.newest_prices(ticks) == {"S": (11.0, 5), "T": (1.0, 1)}


def test_schema_when_listed_then_every_index_names_a_collection():
    assert {c for c, *_ in cb.INDEXES} <= set(cb.COLLECTIONS)
    assert len({name for _, name, *_ in cb.INDEXES}) == len(cb.INDEXES)


# -- the writer lease's document, over a stand-in for the SDK's collection ---------------------------
class _Result:
    def __init__(self, cas: int, doc: dict | None = None) -> None:
        self.cas = cas
        self.content_as = {dict: doc}


class _LeaseCollection:
    """What the SDK's collection does for one key: insert-if-absent, replace/remove by CAS, or raise
    what the test says (a timeout)."""

    def __init__(self) -> None:
        self.doc: tuple[dict, int] | None = None
        self.cas = 0
        self.fail: Exception | None = None
        self.seen: list[tuple[str, object]] = []

    def _check(self, op: str, opts: object) -> None:
        self.seen.append((op, opts))
        if self.fail is not None:
            raise self.fail

    def insert(self, key, doc, opts):
        self._check("insert", opts)
        if self.doc is not None:
            raise cb.DocumentExistsException()
        self.cas += 1
        self.doc = (doc, self.cas)
        return _Result(self.cas)

    def replace(self, key, doc, opts):
        self._check("replace", opts)
        if self.doc is None:
            raise cb.DocumentNotFoundException()
        if opts["cas"] != self.doc[1]:
            raise cb.CasMismatchException()
        self.cas += 1
        self.doc = (doc, self.cas)
        return _Result(self.cas)

    def remove(self, key, opts):
        self._check("remove", opts)
        if self.doc is None:
            raise cb.DocumentNotFoundException()
        if opts["cas"] != self.doc[1]:
            raise cb.CasMismatchException()
        self.doc = None

    def get(self, key, opts):
        self._check("get", opts)
        if self.doc is None:
            raise cb.DocumentNotFoundException()
        return _Result(self.doc[1], self.doc[0])


def test_lease_document_when_sdk_answers_then_mapped_to_the_lease_protocol():
    from engine.store.lease import LeaseLost, LeaseUnavailable

    col = _LeaseCollection()
    doc = cb._LeaseDocument(col, None, ttl_s=60)
    v1 = doc.create("engine-a", 60)
    assert v1 == 1 and doc.holder() == "engine-a"
    assert doc.create("engine-b", 60) is None  # exists, another's: held
    opts = col.seen[0][1]
    assert opts["expiry"].total_seconds() == 60 and opts["timeout"].total_seconds() == 10  # a sixth of the lease
    v2 = doc.replace(v1, "engine-a", 60)
    assert v2 == 2 and col.seen[-1][1]["cas"] == v1
    doc.remove(v1)  # not the current version: left alone, no error
    assert doc.holder() == "engine-a"
    col.fail = cb.UnAmbiguousTimeoutException()
    with pytest.raises(LeaseUnavailable):
        doc.replace(v2, "engine-a", 60)
    with pytest.raises(LeaseUnavailable):
        doc.create("engine-b", 60)
    col.fail = None
    col.doc = ({"holder": "engine-b"}, 99)  # another engine's now
    with pytest.raises(LeaseLost, match="engine-b"):
        doc.replace(v2, "engine-a", 60)
    doc.remove(v2)  # not ours: left alone
    assert doc.holder() == "engine-b"
    col.doc = None
    with pytest.raises(LeaseLost, match="lapsed"):  # gone (expired): lost
        doc.replace(v2, "engine-a", 60)


def test_lease_document_when_a_write_landed_behind_an_ambiguous_timeout_then_still_ours():
    col = _LeaseCollection()
    doc = cb._LeaseDocument(col, None, ttl_s=60)
    v1 = doc.create("engine-a", 60)
    col.doc = ({"holder": "engine-a"}, 7)  # a renewal applied whose answer never came back
    v = doc.replace(v1, "engine-a", 60)  # an unexpected CAS, but the document names us: renewed
    assert v == col.doc[1] and col.seen[-1][0] == "replace" and col.seen[-1][1]["cas"] == 7
    col.doc = ({"holder": "engine-c"}, 8)
    assert doc.create("engine-c", 60) == col.doc[1]  # an insert that landed unanswered: ours, renewed
    assert doc.create("engine-d", 60) is None
