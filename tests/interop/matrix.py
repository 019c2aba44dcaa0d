"""A small Client-Server API client over plain HTTP, for the interop tests.

Deliberately minimal and synchronous: every call is one request whose JSON
answer the test inspects, so a failure shows exactly which server answered
what. Device keys are real ed25519 keys signed over canonical JSON
(``signedjson`` comes with Synapse's venv, which runs these tests).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable

from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

REQUEST_TIMEOUT_S = 60.0


class MatrixError(Exception):
    def __init__(self, method: str, url: str, status: int, body: Any):
        super().__init__(f"{method} {url} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Client:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.token: str | None = None
        self.user_id = ""
        self.device_id = ""
        self.next_batch: str | None = None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise MatrixError(method, url, e.code, parsed) from None
        return json.loads(raw) if raw else {}

    def upload(self, data: bytes, content_type: str) -> dict:
        req = urllib.request.Request(
            self.base_url + "/_matrix/media/v3/upload", data=data, method="POST"
        )
        req.add_header("Content-Type", content_type)
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return json.loads(resp.read())

    def download(self, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, method="GET")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            raise MatrixError("GET", path, e.code, e.read().decode(errors="replace")) from None

    # -- accounts -------------------------------------------------------

    def register(self, localpart: str) -> "Client":
        """Registers with the m.login.dummy flow (both servers allow it)."""
        body: dict[str, Any] = {
            "username": localpart,
            "password": "interop-password-" + localpart,
        }
        try:
            resp = self.request("POST", "/_matrix/client/v3/register", body)
        except MatrixError as e:
            if e.status != 401 or not isinstance(e.body, dict):
                raise
            body["auth"] = {"type": "m.login.dummy", "session": e.body.get("session")}
            resp = self.request("POST", "/_matrix/client/v3/register", body)
        self.token = resp["access_token"]
        self.user_id = resp["user_id"]
        self.device_id = resp["device_id"]
        return self

    # -- rooms ----------------------------------------------------------

    def create_room(self, **extra: Any) -> str:
        return self.request("POST", "/_matrix/client/v3/createRoom", extra)["room_id"]

    def invite(self, room_id: str, user_id: str) -> None:
        self.request(
            "POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite", {"user_id": user_id}
        )

    def join(self, room_id: str, via: str | None = None) -> None:
        path = f"/_matrix/client/v3/join/{q(room_id)}"
        if via:
            path += "?server_name=" + q(via)
        self.request("POST", path, {})

    def send_text(self, room_id: str, body: str) -> str:
        txn = uuid.uuid4().hex
        resp = self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
            {"msgtype": "m.text", "body": body},
        )
        return resp["event_id"]

    def messages(self, room_id: str) -> list[dict]:
        resp = self.request(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=100"
        )
        return resp.get("chunk", [])

    def joined_members(self, room_id: str) -> set[str]:
        resp = self.request(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members"
        )
        return set(resp.get("joined", {}))

    def typing(self, room_id: str, typing: bool) -> None:
        self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/typing/{q(self.user_id)}",
            {"typing": typing, "timeout": 30000} if typing else {"typing": False},
        )

    def receipt(self, room_id: str, event_id: str) -> None:
        self.request(
            "POST",
            f"/_matrix/client/v3/rooms/{q(room_id)}/receipt/m.read/{q(event_id)}",
            {},
        )

    def sync(self, timeout_ms: int = 1000) -> dict:
        path = f"/_matrix/client/v3/sync?timeout={timeout_ms}"
        if self.next_batch:
            path += "&since=" + q(self.next_batch)
        resp = self.request("GET", path)
        self.next_batch = resp["next_batch"]
        return resp

    # -- end-to-end encryption keys ------------------------------------

    def upload_keys(self, one_time_keys: int = 2) -> dict:
        """Uploads signed device keys and signed curve25519 one-time keys.

        Returns what was uploaded, so the test can compare it with what the
        other server serves.
        """
        signing = generate_signing_key(self.device_id)
        key_id = f"ed25519:{self.device_id}"
        device_keys = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                key_id: encode_verify_key_base64(signing.verify_key),
                f"curve25519:{self.device_id}": encode_base64(os.urandom(32)),
            },
        }
        device_keys = sign_json(device_keys, self.user_id, signing)
        otks = {}
        for i in range(one_time_keys):
            otk = {"key": encode_base64(os.urandom(32))}
            otks[f"signed_curve25519:AAAA{i}"] = sign_json(otk, self.user_id, signing)
        resp = self.request(
            "POST",
            "/_matrix/client/v3/keys/upload",
            {"device_keys": device_keys, "one_time_keys": otks},
        )
        assert resp["one_time_key_counts"].get("signed_curve25519") == one_time_keys
        return {"device_keys": device_keys, "one_time_keys": otks}


def _cross_signing_key(user_id: str, usage: str):
    key = generate_signing_key("")
    public = encode_verify_key_base64(key.verify_key)
    key.version = public
    body = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}
    return key, body


def upload_cross_signing(client: "Client") -> dict:
    """Uploads a master and a self-signing key (signed by the master); returns both."""
    master, master_body = _cross_signing_key(client.user_id, "master")
    _, self_body = _cross_signing_key(client.user_id, "self_signing")
    self_body = sign_json(self_body, client.user_id, master)
    master_body = sign_json(master_body, client.user_id, master)
    client.request(
        "POST",
        "/_matrix/client/v3/keys/device_signing/upload",
        {"master_key": master_body, "self_signing_key": self_body},
    )
    return {"master_key": master_body, "self_signing_key": self_body}


def eventually(
    what: str, check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.3
) -> Any:
    """Calls ``check`` until it returns something truthy; fails after the timeout.

    Federation is asynchronous (transactions are queued and retried), so a
    test waits for the effect instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except MatrixError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {last}")
        time.sleep(interval_s)
