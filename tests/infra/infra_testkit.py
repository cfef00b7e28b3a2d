"""Helpers for the platform tests (imported by conftest.py and the test modules).

A module with a unique name rather than `conftest`, so imports cannot pick up another directory's
conftest when the whole suite runs in one process.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

from infra.simulate import Declared
from tests.support.ports import free_port


def as_policy_args(r: Declared) -> SimpleNamespace:
    """A recorded resource in the shape pulumi-policy hands to a resource validator."""
    return SimpleNamespace(resource_type=r.typ, props=r.inputs, urn=r.urn, name=r.name)


class Reporter:
    """Fake `report_violation`: collects messages."""

    def __init__(self):
        self.violations: list[str] = []

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.violations.append(message)


# ---------------------------------------------------------------------------------------------
# fake Couchbase admin REST API


class FakeCouchbase:
    """Just enough of Couchbase's XDCR REST API to exercise the dynamic provider."""

    def __init__(self, username="Administrator", password="s3cret", unavailable_for=0):
        self.username, self.password = username, password
        self.unavailable_for = unavailable_for  # first N requests answer 503 (cluster booting)
        self.remotes: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, body) -> None:
                data = (json.dumps(body) if not isinstance(body, str) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _form(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))

            def _dispatch(self, method: str) -> None:
                with fake.lock:
                    fake.log.append((method, self.path))
                    if fake.unavailable_for > 0:
                        fake.unavailable_for -= 1
                        return self._send(503, {"error": "booting"})
                    want = "Basic " + base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        return self._send(401, "unauthorized")
                    form = self._form() if method == "POST" else {}
                    return self._route(method, urllib.parse.unquote(self.path), form)

            def _route(self, method: str, path: str, form: dict) -> None:
                rc = "/pools/default/remoteClusters"
                if path == rc and method == "GET":
                    return self._send(200, list(fake.remotes.values()))
                if path == rc and method == "POST":
                    missing = [k for k in ("name", "hostname", "username", "password") if not form.get(k)]
                    if missing:
                        return self._send(400, {k: "required" for k in missing})
                    if form["name"] in fake.remotes:
                        return self._send(400, {"_": "Duplicate cluster names are not allowed"})
                    ref = {"name": form["name"], "uuid": uuid.uuid4().hex, "hostname": form["hostname"],
                           "username": form["username"], "deleted": False}
                    fake.remotes[form["name"]] = {**ref, "_password": form["password"]}
                    return self._send(200, ref)
                if path.startswith(rc + "/"):
                    name = path[len(rc) + 1 :]
                    if name not in fake.remotes:
                        return self._send(404, '"unknown remote cluster"')
                    if method == "DELETE":
                        del fake.remotes[name]
                        return self._send(200, '"ok"')
                    fake.remotes[name].update(hostname=form["hostname"], username=form["username"],
                                              _password=form["password"])
                    return self._send(200, {k: v for k, v in fake.remotes[name].items() if k != "_password"})
                if path == "/pools/default/tasks" and method == "GET":
                    return self._send(200, [{"type": "rebalance", "status": "notRunning"}, *fake.tasks.values()])
                if path == "/controller/createReplication" and method == "POST":
                    ref = fake.remotes.get(form.get("toCluster", ""))
                    if ref is None:
                        return self._send(400, {"toCluster": "unknown remote cluster"})
                    rep_id = f"{ref['uuid']}/{form['fromBucket']}/{form['toBucket']}"
                    if rep_id in fake.tasks:
                        return self._send(400, {"_": "Replication to the same remote cluster and bucket already exists"})
                    fake.tasks[rep_id] = {"type": "xdcr", "id": rep_id, "source": form["fromBucket"],
                                          "target": f"/remoteClusters/{ref['uuid']}/buckets/{form['toBucket']}"}
                    return self._send(200, {"id": rep_id})
                if path.startswith("/controller/cancelXDCR/") and method == "DELETE":
                    rep_id = path[len("/controller/cancelXDCR/") :]
                    if fake.tasks.pop(rep_id, None) is None:
                        return self._send(404, '"not found"')
                    return self._send(200, '"ok"')
                return self._send(404, '"not found"')

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_DELETE(self):
                self._dispatch("DELETE")

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


