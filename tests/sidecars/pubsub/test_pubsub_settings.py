"""The Pub/Sub sidecar's settings and its splitting of a message into orders (pure functions)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from sidecars.pubsub import Settings
from sidecars.settings import SettingsError

BASE = {"WOJAK_PUBSUB_PROJECT": "desk", "WOJAK_PUBSUB_SUBSCRIPTION": "orders-sidecar", "WOJAK_PUBSUB_DLQ_TOPIC": "orders-dlq"}


@pytest.fixture
def environ(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("WOJAK_"):
            monkeypatch.delenv(name)

    def set_(values: dict[str, str]) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
    return set_


def test_settings_when_ids_given_then_full_paths_and_defaults(environ):
    environ(BASE)
    s = Settings.from_env()
    assert s.subscription == "projects/desk/subscriptions/orders-sidecar"
    assert s.dlq_topic == "projects/desk/topics/orders-dlq"
    assert (s.window, s.lease_extension_s, s.max_lease_s, s.requeue_delay_s) == (100, 10, 600.0, 1.0)


def test_settings_when_full_paths_given_then_project_not_needed(environ):
    environ({"WOJAK_PUBSUB_SUBSCRIPTION": "projects/a/subscriptions/s1", "WOJAK_PUBSUB_DLQ_TOPIC": "projects/b/topics/d"})
    s = Settings.from_env()
    assert (s.subscription, s.dlq_topic) == ("projects/a/subscriptions/s1", "projects/b/topics/d")


@pytest.mark.parametrize("missing", ["WOJAK_PUBSUB_SUBSCRIPTION", "WOJAK_PUBSUB_DLQ_TOPIC", "WOJAK_PUBSUB_PROJECT"])
def test_settings_when_required_missing_then_error_names_variable(environ, missing):
    environ({k: v for k, v in BASE.items() if k != missing})
    with pytest.raises(SettingsError, match=missing):
        Settings.from_env()


@pytest.mark.parametrize("name,value", [("WOJAK_PUBSUB_LEASE_EXTENSION_S", "5"), ("WOJAK_PUBSUB_LEASE_EXTENSION_S", "601"),
                                        ("WOJAK_PUBSUB_LEASE_EXTENSION_S", "ten"), ("WOJAK_WINDOW", "0"),
                                        ("WOJAK_PUBSUB_SUBSCRIPTION", "projects/a/topics/t"),
                                        ("WOJAK_PUBSUB_MAX_LEASE_S", "5"), ("WOJAK_PUBSUB_REQUEUE_DELAY_S", "-1")])
def test_settings_when_value_bad_then_error_names_variable(environ, name, value):
    environ({**BASE, name: value})
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()
