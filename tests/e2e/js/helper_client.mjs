// clients/js/eventbus-client.js against a real server:
//   node --preserve-symlinks helper_client.mjs <url> <token> <namespace> [room ...]
// Prints state changes, every delivered event, resyncs and errors as JSON lines.
// stdin commands: {"cmd": "join"|"leave", "id", "room"}, {"cmd": "send", "id", "event", "data"},
//                 {"cmd": "positions", "id"}, {"cmd": "close"}.
import { createEventBusClient } from "eventbus-client";
import { commands, out } from "./lines.mjs";

const [url, token, namespace = "/monitoring", ...rooms] = process.argv.slice(2);

const fetches = [];
const client = createEventBusClient({
  url,
  namespace,
  token,
  rooms,
  fetch: async (resource, init) => {
    const response = await globalThis.fetch(resource, init);
    fetches.push(String(resource));
    out({ kind: "fetch", url: String(resource).replace(url, ""), status: response.status });
    return response;
  },
  onStateChange: (state, previous) => out({ kind: "state", state, previous }),
  onResync: (info) => out({ kind: "resync", ...info }),
  onError: (err) => out({ kind: "error", code: err.code ?? null, message: String(err.message || err) }),
});
client.on("*", (type, envelope) => out({ kind: "deliver", type, envelope }));

async function reply(id, promise) {
  try {
    out({ kind: "ack", id, ack: await promise });
  } catch (err) {
    out({ kind: "ack", id, error: { code: err.code, message: err.message } });
  }
}

commands(async (command) => {
  switch (command.cmd) {
    case "join": return reply(command.id, client.join(command.room));
    case "leave": return reply(command.id, client.leave(command.room));
    case "send": return reply(command.id, client.send(command.event, command.data));
    case "positions": return out({ kind: "positions", id: command.id, positions: client.positions(), stats: client.stats });
    case "close":
      client.close();
      out({ kind: "closed", stats: client.stats });
      return process.exit(0);
    default: return out({ kind: "unknown_command", command });
  }
}, () => {
  client.close();
  process.exit(0);
});
