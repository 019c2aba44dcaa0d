"""Rooms across our server and a real Synapse, both directions: invites,
joins (by id and alias), knocks, history, state, redactions, power levels.

Each test registers fresh users: ``s_*`` on Synapse, ``o_*`` on ours. The
servers are started once per session by conftest.py.
"""

from __future__ import annotations

import uuid

from matrix import Client, MatrixError, eventually, q
from scenarios import (
    TIMEOUT_S,
    _users,
    _has_text,
    _wait_invite,
    _assert_stripped,
    _exchange,
    _state,
    _history_before_join,
)


def test_synapse_room_our_user_joins(synapse, ours):
    """(a) A Synapse user's room: our user is invited over federation and joins."""
    s, o = _users(synapse, ours, "a")
    room_id = s.create_room(preset="private_chat", name="made on synapse")
    assert room_id.startswith("!")
    s.invite(room_id, o.user_id)
    _assert_stripped(_wait_invite(o, room_id), "made on synapse")
    o.join(room_id, via=synapse.server_name)
    _exchange(s, o, room_id)
    # Synapse's default room version, which our server joined.
    assert _state(o, room_id, "m.room.create").get("room_version") == "12"


def test_our_room_synapse_user_joins(synapse, ours):
    """(b) Our user's room: the Synapse user is invited over federation and joins."""
    s, o = _users(synapse, ours, "b")
    room_id = o.create_room(preset="private_chat", name="made on ours")
    o.invite(room_id, s.user_id)
    _assert_stripped(_wait_invite(s, room_id), "made on ours")
    s.join(room_id, via=ours.server_name)
    _exchange(o, s, room_id)
    # A second message after the join settled, and the room's name, crossed.
    assert _state(s, room_id, "m.room.name").get("name") == "made on ours"
    assert _state(s, room_id, "m.room.create").get("room_version") == "12"


def test_join_by_alias_and_leave(synapse, ours):
    """Public rooms joined by alias (directory query) both ways; leaves cross back."""
    s, o = _users(synapse, ours, "f")
    for owner, owner_server, joiner in ((s, synapse, o), (o, ours, s)):
        local = "interop" + uuid.uuid4().hex[:8]
        room_id = owner.create_room(preset="public_chat", room_alias_name=local)
        alias = f"#{local}:{owner_server.server_name}"
        resolved = joiner.request("GET", f"/_matrix/client/v3/directory/room/{q(alias)}")
        assert resolved["room_id"] == room_id
        assert owner_server.server_name in resolved["servers"]
        joined = joiner.request("POST", f"/_matrix/client/v3/join/{q(alias)}", {})
        assert joined["room_id"] == room_id
        _exchange(owner, joiner, room_id)
        joiner.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})
        eventually(
            f"{owner.user_id} to see {joiner.user_id} leave",
            lambda owner=owner, room_id=room_id: joiner.user_id
            not in owner.joined_members(room_id),
            TIMEOUT_S,
        )


def test_invites_rejected_both_ways(synapse, ours):
    """A rejected invite (make_leave/send_leave through the inviting server)."""
    s, o = _users(synapse, ours, "g")
    for inviter, invitee in ((s, o), (o, s)):
        room_id = inviter.create_room(preset="private_chat")
        inviter.invite(room_id, invitee.user_id)
        _wait_invite(invitee, room_id)
        invitee.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {})

        def rejected(inviter=inviter, room_id=room_id) -> bool:
            member = _state(inviter, room_id, "m.room.member", invitee.user_id)
            return member.get("membership") == "leave"

        eventually(f"{inviter.user_id} to see the invite rejected", rejected, TIMEOUT_S)


def test_synapse_backfills_history_from_ours(synapse, ours):
    """A Synapse user joining our room pages back into history from before the join."""
    s, o = _users(synapse, ours, "j")
    _history_before_join(o, ours, s, TIMEOUT_S)


def test_ours_backfills_history_from_synapse(synapse, ours):
    """Our user joining a Synapse room pages back into history from before the join."""
    s, o = _users(synapse, ours, "jb")
    _history_before_join(s, synapse, o, TIMEOUT_S)


def test_state_and_redactions_cross(synapse, ours):
    """State set by the room's owner and a joiner's redaction reach the other side."""
    s, o = _users(synapse, ours, "l")
    for owner, owner_server, joiner in ((s, synapse, o), (o, ours, s)):
        room_id = owner.create_room(preset="public_chat", name="state")
        joiner.join(room_id, via=owner_server.server_name)
        _exchange(owner, joiner, room_id)
        owner.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.topic/",
            {"topic": "set by the owner"},
        )
        eventually(
            f"{joiner.user_id} to see the new topic",
            lambda j=joiner, r=room_id: _state(j, r, "m.room.topic").get("topic")
            == "set by the owner",
            TIMEOUT_S,
        )
        event_id = joiner.send_text(room_id, "to be redacted")
        eventually(
            f"{owner.user_id} to get the message",
            lambda w=owner, r=room_id, j=joiner: _has_text(w, r, "to be redacted", j.user_id),
            TIMEOUT_S,
        )
        joiner.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/redact/{q(event_id)}/{uuid.uuid4().hex}",
            {"reason": "oops"},
        )

        def redacted(w=owner, r=room_id, ev=event_id) -> bool:
            got = w.request("GET", f"/_matrix/client/v3/rooms/{q(r)}/event/{q(ev)}")
            return got.get("content") == {} and "redacted_because" in got.get("unsigned", {})

        eventually(f"{owner.user_id} to see the redaction", redacted, TIMEOUT_S)


def test_knocks_cross(synapse, ours):
    """make_knock/send_knock both ways: a knock is seen, answered by an invite, joined."""
    s, o = _users(synapse, ours, "m")
    for owner, owner_server, knocker in ((o, ours, s), (s, synapse, o)):
        room_id = owner.create_room(
            preset="private_chat",
            name="knock here",
            initial_state=[
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
            ],
        )
        knocker.request(
            "POST",
            f"/_matrix/client/v3/knock/{q(room_id)}?server_name={q(owner_server.server_name)}",
            {"reason": "let me in"},
        )

        def knocked(w=owner, r=room_id, k=knocker) -> bool:
            member = _state(w, r, "m.room.member", k.user_id)
            return member.get("membership") == "knock"

        eventually(f"{owner.user_id} to see the knock", knocked, TIMEOUT_S)
        owner.invite(room_id, knocker.user_id)
        _wait_invite(knocker, room_id)
        knocker.join(room_id, via=owner_server.server_name)
        _exchange(owner, knocker, room_id)


def test_encrypted_room_events_cross(synapse, ours):
    """In an encrypted room, m.room.encrypted events (opaque ciphertext) cross as sent."""
    s, o = _users(synapse, ours, "n")
    for owner, owner_server, joiner in ((s, synapse, o), (o, ours, s)):
        room_id = owner.create_room(
            preset="private_chat",
            initial_state=[
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ],
        )
        owner.invite(room_id, joiner.user_id)
        _wait_invite(joiner, room_id)
        joiner.join(room_id, via=owner_server.server_name)
        for sender, receiver in ((owner, joiner), (joiner, owner)):
            content = {
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": "AwgAEnAC" + uuid.uuid4().hex,
                "device_id": sender.device_id,
                "sender_key": "c2VuZGVyIGtleQ",
                "session_id": "c2Vzc2lvbg",
            }
            sender.request(
                "PUT",
                f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.encrypted/{uuid.uuid4().hex}",
                content,
            )

            def arrived(r=receiver, c=content, snd=sender, room=room_id) -> bool:
                return any(
                    e.get("type") == "m.room.encrypted"
                    and e.get("sender") == snd.user_id
                    and e.get("content") == c
                    for e in r.messages(room)
                )

            eventually(f"{receiver.user_id} to get the ciphertext", arrived, TIMEOUT_S)


def test_power_levels_kicks_and_bans_cross(synapse, ours):
    """Auth-relevant state both ways: a promoted joiner changes state; kick, rejoin, ban."""
    s, o = _users(synapse, ours, "p")
    for owner, owner_server, joiner in ((s, synapse, o), (o, ours, s)):
        room_id = owner.create_room(preset="public_chat")
        joiner.join(room_id, via=owner_server.server_name)
        _exchange(owner, joiner, room_id)
        levels = _state(owner, room_id, "m.room.power_levels")
        levels.setdefault("users", {})[joiner.user_id] = 100
        owner.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels/", levels
        )
        eventually(
            f"{joiner.user_id} to see the promotion",
            lambda j=joiner, r=room_id: _state(j, r, "m.room.power_levels")
            .get("users", {})
            .get(j.user_id)
            == 100,
            TIMEOUT_S,
        )
        # The promoted joiner's state change passes the owner's server's auth.
        joiner.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.name/",
            {"name": "renamed by the joiner"},
        )
        eventually(
            f"{owner.user_id} to see the new name",
            lambda w=owner, r=room_id: _state(w, r, "m.room.name").get("name")
            == "renamed by the joiner",
            TIMEOUT_S,
        )
        # Demote again, then kick: the joiner's server sees it, and they may rejoin.
        levels["users"][joiner.user_id] = 0
        owner.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.power_levels/", levels
        )
        owner.request(
            "POST",
            f"/_matrix/client/v3/rooms/{q(room_id)}/kick",
            {"user_id": joiner.user_id, "reason": "test"},
        )

        def membership(c: Client, r: str, user: str) -> str | None:
            return _state(c, r, "m.room.member", user).get("membership")

        for c in (owner, joiner):
            eventually(
                f"{c.user_id}'s server to record the kick",
                lambda c=c, r=room_id, j=joiner: membership(c, r, j.user_id) == "leave",
                TIMEOUT_S,
            )
        joiner.join(room_id, via=owner_server.server_name)
        eventually(
            f"{owner.user_id} to see the rejoin",
            lambda w=owner, r=room_id, j=joiner: membership(w, r, j.user_id) == "join",
            TIMEOUT_S,
        )
        joiner.sync(timeout_ms=0)
        owner.request(
            "POST",
            f"/_matrix/client/v3/rooms/{q(room_id)}/ban",
            {"user_id": joiner.user_id, "reason": "test"},
        )
        eventually(
            f"{owner.user_id} to record the ban",
            lambda w=owner, r=room_id, j=joiner: membership(w, r, j.user_id) == "ban",
            TIMEOUT_S,
        )

        def told_banned(j=joiner, r=room_id) -> bool:
            # A banned user may not read the room's state: their /sync tells them.
            left = j.sync().get("rooms", {}).get("leave", {}).get(r, {})
            events = left.get("timeline", {}).get("events", []) + left.get("state", {}).get(
                "events", []
            )
            return any(
                e.get("type") == "m.room.member"
                and e.get("state_key") == j.user_id
                and e.get("content", {}).get("membership") == "ban"
                for e in events
            )

        eventually(f"{joiner.user_id}'s server to record the ban", told_banned, TIMEOUT_S)
        try:
            joiner.join(room_id, via=owner_server.server_name)
        except MatrixError as e:
            assert e.status == 403, e
        else:
            raise AssertionError("a banned user joined again")
        assert membership(owner, room_id, joiner.user_id) == "ban"
