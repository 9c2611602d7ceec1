// Stands in for a socket.io-client Socket: the test plays the server.
export class FakeSocket {
  constructor() {
    this.handlers = new Map();
    this.anyHandlers = [];
    this.emitted = []; // [{event, data, resolve}]
    this.connected = false;
    this.active = false;
    this.connects = 0;
    this.disconnects = 0;
  }
  on(event, fn) { this.handlers.set(event, fn); return this; }
  onAny(fn) { this.anyHandlers.push(fn); return this; }
  connect() { this.active = true; this.connects += 1; return this; }
  disconnect() {
    this.disconnects += 1;
    this.active = false;
    this.fire("disconnect", "io client disconnect");
  }
  timeout() { return this; }
  emitWithAck(event, data) { return new Promise((resolve) => this.emitted.push({ event, data, resolve })); }
  /** A reserved event: connect, disconnect, connect_error. */
  fire(event, ...args) {
    if (event === "connect") this.connected = true;
    if (event === "disconnect") this.connected = false;
    this.handlers.get(event)?.(...args);
  }
  /** The server accepts the connection and answers its resume with `seq` for every room. */
  accept(seq = 0, epoch = "E1") {
    this.fire("connect");
    for (const pending of this.emitted.splice(0)) {
      if (pending.event !== "resume") continue;
      const rooms = Object.fromEntries(Object.keys(pending.data.rooms).map((room) => [room, { seq, presence: [] }]));
      pending.resolve({ ok: true, epoch, rooms });
    }
  }
  /** The server refuses the connection (a connect_error with {code, message}). */
  refuse(code = "token_expired") {
    this.active = false;
    const error = new Error(code);
    error.data = { code, message: code.replace("_", " ") };
    this.fire("connect_error", error);
  }
  serverEmit(event, ...args) { for (const fn of this.anyHandlers) fn(event, ...args); }
  /** The server sends an event of `room` with the room's next seq (after accept's `seq`). */
  publish(type, data = {}, room = "monitoring") {
    this.seqs ??= new Map();
    const seq = (this.seqs.get(room) ?? 0) + 1;
    this.seqs.set(room, seq);
    const env = envelope(type, data, room, seq);
    this.serverEmit(type, env);
    return env;
  }
}

/** An `io` for the helper that hands out FakeSockets and remembers them. */
export function fakeIo() {
  const sockets = [];
  const io = (uri, options) => {
    const socket = new FakeSocket();
    socket.uri = uri;
    socket.options = options;
    sockets.push(socket);
    return socket;
  };
  io.sockets = sockets;
  io.last = () => sockets[sockets.length - 1];
  return io;
}

let ids = 0;

/** An envelope as the server sends it. */
export function envelope(type, data, room, seq) {
  ids += 1;
  return {
    id: `evt_${ids}`, type, data, timestamp: "2026-01-01T00:00:00.000Z", room, seq,
    user_id: null, session_id: room.startsWith("session:") ? room.slice("session:".length) : null, source: "test",
  };
}
