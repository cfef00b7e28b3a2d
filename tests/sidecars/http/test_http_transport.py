"""Transport: HTTPS with a test CA, 503 when the engine is unreachable, CURVE on tcp:// to the engine."""
from __future__ import annotations

import ssl
import time
import uuid

import httpx
import pytest
import trustme
from http_support import FAST_RISK, HttpSidecar, free_port

from engine.curve import generate
from tests.support.engine_proc import EngineProcess, nifty_fut


def order(**kw) -> dict:
    return {"client_order_id": f"tr-{uuid.uuid4().hex[:10]}", "symbol": nifty_fut(), "side": "BUY",
            "quantity": 65, "price": 26000.0, **kw}


def test_https_when_cert_configured_then_served_to_a_client_trusting_the_ca_only(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    engine = EngineProcess(tmp_path, risk=FAST_RISK,
                           http={"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "server.key")})
    engine.start()
    sidecar = HttpSidecar(engine.config, tmp_path, tls_ca=tmp_path / "ca.pem").start()
    try:
        with sidecar.client() as c:
            assert c.get("/healthz").status_code == 200
            r = c.post("/v1/orders", json=order())
            assert r.status_code == 200 and r.json()["status"] in ("FILLED", "FAILED")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{sidecar.base}/healthz", verify=ssl.create_default_context())
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port is not served
            httpx.get(f"http://127.0.0.1:{sidecar.port}/healthz", timeout=5)
    finally:
        assert sidecar.stop() == 0
        engine.stop()


def test_post_order_when_engine_unreachable_then_503_retry_after_and_a_retry_later_is_decided_once(tmp_path):
    engine = EngineProcess(tmp_path, risk=FAST_RISK, http={"timeout_s": 1.0})  # not started yet
    sidecar = HttpSidecar(engine.config, tmp_path).start()
    o = order()
    try:
        with sidecar.client() as c:
            r = c.post("/v1/orders", json=o)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "1" and r.json()["error"] == "ENGINE_UNAVAILABLE"
            assert c.get("/healthz").status_code == 503
            assert c.get(f"/v1/orders/{o['client_order_id']}").status_code == 503
            engine.start()
            r = c.post("/v1/orders", json=o)
            assert r.status_code == 200
            assert r.json()["duplicate"] is False  # the 503 had recorded nothing
            assert c.get("/healthz").status_code == 200
        assert engine.broker_calls()[o["client_order_id"]] == 1
    finally:
        assert sidecar.stop() == 0
        engine.stop()


def test_http_when_engine_stands_by_then_503_standby_and_decided_once_it_takes_over(tmp_path):
    import threading

    from engine.config import load
    from engine.server import Server
    from engine.store.lease import WriterLease
    from tests.support.lease_fakes import MemoryLeaseRecord

    engine = EngineProcess(tmp_path, risk=FAST_RISK, http={"timeout_s": 2.0})  # run here, on a thread
    record = MemoryLeaseRecord()
    record.steal("engine-on-another-node")  # the store's writer is elsewhere
    server = Server(load(engine.config), lease=WriterLease(record, 3, holder="this-node"))
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    sidecar = HttpSidecar(engine.config, tmp_path).start()
    o = order()
    try:
        with sidecar.client() as c:
            r = c.get("/healthz")
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert r.json()["engine"] == "standby" and r.json()["lease_holder"] == "engine-on-another-node"
            r = c.post("/v1/orders", json=o)  # refused, nothing recorded: a load balancer sends it elsewhere
            assert r.status_code == 503 and "STANDBY" in r.json()["detail"], r.text
            record.doc = None  # the other node's engine stopped and handed the lease over
            deadline = time.monotonic() + 10
            while c.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline, "never took over"
                time.sleep(0.1)
            r = c.post("/v1/orders", json=o)
            assert r.status_code == 200 and r.json()["duplicate"] is False  # the 503 had recorded nothing
        assert record.holder() == "this-node"
    finally:
        assert sidecar.stop() == 0
        server.stop()
        serving.join(30)


@pytest.fixture
def curve_engine(tmp_path, monkeypatch):
    """An engine on tcp:// that serves only CURVE clients whose public key is in its allowed dir."""
    server_pub, server_sec = generate(str(tmp_path / "keys"), "engine")
    good_pub, good_sec = generate(str(tmp_path / "allowed"), "sidecar")
    bad_pub, bad_sec = generate(str(tmp_path / "intruder"), "sidecar")
    server_env = {"WOJAK_CURVE_SERVER_PUBLIC": str(server_pub), "WOJAK_CURVE_SERVER_SECRET": str(server_sec)}
    good = {"WOJAK_CURVE_SERVER_PUBLIC": str(server_pub), "WOJAK_CURVE_CLIENT_PUBLIC": str(good_pub),
            "WOJAK_CURVE_CLIENT_SECRET": str(good_sec)}
    bad = dict(good, WOJAK_CURVE_CLIENT_PUBLIC=str(bad_pub), WOJAK_CURVE_CLIENT_SECRET=str(bad_sec))
    for k, v in good.items():  # EngineProcess.start() checks health with a client from this process
        monkeypatch.setenv(k, v)
    engine = EngineProcess(tmp_path, endpoint=f"tcp://127.0.0.1:{free_port()}", env=server_env, risk=FAST_RISK,
                           engine={"curve_allowed_clients": str(tmp_path / "allowed")}, http={"timeout_s": 1.5})
    engine.start()
    yield engine, good, bad
    engine.stop()


@pytest.mark.parametrize("who", ["authorised key", "unknown key", "no CURVE"])
def test_curve_when_sidecar_key_is_or_is_not_authorised_then_served_only_with_the_right_key(curve_engine,
                                                                                         tmp_path, who):
    engine, good, bad = curve_engine
    env = {"authorised key": good, "unknown key": bad,
           "no CURVE": {"WOJAK_CURVE_SERVER_PUBLIC": "", "WOJAK_CURVE_CLIENT_PUBLIC": "",
                        "WOJAK_CURVE_CLIENT_SECRET": ""}}[who]
    sidecar = HttpSidecar(engine.config, tmp_path, env={"WOJAK_ENGINE_ENDPOINT": engine.endpoint, **env}).start()
    o = order()
    try:
        with sidecar.client() as c:
            r = c.post("/v1/orders", json=o)
            health = c.get("/healthz").status_code
    finally:
        assert sidecar.stop() == 0
    if who == "authorised key":
        assert (r.status_code, health) == (200, 200)
        assert engine.store().get_decision(o["client_order_id"]) is not None
    else:
        assert (r.status_code, health) == (503, 503)
        assert engine.store().get_decision(o["client_order_id"]) is None
