// Unit tests of clients/js/eventbus-client.js with a fake socket: no server, no network.
//   node --preserve-symlinks --test client_unit.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventBusClient } from "eventbus-client";

/** Stands in for a socket.io-client Socket: the test plays the server. */
class FakeSocket {
  constructor() {
    this.handlers = new Map();
    this.anyHandlers = [];
    this.emitted = []; // [{event, data, resolve}]
    this.connected = false;
    this.active = false;
  }
  on(event, fn) { this.handlers.set(event, fn); return this; }
  onAny(fn) { this.anyHandlers.push(fn); return this; }
  connect() { this.active = true; return this; }
  disconnect() { this.fire("disconnect", "io client disconnect"); }
  timeout() { return this; }
  emitWithAck(event, data) {
    return new Promise((resolve) => this.emitted.push({ event, data, resolve }));
  }
  fire(event, ...args) { // a reserved event (connect, disconnect, connect_error)
    if (event === "connect") this.connected = true;
    if (event === "disconnect") this.connected = false;
    this.handlers.get(event)?.(...args);
  }
  serverEmit(event, ...args) { for (const fn of this.anyHandlers) fn(event, ...args); }
  lastEmit(event) { return [...this.emitted].reverse().find((e) => e.event === event); }
}

const tick = () => new Promise((r) => setImmediate(r));

function env(seq, type = "agent_started", room = "monitoring") {
  return { id: `evt_${room}_${seq}`, type, data: { n: seq }, timestamp: "2026-01-01T00:00:00.000Z",
           room, seq, user_id: null, session_id: null, source: "test" };
}

/** An event a server delivered at once without a seq (its Redis was away). */
function unsequenced(id, type = "agent_started", room = "monitoring") {
  return { ...env(null, type, room), id };
}

/** A fetch answering GET /api/events from `history.events` (epoch `history.epoch`), with
 * `history.latest` when history holds fewer than the room had; `history.failures` answers
 * 503 that many times; `history.then` replaces the history before each answer after the first. */
function historyFetch(history) {
  history.calls = [];
  return async (url) => {
    const after = Number(new URL(url).searchParams.get("after"));
    history.calls.push(after);
    if (history.gate) await history.gate;
    if (history.then && history.then.length && history.calls.length > 1) Object.assign(history, history.then.shift());
    if (history.failures > 0) {
      history.failures -= 1;
      return { ok: false, status: 503, json: async () => ({ ok: false, error: { code: "redis_unavailable", message: "down" } }) };
    }
    const latest = history.latest ?? Math.max(0, ...history.events.map((e) => e.seq));
    const events = history.events.filter((e) => e.seq > after);
    return { ok: true, status: 200, json: async () => ({ ok: true, room: "monitoring", epoch: history.epoch, latest_seq: latest,
                                                         complete: true, events }) };
  };
}

const until = async (predicate, ms = 2000) => {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

function makeClient(options = {}) {
  const socket = new FakeSocket();
  const client = new EventBusClient({ url: "http://server", token: "tok", io: () => socket, gapTimeout: 20, ...options });
  const seen = [];
  client.on("*", (type, e) => seen.push(e && e.seq !== undefined ? e.seq : type));
  return { socket, client, seen };
}

async function connectWith(socket, rooms, epoch = "E1") {
  socket.fire("connect");
  const resume = socket.lastEmit("resume");
  resume.resolve({ ok: true, epoch, rooms });
  await tick();
  return resume;
}

test("events are held until the resume ack; a fresh room starts where the client entered it", async () => {
  const { socket, client, seen } = makeClient({ rooms: ["reports"] });
  socket.fire("connect");
  const resume = socket.lastEmit("resume");
  assert.deepEqual(resume.data, { rooms: { monitoring: null, reports: null }, epoch: null });
  // The server put the client in "monitoring" on connect, so 4 and 5 precede the join point (5).
  socket.serverEmit("agent_started", env(4));
  socket.serverEmit("agent_started", env(5));
  assert.deepEqual(seen, []);
  resume.resolve({ ok: true, epoch: "E1", rooms: { monitoring: { seq: 5, presence: [] }, reports: { seq: 7, presence: [] } } });
  await tick();
  socket.serverEmit("agent_started", env(6));
  socket.serverEmit("agent_started", env(8, "agent_started", "reports"));
  assert.deepEqual(seen, [4, 5, 6, 8]);
  assert.deepEqual(client.positions(), { monitoring: { seq: 6, epoch: "E1" }, reports: { seq: 8, epoch: "E1" } });
});

test("a batch named events is unpacked in order and duplicates are dropped", async () => {
  const { socket, client, seen } = makeClient();
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("events", [env(1), env(2), env(2), env(3)]);
  socket.serverEmit("agent_started", env(3));
  socket.serverEmit("events", [env(3, "tool_executed"), env(4, "tool_executed")]);
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.equal(client.stats.duplicates, 3);
});

test("typed handlers get each envelope of a batch; ephemeral events pass straight through", async () => {
  const { socket, client } = makeClient({ namespace: "/chat", rooms: ["session:s"] });
  await connectWith(socket, { "session:s": { seq: 0 } });
  const messages = [];
  const typing = [];
  client.on("chat_message", (e) => messages.push(e.data.n));
  client.on("typing_indicator", (e) => typing.push(e.seq));
  socket.serverEmit("events", [env(1, "chat_message", "session:s"), { ...env(null, "typing_indicator", "session:s"), seq: null },
                               env(2, "chat_message", "session:s")]);
  assert.deepEqual(messages, [1, 2]);
  assert.deepEqual(typing, [null]);
});

test("out-of-order events are delivered in seq order", async () => {
  const { socket, seen } = makeClient();
  await connectWith(socket, { monitoring: { seq: 10 } });
  socket.serverEmit("agent_started", env(12));
  socket.serverEmit("agent_started", env(13));
  assert.deepEqual(seen, []);
  socket.serverEmit("agent_started", env(11));
  assert.deepEqual(seen, [11, 12, 13]);
});

test("reconnect resumes from the last seq; live-before-replay is reordered and deduplicated", async () => {
  const { socket, client, seen } = makeClient();
  const states = [];
  client.onStateChange((s) => states.push(s));
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(2));
  socket.fire("disconnect", "transport close");
  socket.fire("connect");
  const resume = socket.lastEmit("resume");
  assert.deepEqual(resume.data, { rooms: { monitoring: 2 }, epoch: "E1" });
  socket.serverEmit("agent_started", env(5)); // live, ahead of the replay
  for (const seq of [2, 3, 4, 5]) socket.serverEmit("agent_started", env(seq)); // replay
  resume.resolve({ ok: true, epoch: "E1", rooms: { monitoring: { seq: 5, replayed: 3, resync_required: false } } });
  await tick();
  socket.serverEmit("agent_started", env(6));
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(states, ["connected", "reconnecting", "connected"]);
});

test("resync_required after a restart fetches the new epoch's history and adopts it", async () => {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, auth: init.headers.Authorization });
    return { ok: true, status: 200,
             json: async () => ({ ok: true, room: "monitoring", epoch: "E2", latest_seq: 2, complete: true,
                                  events: [{ ...env(1), id: "new1" }, { ...env(2), id: "new2" }] }) };
  };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch, onResync: (info) => resyncs.push(info) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  for (const seq of [1, 2, 3]) socket.serverEmit("agent_started", env(seq));
  socket.fire("disconnect", "transport close");
  socket.fire("connect");
  const resume = socket.lastEmit("resume");
  socket.serverEmit("resync_required", { room: "monitoring", epoch: "E2", latest_seq: 2 });
  socket.serverEmit("agent_started", { ...env(3), id: "new3" }); // live in the new epoch
  resume.resolve({ ok: true, epoch: "E2", rooms: { monitoring: { seq: 2, replayed: 0, resync_required: true } } });
  for (let i = 0; i < 5; i += 1) await tick();
  assert.deepEqual(calls, [{ url: "http://server/api/events?room=monitoring&after=0", auth: "Bearer tok" }]);
  assert.deepEqual(seen.slice(3), ["resync_required", 1, 2, 3]);
  assert.deepEqual(client.positions(), { monitoring: { seq: 3, epoch: "E2" } });
  assert.deepEqual(resyncs, [{ room: "monitoring", epoch: "E2", previousEpoch: "E1", fetched: 2, lost: 0, unverified: 0,
                               gaps: [], complete: true }]);
});

test("a gap that does not close is filled from history", async () => {
  const fetch = async (url) => ({ ok: true, status: 200, json: async () => ({
    ok: true, room: "monitoring", epoch: "E1", latest_seq: 3, complete: true, events: [env(2), env(3)] }) });
  const { socket, client, seen } = makeClient({ fetch });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(3));
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(client.stats.lost, 0);
});

test("send rejects with the error code of an {ok: false} ack; a refusal stops the client", async () => {
  const errors = [];
  const { socket, client } = makeClient({ onError: (e) => errors.push(e.code) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  const pending = client.send("join_room", { room: "admin" });
  socket.lastEmit("join_room").resolve({ ok: false, error: { code: "invalid_room", message: "no" } });
  await assert.rejects(pending, (err) => err.code === "invalid_room" && err.message === "no");
  socket.fire("disconnect", "transport close");
  socket.active = false;
  const refusal = new Error("token expired");
  refusal.data = { code: "token_expired", message: "token expired" };
  socket.fire("connect_error", refusal);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(errors, ["token_expired"]); // a rejected send goes to its caller only
});

test("events delivered without a seq are skipped when history has them; their seqs move the stream on", async () => {
  const history = { epoch: "E1", events: [env(1), env(2), { ...env(3), id: "x1" }, { ...env(4), id: "x2" }, { ...env(5), id: "x3" }, env(6)] };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch: historyFetch(history), onResync: (info) => resyncs.push(info) });
  const ids = [];
  client.on("*", (type, e) => ids.push(e.id));
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(2));
  for (const id of ["x1", "x2", "x3"]) socket.serverEmit("agent_started", unsequenced(id));
  socket.serverEmit("agent_started", env(6));
  await until(() => resyncs.length === 1);
  socket.serverEmit("agent_started", env(7));
  assert.deepEqual(seen, [1, 2, null, null, null, 6, 7]);
  assert.deepEqual(ids, ["evt_monitoring_1", "evt_monitoring_2", "x1", "x2", "x3", "evt_monitoring_6", "evt_monitoring_7"]);
  assert.deepEqual(resyncs, [{ room: "monitoring", epoch: "E1", previousEpoch: "E1", fetched: 4, lost: 0, unverified: 0, gaps: [], complete: true }]);
  assert.equal(client.stats.lost, 0);
  assert.equal(client.stats.duplicates, 4); // x1-x3, and 6 from history
});

test("events delivered without a seq are skipped when they come back live, and never twice without one", async () => {
  const { socket, client, seen } = makeClient();
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", unsequenced("x1"));
  socket.serverEmit("events", [{ ...env(2), id: "x1" }, env(3)]);
  socket.serverEmit("agent_started", unsequenced("x1"));
  assert.deepEqual(seen, [1, null, 3]);
  assert.deepEqual(client.positions().monitoring.seq, 3);
  assert.equal(client.stats.duplicates, 2);
  assert.equal(client.stats.resyncs, 0);
});

test("after Redis lost its data, the new epoch's history holds events already delivered: none again, none lost", async () => {
  const history = { epoch: "E2", events: [{ ...env(1), id: "x1" }, { ...env(2), id: "x2" }, { ...env(3), id: "x3" }, { ...env(4), id: "n4" }] };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch: historyFetch(history), onResync: (info) => resyncs.push(info) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(2));
  for (const id of ["x1", "x2", "x3"]) socket.serverEmit("agent_started", unsequenced(id));
  socket.serverEmit("resync_required", { room: "monitoring", epoch: "E2", latest_seq: 0 });
  socket.serverEmit("agent_started", { ...env(5), id: "n5" });
  await until(() => resyncs.length === 1);
  assert.deepEqual(seen, [1, 2, null, null, null, "resync_required", 4, 5]);
  assert.deepEqual(client.positions(), { monitoring: { seq: 5, epoch: "E2" } });
  assert.deepEqual(resyncs, [{ room: "monitoring", epoch: "E2", previousEpoch: "E1", fetched: 4, lost: 0, unverified: 0, gaps: [], complete: true }]);
});

test("a skipped seq is lost only when no event delivered without a seq can be it", async () => {
  // History kept only 8-10. Two events of a kept type were delivered without a seq and never
  // came back: two of the six skipped seqs may be them. A typing indicator never has a seq.
  const history = { epoch: "E1", events: [env(8), env(9), env(10)] };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch: historyFetch(history), onResync: (info) => resyncs.push(info) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("typing_indicator", unsequenced("t1", "typing_indicator"));
  socket.serverEmit("agent_started", unsequenced("x1"));
  socket.serverEmit("agent_started", unsequenced("x2"));
  socket.serverEmit("agent_started", env(10));
  await until(() => resyncs.length === 1);
  assert.deepEqual(resyncs, [{ room: "monitoring", epoch: "E1", previousEpoch: "E1", fetched: 3, lost: 4, unverified: 2, gaps: [[2, 7]], complete: false }]);
  assert.deepEqual(seen, [1, null, null, null, 8, 9, 10]);
  assert.equal(client.stats.lost, 4);
  assert.equal(client.stats.unverified, 2);
});

test("history that cannot be read reports the gap as unverified, not lost", async () => {
  const history = { epoch: "E1", events: [env(3)], failures: 99 };
  const resyncs = [];
  const errors = [];
  const { socket, seen } = makeClient({ fetch: historyFetch(history), fetchRetryDelay: 1,
                                        onResync: (info) => resyncs.push(info), onError: (e) => errors.push(e.code) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(3));
  await until(() => resyncs.length === 1);
  assert.equal(history.calls.length, 5);
  assert.deepEqual(resyncs, [{ room: "monitoring", epoch: "E1", previousEpoch: "E1", fetched: 0, lost: 0, unverified: 1, gaps: [[2, 2]], complete: false }]);
  assert.deepEqual(seen, [1, 3]);
  assert.deepEqual([...new Set(errors)], ["redis_unavailable"]);
});

test("an epoch change found by a gap fetch reads the new epoch from its start", async () => {
  const history = { epoch: "E2", events: [{ ...env(1), id: "n1" }, { ...env(2), id: "n2" }] };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch: historyFetch(history), onResync: (info) => resyncs.push(info) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(3));
  await until(() => resyncs.length === 1);
  assert.deepEqual(history.calls, [1, 0]);
  assert.equal(resyncs[0].epoch, "E2");
  assert.equal(resyncs[0].lost, 0);
  // 3 of the old epoch was real and not yet delivered: it comes first.
  assert.deepEqual(seen, [1, 3, 1, 2]);
  assert.deepEqual(client.positions(), { monitoring: { seq: 2, epoch: "E2" } });
});

test("a resync_required that arrives during a resync starts another one", async () => {
  let release;
  const history = { epoch: "E1", events: [env(1), env(2), env(3)], gate: new Promise((r) => { release = r; }) };
  const resyncs = [];
  const { socket, client, seen } = makeClient({ fetch: historyFetch(history), onResync: (info) => resyncs.push(info) });
  await connectWith(socket, { monitoring: { seq: 0 } });
  socket.serverEmit("agent_started", env(1));
  socket.serverEmit("agent_started", env(3));
  await until(() => history.calls.length === 1);
  socket.serverEmit("resync_required", { room: "monitoring", epoch: "E2", latest_seq: 0 });
  history.then = [{ epoch: "E2", events: [{ ...env(1), id: "n1" }] }];
  release();
  await until(() => resyncs.length === 2);
  assert.deepEqual(resyncs.map((r) => r.epoch), ["E1", "E2"]);
  assert.deepEqual(seen, [1, "resync_required", 2, 3, 1]);
  assert.deepEqual(client.positions(), { monitoring: { seq: 1, epoch: "E2" } });
});

test("the id window is bounded", async () => {
  const { socket, client, seen } = makeClient({ dedupeWindow: 3 });
  await connectWith(socket, { monitoring: { seq: 0 } });
  for (const id of ["a", "b", "c", "d", "a", "d"]) socket.serverEmit("agent_started", unsequenced(id)); // "a" was forgotten
  assert.equal(seen.length, 5);
  assert.equal(client._delivered.ids.size, 3);
  assert.ok(client._rooms.get("monitoring").unmatched.size <= 3);
  assert.equal(client.stats.duplicates, 1);
});

/** Plays a server that answers client events one at a time in the order they arrived (as a
 * real one does on one connection): `resume` puts the client in its rooms at the room's
 * current seq, `chat_message` takes the next seq and goes to the room's members. */
function fifoServer(socket, seqs = new Map()) {
  const members = new Set();
  return function serve() {
    if (!socket.connected) return;
    while (socket.emitted.length) {
      const { event, data, resolve } = socket.emitted.shift();
      if (event === "resume") {
        const rooms = {};
        for (const room of Object.keys(data.rooms)) {
          members.add(room);
          rooms[room] = { seq: seqs.get(room) ?? 0, presence: ["alice"] };
        }
        resolve({ ok: true, epoch: "E1", rooms });
      } else if (event === "chat_message") {
        const room = `session:${data.session_id}`;
        const seq = (seqs.get(room) ?? 0) + 1;
        seqs.set(room, seq);
        const envelope = { ...env(seq, "chat_message", room), data: { message: data.message }, user_id: "alice" };
        resolve({ ok: true, id: envelope.id, seq, room });
        if (members.has(room)) socket.serverEmit("chat_message", envelope);
      } else {
        resolve({ ok: false, error: { code: "unknown_event", message: event } });
      }
    }
  };
}

test("a message sent right after creating the client reaches the sender's own handlers", async () => {
  const socket = new FakeSocket();
  const client = new EventBusClient({ url: "http://server", token: "tok", namespace: "/chat", rooms: ["session:s"],
                                      io: () => socket });
  const mine = [];
  client.on("chat_message", (e) => mine.push([e.seq, e.data.message]));
  const sent = client.send("chat_message", { session_id: "s", message: "hi" });
  assert.deepEqual(socket.emitted.map((e) => e.event), [], "nothing is sent before the connection is up");
  const serve = fifoServer(socket, new Map([["session:s", 4]]));
  socket.fire("connect");
  assert.deepEqual(socket.emitted.map((e) => e.event), ["resume"], "the message waits for the room's join point");
  let ack;
  sent.then((a) => { ack = a; });
  await until(() => { serve(); return ack && mine.length === 1; });
  assert.equal(ack.seq, 5);
  assert.deepEqual(mine, [[5, "hi"]]);
  assert.deepEqual(client.positions(), { "session:s": { seq: 5, epoch: "E1" } });
});

test("sends keep their order behind a join; a state listener's send follows the resume", async () => {
  const socket = new FakeSocket();
  const client = new EventBusClient({ url: "http://server", token: "tok", namespace: "/chat", rooms: ["session:a"],
                                      io: () => socket });
  const mine = [];
  client.on("chat_message", (e) => mine.push(e.data.message));
  client.onStateChange((state) => { if (state === "connected") client.send("chat_message", { session_id: "a", message: "1" }); });
  const serve = fifoServer(socket);
  socket.fire("connect");
  assert.equal(socket.emitted[0].event, "resume");
  await until(() => { serve(); return mine.length === 1; });
  // Joined and idle: a send goes out at once. join() then send(): the send waits for the join.
  client.send("chat_message", { session_id: "a", message: "2" });
  assert.equal(socket.lastEmit("chat_message").data.message, "2");
  const joined = client.join("session:b");
  const last = client.send("chat_message", { session_id: "b", message: "3" });
  assert.deepEqual(socket.emitted.map((e) => e.event), ["chat_message", "resume"]);
  await until(() => { serve(); return mine.length === 3; });
  assert.equal((await joined).room, "session:b");
  assert.equal((await last).room, "session:b");
  assert.deepEqual(mine, ["1", "2", "3"]);
});

test("a send that cannot go out rejects: disconnected on close or refusal, timeout when never connected", async () => {
  const { socket, client } = makeClient({ ackTimeout: 30 });
  const never = client.send("chat_message", { session_id: "s", message: "x" });
  await assert.rejects(never, (err) => err.code === "timeout");
  const closed = client.send("chat_message", { session_id: "s", message: "y" });
  client.close();
  await assert.rejects(closed, (err) => err.code === "disconnected");
  await assert.rejects(client.send("chat_message", {}), (err) => err.code === "disconnected");
  client.connect();
  const refused = client.send("chat_message", { session_id: "s", message: "z" });
  socket.active = false;
  const refusal = new Error("token expired");
  refusal.data = { code: "token_expired", message: "token expired" };
  socket.fire("connect_error", refusal);
  await assert.rejects(refused, (err) => err.code === "disconnected" && err.detail.code === "token_expired");
  assert.deepEqual(socket.emitted, []);
});
