// The hooks against a real `eventbus serve`: tests/e2e/test_js_package.py starts one and runs
// this file with EVENTBUS_URL, EVENTBUS_TOKEN (a viewer) and EVENTBUS_PUBLISHER_TOKEN.
import { StrictMode, useEffect, useState } from "react";
import { cleanup, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, test } from "vitest";
import { useEventBus, useEvents, useStream } from "eventbus-client/react";

const { EVENTBUS_URL: url, EVENTBUS_TOKEN: token, EVENTBUS_PUBLISHER_TOKEN: publisher } = process.env;

afterEach(cleanup);

async function publish(type, data, extra = {}) {
  const response = await fetch(`${url}/api/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publisher}`, "Content-Type": "application/json" },
    body: JSON.stringify({ type, data, ...extra }),
  });
  const body = await response.json();
  expect(response.status, JSON.stringify(body)).toBe(202);
  return body;
}

const texts = (testId) => [...screen.getByTestId(testId).children].map((li) => li.textContent);

describe.skipIf(!url)("against eventbus serve", () => {
  test("useEvents shows live monitoring events in order, under StrictMode", async () => {
    function Activity() {
      const { bus, state } = useEventBus({ url, namespace: "/monitoring", token });
      const events = useEvents(bus, ["agent_started", "agent_completed"], { limit: 3 });
      return (
        <div>
          <p data-testid="state">{state}</p>
          <ol data-testid="events">{events.map((e) => <li key={e.id}>{`${e.type} ${e.data.agent_name}`}</li>)}</ol>
        </div>
      );
    }
    render(<StrictMode><Activity /></StrictMode>);
    await waitFor(() => expect(screen.getByTestId("state").textContent).toBe("connected"), { timeout: 10000 });
    // The server put the client in room monitoring before it answered the connect.
    for (const name of ["a", "b", "c", "d"]) await publish("agent_started", { agent_name: name });
    await publish("tool_executed", { agent_name: "d", tool: "search" });
    await publish("agent_completed", { agent_name: "d", status: "ok" });
    await waitFor(() => expect(texts("events")).toEqual(["agent_started c", "agent_started d", "agent_completed d"]),
                  { timeout: 10000 });
  });

  test("a chat message sent at mount reaches the sender; useStream shows the agent's answer", async () => {
    const session = `react-${Date.now()}`;
    function Chat() {
      const { bus } = useEventBus({ url, namespace: "/chat", token, rooms: [`session:${session}`] });
      const [ack, setAck] = useState(null);
      useEffect(() => {
        bus.send("chat_message", { session_id: session, message: "hello at mount" }).then(setAck, (err) => setAck(err));
      }, [bus]);
      const messages = useEvents(bus, "chat_message");
      const answer = useStream(bus, { session_id: session });
      return (
        <div>
          <p data-testid="ack">{ack ? (ack.ok ? `seq ${ack.seq}` : `error ${ack.code}`) : ""}</p>
          <ol data-testid="messages">{messages.map((m) => <li key={m.id}>{m.data.message}</li>)}</ol>
          <p data-testid="answer" data-done={String(answer.done)}>{answer.text}</p>
        </div>
      );
    }
    render(<Chat />);
    await waitFor(() => expect(screen.getByTestId("ack").textContent).toMatch(/^seq \d+$/), { timeout: 10000 });
    await waitFor(() => expect(texts("messages")).toEqual(["hello at mount"]), { timeout: 10000 });
    await publish("chat_response", { message: "an answer", agent: "writer" }, { session_id: session });
    await waitFor(() => expect(screen.getByTestId("answer").textContent).toBe("an answer"), { timeout: 10000 });
    expect(screen.getByTestId("answer").dataset.done).toBe("true");
  });
});
