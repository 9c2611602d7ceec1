// Types of eventbus-client (eventbus-client.js). Written by hand and kept in step with the
// code by tests/e2e/react (tsc over a typed usage file, and a check of the runtime exports).

import type { ManagerOptions, Socket, SocketOptions } from "socket.io-client";

/** The helper's connection states. */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

/** Every connection state, in no particular order. */
export declare const STATES: readonly ConnectionState[];

/** Rooms the server puts a client in on connect, per namespace. */
export declare const DEFAULT_ROOMS: Readonly<Record<string, readonly string[]>>;

/** How many delivered event ids the client remembers (the default of `dedupeWindow`). */
export declare const DEDUPE_WINDOW: number;

/** The `data` of the built-in event types. Add your own types by declaration merging:
 * `declare module "eventbus-client" { interface EventDataMap { my_event: {...} } }`. */
export interface EventDataMap {
  chat_message: { message: string; [key: string]: unknown };
  chat_response: { message: string; agent?: string; [key: string]: unknown };
  typing_indicator: { typing: boolean; user: string; [key: string]: unknown };
  agent_started: { agent_name: string; details?: Record<string, unknown>; [key: string]: unknown };
  agent_completed: {
    agent_name: string; status?: string; duration_ms?: number; details?: Record<string, unknown>;
    [key: string]: unknown;
  };
  tool_executed: { agent_name: string; tool: string; duration_ms?: number; ok?: boolean; [key: string]: unknown };
  agent_handoff: { from_agent: string; to_agent: string; reason?: string; [key: string]: unknown };
  health_update: { component: string; status: string; [key: string]: unknown };
  performance_update: { metrics: Record<string, unknown>; [key: string]: unknown };
  alert_created: { severity?: string; message: string; [key: string]: unknown };
  user_joined: { user_id: string; room: string; presence: string[]; [key: string]: unknown };
  user_left: { user_id: string; room: string; presence: string[]; [key: string]: unknown };
}

/** A built-in (or declared) event type. */
export type EventType = keyof EventDataMap;

/** What the server sends for every event: the Socket.IO event name is `type`. */
export interface Envelope<D = Record<string, unknown>, T extends string = string> {
  id: string;
  type: T;
  data: D;
  /** ISO 8601, UTC. */
  timestamp: string;
  room: string;
  /** Per room, strictly increasing; null for ephemeral types and while the server's Redis is away. */
  seq: number | null;
  user_id: string | null;
  session_id: string | null;
  source: string | null;
}

/** The envelope of a built-in (or declared) type. */
export type EnvelopeOf<K extends EventType> = Envelope<EventDataMap[K], K>;

/** `resync_required`: the server cannot replay a room's gap (the helper then reads history). */
export interface ResyncRequired {
  room: string;
  epoch: string | null;
  latest_seq: number;
}

/** What `onResync` gets after a history fetch. */
export interface ResyncInfo {
  room: string;
  epoch: string | null;
  previousEpoch: string | null;
  fetched: number;
  /** The [first, last] seq ranges skipped: neither delivered nor in history. */
  gaps: Array<[number, number]>;
  lost: number;
  unverified: number;
  complete: boolean;
}

/** Counters since the helper was created. */
export interface ClientStats {
  delivered: number;
  duplicates: number;
  lost: number;
  unverified: number;
  resyncs: number;
  fetches: number;
}

/** A successful ack: `{ok: true, ...}`. */
export interface Ack {
  ok: true;
  [key: string]: unknown;
}

/** The ack of a join (or of one room of a resume). */
export interface JoinAck extends Ack {
  room: string;
  seq: number;
  epoch: string | null;
  presence?: string[];
  replayed?: number;
  resync_required?: boolean;
}

/** The ack of `chat_message`. */
export interface ChatMessageAck extends Ack {
  id: string;
  seq: number | null;
  room: string;
}

/** Where a room's stream stands. */
export interface Position {
  seq: number | null;
  epoch: string | null;
}

/** A token, or a (possibly async) function returning one. */
export type TokenSource = string | (() => string | Promise<string>);

/** socket.io-client's `io` (or a stand-in for tests). */
export type IoFactory = (uri: string, options: Partial<ManagerOptions & SocketOptions>) => Socket;

export interface EventBusClientOptions {
  /** The server origin, e.g. "http://localhost:5050". */
  url: string;
  /** "/monitoring" (default), "/chat" or "/admin". */
  namespace?: "/monitoring" | "/chat" | "/admin" | (string & {});
  /** Called on every connection attempt and history fetch when a function. */
  token: TokenSource;
  /** Rooms to join (the namespace's default room is added). */
  rooms?: readonly string[];
  onResync?: (info: ResyncInfo) => void;
  onStateChange?: (state: ConnectionState, previous: ConnectionState) => void;
  onError?: (error: EventBusError | Error) => void;
  /** Used for history (default globalThis.fetch). */
  fetch?: typeof globalThis.fetch;
  io?: IoFactory;
  /** More options for io(); the helper defaults to the websocket transport. */
  socketOptions?: Partial<ManagerOptions & SocketOptions>;
  /** ms to wait for an ack, counted from the send (default 10000). */
  ackTimeout?: number;
  /** ms a seq gap may stay open before a history fetch (default 500). */
  gapTimeout?: number;
  /** Reconnect after the server closed the namespace (default true). */
  reconnectOnServerDisconnect?: boolean;
  /** Connect now (default true). */
  autoConnect?: boolean;
  /** Ask for `events` packets when the server batches (default false). */
  batch?: boolean;
  /** ms before the second history fetch of a resync, doubled for each further one (default 250). */
  fetchRetryDelay?: number;
  /** How many delivered event ids to remember (default 10000). */
  dedupeWindow?: number;
}

/** An `{ok: false}` ack, a refused connection, a timeout, or a send that could not go out. */
export declare class EventBusError extends Error {
  constructor(code: string, message?: string, detail?: unknown);
  /** A server code (`forbidden`, `invalid_room`, ...) or `timeout` or `disconnected`. */
  code: string;
  /** The ack, the refusal's data, or the underlying error. */
  detail: unknown;
}

export declare class EventBusClient {
  constructor(options: EventBusClientOptions);
  readonly url: string;
  readonly namespace: string;
  /** The underlying socket.io-client socket. */
  readonly socket: Socket;
  readonly state: ConnectionState;
  readonly lastError: EventBusError | Error | null;
  readonly stats: ClientStats;

  /** Every event: `(type, envelope)`; for `resync_required` the second argument is a {@link ResyncRequired}. */
  on(type: "*", handler: (type: string, envelope: Envelope) => void): () => void;
  on(type: "resync_required", handler: (payload: ResyncRequired) => void): () => void;
  on<K extends EventType>(type: K, handler: (envelope: EnvelopeOf<K>) => void): () => void;
  /** Any other type (the known ones above keep their data types). */
  on<D = Record<string, unknown>, T extends string = string>(
    type: T & Exclude<T, EventType | "*" | "resync_required">, handler: (envelope: Envelope<D, T>) => void): () => void;
  off(type: string, handler: (...args: never[]) => void): void;
  /** Returns an unsubscribe function (fits useSyncExternalStore). */
  onStateChange(listener: (state: ConnectionState, previous: ConnectionState) => void): () => void;
  connect(): this;
  /** Resolves with the join ack; rejects with an EventBusError when the server refuses. */
  join(room: string): Promise<JoinAck>;
  leave(room: string): Promise<Ack>;
  /** Sent once connected and joined; resolves with the ack, rejects with an EventBusError. */
  send(event: "chat_message", data: { session_id: string; message: string; metadata?: Record<string, unknown> }): Promise<ChatMessageAck>;
  send(event: "typing_indicator", data: { session_id: string; typing: boolean }): Promise<Ack>;
  /** Any other client event (`join_room`, `leave_room`, `resume`, or a plugin's). */
  send<A extends Ack = Ack, E extends string = string>(
    event: E & Exclude<E, "chat_message" | "typing_indicator">, data?: unknown): Promise<A>;
  positions(): Record<string, Position>;
  close(): void;
}

/** `new EventBusClient(options)`. */
export declare function createEventBusClient(options: EventBusClientOptions): EventBusClient;

export default createEventBusClient;
