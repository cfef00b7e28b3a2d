"""Config validation: every bad value fails at program start with an error naming its key."""

from __future__ import annotations

import json

import pytest

from infra import config
from infra.simulate import load_stack_config, simulate, stack_names


def reader_for(stack: str, **override):
    cfg, _ = load_stack_config(stack)
    raw = {k.split(":", 1)[1]: v for k, v in cfg.items() if k.startswith("wojak:")}
    for key, value in override.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value if isinstance(value, str) else json.dumps(value)
    return raw.get


def section(stack: str, name: str) -> dict:
    cfg, _ = load_stack_config(stack)
    return json.loads(cfg[f"wojak:{name}"])


@pytest.mark.parametrize("stack", stack_names())
def test_every_shipped_stack_file_is_valid(stack):
    s = config.parse(stack, reader_for(stack))
    assert s.stack == stack and s.clouds


def bad(stack, key, expect, **override):
    with pytest.raises(config.ConfigError) as err:
        config.parse(stack, reader_for(stack, **override))
    assert str(err.value).startswith(expect), str(err.value)


def test_missing_clouds_names_the_key():
    bad("aws", "clouds", "wojak:clouds:", clouds=None)


def test_unknown_cloud_is_rejected():
    bad("aws", "clouds", "wojak:clouds:", clouds=["azure"])


def test_wrong_type_for_a_count_names_the_nested_key():
    aws = section("aws", "aws") | {"dataNodeCount": "three"}
    bad("aws", "aws", "wojak:aws.dataNodeCount:", aws=aws)


def test_missing_zones_names_the_nested_key():
    aws = section("aws", "aws")
    aws.pop("zones")
    bad("aws", "aws", "wojak:aws.zones:", aws=aws)


def test_public_vpc_cidr_is_rejected():
    bad("aws", "aws", "wojak:aws.vpcCidr:", aws=section("aws", "aws") | {"vpcCidr": "8.8.0.0/16"})


def test_overlapping_cloud_ranges_are_rejected():
    gcp = section("multicloud", "gcp") | {"cidr": "10.10.0.0/16"}
    bad("multicloud", "gcp", "wojak:gcp.cidr:", gcp=gcp)


def test_unknown_sidecar_is_rejected():
    app = section("aws", "app") | {"sidecars": ["http", "carrier-pigeon"]}
    bad("aws", "app", "wojak:app.sidecars:", app=app)


def test_settings_for_a_sidecar_that_does_not_run_are_rejected():
    app = section("aws", "app") | {"sourceSettings": {"kafka": {"BOOTSTRAP": "x:9092"}}}
    bad("aws", "app", "wojak:app.sourceSettings.kafka:", app=app)


def test_missing_password_names_the_secret_and_the_command():
    with pytest.raises(config.ConfigError) as err:
        config.parse("aws", reader_for("aws", couchbasePassword=None))
    assert str(err.value).startswith("wojak:couchbasePassword:") and "--secret" in str(err.value)


def test_curve_transport_requires_its_secret_keys():
    bad("gcp", "curve", "wojak:curveServerSecret:", curveServerSecret=None)


def test_source_secret_with_a_bad_name_never_echoes_the_value():
    with pytest.raises(config.ConfigError) as err:
        config.parse("aws", reader_for("aws", sourceSecrets={"sqs_key": "hunter2"}))
    assert "wojak:sourceSecrets.sqs_key:" in str(err.value) and "hunter2" not in str(err.value)


def test_world_as_allowed_cidr_is_rejected():
    bad("aws", "access", "wojak:access.allowedCidrs[0]:", access={"allowedCidrs": ["0.0.0.0/0"]})


def test_bad_couchbase_edition_and_version():
    cb = section("aws", "couchbase")
    bad("aws", "couchbase", "wojak:couchbase.edition:", couchbase=cb | {"edition": "free"})
    bad("aws", "couchbase", "wojak:couchbase.version:", couchbase=cb | {"version": "latest"})


def test_image_tag_must_match_the_couchbase_version():
    cb = section("aws", "couchbase") | {"imageRef": "couchbase/server:community-7.2.4"}
    bad("aws", "couchbase", "wojak:couchbase.imageRef:", couchbase=cb)


def test_engine_bucket_is_required():
    cb = section("aws", "couchbase") | {"buckets": [{"name": "other", "ramMb": 512}]}
    bad("aws", "couchbase", "wojak:couchbase.buckets:", couchbase=cb)


def test_xdcr_bucket_must_exist():
    bad("aws", "xdcr", "wojak:xdcr.buckets:", xdcr={"buckets": ["nope"]})


def test_peer_stack_only_for_single_cloud():
    bad("multicloud", "peerStack", "wojak:peerStack:", peerStack="org/wojak/aws")


def test_invalid_config_stops_the_program_before_any_resource(tmp_path):
    src, _ = load_stack_config("aws")
    text = (tmp_path / "Pulumi.broken.yaml")
    aws = json.loads(src["wojak:aws"]) | {"appNodeCount": -1}
    import yaml

    text.write_text(yaml.safe_dump({"config": {"wojak:clouds": ["aws"], "wojak:aws": aws,
                                               "wojak:couchbase": json.loads(src["wojak:couchbase"]),
                                               "wojak:app": json.loads(src["wojak:app"])}}))
    with pytest.raises(config.ConfigError, match=r"^wojak:aws.appNodeCount:"):
        simulate("broken", stacks_dir=tmp_path)


def test_source_secrets_become_secret_env_of_their_sidecar():
    from infra.workload import containers

    s = config.parse("multicloud", reader_for("multicloud", sourceSecrets={"WOJAK_KAFKA_SASL_PASSWORD": "x"}))
    specs = {c.name: c for c in containers(s.app, s.couchbase, "couchbase://x")}
    assert specs["sidecar-kafka"].secret_env == ("WOJAK_KAFKA_SASL_PASSWORD",)
    assert "WOJAK_KAFKA_SASL_PASSWORD" not in specs["sidecar-kafka"].env
    assert specs["sidecar-kafka"].env["WOJAK_KAFKA_BOOTSTRAP"] == "kafka-0.example.invalid:9092"
    assert "WOJAK_KAFKA_SASL_PASSWORD" not in specs["sidecar-http"].secret_env


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_engine_config_file_when_deployed_then_couchbase_store_of_its_cloud_and_files_on_the_data_volume(cloud):
    from engine.config import loads
    from infra.workload import DATA_DIR, containers, engine_toml

    s = config.parse("multicloud", reader_for("multicloud"))
    cfg = loads(engine_toml(s.app, cloud))  # the engine's own parser: an unknown key would fail here
    engine = {c.name: c for c in containers(s.app, s.couchbase, "couchbase://x")}["engine"]
    assert engine.ports == (cfg.engine.metrics_port,) and cfg.engine.metrics_port > 0
    # the shared, replicated store - not the embedded default inside a container - one scope per
    # cloud (XDCR replicates the bucket both ways), schema created by the engine, which runs as admin
    store = cfg.store
    assert (store.kind, store.bucket, store.scope, store.create_schema) == ("couchbase", "wojak", f"wojak-{cloud}", True)
    assert store.bucket in {b.name for b in s.couchbase.buckets}
    assert {store.connstr_env, store.username_env} <= set(engine.env) and store.password_env in engine.secret_env
    # what the engine still writes locally goes to the data volume the platforms mount
    assert cfg.broker.journal.startswith(DATA_DIR + "/")
    assert (cfg.escalation.kind, cfg.escalation.path.startswith(DATA_DIR + "/")) == ("log", True)


def test_engine_config_file_when_escalation_url_set_then_escalations_go_to_it():
    from engine.config import loads
    from infra.workload import engine_toml

    app = section("aws", "app") | {"escalationUrl": "https://rms.internal.example/escalations"}
    s = config.parse("aws", reader_for("aws", app=app))
    cfg = loads(engine_toml(s.app, "aws"))
    assert (cfg.escalation.kind, cfg.escalation.url) == ("http", "https://rms.internal.example/escalations")
    bad("aws", "app", "wojak:app.escalationUrl:", app=section("aws", "app") | {"escalationUrl": "rms:8080"})
