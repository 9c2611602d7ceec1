// clients/js/eventbus-client.js against a real server:
//   node --preserve-symlinks helper_client.mjs <url> <token> <namespace> [room ...] [--options=JSON] [--send=JSON]
// Prints state changes, every delivered event (with the epoch its room then counts in),
// resyncs and errors as JSON lines. --options are more client options (e.g. socketOptions).
// --send={"event", "data"} sends that event right after creating the client (ack id "start").
// stdin commands: {"cmd": "join"|"leave", "id", "room"}, {"cmd": "send", "id", "event", "data"},
//                 {"cmd": "positions", "id"}, {"cmd": "close"}.
import { createEventBusClient } from "eventbus-client";
import { commands, out } from "./lines.mjs";

const args = process.argv.slice(2);
const flag = (name) => args.filter((a) => a.startsWith(`--${name}=`)).map((a) => JSON.parse(a.slice(name.length + 3)));
const extra = flag("options");
const [url, token, namespace = "/monitoring", ...rooms] = args.filter((a) => !a.startsWith("--"));

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
  ...Object.assign({}, ...extra),
});
client.on("*", (type, envelope) => out({
  kind: "deliver", type, envelope, epoch: envelope && client.positions()[envelope.room]?.epoch,
}));

async function reply(id, promise) {
  try {
    out({ kind: "ack", id, ack: await promise });
  } catch (err) {
    out({ kind: "ack", id, error: { code: err.code, message: err.message } });
  }
}

for (const { event, data } of flag("send")) reply("start", client.send(event, data));

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
