// Types of eventbus-client/react (react.js). Written by hand and kept in step with the code
// by tests/e2e/react (tsc over a typed usage file, and a check of the runtime exports).

import type {
  ConnectionState, Envelope, EnvelopeOf, EventBusClient, EventBusClientOptions, EventBusError, EventType,
} from "./eventbus-client.js";

/** The EventBusClient options. `token`, the callbacks and `fetch` are read when used, so a new
 * function each render does not create a new helper; `io` is taken when one is created;
 * `autoConnect` is ignored (the hook connects in an effect). */
export type UseEventBusOptions = EventBusClientOptions;

export interface UseEventBusResult {
  /** The helper: `bus.send(...)`, `bus.join(...)`, `bus.positions()`. */
  bus: EventBusClient;
  state: ConnectionState;
  /** The last error since the helper last connected, or null. */
  error: EventBusError | Error | null;
}

/** One helper for the component's lifetime, connected while mounted. */
export declare function useEventBus(options: UseEventBusOptions): UseEventBusResult;

/** An event type, `"*"` for every envelope, a list of types, or a predicate. */
export type EventSelector = string | readonly string[] | ((envelope: Envelope, type: string) => boolean);

export interface UseEventsOptions {
  /** The most envelopes kept, newest last (default 100). */
  limit?: number;
}

/** The live list of matching envelopes, oldest first, at most `limit`. */
export declare function useEvents<K extends EventType>(
  bus: EventBusClient | null | undefined, type: K, options?: UseEventsOptions): EnvelopeOf<K>[];
export declare function useEvents<D = Record<string, unknown>>(
  bus: EventBusClient | null | undefined, selector: EventSelector, options?: UseEventsOptions): Envelope<D>[];

/** Which room to follow (`{session_id}` is room `session:<id>`), and optionally one message. */
export type StreamTarget =
  | { session_id: string; room?: undefined; message_id?: string | null }
  | { room: string; session_id?: undefined; message_id?: string | null };

/** A message as far as it has arrived. Until streaming events exist, answers arrive whole
 * (`chat_response`) and `done` is true with the first text. */
export interface StreamState {
  /** `data.message_id` of the events, or the id of the whole message's event; null before any. */
  message_id: string | null;
  text: string;
  done: boolean;
  /** `data.agent` of the answer, when given. */
  agent: string | null;
  /** The last event that changed the state. */
  envelope: Envelope | null;
}

/** The event types useStream follows. */
export declare const STREAM_TYPES: readonly string[];

/** The state before any message. */
export declare const EMPTY_STREAM: Readonly<StreamState>;

/** The state after `envelope` (the same object when the envelope does not change it). */
export declare function reduceStream(state: StreamState, envelope: Envelope, messageId?: string | null): StreamState;

/** The latest agent answer in a room the bus follows. */
export declare function useStream(bus: EventBusClient | null | undefined, target: StreamTarget): StreamState;
