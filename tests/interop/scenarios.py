"""Helpers shared by the Synapse interop tests: fresh users on both servers,
waiting for invites, messages and state to cross, and key queries.
"""

from __future__ import annotations

import uuid

from matrix import Client, eventually, q

TIMEOUT_S = 45.0


def _users(synapse, ours, tag: str) -> tuple[Client, Client]:
    suffix = uuid.uuid4().hex[:8]
    s = Client(synapse.base_url).register(f"s_{tag}_{suffix}")
    o = Client(ours.base_url).register(f"o_{tag}_{suffix}")
    assert s.user_id.endswith(":" + synapse.server_name), s.user_id
    assert o.user_id.endswith(":" + ours.server_name), o.user_id
    return s, o


def _has_text(client: Client, room_id: str, body: str, sender: str) -> bool:
    return any(
        e.get("type") == "m.room.message"
        and e.get("content", {}).get("body") == body
        and e.get("sender") == sender
        for e in client.messages(room_id)
    )


def _wait_invite(client: Client, room_id: str) -> list[dict]:
    """Waits for the invite to show in /sync; returns its ``invite_state`` events."""

    def invited() -> list[dict] | None:
        invites = client.sync(timeout_ms=1000).get("rooms", {}).get("invite", {})
        if room_id in invites:
            return invites[room_id]["invite_state"]["events"] or [{}]
        return None

    return eventually(f"{client.user_id} to see the invite to {room_id}", invited, TIMEOUT_S)


def _assert_stripped(invite_state: list[dict], name: str) -> None:
    """Clients get stripped state (4 keys), whatever form the servers exchanged."""
    by_type = {e.get("type"): e for e in invite_state}
    assert "m.room.create" in by_type, invite_state
    assert by_type["m.room.name"]["content"]["name"] == name, invite_state
    for e in invite_state:
        assert set(e) == {"type", "state_key", "sender", "content"}, e


def _exchange(a: Client, b: Client, room_id: str) -> None:
    """Both users see both members joined, and each other's messages."""
    for c in (a, b):
        eventually(
            f"{c.user_id} to see both members joined",
            lambda c=c: {a.user_id, b.user_id} <= c.joined_members(room_id),
            TIMEOUT_S,
        )
    for sender, receiver in ((a, b), (b, a)):
        body = f"hello from {sender.user_id} {uuid.uuid4().hex[:6]}"
        event_id = sender.send_text(room_id, body)
        assert event_id.startswith("$")
        eventually(
            f"{receiver.user_id} to receive {body!r}",
            lambda r=receiver, body=body, s=sender: _has_text(r, room_id, body, s.user_id),
            TIMEOUT_S,
        )


def _state(client: Client, room_id: str, kind: str, state_key: str = "") -> dict:
    return client.request(
        "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state/{kind}/{q(state_key)}"
    )


def _query_device(client: Client, user_id: str, device_id: str) -> dict | None:
    resp = client.request(
        "POST", "/_matrix/client/v3/keys/query", {"device_keys": {user_id: []}}
    )
    return resp.get("device_keys", {}).get(user_id, {}).get(device_id)


def _claim(client: Client, user_id: str, device_id: str) -> dict:
    resp = client.request(
        "POST",
        "/_matrix/client/v3/keys/claim",
        {"one_time_keys": {user_id: {device_id: "signed_curve25519"}}},
    )
    return resp.get("one_time_keys", {}).get(user_id, {}).get(device_id, {})


def _history_before_join(owner: Client, owner_server, joiner: Client, timeout_s: float) -> None:
    room_id = owner.create_room(preset="public_chat", name="history")
    early = [f"early {i} {uuid.uuid4().hex[:6]}" for i in range(5)]
    for body in early:
        owner.send_text(room_id, body)
    joiner.join(room_id, via=owner_server.server_name)
    eventually(
        f"{joiner.user_id} to see the history from before the join",
        lambda: all(_has_text(joiner, room_id, body, owner.user_id) for body in early),
        timeout_s,
    )
