"""The JournalStore contract, run against both stores with the same tests: the SQLite
file and a JetStream key-value bucket on a real ``nats-server -js``. Races use two
store instances (two SQLite connections on one file, two NATS connections)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from loom.durable import JournalStore, RunRecord, SqliteJournal, StepRecord
from loom.durable.nats_store import NatsJournal
from loom.durable.records import Approval, dumps
from loom.errors import JournalError, LoomError
from nats_servers import NatsServer


@pytest.fixture(scope="module")
def js_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    srv = NatsServer(jetstream=True, store=tmp_path_factory.mktemp("js")).start()
    yield srv
    srv.stop()


class Backend:
    """One journal (a file, a bucket) and the store instances opened on it."""

    def __init__(self, kind: str, tmp_path: Path, server: NatsServer | None) -> None:
        self.kind = kind
        self.path = tmp_path / "journal.db"
        self.server = server
        self.bucket = f"t_{uuid.uuid4().hex[:12]}"
        self.stores: list[JournalStore] = []
        self.connections: list[Client] = []

    async def store(self) -> JournalStore:
        """Another store instance on the same journal (its own connection)."""
        made: JournalStore
        if self.kind == "sqlite":
            made = SqliteJournal(self.path)
            await made.list_runs()  # opens the file (and creates the schema)
        else:
            assert self.server is not None
            nc = await nats.connect(self.server.url)
            self.connections.append(nc)
            made = NatsJournal(nc, self.bucket)
            await made.open()
        self.stores.append(made)
        return made

    async def write_raw(self, kind: str, ident: str, raw: bytes) -> None:
        """Writes ``raw`` as the record of run / approval ``ident``, behind the store's
        back (a corrupt or foreign record)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                if kind == "run":
                    conn.execute(
                        "INSERT OR REPLACE INTO loom_runs VALUES (?, 'w', 'running', '', 0, 1, ?)",
                        (ident, raw.decode(errors="replace")),
                    )
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO loom_steps VALUES (?, 0, ?)",
                        (ident, raw.decode(errors="replace")),
                    )
            return
        kv = await self.kv()
        key = f"run.{ident}" if kind == "run" else f"step.{ident}.00000000"
        await kv.put(key, raw)
        if kind == "run":  # a run created through the store, then overwritten
            await kv.put(f"live.{ident}", b"1")

    async def kv(self) -> KeyValue:
        assert self.connections
        return await self.connections[0].jetstream().key_value(self.bucket)

    async def read_raw(self, run_id: str) -> str:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                row = conn.execute(
                    "SELECT data FROM loom_runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            return str(row[0])
        value = (await (await self.kv()).get(f"run.{run_id}")).value
        assert value is not None
        return value.decode()

    async def close(self) -> None:
        for store in self.stores:
            await store.close()
        for nc in self.connections:
            await nc.close()


@pytest.fixture(params=["sqlite", "nats"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    server = request.getfixturevalue("js_server") if request.param == "nats" else None
    made = Backend(request.param, tmp_path, server)
    yield made
    await made.close()


def run(run_id: str, **kw: Any) -> RunRecord:
    kw.setdefault("created", 100.0)
    kw.setdefault("updated", 100.0)
    return RunRecord(run_id, kw.pop("agent", "worker"), "work.>", {"topic": "work.x"}, **kw)


def new_id() -> str:
    return uuid.uuid4().hex[:24]


# -- runs ----------------------------------------------------------------------------


async def test_create_get_update(backend: Backend) -> None:
    store = await backend.store()
    rid = new_id()
    record = run(rid, owner="p1", lease_until=150.5, traceparent="00-abc-def-01")
    assert await store.create_run(record)
    assert not await store.create_run(run(rid, owner="p2"))  # exists: unchanged
    found = await store.get_run(rid)
    assert found == record
    assert await backend.read_raw(rid) == dumps(record.to_json())  # the same JSON everywhere

    await store.update_run(rid, status="finished", steps=3, error="", updated=200.0)
    found = await store.get_run(rid)
    assert found is not None
    assert (found.status, found.steps, found.updated, found.owner) == ("finished", 3, 200.0, "p1")

    assert await store.get_run(new_id()) is None
    with pytest.raises(JournalError, match="no run"):
        await store.update_run(new_id(), status="failed")


async def test_list_runs_filters_newest_first(backend: Backend) -> None:
    store = await backend.store()
    a, b, c = new_id(), new_id(), new_id()
    await store.create_run(run(a, updated=10.0))
    await store.create_run(run(b, updated=30.0, agent="other"))
    await store.create_run(run(c, updated=20.0, status="finished"))
    assert [r.run_id for r in (await store.list_runs()).runs] == [b, c, a]
    listing = await store.list_runs(statuses=("running", "waiting"))
    assert [r.run_id for r in listing.runs] == [b, a]
    listing = await store.list_runs(statuses=("running",), agent="worker")
    assert [r.run_id for r in listing.runs] == [a]
    assert (await store.list_runs()).broken == []


async def test_unfinished_listing_follows_the_status(backend: Backend) -> None:
    store = await backend.store()
    rid, other = new_id(), new_id()
    await store.create_run(run(rid))
    await store.create_run(run(other, agent="other", status="waiting"))
    unfinished = ("running", "waiting")
    assert {r.run_id for r in (await store.list_runs(statuses=unfinished)).runs} == {rid, other}
    await store.update_run(rid, status="waiting")
    assert [r.run_id for r in (await store.list_runs(statuses=("waiting",))).runs] == [
        other,
        rid,
    ]
    await store.update_run(rid, status="finished", lease_until=0.0)
    assert [r.run_id for r in (await store.list_runs(statuses=unfinished)).runs] == [other]
    assert [r.run_id for r in (await store.list_runs(statuses=("finished",))).runs] == [rid]
    await store.update_run(rid, status="running")  # back (a retry): listed again
    listing = await store.list_runs(statuses=unfinished, agent="worker")
    assert [r.run_id for r in listing.runs] == [rid]


async def test_nats_live_index_is_tidy(js_server: NatsServer, tmp_path: Path) -> None:
    backend = Backend("nats", tmp_path, js_server)
    try:
        store = await backend.store()
        kv = await backend.kv()
        done, crashed = new_id(), new_id()
        await store.create_run(run(done))
        assert (await kv.get(f"live.{done}")).value == b"1"
        await store.update_run(done, status="finished")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(f"live.{done}")
        # A process died between ending a run and removing its index entry: the next
        # scan of unfinished runs removes it.
        await store.create_run(run(crashed, status="failed"))
        await kv.put(f"live.{crashed}", b"1")
        assert (await store.list_runs(statuses=("running",))).runs == []
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(f"live.{crashed}")
    finally:
        await backend.close()


async def test_swap_owner_has_one_winner(backend: Backend) -> None:
    first, second = await backend.store(), await backend.store()
    ids = [new_id() for _ in range(12)]
    for rid in ids:
        await first.create_run(run(rid, owner="dead", lease_until=1.0))
    for rid in ids:
        won = await asyncio.gather(
            first.swap_owner(rid, ("dead", 1.0), "A", 50.0),
            second.swap_owner(rid, ("dead", 1.0), "B", 60.0),
        )
        assert sorted(won) == [False, True], (rid, won)
        found = await second.get_run(rid)
        assert found is not None
        assert (found.owner, found.lease_until) == (("A", 50.0) if won[0] else ("B", 60.0))
    # Stale expectations lose; a missing run is no one's.
    assert not await first.swap_owner(ids[0], ("dead", 1.0), "C", 70.0)
    assert not await first.swap_owner(new_id(), ("", 0.0), "C", 70.0)


async def test_renew_only_for_the_owner(backend: Backend) -> None:
    store = await backend.store()
    mine, theirs, done = new_id(), new_id(), new_id()
    await store.create_run(run(mine, owner="me", lease_until=10.0))
    await store.create_run(run(theirs, owner="them", lease_until=10.0))
    await store.create_run(run(done, owner="me", lease_until=0.0, status="finished"))
    gone = new_id()
    lost = await store.renew("me", [mine, theirs, done, gone], 99.0)
    assert lost == [theirs, done, gone]  # another's, ended, never there
    leases = {}
    for rid in (mine, theirs, done):
        found = await store.get_run(rid)
        assert found is not None
        leases[rid] = found.lease_until
    assert leases == {mine: 99.0, theirs: 10.0, done: 0.0}
    assert await store.renew("me", [], 5.0) == []  # nothing to do


# -- steps -----------------------------------------------------------------------------


async def test_steps_in_order_and_outcome_overwrites_intent(backend: Backend) -> None:
    store = await backend.store()
    rid, other = new_id(), new_id()
    await store.create_run(run(rid))
    for seq in (10, 0, 2, 1):  # written out of order; 10 after 2 (not as text)
        await store.put_step(rid, StepRecord(seq, "tool", f"d{seq}", {"n": seq}, ts=1.0))
    await store.put_step(other, StepRecord(0, "now", "x", {}))
    done = StepRecord(0, "tool", "d0", {"n": 0}, state="done", result={"ok": [1, 2]}, ts=2.0)
    await store.put_step(rid, done)
    steps = await store.steps(rid)
    assert [s.seq for s in steps] == [0, 1, 2, 10]
    assert steps[0] == done
    assert [s.state for s in steps[1:]] == ["intent"] * 3
    assert [s.seq for s in await store.steps(other)] == [0]
    assert await store.steps(new_id()) == []


async def test_a_corrupt_step_is_an_error(backend: Backend) -> None:
    store = await backend.store()
    rid = new_id()
    await store.create_run(run(rid))
    await backend.write_raw("step", rid, b"\x00{garbage")
    with pytest.raises(JournalError, match="corrupt"):
        await store.steps(rid)


# -- approvals -------------------------------------------------------------------------


async def test_approvals_are_decided_once(backend: Backend) -> None:
    first, second = await backend.store(), await backend.store()
    rid = new_id()
    pending = Approval(f"{rid}-3", rid, "worker", "shell:run", {"cmd": "ls"}, requested=5.0)
    await first.put_approval(pending)
    await first.put_approval(Approval(f"{rid}-3", rid, "worker", "other", requested=6.0))
    assert await first.get_approval(f"{rid}-3") == pending  # the first request stands
    await first.put_approval(Approval(f"{rid}-4", rid, "worker", "fs:delete", requested=4.0))
    assert [a.approval_id for a in await second.list_approvals("pending")] == [
        f"{rid}-4",
        f"{rid}-3",
    ]

    decided = await first.decide(f"{rid}-3", "approved", "ann", "fine", 7.0)
    assert decided is not None
    assert (decided.status, decided.decided_by, decided.decided) == ("approved", "ann", 7.0)
    again = await second.decide(f"{rid}-3", "denied", "bob", "no", 8.0)
    assert again == decided  # the first decision, unchanged
    assert await first.decide(new_id(), "approved", "ann", "", 9.0) is None

    # Two deciders at once: one decision, both told the same.
    both = await asyncio.gather(
        first.decide(f"{rid}-4", "approved", "ann", "", 10.0),
        second.decide(f"{rid}-4", "denied", "bob", "", 10.0),
    )
    assert both[0] == both[1]
    assert both[0] is not None and both[0].decided_by in ("ann", "bob")
    assert [a.approval_id for a in await first.list_approvals("pending")] == []
    assert len(await first.list_approvals()) == 2


# -- retention -------------------------------------------------------------------------


async def test_prune_deletes_old_ended_runs_and_their_steps(backend: Backend) -> None:
    store = await backend.store()
    old_done, old_failed, old_running, new_done = (new_id() for _ in range(4))
    await store.create_run(run(old_done, status="finished", updated=10.0))
    await store.create_run(run(old_failed, status="failed", updated=10.0))
    await store.create_run(run(old_running, status="running", updated=10.0))
    await store.create_run(run(new_done, status="finished", updated=500.0))
    for rid in (old_done, old_failed, old_running, new_done):
        await store.put_step(rid, StepRecord(0, "now", "d", {}, state="done", result=1.0))
    await store.put_approval(Approval("a-old", old_done, "w", "t", status="approved"))
    await store.decide("a-old", "approved", "x", "", 20.0)
    await store.put_approval(Approval("a-pending", old_running, "w", "t"))

    assert await store.prune(100.0) == 2
    assert await store.get_run(old_done) is None
    assert await store.get_run(old_failed) is None
    assert await store.steps(old_done) == []
    kept = {r.run_id for r in (await store.list_runs()).runs}
    assert kept == {old_running, new_done}
    assert len(await store.steps(old_running)) == 1
    assert [a.approval_id for a in await store.list_approvals()] == ["a-pending"]
    assert await store.prune(100.0) == 0
    # The id is free again (a purged key can be created anew).
    assert await store.create_run(run(old_done))
    assert (await store.get_run(old_done)) is not None


async def test_scans_see_every_record_just_written(backend: Backend) -> None:
    """A listing (or a run's steps) read right after many writes has all of them — a
    scan that ends early would make a resumed run replay too little and run its tools
    again."""
    store = await backend.store()
    event = {"topic": "work.x", "payload": {"text": "x" * 4000}}
    expected: set[str] = set()
    for _ in range(4):
        ids = [new_id() for _ in range(250)]
        await asyncio.gather(
            *(store.create_run(RunRecord(r, "w", "work.>", event, updated=1.0)) for r in ids)
        )
        expected.update(ids)
        assert {r.run_id for r in (await store.list_runs()).runs} == expected
        rid = ids[0]
        await asyncio.gather(
            *(
                store.put_step(rid, StepRecord(n, "now", "d", event, state="done"))
                for n in range(80)
            )
        )
        assert [s.seq for s in await store.steps(rid)] == list(range(80))


# -- unreadable records ----------------------------------------------------------------


async def test_broken_records_are_reported_not_dropped(backend: Backend) -> None:
    store = await backend.store()
    good1, good2, garbage, newer = new_id(), new_id(), new_id(), new_id()
    await store.create_run(run(good1, updated=1.0))
    await backend.write_raw("run", garbage, b"\xff{not json")
    newer_record = {**run(newer).to_json(), "version": 99, "brand_new_field": 1}
    await backend.write_raw("run", newer, dumps(newer_record).encode())
    await store.create_run(run(good2, updated=2.0))

    for listing in (await store.list_runs(), await store.list_runs(statuses=("running",))):
        assert [r.run_id for r in listing.runs] == [good2, good1]
        broken = dict(listing.broken)
        assert set(broken) == {garbage, newer}
        assert "corrupt" in broken[garbage]
        assert "newer Loom" in broken[newer] and "99" in broken[newer]
    with pytest.raises(JournalError, match="corrupt"):
        await store.get_run(garbage)
    with pytest.raises(JournalError, match="newer Loom"):
        await store.get_run(newer)
    assert issubclass(JournalError, LoomError)
    # The other runs keep working.
    await store.update_run(good1, status="finished")
    assert (await store.prune(1e12)) == 1  # the finished one; broken ones are left alone
    listing = await store.list_runs()
    assert [r.run_id for r in listing.runs] == [good2]
    assert {r for r, _ in listing.broken} == {garbage, newer}


# -- store-specific --------------------------------------------------------------------


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    store = SqliteJournal(path)
    await store.list_runs()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE loom_journal_meta SET value = '99' WHERE name = 'schema'")
    again = SqliteJournal(path)
    try:
        with pytest.raises(JournalError, match=r"newer Loom \(schema 99") as caught:
            await again.list_runs()
        assert str(path) in str(caught.value)
    finally:
        await again.close()


async def test_nats_close_leaves_the_connection_open(js_server: NatsServer) -> None:
    nc = await nats.connect(js_server.url)
    try:
        store = NatsJournal(nc, f"t_{uuid.uuid4().hex[:12]}")
        await store.open()
        await store.close()
        assert nc.is_connected
        with pytest.raises(JournalError, match="closed"):
            await store.get_run("abc")
    finally:
        await nc.close()


async def test_nats_without_jetstream(tmp_path: Path) -> None:
    srv = NatsServer().start()
    nc = await nats.connect(srv.url)
    try:
        store = NatsJournal(nc, "loom_runs_demo")
        with pytest.raises(JournalError) as caught:
            await store.open()
        text = str(caught.value)
        assert "loom_runs_demo" in text and "JetStream is not enabled" in text and "-js" in text
    finally:
        await nc.close()
        srv.stop()


async def test_nats_bucket_refused(tmp_path: Path) -> None:
    """A user that may not use the JetStream API: the error names the bucket and the
    subjects to allow (not a bare timeout)."""
    config = f"""
    jetstream {{ store_dir: "{tmp_path / "js"}" }}
    authorization {{ users = [
      {{user: app, password: s3cret-pw, permissions: {{
        publish: {{allow: ["$JS.API.STREAM.INFO.>", "work.>"]}},
        subscribe: {{allow: ["_INBOX.>", "work.>"]}} }} }}
    ] }}
    """
    srv = NatsServer(config=config, workdir=tmp_path).start()

    async def quiet(_exc: Exception) -> None:  # the server reports the violation too
        pass

    nc = await nats.connect(f"nats://app:s3cret-pw@127.0.0.1:{srv.port}", error_cb=quiet)
    try:
        store = NatsJournal(nc, "loom_runs_locked", timeout=1.0)
        with pytest.raises(JournalError) as caught:
            await store.open()
        text = str(caught.value)
        assert "loom_runs_locked" in text and "cannot create it" in text
        assert "$KV.loom_runs_locked.>" in text and "nats kv add" in text
        assert "s3cret-pw" not in text
    finally:
        await nc.close()
        srv.stop()


def documented_server_config() -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "durability-nats.md").read_text()
    [part] = text.split("<!-- server-config:")[1:]
    return part.split("```text\n", 1)[1].split("```", 1)[0]


async def test_nats_the_documented_permissions_are_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("ORDERS_NATS_PASSWORD", password)  # the server reads it
    config = documented_server_config()
    assert '"/var/lib/nats"' in config
    srv = NatsServer(config=config.replace('"/var/lib/nats"', f'"{tmp_path / "js"}"'),
                     workdir=tmp_path).start()  # fmt: skip
    violations: list[str] = []

    async def record(exc: Exception) -> None:
        violations.append(str(exc))

    nc = await nats.connect(
        f"nats://127.0.0.1:{srv.port}", user="orders", password=password, error_cb=record
    )
    try:
        store = NatsJournal(nc, "loom_runs_orders")
        await store.open()  # creates the bucket
        big = {"topic": "orders.new", "payload": {"text": "x" * 4000}}
        ids = [new_id() for _ in range(300)]  # scans long enough for flow control
        await asyncio.gather(
            *(store.create_run(RunRecord(r, "w", "orders.>", big, updated=1.0)) for r in ids)
        )
        assert len((await store.list_runs()).runs) == 300
        rid = ids[0]
        assert await store.swap_owner(rid, ("", 0.0), "me", 5.0)
        await store.renew("me", [rid], 9.0)
        await store.put_step(rid, StepRecord(0, "now", "d", {}, state="done", result=2.0))
        assert len(await store.steps(rid)) == 1
        await store.put_approval(Approval(f"{rid}-0", rid, "w", "t"))
        assert await store.decide(f"{rid}-0", "approved", "ann", "", 3.0) is not None
        assert len(await store.list_approvals()) == 1
        await store.update_run(rid, status="finished")
        assert await store.prune(2.0) == 1
        assert violations == [], violations

        other = NatsJournal(nc, "loom_runs_billing", timeout=1.0)
        with pytest.raises(JournalError, match=r"loom_runs_billing.*\$KV\.loom_runs_billing\.>"):
            await other.open()
        assert violations and "permissions violation" in violations[0].lower()
    finally:
        await nc.close()
        srv.stop()


async def test_nats_a_bucket_made_beforehand(js_server: NatsServer) -> None:
    """A bucket an operator created (direct get on, more history, as `nats kv add`
    may): the store binds it and works the same."""
    nc = await nats.connect(js_server.url)
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await nc.jetstream().create_key_value(bucket=bucket, history=5, direct=True)
        store = NatsJournal(nc, bucket)
        await store.open()
        rid = new_id()
        assert await store.create_run(run(rid, owner="a", lease_until=1.0))
        assert await store.swap_owner(rid, ("a", 1.0), "b", 2.0)
        assert not await store.swap_owner(rid, ("a", 1.0), "c", 3.0)
        found = await store.get_run(rid)
        assert found is not None and found.owner == "b"
        assert [r.run_id for r in (await store.list_runs(statuses=("running",))).runs] == [rid]
    finally:
        await nc.close()
