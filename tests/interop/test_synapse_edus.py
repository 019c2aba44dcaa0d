"""Everything beside room events between our server and a real Synapse, both
directions: E2EE keys and device lists, typing, receipts, to-device
messages, profiles and media.

Each test registers fresh users: ``s_*`` on Synapse, ``o_*`` on ours. The
servers are started once per session by conftest.py.
"""

from __future__ import annotations

import uuid

from matrix import Client, eventually, q, upload_cross_signing
from scenarios import (
    TIMEOUT_S,
    _users,
    _has_text,
    _wait_invite,
    _query_device,
    _claim,
)


def test_keys_query_and_claim_both_ways(synapse, ours):
    """(c) Device keys and one-time keys of each side are served to the other."""
    s, o = _users(synapse, ours, "c")
    uploaded = {s.user_id: s.upload_keys(), o.user_id: o.upload_keys()}
    for asker, owner in ((o, s), (s, o)):
        mine = uploaded[owner.user_id]
        device = eventually(
            f"{asker.user_id} to see {owner.user_id}'s device keys",
            lambda a=asker, w=owner: _query_device(a, w.user_id, w.device_id),
            TIMEOUT_S,
        )
        assert device["keys"] == mine["device_keys"]["keys"]
        assert device["signatures"][owner.user_id] == mine["device_keys"]["signatures"][
            owner.user_id
        ]
        claimed = _claim(asker, owner.user_id, owner.device_id)
        assert len(claimed) == 1, claimed
        (key_id, key), = claimed.items()
        assert mine["one_time_keys"][key_id] == key
        # Claimed keys are gone: the next claim gets the other one.
        second = _claim(asker, owner.user_id, owner.device_id)
        assert len(second) == 1 and key_id not in second, second


def test_typing_and_receipts_cross(synapse, ours):
    """(d) Typing notifications and read receipts reach the other server's user."""
    s, o = _users(synapse, ours, "d")
    room_id = s.create_room(preset="private_chat")
    s.invite(room_id, o.user_id)
    _wait_invite(o, room_id)
    o.join(room_id, via=synapse.server_name)
    eventually(
        "both members joined on synapse",
        lambda: {s.user_id, o.user_id} <= s.joined_members(room_id),
        TIMEOUT_S,
    )

    def ephemeral(c: Client, kind: str) -> list[dict]:
        room = c.sync().get("rooms", {}).get("join", {}).get(room_id, {})
        return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == kind]

    def sees_typing(c: Client, who: str) -> bool:
        return any(who in e["content"].get("user_ids", []) for e in ephemeral(c, "m.typing"))

    s.sync(timeout_ms=0)
    o.sync(timeout_ms=0)
    s.typing(room_id, True)
    eventually(f"{o.user_id} to see {s.user_id} typing", lambda: sees_typing(o, s.user_id))
    o.typing(room_id, True)
    eventually(f"{s.user_id} to see {o.user_id} typing", lambda: sees_typing(s, o.user_id))

    def sees_receipt(c: Client, who: str, event_id: str) -> bool:
        return any(
            who in e["content"].get(event_id, {}).get("m.read", {})
            for e in ephemeral(c, "m.receipt")
        )

    from_s = s.send_text(room_id, "read me")
    eventually(f"{o.user_id} to get the message", lambda: _has_text(o, room_id, "read me", s.user_id))
    o.receipt(room_id, from_s)
    eventually(
        f"{s.user_id} to see {o.user_id}'s receipt",
        lambda: sees_receipt(s, o.user_id, from_s),
    )
    from_o = o.send_text(room_id, "read me too")
    eventually(
        f"{s.user_id} to get the message",
        lambda: _has_text(s, room_id, "read me too", o.user_id),
    )
    s.receipt(room_id, from_o)
    eventually(
        f"{o.user_id} to see {s.user_id}'s receipt",
        lambda: sees_receipt(o, s.user_id, from_o),
    )


def test_to_device_messages_cross(synapse, ours):
    """m.direct_to_device EDUs: a to-device message reaches the other server's device."""
    s, o = _users(synapse, ours, "e")
    s.sync(timeout_ms=0)
    o.sync(timeout_ms=0)
    for sender, receiver in ((o, s), (s, o)):
        marker = uuid.uuid4().hex
        sender.request(
            "PUT",
            f"/_matrix/client/v3/sendToDevice/m.interop.test/{uuid.uuid4().hex}",
            {"messages": {receiver.user_id: {receiver.device_id: {"marker": marker}}}},
        )

        def arrived(r: Client = receiver, marker: str = marker, sender: Client = sender) -> bool:
            events = r.sync().get("to_device", {}).get("events", [])
            return any(
                e.get("type") == "m.interop.test"
                and e.get("sender") == sender.user_id
                and e.get("content", {}).get("marker") == marker
                for e in events
            )

        eventually(f"{receiver.user_id} to get the to-device message", arrived, TIMEOUT_S)


def test_profiles_cross(synapse, ours):
    """/profile of a remote user goes through /query/profile."""
    s, o = _users(synapse, ours, "h")
    s.request(
        "PUT", f"/_matrix/client/v3/profile/{q(s.user_id)}/displayname", {"displayname": "Sam"}
    )
    o.request(
        "PUT", f"/_matrix/client/v3/profile/{q(o.user_id)}/displayname", {"displayname": "Olga"}
    )
    got = o.request("GET", f"/_matrix/client/v3/profile/{q(s.user_id)}")
    assert got.get("displayname") == "Sam"
    got = s.request("GET", f"/_matrix/client/v3/profile/{q(o.user_id)}")
    assert got.get("displayname") == "Olga"


def test_device_list_updates_cross(synapse, ours):
    """m.device_list_update: new device keys show in the other side's /sync."""
    s, o = _users(synapse, ours, "i")
    room_id = o.create_room(preset="public_chat")
    s.join(room_id, via=ours.server_name)
    for c in (s, o):
        eventually(
            f"{c.user_id} to see both members joined",
            lambda c=c: {s.user_id, o.user_id} <= c.joined_members(room_id),
            TIMEOUT_S,
        )
    # Sync tokens from after the join, which itself lists the other user as
    # changed. Synapse caches the device lists of users it shares a room
    # with: its /keys/query answer below shows the update was applied.
    for c in (s, o):
        eventually(
            f"{c.user_id}'s sync to show the room",
            lambda c=c: room_id in c.sync(timeout_ms=0).get("rooms", {}).get("join", {}),
            TIMEOUT_S,
        )
        c.sync(timeout_ms=0)

    def sees_change(c: Client, user: str) -> bool:
        return user in c.sync(timeout_ms=1000).get("device_lists", {}).get("changed", [])

    for uploader, watcher in ((o, s), (s, o)):
        uploaded = uploader.upload_keys(one_time_keys=1)
        eventually(
            f"{watcher.user_id} to see {uploader.user_id}'s device list change",
            lambda w=watcher, u=uploader: sees_change(w, u.user_id),
            TIMEOUT_S,
        )
        device = _query_device(watcher, uploader.user_id, uploader.device_id)
        assert device is not None
        assert device["keys"] == uploaded["device_keys"]["keys"]


def test_media_crosses(synapse, ours):
    """Media uploaded on one server is downloaded through the other (federation media)."""
    s, o = _users(synapse, ours, "k")
    for uploader, downloader in ((s, o), (o, s)):
        data = f"interop media {uuid.uuid4().hex}".encode()
        mxc = uploader.upload(data, "text/plain")["content_uri"]
        server_name, media_id = mxc[len("mxc://"):].split("/", 1)
        status, got = downloader.download(
            f"/_matrix/client/v1/media/download/{q(server_name)}/{q(media_id)}"
        )
        assert status == 200
        assert got == data


def test_cross_signing_keys_cross(synapse, ours):
    """m.signing_key_update: new cross-signing keys reach a room-mate's server."""
    s, o = _users(synapse, ours, "x")
    room_id = o.create_room(preset="public_chat")
    s.join(room_id, via=ours.server_name)
    for c in (s, o):
        eventually(
            f"{c.user_id}'s sync to show the room",
            lambda c=c: room_id in c.sync(timeout_ms=0).get("rooms", {}).get("join", {}),
            TIMEOUT_S,
        )
        c.sync(timeout_ms=0)
    for uploader, watcher in ((o, s), (s, o)):
        uploaded = upload_cross_signing(uploader)

        def master_of(w: Client = watcher, u: Client = uploader) -> dict | None:
            resp = w.request(
                "POST", "/_matrix/client/v3/keys/query", {"device_keys": {u.user_id: []}}
            )
            return resp.get("master_keys", {}).get(u.user_id)

        # Synapse answers from the device lists it caches for room-mates: it
        # has the new master key only if the update reached it.
        master = eventually(
            f"{watcher.user_id} to see {uploader.user_id}'s master key", master_of, TIMEOUT_S
        )
        assert master["keys"] == uploaded["master_key"]["keys"]
        eventually(
            f"{watcher.user_id}'s sync to list {uploader.user_id} as changed",
            lambda w=watcher, u=uploader: u.user_id
            in w.sync(timeout_ms=1000).get("device_lists", {}).get("changed", []),
            TIMEOUT_S,
        )
