"""matrix-nio, a third-party Matrix client library, drives our homeserver.

This is the issue's definition of done seen from a client: two people register,
one creates a room and invites the other, they talk in real time over /sync,
and the history is still readable after logging in again on a new device.
Every request and response goes through nio's own parsing and JSON-schema
validation, so a response shape nio rejects fails the test.
"""

from __future__ import annotations

import asyncio
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    LogoutResponse,
    MessageDirection,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    WhoamiError,
    WhoamiResponse,
)

PASSWORD = "correct horse battery staple"
N_MESSAGES = 10
# Room for all messages in one sync, so a limited timeline is a server bug here.
SYNC_FILTER = {"room": {"timeline": {"limit": 50}}}
LONG_POLL_MS = 10_000
STEP_DEADLINE_S = 60.0
SCENARIO_TIMEOUT_S = 300.0


def expect(resp, cls, what: str):
    """Asserts that a nio call returned `cls`, showing the error response if not."""
    assert isinstance(resp, cls), f"{what}: expected {cls.__name__}, got {resp!r}"
    return resp


def new_client(hs, user: str = "") -> AsyncClient:
    config = AsyncClientConfig(request_timeout=60, max_timeouts=2)
    return AsyncClient(hs.base_url, user=user, config=config)


async def sync_until(client: AsyncClient, since: str | None, done, what: str) -> str:
    """Long-polls /sync from `since` until `done(response)` is true.

    Returns the next_batch token of the response that satisfied `done`.
    """
    deadline = time.monotonic() + STEP_DEADLINE_S
    while True:
        resp = expect(
            await client.sync(timeout=LONG_POLL_MS, since=since, sync_filter=SYNC_FILTER),
            SyncResponse,
            f"sync while waiting for {what}",
        )
        since = resp.next_batch
        if done(resp):
            return since
        assert time.monotonic() < deadline, f"timed out waiting for {what} in /sync"


def text_messages(events) -> list[RoomMessageText]:
    return [e for e in events if isinstance(e, RoomMessageText)]


async def collect_messages(client: AsyncClient, since: str, room_id: str, count: int):
    """Long-polls /sync until `count` text messages arrived in `room_id`."""
    received: list[RoomMessageText] = []
    deadline = time.monotonic() + STEP_DEADLINE_S
    while len(received) < count:
        assert time.monotonic() < deadline, (
            f"timed out: {len(received)} of {count} messages arrived over /sync: "
            f"{[m.body for m in received]}"
        )
        resp = expect(
            await client.sync(timeout=LONG_POLL_MS, since=since, sync_filter=SYNC_FILTER),
            SyncResponse,
            "sync while receiving messages",
        )
        since = resp.next_batch
        room = resp.rooms.join.get(room_id)
        if room is None:
            continue
        assert not room.timeline.limited, (
            "timeline was limited although the filter allows 50 events: "
            "the server dropped messages between two syncs"
        )
        received.extend(text_messages(room.timeline.events))
    return received


async def read_history(client: AsyncClient, room_id: str, start: str) -> list[RoomMessageText]:
    """Pages backwards through /messages from `start` to the room's beginning.

    Uses a small page size so that the pagination tokens are exercised.
    Returns the text messages oldest first.
    """
    newest_first: list[RoomMessageText] = []
    token = start
    for _ in range(100):
        resp = expect(
            await client.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=4
            ),
            RoomMessagesResponse,
            "GET /messages",
        )
        newest_first.extend(text_messages(resp.chunk))
        if not resp.end or not resp.chunk:
            break
        assert resp.end != token, "/messages returned the same token it was given"
        token = resp.end
    else:
        raise AssertionError("/messages did not reach the start of the room in 100 pages")
    return list(reversed(newest_first))


async def scenario(hs) -> None:
    alice = new_client(hs)
    bob = new_client(hs)
    clients = [alice, bob]
    try:
        # Open registration with m.login.dummy.
        reg = expect(
            await alice.register("alice", PASSWORD, device_name="alice laptop"),
            RegisterResponse,
            "register alice",
        )
        assert reg.user_id == f"@alice:{hs.server_name}"
        assert alice.access_token and alice.user_id == reg.user_id

        reg = expect(
            await bob.register("bob", PASSWORD, device_name="bob laptop"),
            RegisterResponse,
            "register bob",
        )
        assert reg.user_id == f"@bob:{hs.server_name}"
        bob_first_device = reg.device_id
        bob_first_token = reg.access_token

        who = expect(await bob.whoami(), WhoamiResponse, "whoami bob")
        assert who.user_id == bob.user_id

        # Bob's first sync, before anything happens to him.
        bob_since = expect(
            await bob.sync(timeout=0, sync_filter=SYNC_FILTER), SyncResponse, "bob's initial sync"
        ).next_batch

        # Alice creates a room and invites Bob.
        created = expect(
            await alice.room_create(name="nio test room", topic="history test"),
            RoomCreateResponse,
            "createRoom",
        )
        room_id = created.room_id
        expect(await alice.room_invite(room_id, bob.user_id), RoomInviteResponse, "invite bob")

        # Bob sees the invite over /sync, joins, and sees himself joined.
        bob_since = await sync_until(
            bob, bob_since, lambda r: room_id in r.rooms.invite, "bob's invite"
        )
        joined = expect(await bob.join(room_id), JoinResponse, "bob joins")
        assert joined.room_id == room_id
        bob_since = await sync_until(
            bob, bob_since, lambda r: room_id in r.rooms.join, "bob's join"
        )

        # Bob long-polls while Alice sends: the messages must arrive in real time.
        receiver = asyncio.create_task(collect_messages(bob, bob_since, room_id, N_MESSAGES))
        bodies = [f"message {i} from alice" for i in range(N_MESSAGES)]
        sent_ids = []
        for body in bodies:
            sent = expect(
                await alice.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                ),
                RoomSendResponse,
                f"send {body!r}",
            )
            assert sent.event_id.startswith("$")
            sent_ids.append(sent.event_id)
        assert len(set(sent_ids)) == N_MESSAGES, f"duplicate event ids: {sent_ids}"

        received = await receiver
        assert [m.body for m in received] == bodies
        assert [m.event_id for m in received] == sent_ids
        assert all(m.sender == alice.user_id for m in received)

        # Bob logs out; his old access token stops working.
        expect(await bob.logout(), LogoutResponse, "bob logs out")
        stale = new_client(hs)
        clients.append(stale)
        stale.access_token = bob_first_token
        stale.user_id = bob.user_id
        whoami = await stale.whoami()
        assert isinstance(whoami, WhoamiError), f"old token still works after logout: {whoami!r}"
        assert whoami.status_code == "M_UNKNOWN_TOKEN", whoami

        # Bob logs in again with his password, which makes a new device.
        bob2 = new_client(hs, user=f"@bob:{hs.server_name}")
        clients.append(bob2)
        login = expect(
            await bob2.login(PASSWORD, device_name="bob phone"), LoginResponse, "bob logs in"
        )
        assert login.user_id == f"@bob:{hs.server_name}"
        assert login.device_id != bob_first_device, "login reused the logged-out device"

        # The new device's initial sync knows the room; /messages has the whole history.
        initial = expect(
            await bob2.sync(timeout=0, sync_filter=SYNC_FILTER), SyncResponse, "bob2 initial sync"
        )
        assert room_id in initial.rooms.join, "bob's room is missing from his new device's sync"
        history = await read_history(bob2, room_id, start=initial.next_batch)
        assert [m.body for m in history] == bodies
        assert [m.event_id for m in history] == sent_ids
        assert all(m.sender == alice.user_id for m in history)
    finally:
        for c in clients:
            await c.close()


def test_two_users_chat_and_read_history_on_new_device(homeserver):
    asyncio.run(asyncio.wait_for(scenario(homeserver), SCENARIO_TIMEOUT_S))
