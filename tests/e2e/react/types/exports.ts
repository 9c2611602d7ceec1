// What the package exports and what its helper accepts, as lists that the runtime test
// (src/exports.test.js) compares with the code and that tsc compares with the .d.ts files:
// a name added to or removed from either side fails one of them.
import type * as Client from "eventbus-client";
import type * as Hooks from "eventbus-client/react";
import type { EventBusClient, EventBusClientOptions } from "eventbus-client";

export const CLIENT_EXPORTS = [
  "DEDUPE_WINDOW", "DEFAULT_ROOMS", "EventBusClient", "EventBusError", "STATES", "createEventBusClient", "default",
] as const;

export const REACT_EXPORTS = ["EMPTY_STREAM", "STREAM_TYPES", "reduceStream", "useEventBus", "useEvents", "useStream"] as const;

export const CLIENT_OPTIONS = [
  "url", "namespace", "token", "rooms", "onResync", "onStateChange", "onError", "fetch", "io", "socketOptions",
  "ackTimeout", "gapTimeout", "reconnectOnServerDisconnect", "autoConnect", "batch", "dedupeWindow", "fetchRetryDelay",
] as const;

export const CLIENT_METHODS = [
  "on", "off", "onStateChange", "connect", "join", "leave", "send", "positions", "close",
] as const;

/** true when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
type Methods<C> = { [K in keyof C]: C[K] extends (...args: never[]) => unknown ? K : never }[keyof C];

export const declared: {
  client: Equal<keyof typeof Client, (typeof CLIENT_EXPORTS)[number]>;
  react: Equal<keyof typeof Hooks, (typeof REACT_EXPORTS)[number]>;
  options: Equal<keyof EventBusClientOptions, (typeof CLIENT_OPTIONS)[number]>;
  methods: Equal<Methods<EventBusClient>, (typeof CLIENT_METHODS)[number]>;
} = { client: true, react: true, options: true, methods: true };
