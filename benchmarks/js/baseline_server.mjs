// Peer baseline: a plain Node Socket.IO 4 server doing the bench broadcast. Clients of
// /monitoring join room "monitoring" on connect; POST /bench/emit?count=N&rate=R&run=ID
// makes an in-process "agent" emit N envelopes at R events/s, each stamped with the time it
// was due, exactly as benchmarks/bench_server.py does for eventbus.
//
//   node baseline_server.mjs --port 5099 [--async-mode ignored]
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "socket.io";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const port = Number(arg("--port", "5099"));
let seq = 0;

const http = createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/api/health") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: "ok", server: "node-socket.io" }));
  } else if (url.pathname === "/bench/emit" && req.method === "POST") {
    const count = Number(url.searchParams.get("count") || "1");
    const rate = Number(url.searchParams.get("rate") || "1000");
    const run = url.searchParams.get("run") || "r";
    agent(count, rate, run);
    res.writeHead(202, { "content-type": "application/json" });
    res.end(JSON.stringify({ started: count }));
  } else {
    res.writeHead(404);
    res.end();
  }
});
const io = new Server(http, { cors: { origin: false }, pingInterval: 25000, pingTimeout: 20000 });
const monitoring = io.of("/monitoring");
monitoring.on("connection", (socket) => socket.join("monitoring"));

function envelope(i, due, run) {
  seq += 1;
  return {
    id: "evt_" + randomUUID().replaceAll("-", ""), type: "tool_executed",
    data: { t: due / 1000, i, r: run }, timestamp: new Date().toISOString(), room: "monitoring",
    seq, user_id: null, session_id: null, source: "bench-agent",
  };
}

function agent(count, rate, run) {
  const start = Date.now();
  let i = 0;
  const tick = () => {
    const dueNow = Math.min(count, Math.floor(((Date.now() - start) * rate) / 1000) + 1);
    while (i < dueNow) {
      monitoring.to("monitoring").emit("tool_executed", envelope(i, start + (i * 1000) / rate, run));
      i += 1;
    }
    if (i < count) setTimeout(tick, Math.max(0, start + (i * 1000) / rate - Date.now()));
  };
  tick();
}

http.listen(port, "127.0.0.1", () => console.log(`node socket.io baseline on ${port}`));
