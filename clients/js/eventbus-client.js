// eventbus browser/Node client: the official socket.io-client plus per-room sequence
// tracking, so a reconnect resumes every room with no gap and no duplicate.
//
// Per room the client keeps the last delivered `seq` and the server's `epoch`. After every
// (re)connect it sends `resume {rooms: {room: last_seq}, epoch}` and waits for its ack; until
// then the room's events are held, because the server may deliver live events before the
// replayed ones. Events are delivered strictly in seq order; a seq already delivered is
// dropped. A gap that does not close within `gapTimeout`, or a `resync_required` from the
// server, is filled from `GET /api/events?room=R&after=SEQ`.
//
// Each event id reaches the application once. A server that lost its Redis delivers events
// at once without a seq, and they come back later with one (live, replayed or in history):
// the ids of the last `dedupeWindow` delivered events are remembered and skipped when they
// return, while their seq still moves the stream on. A seq the stream has to skip counts as
// lost only when history was read and no event delivered without a seq can be it.
//
// `send` waits until the connection is up and every join or resume sent on it is answered,
// so a message sent right after creating the client (or after `join`) is ordered after the
// room's join point and reaches this client's own handlers.

import { io as defaultIo } from "socket.io-client";

export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "disconnected"]);

/** Rooms the server puts a client in on connect, per namespace. */
export const DEFAULT_ROOMS = Object.freeze({ "/monitoring": ["monitoring"], "/admin": ["admin"], "/chat": [] });

/** How many delivered event ids the client remembers (the default of `dedupeWindow`). */
export const DEDUPE_WINDOW = 10000;

/** History fetches per resync before the gap is skipped as unverified. */
const FETCH_ATTEMPTS = 5;

/** An `{ok: false}` ack, a refused connection, or a timeout, as an Error with a `code`. */
export class EventBusError extends Error {
  constructor(code, message, detail = undefined) {
    super(message || code);
    this.name = "EventBusError";
    this.code = code;
    this.detail = detail;
  }
}

/** Per-room stream state. */
function newRoomState() {
  return {
    last: null, // last delivered seq, null until the first join ack
    epoch: null, // the server history epoch `last` belongs to
    confirmed: false, // false from (re)connect until the room's join/resume ack
    held: [], // events received while not confirmed or while resyncing
    pending: new Map(), // seq -> envelope, received ahead of a gap
    resyncing: false,
    resyncHint: null, // a resync_required that arrived before the ack
    gapTimer: null,
    waiters: [], // join() promises resolved by the room's next ack
    unmatched: new Map(), // id -> type, delivered here without a seq and not yet back with one
  };
}

/** The largest key of a Map of seqs (0 when empty), without spreading it into arguments. */
function maxKey(map) {
  let max = 0;
  for (const key of map.keys()) if (key > max) max = key;
  return max;
}

/** The ids of the last `size` delivered events, oldest first. */
class RecentIds {
  constructor(size) {
    this.size = Math.max(1, size);
    this.ids = new Set();
  }
  has(id) { return this.ids.has(id); }
  add(id) {
    this.ids.add(id);
    if (this.ids.size > this.size) this.ids.delete(this.ids.values().next().value);
  }
}

export class EventBusClient {
  /**
   * @param {object} options
   * @param {string} options.url            server origin, e.g. "http://localhost:5050"
   * @param {string} [options.namespace]    "/monitoring" (default), "/chat" or "/admin"
   * @param {string|function} options.token a token, or a (possibly async) function returning one,
   *                                        called on every connection attempt and history fetch
   * @param {string[]} [options.rooms]      rooms to join (the namespace's default room is added)
   * @param {function} [options.onResync]   ({room, epoch, previousEpoch, fetched, lost, unverified, gaps,
   *                                        complete}) after a history fetch: `gaps` are the [first, last]
   *                                        seq ranges skipped; `lost` counts those events that were neither
   *                                        delivered nor in history, `unverified` those that may have been
   *                                        delivered without a seq (or history could not be read)
   * @param {function} [options.onStateChange] (state, previousState)
   * @param {function} [options.onError]    (EventBusError | Error)
   * @param {function} [options.fetch]      fetch implementation (default globalThis.fetch)
   * @param {function} [options.io]         socket.io-client's io (injectable for tests)
   * @param {object}   [options.socketOptions] extra options for io()
   * @param {number}   [options.ackTimeout]  ms to wait for an ack (default 10000)
   * @param {number}   [options.gapTimeout]  ms a seq gap may stay open before a history fetch (default 500)
   * @param {boolean}  [options.reconnectOnServerDisconnect] reconnect after the server closed the
   *                                        namespace (socket.io-client does not; default true)
   * @param {boolean}  [options.autoConnect] connect now (default true)
   * @param {boolean}  [options.batch]       ask for `events` packets (lists of envelopes) when
   *                                        the server batches (EVENTBUS_BATCH_WINDOW_MS); handlers
   *                                        still get one envelope at a time (default false)
   * @param {number}   [options.fetchRetryDelay] ms before the second history fetch of a resync,
   *                                        doubled for each further one (at most 2000; default 250)
   * @param {number}   [options.dedupeWindow] how many delivered event ids to remember, so an event
   *                                        that comes back (with a seq after being delivered without
   *                                        one) is not delivered again (default 10000); keep it above
   *                                        the number of events a Redis outage may buffer
   */
  constructor(options) {
    const {
      url, namespace = "/monitoring", token, rooms = [], onResync, onStateChange, onError,
      fetch, io = defaultIo, socketOptions = {}, ackTimeout = 10000, gapTimeout = 500,
      reconnectOnServerDisconnect = true, autoConnect = true, batch = false, dedupeWindow = DEDUPE_WINDOW,
      fetchRetryDelay = 250,
    } = options || {};
    if (!url) throw new TypeError("EventBusClient: url is required");
    this.url = url.replace(/\/+$/, "");
    this.namespace = namespace;
    this._token = token;
    this._fetch = fetch || ((...args) => globalThis.fetch(...args));
    this._onResync = onResync;
    this._onError = onError;
    this._ackTimeout = ackTimeout;
    this._gapTimeout = gapTimeout;
    this._fetchRetryDelay = fetchRetryDelay;
    this._reconnectOnServerDisconnect = reconnectOnServerDisconnect;
    this._handlers = new Map();
    this._stateListeners = new Set(onStateChange ? [onStateChange] : []);
    this._rooms = new Map();
    this._delivered = new RecentIds(dedupeWindow);
    this._seqTypes = new Set(); // event types seen with a seq (kept in history)
    this._generation = 0; // bumped on every disconnect; stale acks and fetches are ignored
    this._everConnected = false;
    this._closed = false;
    this._retryTimer = null;
    this._retryDelay = 500;
    this._joining = 0; // resumes sent on this connection and not answered yet
    this._sendWaiters = new Set(); // sends waiting for the connection and its joins
    this.state = "connecting";
    this.lastError = null;
    this.stats = { delivered: 0, duplicates: 0, lost: 0, unverified: 0, resyncs: 0, fetches: 0 };
    for (const room of [...(DEFAULT_ROOMS[namespace] || []), ...rooms]) this._track(room);

    this.socket = io(this.url + namespace, {
      transports: ["websocket"],
      ...socketOptions,
      autoConnect: false,
      auth: (cb) => {
        Promise.resolve(this._currentToken()).then(
          (tok) => cb(batch ? { token: tok, batch: true } : { token: tok }),
          (err) => { this._error(err); cb({}); },
        );
      },
    });
    this.socket.on("connect", () => this._connected());
    this.socket.on("disconnect", (reason) => this._disconnected(reason));
    this.socket.on("connect_error", (err) => this._connectError(err));
    this.socket.onAny((event, ...args) => this._onServerEvent(event, ...args));
    if (autoConnect) this.connect();
  }

  // -- public API -------------------------------------------------------------------

  /** Subscribe to an event type ("*" for all); returns an unsubscribe function. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._handlers.get(type);
    if (set) set.delete(fn);
  }

  /** Subscribe to state changes; returns an unsubscribe function (fits useSyncExternalStore). */
  onStateChange(fn) {
    this._stateListeners.add(fn);
    return () => this._stateListeners.delete(fn);
  }

  /** Open the connection (after a refusal or close(), or with autoConnect: false). */
  connect() {
    this._closed = false;
    if (this.state === "disconnected") this._setState(this._everConnected ? "reconnecting" : "connecting");
    this.socket.connect();
    return this;
  }

  /** Join a room and keep it across reconnects. Resolves with the join ack, rejects with
   * an EventBusError when the server refuses. While disconnected it resolves at the next
   * successful connect. */
  join(room) {
    const st = this._track(room);
    const result = new Promise((resolve, reject) => st.waiters.push({ resolve, reject }));
    if (this.socket.connected) this._resume([room]);
    return result;
  }

  /** Leave a room and stop tracking it. */
  async leave(room) {
    const st = this._rooms.get(room);
    if (st) clearTimeout(st.gapTimer);
    this._rooms.delete(room);
    if (!this.socket.connected) return { ok: true, room };
    return this.send("leave_room", { room });
  }

  /** Emit a client event; resolves with the ack, rejects with an EventBusError on
   * `{ok: false}`, when no ack arrives within ackTimeout (`timeout`), or when the client is
   * closed or refused before the event could be sent (`disconnected`). The event is sent once
   * the connection is up and its joins and resumes are answered, so it follows the rooms' join
   * points: the client receives its own message. ackTimeout counts from the call. */
  send(event, data) {
    if (this._isJoined() && this._sendWaiters.size === 0) return this._emit(event, data); // now, in call order
    const started = Date.now();
    return this._whenJoined(event).then(
      () => this._emit(event, data, Math.max(1, this._ackTimeout - (Date.now() - started))));
  }

  async _emit(event, data, timeout = this._ackTimeout) {
    let ack;
    try {
      ack = await this.socket.timeout(timeout).emitWithAck(event, data);
    } catch (err) {
      throw new EventBusError("timeout", `no ack for ${event} within ${this._ackTimeout} ms`, err);
    }
    if (!ack || ack.ok !== true) {
      const error = (ack && ack.error) || {};
      throw new EventBusError(error.code || "error", error.message, ack);
    }
    return ack;
  }

  /** `{room: {seq, epoch}}`: where each room's stream stands. */
  positions() {
    const out = {};
    for (const [room, st] of this._rooms) out[room] = { seq: st.last, epoch: st.epoch };
    return out;
  }

  /** Disconnect for good (call connect() to open again). */
  close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    for (const st of this._rooms.values()) clearTimeout(st.gapTimer);
    this.socket.disconnect();
    this._setState("disconnected");
    this._failSends(new EventBusError("disconnected", "the client was closed before the event was sent"));
  }

  // -- sends wait for the joins ---------------------------------------------------------

  _isJoined() {
    return this.socket.connected && this._joining === 0;
  }

  _whenJoined(event) {
    if (this._isJoined()) return Promise.resolve();
    if (this._closed) {
      return Promise.reject(new EventBusError("disconnected", `the client is closed: ${event} was not sent`));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => { clearTimeout(waiter.timer); resolve(); },
        reject: (err) => { clearTimeout(waiter.timer); reject(err); },
        timer: setTimeout(() => {
          this._sendWaiters.delete(waiter);
          reject(new EventBusError("timeout", `not connected within ${this._ackTimeout} ms: ${event} was not sent`));
        }, this._ackTimeout),
      };
      this._sendWaiters.add(waiter);
    });
  }

  _releaseSends() {
    if (!this._isJoined()) return;
    const waiters = [...this._sendWaiters];
    this._sendWaiters.clear();
    for (const w of waiters) w.resolve();
  }

  _failSends(err) {
    const waiters = [...this._sendWaiters];
    this._sendWaiters.clear();
    for (const w of waiters) w.reject(err);
  }

  // -- connection lifecycle -----------------------------------------------------------

  _currentToken() {
    return typeof this._token === "function" ? this._token() : this._token;
  }

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    for (const fn of [...this._stateListeners]) {
      try { fn(state, previous); } catch (err) { this._error(err); }
    }
  }

  _error(err) {
    this.lastError = err;
    if (this._onError) {
      try { this._onError(err); } catch { /* an error handler must not break the stream */ }
    }
  }

  _connected() {
    this._everConnected = true;
    this._retryDelay = 500;
    this.lastError = null;
    // Resume first: a state listener that sends then waits for the rooms' join points.
    this._resume([...this._rooms.keys()]);
    this._setState("connected");
    this._releaseSends(); // when there was nothing to join on this connection
  }

  _disconnected(reason) {
    this._generation += 1;
    this._joining = 0; // the next connection resumes every room again
    for (const st of this._rooms.values()) {
      clearTimeout(st.gapTimer);
      st.gapTimer = null;
      st.confirmed = false;
      st.resyncing = false;
      st.resyncHint = null;
      st.held = [];
      st.pending.clear(); // not delivered yet, so the resume replays them
    }
    if (this._closed || reason === "io client disconnect") {
      this._setState("disconnected");
    } else if (reason === "io server disconnect") {
      // socket.io-client treats this as final; the server's close is not a logout here.
      if (this._reconnectOnServerDisconnect) {
        this._setState("reconnecting");
        this._scheduleReconnect();
      } else {
        this._setState("disconnected");
      }
    } else {
      this._setState("reconnecting"); // socket.io-client retries by itself
    }
  }

  _scheduleReconnect() {
    clearTimeout(this._retryTimer);
    const delay = this._retryDelay * (0.75 + Math.random() / 2);
    this._retryDelay = Math.min(this._retryDelay * 2, 10000);
    this._retryTimer = setTimeout(() => { if (!this._closed) this.socket.connect(); }, delay);
  }

  _connectError(err) {
    // A refusal by the server carries {code, message}; transport errors do not.
    const data = err && err.data;
    const error = data && data.code ? new EventBusError(data.code, data.message, data) : err;
    this._error(error);
    if (!this.socket.active) {
      for (const st of this._rooms.values()) this._settleWaiters(st, null, error);
      this._setState("disconnected");
      this._failSends(new EventBusError("disconnected", `the connection was refused: ${error && error.message}`, error));
    }
  }

  // -- joins and resume ---------------------------------------------------------------

  _track(room) {
    let st = this._rooms.get(room);
    if (!st) {
      st = newRoomState();
      this._rooms.set(room, st);
    }
    return st;
  }

  _resume(rooms) {
    if (!rooms.length) return;
    const generation = this._generation;
    // One resume per epoch (normally one: the epoch is the server's).
    const groups = new Map();
    for (const room of rooms) {
      const st = this._rooms.get(room);
      if (!st) continue;
      st.confirmed = false;
      if (!groups.has(st.epoch)) groups.set(st.epoch, {});
      groups.get(st.epoch)[room] = st.last;
    }
    for (const [epoch, positions] of groups) {
      this._joining += 1;
      const answered = () => {
        if (generation !== this._generation) return false;
        this._joining -= 1;
        return true;
      };
      this._emit("resume", { rooms: positions, epoch }).then(
        (ack) => {
          if (!answered()) return;
          for (const room of Object.keys(positions)) {
            const result = ack.rooms && ack.rooms[room];
            if (result) this._roomAck(room, { ok: true, room, epoch: ack.epoch, ...result });
          }
        },
        (err) => {
          if (!answered()) return;
          this._error(err);
          for (const room of Object.keys(positions)) {
            const st = this._rooms.get(room);
            if (!st) continue;
            if (err.code === "timeout") continue; // the connection is failing; the next connect retries
            this._rooms.delete(room); // refused (forbidden, invalid_room): stop tracking it
            this._settleWaiters(st, null, err);
          }
        },
      ).catch((err) => this._error(err)).finally(() => this._releaseSends());
    }
  }

  _settleWaiters(st, ack, err) {
    const waiters = st.waiters;
    st.waiters = [];
    for (const w of waiters) (err ? w.reject(err) : w.resolve(ack));
  }

  _roomAck(room, ack) {
    const st = this._rooms.get(room);
    if (!st) return;
    const hint = st.resyncHint;
    st.resyncHint = null;
    if (st.last === null) {
      // A fresh room starts at its join point, or earlier when the server had already put
      // the client in it (the namespace's default room) and events came meanwhile.
      st.last = Math.min(ack.seq, ...st.held.map((env) => env.seq - 1));
      st.epoch = ack.epoch;
    }
    if (ack.resync_required || hint) {
      this._resync(room, st, ack.epoch, ack.seq);
    } else {
      st.confirmed = true;
      const held = st.held;
      st.held = [];
      for (const env of held) this._accept(room, st, env);
      this._drain(room, st);
    }
    this._settleWaiters(st, ack, null);
  }

  // -- receiving ------------------------------------------------------------------------

  _onServerEvent(event, ...args) {
    const payload = args[0];
    if (event === "events" && Array.isArray(payload)) {
      // A batch: each envelope as if it had arrived as its own event.
      for (const env of payload) {
        if (env && typeof env === "object" && typeof env.type === "string") this._receive(env.type, env);
      }
      return;
    }
    if (event === "resync_required" && payload && this._rooms.has(payload.room)) {
      const st = this._rooms.get(payload.room);
      if (st.confirmed && !st.resyncing) this._resync(payload.room, st, payload.epoch, payload.latest_seq);
      else st.resyncHint = payload; // acted on at the room's ack, or when the running resync ends
      this._dispatch(event, payload);
      return;
    }
    this._receive(event, payload, args);
  }

  _receive(type, env, args = [env]) {
    const isEnvelope = env && typeof env === "object" && typeof env.room === "string";
    const st = isEnvelope && Number.isInteger(env.seq) ? this._rooms.get(env.room) : undefined;
    if (!st) {
      this._deliverUntracked(type, env, args); // no seq (ephemeral, or Redis away), untracked room, not an envelope
      return;
    }
    if (!st.confirmed || st.resyncing) {
      st.held.push(env);
      return;
    }
    this._accept(env.room, st, env);
    this._drain(env.room, st);
  }

  _deliverUntracked(type, env, args) {
    // Delivered at once. The id is remembered: a server that delivered it without a seq (its
    // Redis was away) publishes it later, and then it comes back with one.
    const id = env && typeof env === "object" ? env.id : undefined;
    if (typeof id === "string") {
      if (this._delivered.has(id)) {
        this.stats.duplicates += 1;
        return;
      }
      this._delivered.add(id);
      const st = env.seq == null && typeof env.room === "string" ? this._rooms.get(env.room) : undefined;
      if (st) {
        st.unmatched.set(id, type);
        if (st.unmatched.size > this._delivered.size) st.unmatched.delete(st.unmatched.keys().next().value);
      }
    }
    this._dispatch(type, ...args);
  }

  _accept(room, st, env) {
    if (env.seq <= st.last || st.pending.has(env.seq)) {
      this.stats.duplicates += 1;
      return;
    }
    st.pending.set(env.seq, env);
    st.unmatched.delete(env.id);
  }

  _drain(room, st) {
    this._drainQuiet(room, st);
    if (st.pending.size === 0) {
      clearTimeout(st.gapTimer);
      st.gapTimer = null;
    } else if (!st.gapTimer) {
      const generation = this._generation;
      st.gapTimer = setTimeout(() => {
        st.gapTimer = null;
        if (generation === this._generation && st.pending.size && !st.resyncing) {
          this._resync(room, st, st.epoch, maxKey(st.pending));
        }
      }, this._gapTimeout);
    }
  }

  _dispatch(type, ...args) {
    for (const key of [type, "*"]) {
      const set = this._handlers.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          if (key === "*") fn(type, ...args);
          else fn(...args);
        } catch (err) {
          this._error(err);
        }
      }
    }
  }

  // -- resync from history ----------------------------------------------------------------

  async _resync(room, st, epoch, latestSeq) {
    // `previousEpoch` is the epoch `st.last` counts in: seqs of another epoch mean nothing,
    // so that one is read from its start.
    if (st.resyncing) return;
    st.resyncing = true;
    clearTimeout(st.gapTimer);
    st.gapTimer = null;
    const generation = this._generation;
    const previousEpoch = st.epoch;
    this.stats.resyncs += 1;
    const { page, events: fetched } = await this._fetchForResync(room, st, generation, epoch, previousEpoch);
    if (generation !== this._generation || this._rooms.get(room) !== st || this._closed) return;
    const newEpoch = previousEpoch !== null
      && (page ? page.epoch !== previousEpoch : epoch != null && epoch !== previousEpoch);
    const info = { room, epoch: null, previousEpoch, fetched: fetched.length, lost: 0, unverified: 0, gaps: [], complete: true };
    if (newEpoch) {
      // Events of the old epoch received ahead of a gap are real events not yet delivered:
      // deliver them before switching. What they skipped cannot be checked any more (that
      // history is gone), so it counts as unverified.
      const old = { gaps: [], lost: 0, unverified: 0 };
      this._skipTo(room, st, maxKey(st.pending), old, false);
      info.unverified += old.unverified;
      st.last = 0;
      st.pending.clear();
    }
    st.epoch = page ? page.epoch : (epoch ?? st.epoch);
    const target = page ? page.latest_seq : Math.max(latestSeq ?? 0, st.last);
    for (const env of fetched) this._accept(room, st, env);
    const held = st.held;
    st.held = [];
    for (const env of held) this._accept(room, st, env);
    st.resyncing = false;
    st.confirmed = true;
    // Everything up to `target` that neither history nor the socket had is gone, unless it
    // may be an event this client already delivered without a seq.
    this._skipTo(room, st, target, info, page !== null);
    this._drain(room, st);
    this.stats.lost += info.lost;
    this.stats.unverified += info.unverified;
    info.epoch = st.epoch;
    info.complete = info.gaps.length === 0 && info.unverified === 0;
    if (this._onResync) {
      try { this._onResync(info); } catch (err) { this._error(err); }
    }
    const hint = st.resyncHint;
    st.resyncHint = null;
    if (hint && hint.epoch != null && hint.epoch !== st.epoch) this._resync(room, st, hint.epoch, hint.latest_seq);
  }

  async _fetchForResync(room, st, generation, epoch, previousEpoch) {
    // The history after the room's position (from 0 in another epoch), or {page: null}
    // when it could not be read in FETCH_ATTEMPTS tries.
    let fromStart = previousEpoch !== null && epoch != null && epoch !== previousEpoch;
    for (let attempt = 0; attempt < FETCH_ATTEMPTS; attempt += 1) {
      if (generation !== this._generation || this._closed) break;
      const after = fromStart ? 0 : (st.last ?? 0);
      let result;
      try {
        result = await this._fetchHistory(room, after);
      } catch (err) {
        this._error(err);
        if (attempt + 1 < FETCH_ATTEMPTS) {
          await new Promise((r) => setTimeout(r, Math.min(this._fetchRetryDelay * 2 ** attempt, 2000)));
        }
        continue;
      }
      if (after && previousEpoch !== null && result.page.epoch !== previousEpoch) {
        fromStart = true; // the server's epoch changed meanwhile: its seqs start again
        continue;
      }
      return result;
    }
    return { page: null, events: [] };
  }

  _skipTo(room, st, target, info, verified) {
    // Deliver the stream up to `target`, jumping over the seqs nobody has. A skipped seq
    // counts as lost only when history was read (`verified`) and no event this client
    // delivered without a seq can be it; otherwise it counts as unverified.
    for (;;) {
      this._drainQuiet(room, st);
      if (st.last >= target) return;
      let next = target + 1;
      for (const seq of st.pending.keys()) if (seq > st.last && seq < next) next = seq;
      const jump = Math.min(next - 1, target);
      const missing = jump - st.last;
      const maybeDelivered = verified ? this._takeUnmatched(st, missing) : missing;
      info.gaps.push([st.last + 1, jump]);
      info.unverified += maybeDelivered;
      info.lost += missing - maybeDelivered;
      st.last = jump;
    }
  }

  _takeUnmatched(st, count) {
    // Use up to `count` of the room's events delivered without a seq (of types that history
    // keeps) as possible explanations of skipped seqs; returns how many.
    let taken = 0;
    for (const [id, type] of st.unmatched) {
      if (taken === count) break;
      if (this._seqTypes.has(type)) {
        st.unmatched.delete(id);
        taken += 1;
      }
    }
    return taken;
  }

  _drainQuiet(room, st) {
    // Deliver the contiguous run without arming the gap timer (the caller handles gaps).
    while (st.pending.has(st.last + 1)) {
      const env = st.pending.get(st.last + 1);
      st.pending.delete(st.last + 1);
      st.last += 1;
      this._seqTypes.add(env.type);
      if (this._delivered.has(env.id)) {
        // Delivered already (without a seq, or under another seq): its seq only moves the
        // stream on.
        this.stats.duplicates += 1;
        continue;
      }
      if (typeof env.id === "string") this._delivered.add(env.id);
      this.stats.delivered += 1;
      this._dispatch(env.type, env);
    }
  }

  async _fetchHistory(room, after) {
    const events = [];
    let page;
    let cursor = after;
    for (;;) {
      const token = await this._currentToken();
      const query = new URLSearchParams({ room, after: String(cursor) });
      this.stats.fetches += 1;
      const response = await this._fetch(`${this.url}/api/events?${query}`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok || !body.ok) {
        const error = body.error || {};
        throw new EventBusError(error.code || `http_${response.status}`, error.message || `GET /api/events: ${response.status}`, body);
      }
      page = body;
      events.push(...body.events);
      if (!body.events.length) break;
      cursor = body.events[body.events.length - 1].seq;
      if (cursor >= body.latest_seq) break;
    }
    return { page, events };
  }
}

/** `createEventBusClient(options)` is `new EventBusClient(options)`. */
export function createEventBusClient(options) {
  return new EventBusClient(options);
}

export default createEventBusClient;
