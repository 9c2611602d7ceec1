// eventbus browser/Node client: the official socket.io-client plus per-room sequence
// tracking, so a reconnect resumes every room with no gap and no duplicate.
//
// Per room the client keeps the last delivered `seq` and the server's `epoch`. After every
// (re)connect it sends `resume {rooms: {room: last_seq}, epoch}` and waits for its ack; until
// then the room's events are held, because the server may deliver live events before the
// replayed ones. Events are delivered strictly in seq order; a seq already delivered is
// dropped. A gap that does not close within `gapTimeout`, or a `resync_required` from the
// server, is filled from `GET /api/events?room=R&after=SEQ`.

import { io as defaultIo } from "socket.io-client";

export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "disconnected"]);

/** Rooms the server puts a client in on connect, per namespace. */
export const DEFAULT_ROOMS = Object.freeze({ "/monitoring": ["monitoring"], "/admin": ["admin"], "/chat": [] });

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
  };
}

export class EventBusClient {
  /**
   * @param {object} options
   * @param {string} options.url            server origin, e.g. "http://localhost:5050"
   * @param {string} [options.namespace]    "/monitoring" (default), "/chat" or "/admin"
   * @param {string|function} options.token a token, or a (possibly async) function returning one,
   *                                        called on every connection attempt and history fetch
   * @param {string[]} [options.rooms]      rooms to join (the namespace's default room is added)
   * @param {function} [options.onResync]   ({room, epoch, previousEpoch, fetched, lost, complete})
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
   */
  constructor(options) {
    const {
      url, namespace = "/monitoring", token, rooms = [], onResync, onStateChange, onError,
      fetch, io = defaultIo, socketOptions = {}, ackTimeout = 10000, gapTimeout = 500,
      reconnectOnServerDisconnect = true, autoConnect = true, batch = false,
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
    this._reconnectOnServerDisconnect = reconnectOnServerDisconnect;
    this._handlers = new Map();
    this._stateListeners = new Set(onStateChange ? [onStateChange] : []);
    this._rooms = new Map();
    this._generation = 0; // bumped on every disconnect; stale acks and fetches are ignored
    this._everConnected = false;
    this._closed = false;
    this._retryTimer = null;
    this._retryDelay = 500;
    this.state = "connecting";
    this.lastError = null;
    this.stats = { delivered: 0, duplicates: 0, lost: 0, resyncs: 0, fetches: 0 };
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
   * `{ok: false}` or when no ack arrives within ackTimeout. */
  async send(event, data) {
    let ack;
    try {
      ack = await this.socket.timeout(this._ackTimeout).emitWithAck(event, data);
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
    this._setState("connected");
    this._resume([...this._rooms.keys()]);
  }

  _disconnected(reason) {
    this._generation += 1;
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
      this.send("resume", { rooms: positions, epoch }).then(
        (ack) => {
          if (generation !== this._generation) return;
          for (const room of Object.keys(positions)) {
            const result = ack.rooms && ack.rooms[room];
            if (result) this._roomAck(room, { ok: true, room, epoch: ack.epoch, ...result });
          }
        },
        (err) => {
          if (generation !== this._generation) return;
          this._error(err);
          for (const room of Object.keys(positions)) {
            const st = this._rooms.get(room);
            if (!st) continue;
            if (err.code === "timeout") continue; // the connection is failing; the next connect retries
            this._rooms.delete(room); // refused (forbidden, invalid_room): stop tracking it
            this._settleWaiters(st, null, err);
          }
        },
      );
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
      else st.resyncHint = payload;
      this._dispatch(event, payload);
      return;
    }
    this._receive(event, payload, args);
  }

  _receive(type, env, args = [env]) {
    const isEnvelope = env && typeof env === "object" && typeof env.room === "string";
    const st = isEnvelope && Number.isInteger(env.seq) ? this._rooms.get(env.room) : undefined;
    if (!st) {
      this._dispatch(type, ...args); // ephemeral (seq null), untracked room, or not an envelope
      return;
    }
    if (!st.confirmed || st.resyncing) {
      st.held.push(env);
      return;
    }
    this._accept(env.room, st, env);
    this._drain(env.room, st);
  }

  _accept(room, st, env) {
    if (env.seq <= st.last || st.pending.has(env.seq)) {
      this.stats.duplicates += 1;
      return;
    }
    st.pending.set(env.seq, env);
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
          this._resync(room, st, st.epoch, Math.max(...st.pending.keys()));
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
    if (st.resyncing) return;
    st.resyncing = true;
    clearTimeout(st.gapTimer);
    st.gapTimer = null;
    const generation = this._generation;
    const previousEpoch = st.epoch;
    // seqs of another epoch mean nothing: read that epoch's history from the start.
    const newEpoch = previousEpoch !== null && epoch != null && epoch !== previousEpoch;
    const after = newEpoch ? 0 : (st.last ?? 0);
    this.stats.resyncs += 1;
    let page = null;
    let fetched = [];
    for (let attempt = 0; attempt < 3 && page === null; attempt += 1) {
      try {
        ({ page, events: fetched } = await this._fetchHistory(room, after));
      } catch (err) {
        this._error(err);
        if (generation !== this._generation) return;
        await new Promise((r) => setTimeout(r, 300 * (attempt + 1)));
      }
      if (generation !== this._generation || this._rooms.get(room) !== st) return;
    }
    if (newEpoch) {
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
    // Everything up to `target` that neither history nor the socket had is gone.
    let lost = 0;
    for (;;) {
      this._drainQuiet(room, st);
      if (st.last >= target) break;
      const ahead = [...st.pending.keys()].filter((s) => s > st.last);
      const next = ahead.length ? Math.min(...ahead) : target + 1;
      const jump = Math.min(next - 1, target);
      lost += jump - st.last;
      st.last = jump;
    }
    this.stats.lost += lost;
    this._drain(room, st);
    const info = { room, epoch: st.epoch, previousEpoch, fetched: fetched.length, lost, complete: lost === 0 };
    if (this._onResync) {
      try { this._onResync(info); } catch (err) { this._error(err); }
    }
  }

  _drainQuiet(room, st) {
    // Deliver the contiguous run without arming the gap timer (the caller handles gaps).
    while (st.pending.has(st.last + 1)) {
      const env = st.pending.get(st.last + 1);
      st.pending.delete(st.last + 1);
      st.last += 1;
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
