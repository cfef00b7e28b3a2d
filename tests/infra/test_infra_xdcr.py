"""The XDCR dynamic provider against fake Couchbase REST servers on 127.0.0.1."""

from __future__ import annotations

import pickle

import dill
import pytest

from infra_testkit import FakeCouchbase
from infra.couchbase.xdcr import CouchbaseRestError, XdcrProvider


def props(src: FakeCouchbase, dst: FakeCouchbase, buckets=("wojak",), **over) -> dict:
    p = {
        "source_name": "wojak-aws",
        "source_host": src.host,
        "source_username": src.username,
        "source_password": src.password,
        "target_name": "wojak-gcp",
        "target_host": dst.host,
        "target_username": dst.username,
        "target_password": dst.password,
        "buckets": list(buckets),
        "wait_seconds": 0,
        "timeout_seconds": 5,
        "scheme": "http",
    }
    p.update(over)
    return p


def test_create_makes_reference_and_replication_on_the_source(couchbase_pair):
    src, dst = couchbase_pair
    res = XdcrProvider().create(props(src, dst))
    ref = src.remotes["wojak-gcp"]
    assert ref["hostname"] == dst.host and ref["_password"] == dst.password
    assert res.outs["replication_ids"] == [f"{ref['uuid']}/wojak/wojak"]
    assert list(src.tasks) == res.outs["replication_ids"]
    assert res.id == f"{src.host}->wojak-gcp"
    assert dst.remotes == {} and dst.tasks == {}  # one direction only


def test_create_is_idempotent_when_everything_exists(couchbase_pair):
    src, dst = couchbase_pair
    first = XdcrProvider().create(props(src, dst))
    again = XdcrProvider().create(props(src, dst))
    assert again.outs["replication_ids"] == first.outs["replication_ids"]
    assert len(src.remotes) == 1 and len(src.tasks) == 1
    assert ("POST", "/pools/default/remoteClusters/wojak-gcp") in src.log  # edited, not duplicated


def test_both_directions_with_two_resources(couchbase_pair):
    src, dst = couchbase_pair
    XdcrProvider().create(props(src, dst))
    back = props(dst, src, source_name="wojak-gcp", target_name="wojak-aws")
    XdcrProvider().create(back)
    assert set(src.remotes) == {"wojak-gcp"} and set(dst.remotes) == {"wojak-aws"}
    assert len(src.tasks) == 1 and len(dst.tasks) == 1


def test_diff_replaces_only_on_identity_keys(couchbase_pair):
    src, dst = couchbase_pair
    old = props(src, dst)
    p = XdcrProvider()
    assert p.diff("id", old, dict(old)).changes is False
    pw = p.diff("id", old, {**old, "target_password": "rotated"})
    assert pw.changes is True and pw.replaces == []
    moved = p.diff("id", old, {**old, "target_name": "other"})
    assert moved.changes is True and moved.replaces == ["target_name"]
    host = p.diff("id", old, {**old, "source_host": "elsewhere:8091"})
    assert host.replaces == ["source_host"]


def test_update_rotates_the_password_and_changes_buckets(couchbase_pair):
    src, dst = couchbase_pair
    p = XdcrProvider()
    old = p.create(props(src, dst, buckets=("wojak", "audit"))).outs
    dst.password = "rotated"
    new = props(src, dst, buckets=("wojak",))
    outs = p.update("id", old, new).outs
    ref = src.remotes["wojak-gcp"]
    assert ref["_password"] == "rotated"
    assert list(src.tasks) == outs["replication_ids"] == [f"{ref['uuid']}/wojak/wojak"]


def test_delete_removes_replications_and_reference_and_tolerates_repeats(couchbase_pair):
    src, dst = couchbase_pair
    p = XdcrProvider()
    outs = p.create(props(src, dst)).outs
    p.delete("id", outs)
    assert src.tasks == {} and src.remotes == {}
    p.delete("id", outs)  # already gone: 404s are fine


def test_read_reports_drift(couchbase_pair):
    src, dst = couchbase_pair
    p = XdcrProvider()
    outs = p.create(props(src, dst)).outs
    assert p.read("id", outs).outs["replication_ids"] == outs["replication_ids"]
    src.tasks.clear()
    assert p.read("id", outs).outs["replication_ids"] == []
    src.remotes.clear()
    assert p.read("id", outs).id is None


def test_wrong_password_fails_without_retrying(couchbase_pair):
    src, dst = couchbase_pair
    with pytest.raises(CouchbaseRestError) as err:
        XdcrProvider().create(props(src, dst, source_password="wrong", wait_seconds=30))
    assert err.value.status == 401
    assert len(src.log) == 1


def test_create_waits_for_a_booting_cluster():
    with FakeCouchbase(unavailable_for=3) as src, FakeCouchbase() as dst:
        res = XdcrProvider().create(props(src, dst, wait_seconds=10))
        assert res.outs["replication_ids"]
        assert [s for s in src.log[:3]] == [("GET", "/pools/default/remoteClusters")] * 3


def test_unreachable_cluster_gives_up_after_wait_seconds(couchbase_pair):
    _, dst = couchbase_pair
    from infra_testkit import free_port

    dead = FakeCouchbase()  # never started: use a port nothing listens on
    dead.host = f"127.0.0.1:{free_port()}"
    with pytest.raises(OSError):
        XdcrProvider().create(props(dead, dst, wait_seconds=0.3))
    dead.server.server_close()


def test_provider_survives_pulumi_serialisation():
    # Pulumi ships the provider to its host with dill; it must round-trip and keep working
    blob = dill.dumps(XdcrProvider(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    assert isinstance(dill.loads(blob), XdcrProvider)


def test_passwords_reach_the_xdcr_resources_as_pulumi_secrets(simulations):
    from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

    from infra.couchbase.xdcr import SECRET_KEYS
    from infra.policy.rules import XDCR
    from infra.simulate import MOCK_SECRET

    reps = simulations["multicloud"].of_type(XDCR)
    assert len(reps) == 2
    for r in reps:
        for k in SECRET_KEYS:
            # the wire form of a secret: an envelope with Pulumi's secret signature
            assert r.inputs[k].get(_special_sig_key) == _special_secret_sig and r.inputs[k]["value"] == MOCK_SECRET, r.urn
