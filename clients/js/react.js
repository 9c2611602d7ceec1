// React hooks for eventbus, on top of the helper in ./eventbus-client.js.
//
//   useEventBus(options)               one helper per mounted component: {bus, state, error}
//   useEvents(bus, selector, {limit})  the last `limit` envelopes that match, oldest first
//   useStream(bus, {session_id | room, message_id?})  the text of the latest agent answer
//
// The hooks hold no global state. `react` (>= 18) is an optional peer dependency of the
// package: only this entry point ("eventbus-client/react") imports it.

import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { EventBusClient } from "./eventbus-client.js";

/** Options read each time they are used, so a new function each render is fine. */
const LIVE_OPTIONS = ["token", "onResync", "onError", "onStateChange", "fetch", "io"];

/** What identifies a helper: a change of any of these creates a new one. */
function clientKey(options) {
  const fixed = {};
  for (const [name, value] of Object.entries(options)) {
    if (!LIVE_OPTIONS.includes(name) && name !== "autoConnect" && typeof value !== "function") fixed[name] = value;
  }
  return JSON.stringify(fixed);
}

/**
 * Create an EventBusClient for the component's lifetime and follow its connection state.
 *
 * The helper is created when the component mounts, connected in an effect and closed when the
 * component unmounts or when an option other than `token`, the callbacks, `fetch` and `io`
 * changes (those are read when used: `token` at every connection attempt). A new string
 * `token` while the helper is disconnected (after a refusal) connects again.
 *
 * @param {import("./react.js").UseEventBusOptions} options the EventBusClient options
 * @returns {import("./react.js").UseEventBusResult} `{bus, state, error}`: the helper, its
 *   connection state, and the last error since it last connected (null when none)
 */
export function useEventBus(options) {
  const latest = useRef(options);
  useEffect(() => { latest.current = options; });
  const [failure, setFailure] = useState({ bus: null, error: null });
  const key = clientKey(options);

  const bus = useMemo(() => {
    const created = new EventBusClient({
      ...options,
      autoConnect: false,
      token: () => {
        const token = latest.current.token;
        return typeof token === "function" ? token() : token;
      },
      onResync: (info) => latest.current.onResync?.(info),
      onStateChange: (state, previous) => {
        if (state === "connected") setFailure((f) => (f.error ? { bus: created, error: null } : f));
        latest.current.onStateChange?.(state, previous);
      },
      onError: (error) => {
        setFailure({ bus: created, error });
        latest.current.onError?.(error);
      },
      fetch: (...args) => (latest.current.fetch || globalThis.fetch)(...args),
    });
    return created;
    // eslint-disable-next-line react-hooks/exhaustive-deps -- `key` stands for the options
  }, [key]);

  useEffect(() => {
    bus.connect();
    return () => bus.close();
  }, [bus]);

  const token = typeof options.token === "string" ? options.token : null;
  const tokenSeen = useRef({ bus, token });
  useEffect(() => {
    const seen = tokenSeen.current;
    tokenSeen.current = { bus, token };
    if (seen.bus === bus && seen.token !== token && bus.state === "disconnected") bus.connect();
  }, [bus, token]);

  const subscribe = useCallback((notify) => bus.onStateChange(notify), [bus]);
  const getState = () => bus.state;
  const state = useSyncExternalStore(subscribe, getState, getState);
  return { bus, state, error: failure.bus === bus ? failure.error : null };
}

function isEnvelope(value) {
  return value !== null && typeof value === "object" && typeof value.type === "string";
}

/** A stable key for a selector; functions are read through a ref instead. */
function selectorKey(selector) {
  if (typeof selector === "function") return "\u0000function";
  if (typeof selector === "string") return JSON.stringify([selector]);
  if (Array.isArray(selector)) return JSON.stringify([...selector].sort());
  throw new TypeError("useEvents: the selector is a type, a list of types, or a function (envelope, type) => boolean");
}

function matches(selector, type, envelope) {
  if (typeof selector === "function") return Boolean(selector(envelope, type));
  const types = typeof selector === "string" ? [selector] : selector;
  return types.includes("*") || types.includes(type);
}

const NO_EVENTS = Object.freeze([]);

/**
 * The live list of envelopes `bus` delivers that match `selector`, oldest first, at most
 * `limit` (default 100; the oldest are dropped). `selector` is an event type, `"*"` for every
 * envelope, a list of types, or a function `(envelope, type) => boolean` (read at each event,
 * so an inline function is fine). The list starts empty when the hook mounts and again when
 * `bus` or the types change; each event arrives once and in `seq` order, as the helper
 * delivers it. `bus` may be null (the list stays empty).
 *
 * @returns {import("./eventbus-client.js").Envelope[]}
 */
export function useEvents(bus, selector, { limit = 100 } = {}) {
  if (!(Number.isInteger(limit) && limit > 0)) throw new RangeError("useEvents: limit must be a positive integer");
  const key = selectorKey(selector);
  const live = useRef({ selector, limit });
  useEffect(() => { live.current = { selector, limit }; });
  const [store, setStore] = useState({ bus: null, key: null, events: NO_EVENTS });

  useEffect(() => {
    if (!bus) return undefined;
    return bus.on("*", (type, envelope) => {
      if (!isEnvelope(envelope) || !matches(live.current.selector, type, envelope)) return;
      setStore((current) => {
        const kept = current.bus === bus && current.key === key ? current.events : NO_EVENTS;
        const events = kept.length >= live.current.limit ? kept.slice(kept.length - live.current.limit + 1) : kept.slice();
        events.push(envelope);
        return { bus, key, events };
      });
    });
  }, [bus, key]);

  if (store.bus !== bus || store.key !== key) return NO_EVENTS;
  return store.events.length > limit ? store.events.slice(-limit) : store.events;
}

// -- streamed messages --------------------------------------------------------------------
//
// A message's state is {message_id, text, done, agent, envelope}. Today an agent's answer
// arrives whole as `chat_response` (data.message), so `done` is true as soon as it is there.
// Streamed answers will arrive as start / content (a delta of text) / end events of the same
// message id: each becomes one more entry of STREAM_REDUCERS below, and useStream and
// reduceStream keep their contract.

/** The event types useStream follows. */
export const STREAM_TYPES = Object.freeze(["chat_response"]);

/** The state before any message: no id, no text, not done. */
export const EMPTY_STREAM = Object.freeze({ message_id: null, text: "", done: false, agent: null, envelope: null });

/** A message's id: `data.message_id` when the event carries one, else the event's own id. */
function messageIdOf(envelope) {
  const id = envelope.data && envelope.data.message_id;
  return typeof id === "string" && id ? id : envelope.id;
}

const STREAM_REDUCERS = {
  /** A whole answer: it replaces whatever was shown and is complete. */
  chat_response: (state, envelope, messageId) => ({
    message_id: messageId,
    text: typeof envelope.data?.message === "string" ? envelope.data.message : "",
    done: true,
    agent: typeof envelope.data?.agent === "string" ? envelope.data.agent : null,
    envelope,
  }),
};

/**
 * The stream state after `envelope`: `state` unchanged when the envelope is not a streamed
 * message type, or when `messageId` is given and the envelope belongs to another message.
 * Pure: usable outside React (e.g. in a store).
 */
export function reduceStream(state, envelope, messageId = null) {
  const reducer = isEnvelope(envelope) ? STREAM_REDUCERS[envelope.type] : undefined;
  if (!reducer) return state;
  const id = messageIdOf(envelope);
  if (messageId != null && id !== messageId) return state;
  return reducer(state, envelope, id);
}

function streamRoom({ session_id: sessionId, room } = {}) {
  if (typeof room === "string" && room) return room;
  if (typeof sessionId === "string" && sessionId) return `session:${sessionId}`;
  throw new TypeError("useStream: give session_id or room");
}

/**
 * The latest agent answer in a chat room: `{message_id, text, done, agent, envelope}`.
 * `target` is `{session_id}` (room `session:<id>`) or `{room}`, and optionally `message_id`
 * to follow one message only. The bus must follow the room (its `rooms` option, or
 * `bus.join(room)`). Until streaming events exist every answer arrives whole
 * (`chat_response`), so `done` is true with the first text; with streaming, `text` grows
 * while `done` is false. Starts from EMPTY_STREAM, again when bus or target change.
 */
export function useStream(bus, target) {
  const room = streamRoom(target);
  const messageId = target.message_id ?? null;
  const [store, setStore] = useState({ bus: null, room: null, messageId: null, stream: EMPTY_STREAM });

  useEffect(() => {
    if (!bus) return undefined;
    return bus.on("*", (type, envelope) => {
      if (!isEnvelope(envelope) || envelope.room !== room) return;
      setStore((current) => {
        const same = current.bus === bus && current.room === room && current.messageId === messageId;
        const before = same ? current.stream : EMPTY_STREAM;
        const stream = reduceStream(before, envelope, messageId);
        return stream === before && same ? current : { bus, room, messageId, stream };
      });
    });
  }, [bus, room, messageId]);

  const same = store.bus === bus && store.room === room && store.messageId === messageId;
  return same ? store.stream : EMPTY_STREAM;
}
