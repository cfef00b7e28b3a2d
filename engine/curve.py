"""ZeroMQ CURVE keys: encryption and authentication for tcp:// links between sidecars and the engine.

Keys are z85 strings, read from environment variables (as Kubernetes secrets arrive) or from files
written by `wojak keys generate`; never from wojak.toml.
"""
from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth


class CurveError(ValueError):
    pass


def generate(directory: str, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (both keys) into directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(d), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def read_key(env: str) -> bytes | None:
    """A z85 key from an env var holding the key itself or a path to a key file made by `generate`."""
    value = os.environ.get(env, "").strip()
    if not value:
        return None
    if len(value) == 40:
        return value.encode()
    p = Path(value)
    if not p.is_file():
        raise CurveError(f"{env}: neither a 40-character z85 key nor a key file")
    public, secret = zmq.auth.load_certificate(str(p))
    return secret if (secret and "SECRET" in env.upper()) else public


def is_loopback(endpoint: str) -> bool:
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def configure_server(sock: zmq.Socket, endpoint: str, public_env: str, secret_env: str) -> bool:
    """Make the socket a CURVE server when keys are set; tcp:// beyond loopback requires them."""
    public, secret = read_key(public_env), read_key(secret_env)
    if endpoint.startswith("tcp://") and not (public and secret) and not is_loopback(endpoint):
        raise CurveError(f"tcp:// endpoint {endpoint} needs CURVE keys in ${public_env} and ${secret_env} "
                         "(make them with `wojak keys generate`)")
    if public and secret and endpoint.startswith("tcp://"):
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
        return True
    return False


def configure_client(sock: zmq.Socket, endpoint: str, server_public_env: str = "WOJAK_CURVE_SERVER_PUBLIC",
                     public_env: str = "WOJAK_CURVE_CLIENT_PUBLIC",
                     secret_env: str = "WOJAK_CURVE_CLIENT_SECRET") -> bool:
    server = read_key(server_public_env)
    if not endpoint.startswith("tcp://") or not server:
        return False
    public, secret = read_key(public_env), read_key(secret_env)
    if not (public and secret):
        public, secret = zmq.curve_keypair()  # ephemeral client key: encrypted, server not restricting
    sock.curve_serverkey = server
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    return True
