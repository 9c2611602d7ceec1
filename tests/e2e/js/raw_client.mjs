// The official socket.io-client, used exactly as a frontend would, with no helper:
//   node raw_client.mjs <url> <token|-> <namespace>
// Prints connect / connect_error / disconnect and every server event as JSON lines.
// stdin commands: {"cmd": "emit", "id", "event", "data"} -> {"kind": "ack", "id", "ack"};
//                 {"cmd": "close"} -> disconnect and exit.
import { io } from "socket.io-client";
import { commands, out } from "./lines.mjs";

const [url, token, namespace = "/monitoring"] = process.argv.slice(2);
const socket = io(url + namespace, {
  auth: token && token !== "-" ? { token } : {},
  transports: ["websocket"],
  reconnection: false,
});

socket.on("connect", () => out({ kind: "connect", sid: socket.id }));
socket.on("connect_error", (err) => {
  out({ kind: "connect_error", message: err.message, data: err.data ?? null, active: socket.active });
  if (!socket.active) process.exit(0);
});
socket.on("disconnect", (reason) => out({ kind: "disconnect", reason }));
socket.onAny((event, ...args) => out({ kind: "event", event, args }));

commands(async (command) => {
  if (command.cmd === "emit") {
    const ack = await socket.timeout(10000).emitWithAck(command.event, command.data);
    out({ kind: "ack", id: command.id, ack });
  } else if (command.cmd === "close") {
    socket.disconnect();
    out({ kind: "closed" });
    process.exit(0);
  } else {
    out({ kind: "unknown_command", command });
  }
}, () => {
  socket.disconnect();
  process.exit(0);
});
