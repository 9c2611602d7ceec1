// The React hooks of eventbus-client/react with the real helper over a fake socket: no server.
import { StrictMode, useEffect } from "react";
import { act, cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, test } from "vitest";
import { EMPTY_STREAM, reduceStream, useEventBus, useEvents, useStream } from "eventbus-client/react";
import { envelope, fakeIo } from "./fake-socket.js";

afterEach(cleanup);

const URL = "http://server";

function Connection({ options, onBus }) {
  const { bus, state, error } = useEventBus(options);
  onBus?.(bus);
  return <p data-testid="conn" data-state={state}>{error ? error.code : "no error"}</p>;
}

describe("useEventBus", () => {
  test("creates one helper, connects it on mount, follows its state and closes it on unmount", () => {
    const io = fakeIo();
    const buses = new Set();
    const options = () => ({ url: URL, namespace: "/chat", token: () => "tok", rooms: ["session:a"], io,
                             onError: () => {} });
    const view = render(<Connection options={options()} onBus={(bus) => buses.add(bus)} />);
    const socket = io.last();
    expect(socket.uri).toBe("http://server/chat");
    expect(socket.connects).toBe(1);
    expect(screen.getByTestId("conn").dataset.state).toBe("connecting");
    act(() => socket.accept());
    expect(screen.getByTestId("conn").dataset.state).toBe("connected");
    // New inline functions each render do not make a new helper.
    view.rerender(<Connection options={options()} onBus={(bus) => buses.add(bus)} />);
    view.rerender(<Connection options={options()} onBus={(bus) => buses.add(bus)} />);
    expect(buses.size).toBe(1);
    expect(io.sockets.length).toBe(1);
    view.unmount();
    expect(socket.disconnects).toBe(1);
    expect([...buses][0].state).toBe("disconnected");
  });

  test("another room list makes a new helper and closes the old one", () => {
    const io = fakeIo();
    const view = render(<Connection options={{ url: URL, namespace: "/chat", token: "t", rooms: ["session:a"], io }} />);
    const first = io.last();
    act(() => first.accept());
    view.rerender(<Connection options={{ url: URL, namespace: "/chat", token: "t", rooms: ["session:b"], io }} />);
    expect(io.sockets.length).toBe(2);
    expect(first.disconnects).toBe(1);
    expect(io.last().connects).toBe(1);
    expect(screen.getByTestId("conn").dataset.state).toBe("connecting");
  });

  test("a refusal shows as error and state; a new token connects again and clears the error", async () => {
    const io = fakeIo();
    const tokens = [];
    const view = render(<Connection options={{ url: URL, token: "old", io }} />);
    const socket = io.last();
    socket.options.auth((auth) => tokens.push(auth.token));
    act(() => socket.refuse("token_expired"));
    expect(screen.getByTestId("conn").dataset.state).toBe("disconnected");
    expect(screen.getByTestId("conn").textContent).toBe("token_expired");
    view.rerender(<Connection options={{ url: URL, token: "new", io }} />);
    expect(io.sockets.length).toBe(1);
    expect(socket.connects).toBe(2);
    await act(async () => { socket.options.auth((auth) => tokens.push(auth.token)); });
    expect(tokens).toEqual(["old", "new"]);
    act(() => socket.accept());
    expect(screen.getByTestId("conn").dataset.state).toBe("connected");
    expect(screen.getByTestId("conn").textContent).toBe("no error");
  });

  test("under StrictMode one connection stays open", () => {
    const io = fakeIo();
    let bus;
    render(<StrictMode><Connection options={{ url: URL, token: "t", io }} onBus={(b) => { bus = b; }} /></StrictMode>);
    const live = io.sockets.filter((s) => s.active);
    expect(live.length).toBe(1);
    act(() => live[0].accept());
    expect(screen.getByTestId("conn").dataset.state).toBe("connected");
    expect(bus.socket).toBe(live[0]);
  });
});

function List({ bus, selector, limit }) {
  const events = useEvents(bus, selector, limit === undefined ? undefined : { limit });
  return <ol data-testid="list">{events.map((e) => <li key={e.id}>{`${e.type}:${e.data.n}`}</li>)}</ol>;
}

const items = () => [...screen.getByTestId("list").children].map((li) => li.textContent);

/** A helper from useEventBus whose connection is up and rooms joined (at seq 0). */
async function connectedBus(io, options = {}) {
  let bus;
  function Holder() {
    bus = useEventBus({ url: URL, token: "t", io, ...options }).bus;
    return null;
  }
  render(<Holder />);
  await act(async () => io.last().accept());
  return bus;
}

describe("useEvents", () => {
  test("keeps the last `limit` envelopes of the selected types, oldest first", async () => {
    const io = fakeIo();
    const bus = await connectedBus(io);
    render(<List bus={bus} selector={["agent_started", "agent_completed"]} limit={3} />);
    const socket = io.last();
    act(() => {
      for (let n = 1; n <= 5; n += 1) {
        socket.publish(n % 2 ? "agent_started" : "agent_completed", { n });
        socket.publish("tool_executed", { n });
      }
    });
    expect(items()).toEqual(["agent_started:3", "agent_completed:4", "agent_started:5"]);
  });

  test("one type, every type, or a predicate; non-envelopes are left out", async () => {
    const io = fakeIo();
    const bus = await connectedBus(io);
    const { unmount } = render(<List bus={bus} selector="tool_executed" />);
    const socket = io.last();
    act(() => { socket.publish("agent_started", { n: 1 }); socket.publish("tool_executed", { n: 2 }); });
    expect(items()).toEqual(["tool_executed:2"]);
    unmount();
    const predicate = render(<List bus={bus} selector={(env) => env.data.n > 3} />);
    act(() => {
      socket.publish("agent_started", { n: 3 });
      socket.publish("agent_started", { n: 4 });
      socket.serverEmit("resync_required", { room: "other", epoch: "E1", latest_seq: 0 });
    });
    expect(items()).toEqual(["agent_started:4"]);
    predicate.unmount();
    render(<List bus={bus} selector="*" />);
    act(() => { socket.serverEmit("error", "oops"); socket.publish("health_update", { n: 5 }); });
    expect(items()).toEqual(["health_update:5"]);
  });

  test("starts empty again for another bus; a null bus gives an empty list", async () => {
    const io = fakeIo();
    const first = await connectedBus(io);
    const firstSocket = io.last();
    const second = await connectedBus(io);
    const view = render(<List bus={first} selector="*" />);
    act(() => { firstSocket.publish("agent_started", { n: 1 }); });
    expect(items()).toEqual(["agent_started:1"]);
    view.rerender(<List bus={second} selector="*" />);
    expect(items()).toEqual([]);
    act(() => { firstSocket.publish("agent_started", { n: 2 }); io.last().publish("agent_started", { n: 3 }); });
    expect(items()).toEqual(["agent_started:3"]);
    view.rerender(<List bus={null} selector="*" />);
    expect(items()).toEqual([]);
  });

  test("each event once and in seq order, as the helper delivers it", async () => {
    const io = fakeIo();
    const bus = await connectedBus(io);
    render(<List bus={bus} selector="*" />);
    const socket = io.last();
    const [a, b, c] = [1, 2, 3].map((n) => envelope("agent_started", { n }, "monitoring", n));
    act(() => { for (const env of [b, a, a, c, b]) socket.serverEmit(env.type, env); });
    expect(items()).toEqual(["agent_started:1", "agent_started:2", "agent_started:3"]);
  });

  test("a bad limit is refused", () => {
    expect(() => render(<List bus={null} selector="*" limit={0} />)).toThrow(/limit/);
  });
});

function Answer({ bus, target }) {
  const { text, done, agent, message_id: id } = useStream(bus, target);
  return <p data-testid="answer" data-done={String(done)} data-agent={agent ?? ""} data-id={id ?? ""}>{text}</p>;
}

describe("useStream", () => {
  test("shows the latest whole chat_response of the session, and nothing of other rooms", async () => {
    const io = fakeIo();
    const bus = await connectedBus(io, { namespace: "/chat", rooms: ["session:s", "session:other"] });
    render(<Answer bus={bus} target={{ session_id: "s" }} />);
    const answer = screen.getByTestId("answer");
    expect([answer.textContent, answer.dataset.done]).toEqual(["", "false"]);
    const socket = io.last();
    let first;
    act(() => {
      socket.publish("chat_message", { message: "question" }, "session:s");
      first = socket.publish("chat_response", { message: "first answer", agent: "writer" }, "session:s");
    });
    expect([answer.textContent, answer.dataset.done, answer.dataset.agent, answer.dataset.id])
      .toEqual(["first answer", "true", "writer", first.id]);
    act(() => {
      socket.publish("chat_response", { message: "elsewhere" }, "session:other");
      socket.publish("chat_message", { message: "more?" }, "session:s");
    });
    expect(answer.textContent).toBe("first answer");
    act(() => { socket.publish("chat_response", { message: "second answer" }, "session:s"); });
    expect([answer.textContent, answer.dataset.agent]).toEqual(["second answer", ""]);
  });

  test("message_id follows one message; a room target works too", async () => {
    const io = fakeIo();
    const bus = await connectedBus(io, { namespace: "/chat", rooms: ["session:s"] });
    render(<Answer bus={bus} target={{ room: "session:s", message_id: "m-2" }} />);
    const socket = io.last();
    act(() => {
      socket.publish("chat_response", { message: "one", message_id: "m-1" }, "session:s");
      socket.publish("chat_response", { message: "two", message_id: "m-2" }, "session:s");
      socket.publish("chat_response", { message: "three", message_id: "m-3" }, "session:s");
    });
    const answer = screen.getByTestId("answer");
    expect([answer.textContent, answer.dataset.id]).toEqual(["two", "m-2"]);
  });

  test("a target without session_id or room is refused", () => {
    expect(() => render(<Answer bus={null} target={{}} />)).toThrow(/session_id or room/);
  });

  test("reduceStream is pure and leaves the state alone for other types and messages", () => {
    const response = envelope("chat_response", { message: "hi", agent: "a" }, "session:s", 1);
    const next = reduceStream(EMPTY_STREAM, response);
    expect(next).toEqual({ message_id: response.id, text: "hi", done: true, agent: "a", envelope: response });
    expect(EMPTY_STREAM).toEqual({ message_id: null, text: "", done: false, agent: null, envelope: null });
    expect(reduceStream(next, envelope("chat_message", { message: "x" }, "session:s", 2))).toBe(next);
    expect(reduceStream(next, response, "another-id")).toBe(next);
  });
});

test("a component can send right after mount and sees its own message", async () => {
  // The fake server answers in order: resume first (join point 0), then the message (seq 1).
  const io = fakeIo();
  function Chat() {
    const { bus } = useEventBus({ url: URL, namespace: "/chat", token: "t", rooms: ["session:s"], io });
    useEffect(() => { bus.send("chat_message", { session_id: "s", message: "hello" }).catch(() => {}); }, [bus]);
    const mine = useEvents(bus, "chat_message");
    return <ol data-testid="list">{mine.map((e) => <li key={e.id}>{e.data.message}</li>)}</ol>;
  }
  render(<Chat />);
  const socket = io.last();
  act(() => socket.fire("connect"));
  expect(socket.emitted.map((e) => e.event)).toEqual(["resume"]);
  await act(async () => {
    socket.emitted.shift().resolve({ ok: true, epoch: "E1", rooms: { "session:s": { seq: 0, presence: [] } } });
  });
  const message = socket.emitted.shift();
  expect(message.event).toBe("chat_message");
  await act(async () => {
    message.resolve({ ok: true, id: "evt_m", seq: 1, room: "session:s" });
    socket.serverEmit("chat_message", { ...envelope("chat_message", { message: "hello" }, "session:s", 1), id: "evt_m" });
  });
  expect(items()).toEqual(["hello"]);
});
