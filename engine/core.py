"""The engine's pipeline for one batch of requests, in the order every order goes through:

    intake -> idempotency -> gate (validate, limits) -> intents committed -> broker -> settle
           -> one store commit -> answers

`Engine.process(frames)` runs a batch up to its commit and returns a `Turn`: the batch to commit and
the answers, which may leave only once that commit is confirmed (`Engine.confirm(seq)`). The ZeroMQ
loop hands the commit to the store writer process and gates the next batch meanwhile; decisions
made but not yet confirmed answer redeliveries from memory (`inflight`). `Engine.handle(frames)`
does both steps in line. The engine knows nothing of sockets or sources.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec

from engine import intake, protocol
from engine.broker.base import Broker, BrokerError, BrokerOrder
from engine.clock import Clock
from engine.config import Config
from engine.instruments import Instrument, InstrumentError
from engine.models import Decision, Escalation, Reason, Status, Tick, reason, unrealised_pnl
from engine.risk.book import Book, PositionState
from engine.risk.context import Moment
from engine.risk.gate import SEND, Gate
from engine.settle import record_book_changes, settle
from engine.store.base import CommitBatch, Intent, Known, Store

log = logging.getLogger("wojak.engine")

ORDER_KINDS = frozenset({"submit_order", "ingest"})
PENDING = "PENDING"  # not a decision: nothing was recorded, the sender should retry later
# A tick stamped further ahead of the engine's clock than this is refused: the newest tick by ts
# sets the last price, so one stamped a century ahead (a feed's bug) would freeze bands and MTM at
# its price for good. Exchange feeds and the engine's host keep NTP time, milliseconds apart.
TICK_MAX_AHEAD_NS = 5_000_000_000


@dataclass(slots=True)
class _Slot:
    """An order sent to the broker in this batch: its decision arrives after settlement."""

    intent: Intent
    decision: Decision | None = None


@dataclass(slots=True)
class _Dup:
    """A redelivery of an order whose decision is still being made in this batch."""

    slot: _Slot


@dataclass(slots=True)
class _BadRequest:
    id: int
    error: str


@dataclass(slots=True)
class Turn:
    """One batch processed: answers that may leave once `seq` is committed (seq 0: nothing to commit,
    the answers wait only for the batches before them)."""

    seq: int
    commit: CommitBatch
    answers: list[bytes]


@dataclass
class _Work:
    moment: Moment
    commit: CommitBatch = field(default_factory=CommitBatch)
    intents: list[Intent] = field(default_factory=list)
    slots: list[_Slot] = field(default_factory=list)
    seen: dict[str, Any] = field(default_factory=dict)  # key -> Known | _Slot, within this batch
    touched: set[tuple[str, str]] = field(default_factory=set)


class Engine:
    def __init__(self, cfg: Config, store: Store, broker: Broker, instruments: dict[str, Instrument],
                 clock: Clock | None = None, master: Callable[[dt.date], dict[str, Instrument]] | None = None) -> None:
        """master: loads the instrument master for a trading day (see `reload_instruments`)."""
        self.cfg = cfg
        self.store = store
        self.broker = broker
        self.instruments = instruments  # the gate reads this very dict: reloads replace its contents
        self._master = master
        self.clock = clock or Clock(cfg.risk.timezone, cfg.engine.simulated_start)
        self.book = Book(refresh_ns=cfg.risk.mtm_refresh_ms * 1_000_000)
        self.gate = Gate(instruments, self.book, cfg.risk)
        self.ltp_ts: dict[str, int] = {}
        self.stats: Counter[str] = Counter()
        self.needs_reconcile = True
        self.seq = 0  # last batch handed out to commit
        self.inflight: dict[str, Known] = {}  # decided, commit not confirmed yet
        self._inflight_by_seq: deque[tuple[int, list[str]]] = deque()  # (seq, ids decided in it)
        self._not_durable: deque[tuple[int, list[str]]] = deque()  # the same, until durable
        self._resolved: list[str] = []  # ids decided durably since the last commit_intents
        self.checkpoints: dict[str, str] = {}  # source checkpoints set by this process, newest value

    # -- start-up -----------------------------------------------------------------------------
    def start(self) -> None:
        """Rebuild the book from the store and settle every intent a crash left pending."""
        from engine.reconcile import reconcile

        now = Moment.at(self.clock, self.cfg.risk)
        day = now.today.isoformat()
        self.book.roll_day(day, self.store.day_pnl(day))
        for p in self.store.positions():
            self.book.load_position(p.account, p.symbol, PositionState(p.net_qty, p.avg_price, p.realised_pnl))
        ahead = []
        for symbol, (ltp, ts) in self.store.last_prices().items():
            self.book.ltp[symbol] = ltp
            if ts > now.ns + TICK_MAX_AHEAD_NS:  # stored before such ticks were refused
                ahead.append(symbol)
                ts = now.ns
            self.ltp_ts[symbol] = ts
        if ahead:
            log.warning("last prices stamped ahead of the engine clock, now due for the next tick: %s",
                        ", ".join(sorted(ahead)[:20]))
        settings = self.store.settings()
        self.book.halted = settings.get("halted") == "1"
        self.book.halt_reason = settings.get("halt_reason", "")
        reconcile(self)

    # -- the batch pipeline -------------------------------------------------------------------
    def handle(self, frames: list[bytes]) -> list[bytes]:
        """Process a batch and commit it in line: the answers, durable."""
        turn = self.process(frames)
        if turn.seq:
            self.store.commit(turn.commit)
            self.confirm(turn.seq)
        return turn.answers

    def process(self, frames: list[bytes], between: Callable[[], None] | None = None) -> Turn:
        """Decide a batch; its answers may leave only after `turn.commit` is committed.

        between: called between the steps, so the caller can send answers of earlier batches whose
        commits were confirmed meanwhile, rather than only once this batch is decided."""
        moment = Moment.at(self.clock, self.cfg.risk)
        self._roll_day(moment)
        self.book.begin_batch(moment.ns)
        work = _Work(moment)
        requests = [self._decode(f, work) for f in frames]
        if self.needs_reconcile:
            try:
                from engine.reconcile import reconcile

                decided, dropped = reconcile(self, work.commit)
                for d, h, _ in decided:
                    work.seen[d.client_order_id] = Known(h, d)
                # A dropped intent (the broker never had it) is judged afresh when its order comes
                # again - from the next batch on: until this batch commits the drop, a redelivery
                # is answered as still pending, so no new intent for the id can meet the old one.
                for i in dropped:
                    work.seen[i.client_order_id] = Known(i.content_hash, None)
                if dropped:  # and the engine's own intent log forgets it now (a crash drops it again)
                    self.store.commit_intents([], [i.client_order_id for i in dropped])
            except BrokerError as e:
                log.warning("broker unavailable, answering retry: %s", e)
                return self._turn(work, [self._retry_all(r, str(e)) for r in requests])
        parsed = [self._intake(r) for r in requests]
        known = self._lookup(parsed)
        answers = []
        for r, items in zip(requests, parsed):
            answers.append(self._decide(r, items, known, work))
            if between is not None:  # after every request: earlier answers leave as soon as they may
                between()
        self._execute(work, between)
        if between is not None:
            between()
        self.book.end_batch()
        record_book_changes(self.book, work.touched, work.commit)
        return self._turn(work, [self._answer(r, a, work) for r, a in zip(requests, answers)])

    def _turn(self, work: _Work, answers: list[bytes]) -> Turn:
        if work.commit.empty():
            return Turn(0, work.commit, answers)
        self.seq += 1
        decided = [d.client_order_id for d, _, _ in work.commit.decisions]
        seen = work.seen  # each decision recorded in this batch is there, as its Known
        self.inflight.update({coid: seen[coid] for coid in decided})
        self._inflight_by_seq.append((self.seq, decided))
        self._not_durable.append((self.seq, decided))
        return Turn(self.seq, work.commit, answers)

    def durable(self, seq: int) -> None:
        """Batches up to `seq` are durable (answerable): their orders' intents are resolved with the
        next `commit_intents`. Not later, when the tables have them: with the tables behind (a
        fold, a slow disk) the intent log would carry every intent since in each segment's full
        record. A crash in between loses nothing: the store applies its journal at open, before
        the engine asks which intents are still pending."""
        q = self._not_durable
        while q and q[0][0] <= seq:
            # Only a committed decision resolves an intent: an order left PENDING by a broker
            # failure has none, and its intent stays for reconciliation.
            self._resolved.extend(q.popleft()[1])

    def confirm(self, seq: int) -> None:
        """Batches up to `seq` are in the tables: their decisions are the store's to answer from now."""
        self.durable(seq)
        q = self._inflight_by_seq
        while q and q[0][0] <= seq:
            for coid in q.popleft()[1]:
                self.inflight.pop(coid, None)

    def _decode(self, frame: bytes, work: _Work) -> protocol.Request | _BadRequest:
        try:
            req = protocol.decode_request(frame)
        except (msgspec.DecodeError, UnicodeDecodeError, TypeError) as e:
            return self._bad_request(work, f"not a wojak request: {e}")
        if req.v != protocol.VERSION:
            return self._bad_request(work, f"unsupported protocol version {req.v}", req)
        if req.kind not in protocol.KINDS:
            return self._bad_request(work, f"unknown kind {req.kind[:40]!r}", req)
        if len(req.items) > protocol.MAX_ITEMS:
            return self._bad_request(work, f"a request carries at most {protocol.MAX_ITEMS} items, this one "
                                           f"{len(req.items)}: send them in several", req)
        if req.msg_ids is not None and len(req.msg_ids) != len(req.items):
            return self._bad_request(work, "msg_ids must be parallel to items", req)
        if req.kind == "set_checkpoint" and not (isinstance(req.args.get("key"), str)
                                                  and isinstance(req.args.get("value"), str)
                                                  and len(req.args["key"]) <= protocol.MAX_CHECKPOINT_KEY
                                                  and len(req.args["value"]) <= protocol.MAX_CHECKPOINT_VALUE):
            return self._bad_request(work, f"set_checkpoint needs string args key (at most "
                                           f"{protocol.MAX_CHECKPOINT_KEY} characters) and value (at most "
                                           f"{protocol.MAX_CHECKPOINT_VALUE})", req)
        return req

    def _bad_request(self, work: _Work, why: str, req: protocol.Request | None = None) -> _BadRequest:
        work.commit.anomalies.append(("bad_request", "", why[:300], work.moment.ns))
        self.stats["bad_request"] += 1
        return _BadRequest(req.id if req else 0, reason(Reason.SCHEMA, why))

    def _intake(self, req: protocol.Request | _BadRequest) -> list[intake.Item]:
        if isinstance(req, _BadRequest) or req.kind not in ORDER_KINDS and req.kind != "tick":
            return []
        want_tick = req.kind == "tick"
        ids = req.msg_ids
        return [intake.parse(raw, ids[i] if ids else None, want_tick) for i, raw in enumerate(req.items)]

    def _lookup(self, parsed: list[list[intake.Item]]) -> dict[str, Known]:
        keys = [it.key for items in parsed for it in items if it.tick is None and it.key]
        if not keys:
            return {}
        inflight = self.inflight
        rest = [k for k in keys if k not in inflight]
        known = self.store.lookup(rest) if rest else {}
        if len(rest) < len(keys):
            known.update({k: inflight[k] for k in keys if k in inflight})
        return known

    def _decide(self, req: protocol.Request | _BadRequest, items: list[intake.Item], known: dict[str, Known],
                work: _Work) -> list[Any] | None:
        """Answers for the request's items in order (Decision, _Slot or _Dup), or None for control kinds."""
        if isinstance(req, _BadRequest):
            return None
        if req.kind == "halt" or req.kind == "resume":
            self._set_halt(req.kind == "halt", str(req.args.get("reason", "manual"))[:200], work)
            return None
        if req.kind == "set_checkpoint":
            key, value = req.args["key"], req.args["value"]
            work.commit.checkpoints[key] = self.checkpoints[key] = value
            return None
        if req.kind not in ORDER_KINDS and req.kind != "tick":
            return None
        out: list[Any] = []
        for it in items:
            if it.tick is not None:
                out.append(self._tick(it.tick, work))
            elif it.error is not None and req.kind == "tick":
                work.commit.anomalies.append(("tick_rejected", it.key, it.error, work.moment.ns))
                out.append(Decision(it.key, Status.REJECTED.value, [it.error], ts=work.moment.ns))
            else:
                out.append(self._order(it, known, work))
        return out

    def _order(self, it: intake.Item, known: dict[str, Known], work: _Work) -> Any:
        now = work.moment.ns
        prior = work.seen.get(it.key) or known.get(it.key)
        if prior is not None:
            return self._redelivery(it, prior, work)
        if it.error is not None:
            d = Decision(it.key, Status.REJECTED.value, [it.error], ts=now)
            return self._record(d, it.content_hash, it.raw, work)
        order = it.order
        verdict = self.gate.evaluate(order, work.moment)
        if verdict.status == SEND:
            return self._intend(it, verdict.price, verdict.child_qtys, work)
        d = Decision(order.client_order_id, verdict.status, verdict.reasons, account=order.account,
                     symbol=order.symbol, side=order.side, quantity=order.quantity, ts=now)
        as_dict = msgspec.structs.asdict(order)
        if verdict.status == Status.ESCALATED.value:
            d.escalation_id = "E-" + order.client_order_id
            work.commit.escalations.append(Escalation(d.escalation_id, order.client_order_id, order.account,
                                                      verdict.reasons, as_dict, now))
        return self._record(d, it.content_hash, as_dict, work)

    def _redelivery(self, it: intake.Item, prior: Any, work: _Work) -> Any:
        h = prior.intent.content_hash if isinstance(prior, _Slot) else prior.content_hash
        if h != it.content_hash:
            self.stats["DUPLICATE_ID_MISMATCH"] += 1
            why = reason(Reason.DUPLICATE_ID_MISMATCH, f"client_order_id={it.key} was used for other content")
            work.commit.anomalies.append(("duplicate_id_mismatch", it.key, it.content_hash, work.moment.ns))
            return Decision(it.key, Status.REJECTED.value, [why], ts=work.moment.ns)
        self.stats["duplicate"] += 1
        if isinstance(prior, _Slot):
            return _Dup(prior)
        if prior.decision is None:  # an intent still pending at the broker: no decision to give yet
            return Decision(it.key, PENDING, ["BROKER_PENDING: reconciling with the broker"], ts=work.moment.ns)
        return msgspec.structs.replace(prior.decision, duplicate=True)

    def _record(self, d: Decision, content_hash: str, order: dict | None, work: _Work) -> Decision:
        work.commit.decisions.append((d, content_hash, order))
        work.seen[d.client_order_id] = Known(content_hash, d)
        self.stats[d.status] += 1
        return d

    def _intend(self, it: intake.Item, price: float, child_qtys: list[int] | None, work: _Work) -> _Slot:
        o = it.order
        if child_qtys:
            bos = [BrokerOrder(f"{o.client_order_id}#{i}", o.account, o.symbol, o.side, q, o.order_type, price)
                   for i, q in enumerate(child_qtys, start=1)]
        else:
            bos = [BrokerOrder(o.client_order_id, o.account, o.symbol, o.side, o.quantity, o.order_type, price)]
        intent = Intent(o.client_order_id, it.content_hash, msgspec.structs.asdict(o), bos, work.moment.ns)
        slot = _Slot(intent)
        work.intents.append(intent)
        work.slots.append(slot)
        work.seen[o.client_order_id] = slot
        return slot

    def _tick(self, tick: Tick, work: _Work) -> Decision:
        now = work.moment.ns
        if tick.symbol not in self.instruments:
            why = reason(Reason.UNKNOWN_SYMBOL, tick.symbol[:64])
            work.commit.anomalies.append(("tick_rejected", tick.symbol[:64], why, now))
            return Decision("", Status.REJECTED.value, [why], symbol=tick.symbol[:64], ts=now)
        if tick.ts is not None and tick.ts > now + TICK_MAX_AHEAD_NS:
            why = reason(Reason.SCHEMA, f"ts is {(tick.ts - now) / 1e9:,.0f}s ahead of the engine clock (at most "
                                        f"{TICK_MAX_AHEAD_NS // 10**9}s) - at `$.ts`")
            work.commit.anomalies.append(("tick_rejected", tick.symbol, why, now))
            return Decision("", Status.REJECTED.value, [why], symbol=tick.symbol, ts=now)
        ts = tick.ts if tick.ts is not None else now
        if ts >= self.ltp_ts.get(tick.symbol, 0):  # a late tick is recorded but does not move the price
            self.ltp_ts[tick.symbol] = ts
            self.book.ltp[tick.symbol] = tick.ltp
        work.commit.ticks.append(Tick(tick.symbol, tick.ltp, ts))
        self.stats["tick"] += 1
        return Decision("", Status.ACCEPTED.value, symbol=tick.symbol, ts=now)

    def _set_halt(self, halted: bool, why: str, work: _Work) -> None:
        self.book.halted = halted
        self.book.halt_reason = why if halted else ""
        work.commit.settings.update({"halted": "1" if halted else "0", "halt_reason": self.book.halt_reason})
        log.warning("kill switch %s: %s", "ON" if halted else "OFF", why)

    def _execute(self, work: _Work, between: Callable[[], None] | None = None) -> None:
        """Commit the intents, then call the broker once for the batch, then settle each order."""
        if not work.intents:
            return
        resolved, self._resolved = self._resolved, []
        self.store.commit_intents(work.intents, resolved)
        if between is not None:
            between()
        orders = [bo for i in work.intents for bo in i.broker_orders]
        try:
            results = {r.client_order_id: r for r in self.broker.submit(orders)}
        except BrokerError as e:
            log.warning("broker call failed; %d intents stay pending for reconciliation: %s", len(orders), e)
            self.needs_reconcile = True
            for slot in work.slots:
                slot.decision = Decision(slot.intent.client_order_id, PENDING, [f"BROKER_PENDING: {e}"[:300]],
                                         ts=work.moment.ns)
            return
        trades = work.commit.trades
        for slot in work.slots:
            d = settle(slot.intent.order, slot.intent.broker_orders, results, self.book, work.moment.ns,
                       trades, work.touched, pending=True)
            slot.decision = self._record(d, slot.intent.content_hash, slot.intent.order, work)

    def _roll_day(self, moment: Moment) -> None:
        day = moment.today.isoformat()
        if day != self.book.day:
            if self.book.day:  # a new trading day while running (not the start): its contracts too
                self.reload_instruments(moment.today, "new trading day")
            self.book.roll_day(day, self.store.day_pnl(day))

    def reload_instruments(self, day: dt.date | None = None, why: str = "asked") -> bool:
        """Load the instrument master again (for `day`, by default today): at the start of each
        trading day, and when asked (SIGHUP) - the exchange lists new contracts every week and new
        strikes intraday, and an engine that runs for weeks must see them. A master that cannot be
        loaded leaves the one in use in place (logged): expiries are checked by date either way."""
        if self._master is None:
            return False
        day = day or Moment.at(self.clock, self.cfg.risk).today
        try:
            fresh = self._master(day)
        except InstrumentError as e:
            log.error("instrument master not reloaded (%s): %s - the %d instruments loaded before stay",
                      why, e, len(self.instruments))
            return False
        self.instruments.clear()
        self.instruments.update(fresh)
        log.info("instrument master reloaded (%s): %d instruments for %s", why, len(fresh), day.isoformat())
        return True

    # -- answers ------------------------------------------------------------------------------
    def _answer(self, req: protocol.Request | _BadRequest, answers: list[Any] | None, work: _Work) -> bytes:
        if isinstance(req, _BadRequest):
            return protocol.encode(protocol.Response(id=req.id, ok=False, error=req.error))
        if answers is not None:
            return protocol.encode(protocol.Response(id=req.id, results=[_final(a) for a in answers]))
        return protocol.encode(protocol.Response(id=req.id, data=self._read(req, work)))

    def _read(self, req: protocol.Request, work: _Work) -> Any:
        k = req.kind
        if k == "get_order":  # answered after this batch's commit, so a decision in flight is durable then
            d = self._decision_of(str(req.args.get("client_order_id", "")), work)
            return msgspec.to_builtins(d) if d else None
        if k == "positions":
            return self.positions(req.args.get("account"))
        if k == "get_checkpoint":
            key = str(req.args.get("key", ""))
            return self.checkpoints[key] if key in self.checkpoints else self.store.get_checkpoint(key)
        if k == "set_checkpoint":  # committed with the batch: durable when answered
            return True
        if k in ("halt", "resume"):
            return {"halted": self.book.halted, "reason": self.book.halt_reason}
        return {"ok": True, "standby": False, "halted": self.book.halted, "halt_reason": self.book.halt_reason,
                "instruments": len(self.instruments),
                "decisions": dict(self.stats)}

    def _decision_of(self, coid: str, work: _Work) -> Decision | None:
        """The id's decision as this batch leaves it: decided in this batch (its Known or _Slot),
        else in a batch whose commit is not confirmed yet, else the store's."""
        for mem in (work.seen.get(coid), self.inflight.get(coid)):
            if mem is not None and mem.decision is not None:
                return mem.decision
        return self.store.get_decision(coid)

    def positions(self, account: str | None = None) -> list[dict]:
        out = []
        for (acct, sym), p in sorted(self.book.positions.items()):
            if account and acct != account:
                continue
            ltp = self.book.ltp.get(sym)
            out.append({"account": acct, "symbol": sym, "net_qty": p.net_qty, "avg_price": round(p.avg_price, 4),
                        "realised_pnl": round(p.realised_pnl, 2), "ltp": ltp,
                        "unrealised_pnl": unrealised_pnl(ltp, p.avg_price, p.net_qty)})
        return out

    def _retry_all(self, req: protocol.Request | _BadRequest, why: str) -> bytes:
        return protocol.encode(protocol.Response(id=req.id, ok=False, error=f"BROKER_PENDING: {why}"[:300]))


def _final(a: Any) -> Decision:
    if isinstance(a, _Slot):
        return a.decision
    if isinstance(a, _Dup):
        return msgspec.structs.replace(a.slot.decision, duplicate=True)
    return a
