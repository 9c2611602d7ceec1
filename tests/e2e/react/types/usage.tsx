// A typed use of every export of eventbus-client and eventbus-client/react, as the docs show
// it. `tsc --noEmit` over this file fails when the .d.ts files drift from the documented API;
// each @ts-expect-error line fails when a type gets too loose to catch that mistake.
import createDefault, {
  createEventBusClient, DEDUPE_WINDOW, DEFAULT_ROOMS, EventBusClient, EventBusError, STATES,
  type Ack, type ChatMessageAck, type ConnectionState, type Envelope, type EnvelopeOf, type JoinAck,
  type ResyncInfo,
} from "eventbus-client";
import {
  EMPTY_STREAM, reduceStream, STREAM_TYPES, useEventBus, useEvents, useStream, type StreamState,
} from "eventbus-client/react";
import { io } from "socket.io-client";

declare function getToken(): Promise<string>;

export async function plainClient(): Promise<void> {
  const client = createEventBusClient({
    url: "http://localhost:5050",
    namespace: "/chat",
    token: () => getToken(),
    rooms: ["session:s-1"],
    onStateChange: (state: ConnectionState, previous: ConnectionState) => console.log(previous, "->", state),
    onResync: ({ room, lost, gaps }: ResyncInfo) => lost && console.warn(room, gaps[0]?.[0]),
    onError: (err) => console.warn(err instanceof EventBusError ? err.code : err.message),
    io,
    socketOptions: { transports: ["websocket", "polling"] },
    ackTimeout: 5000,
    gapTimeout: 200,
    reconnectOnServerDisconnect: true,
    autoConnect: true,
    batch: false,
    fetchRetryDelay: 100,
    dedupeWindow: DEDUPE_WINDOW,
    fetch: globalThis.fetch,
  });
  const off = client.on("chat_message", (event) => {
    const text: string = event.data.message;
    const seq: number | null = event.seq;
    console.log(text, seq, event.type === "chat_message");
  });
  client.on("agent_started", (event: EnvelopeOf<"agent_started">) => console.log(event.data.agent_name));
  client.on("my_own_event", (event: Envelope<{ n: number }>) => console.log(event.data.n));
  client.on("*", (type: string, event: Envelope) => console.debug(type, event.seq));
  client.on("resync_required", (payload) => console.log(payload.latest_seq));
  const sent: ChatMessageAck = await client.send("chat_message", { session_id: "s-1", message: "hi" });
  const typing: Ack = await client.send("typing_indicator", { session_id: "s-1", typing: true });
  const joined: JoinAck = await client.join("session:s-2");
  await client.leave("session:s-2");
  const position = client.positions()["session:s-1"];
  const state: ConnectionState = client.state;
  const states: readonly ConnectionState[] = STATES;
  const rooms: readonly string[] | undefined = DEFAULT_ROOMS["/monitoring"];
  console.log(sent.seq, typing.ok, joined.presence, position?.seq, state, states, rooms, client.stats.lost);
  client.onStateChange((now) => now === "connected")();
  off();
  client.off("chat_message", () => {});
  client.connect().close();
  const other: EventBusClient = createDefault({ url: "http://localhost:5050", token: "t" });
  other.close();
  new EventBusClient({ url: "http://localhost:5050", token: "t", autoConnect: false }).close();
  const error = new EventBusError("timeout", "no ack", { waited: 1 });
  console.log(error.code, error.detail, error.message);

  // @ts-expect-error url is required
  createEventBusClient({ token: "t" });
  // @ts-expect-error a token is a string or a function
  createEventBusClient({ url: "http://x", token: 42 });
  // @ts-expect-error chat_message needs session_id and message
  await client.send("chat_message", { message: "hi" });
  // @ts-expect-error chat_message data has a string message
  client.on("chat_message", (event) => event.data.message.toFixed());
  // @ts-expect-error not a connection state
  const wrong: ConnectionState = "open";
  console.log(wrong);
}

export function Activity({ token }: { token: string }) {
  const { bus, state, error } = useEventBus({ url: "http://localhost:5050", namespace: "/monitoring", token });
  const events = useEvents(bus, ["agent_started", "agent_completed"], { limit: 50 });
  const tools = useEvents(bus, "tool_executed");
  const mine = useEvents<{ n: number }>(bus, (event, type) => type === "my_own_event" && event.room === "monitoring");
  const none = useEvents(null, "*");
  return (
    <section data-state={state}>
      {error && <p>{error.message}</p>}
      <ul>{events.map((e) => <li key={e.id}>{e.type} {e.seq}</li>)}</ul>
      <ul>{tools.map((e) => <li key={e.id}>{e.data.tool}</li>)}</ul>
      <ul>{mine.map((e) => <li key={e.id}>{e.data.n.toFixed(0)}</li>)}</ul>
      <p>{none.length}</p>
    </section>
  );
}

export function ChatRoom({ sessionId }: { sessionId: string }) {
  const { bus, state } = useEventBus({
    url: "http://localhost:5050", namespace: "/chat", token: getToken, rooms: [`session:${sessionId}`],
  });
  const messages = useEvents(bus, "chat_message");
  const answer: StreamState = useStream(bus, { session_id: sessionId });
  const one = useStream(bus, { room: `session:${sessionId}`, message_id: answer.message_id });
  const send = (message: string): Promise<ChatMessageAck> => bus.send("chat_message", { session_id: sessionId, message });
  // @ts-expect-error the target needs session_id or room
  useStream(bus, { message_id: "m" });
  // @ts-expect-error limit is a number
  useEvents(bus, "*", { limit: "10" });
  return (
    <div data-state={state}>
      {messages.map((m) => <p key={m.id}>{m.user_id}: {m.data.message}</p>)}
      <p data-done={answer.done}>{answer.text} {answer.agent} {one.text}</p>
      <button onClick={() => void send("hi")}>send</button>
    </div>
  );
}

export const streamed: StreamState = reduceStream(EMPTY_STREAM, {
  id: "evt_1", type: "chat_response", data: { message: "hi" }, timestamp: "", room: "session:s", seq: 1,
  user_id: null, session_id: "s", source: "writer",
});
export const followed: readonly string[] = STREAM_TYPES;
