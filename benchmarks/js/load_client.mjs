// Load generator worker: opens N socket.io-client connections, records the latency of every
// bench event (receive time - the "t" stamped by the server's agent) in a log-bucket
// histogram, and answers JSON-line commands on stdin (protocol shared with load_client.py).
//
//   node load_client.mjs '{"url": "...", "namespace": "/monitoring", "token": "...", "clients": 100}'
//   stdin : {"cmd": "arm", "run": "r1", "expect": 500} | {"cmd": "collect", "timeout": 10, "idle": 3}
//           {"cmd": "quiet", "idle": 1, "timeout": 30} | {"cmd": "stats"} | {"cmd": "quit"}
//   stdout: one JSON object per line: ready, armed, result, stats
import { io } from "socket.io-client";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";

const cfg = JSON.parse(process.argv[2]);
const BUCKET_BASE = 0.01; // ms
const BUCKET_STEP = Math.log(1.02);
const now = () => performance.timeOrigin + performance.now();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let run = null;
let expect = 0;
let received = 0;
let hist = new Map();
let maxMs = 0;
let firstAt = 0;
let lastAt = 0;
let cpuStart = process.cpuUsage();
let wallStart = now();
const disconnects = {};
let connected = 0;
let connectFailed = 0;
const sockets = [];

let lastAnyAt = 0;
let batches = 0;

function record(envelope) {
  const data = envelope && envelope.data;
  const t = now();
  lastAnyAt = t;
  if (!data || data.r !== run) return;
  const ms = Math.max(t - data.t * 1000, 0.001);
  const idx = Math.max(0, Math.floor(Math.log(ms / BUCKET_BASE) / BUCKET_STEP));
  hist.set(idx, (hist.get(idx) || 0) + 1);
  if (ms > maxMs) maxMs = ms;
  if (!firstAt) firstAt = t;
  lastAt = t;
  received += 1;
}

function openClient() {
  return new Promise((resolve) => {
    const socket = io(cfg.url + (cfg.namespace || "/"), {
      // batch: ask eventbus for `events` packets (lists of envelopes) when it batches.
      auth: cfg.token ? (cfg.batch ? { token: cfg.token, batch: true } : { token: cfg.token }) : {},
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: 60000,
    });
    let settled = false;
    socket.on("connect", () => {
      connected += 1;
      if (!settled) { settled = true; resolve(true); }
    });
    socket.on("connect_error", () => {
      connectFailed += 1;
      if (!settled) { settled = true; resolve(false); }
    });
    socket.on("disconnect", (reason) => {
      connected -= 1;
      disconnects[reason] = (disconnects[reason] || 0) + 1;
    });
    socket.on(cfg.event || "tool_executed", record);
    // Batched delivery: one "events" packet whose single argument is a list of envelopes.
    socket.on("events", (list) => {
      if (!Array.isArray(list)) return;
      batches += 1;
      for (const e of list) record(e);
    });
    sockets.push(socket);
  });
}

async function connectAll() {
  const started = now();
  const wave = cfg.concurrency || 50;
  let opened = 0;
  while (opened < cfg.clients) {
    const n = Math.min(wave, cfg.clients - opened);
    await Promise.all(Array.from({ length: n }, openClient));
    opened += n;
  }
  // Give the server a moment to finish the default-room joins it does after connect.
  await new Promise((r) => setTimeout(r, cfg.settle_ms ?? 300));
  out({ type: "ready", connected, failed: connectFailed, connect_s: (now() - started) / 1000 });
}

function snapshot() {
  const cpu = process.cpuUsage(cpuStart);
  return {
    received, expect_total: expect * cfg.clients, hist: Object.fromEntries(hist), max_ms: maxMs,
    first_at: firstAt / 1000, last_at: lastAt / 1000, cpu_s: (cpu.user + cpu.system) / 1e6,
    wall_s: (now() - wallStart) / 1000, connected, disconnects: { ...disconnects }, batches,
  };
}

async function collect(timeout, idle) {
  const deadline = now() + timeout * 1000;
  const armedAt = now();
  while (now() < deadline && received < expect * cfg.clients) {
    const since = lastAt || armedAt;
    if (now() - since > idle * 1000) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  out({ type: "result", ...snapshot() });
}

const rl = createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (!line.trim()) return;
  const msg = JSON.parse(line);
  if (msg.cmd === "arm") {
    run = msg.run; expect = msg.expect; received = 0; hist = new Map(); maxMs = 0; firstAt = 0; lastAt = 0;
    batches = 0;
    cpuStart = process.cpuUsage(); wallStart = now();
    out({ type: "armed", run });
  } else if (msg.cmd === "collect") {
    await collect(msg.timeout ?? 30, msg.idle ?? 3);
  } else if (msg.cmd === "quiet") {
    // Wait until no bench packet (of any run) arrived for `idle` seconds: the server drained.
    const deadline = now() + (msg.timeout ?? 30) * 1000;
    const since = now();
    while (now() < deadline && now() - Math.max(lastAnyAt, since) < (msg.idle ?? 1) * 1000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    out({ type: "quiet", drained: now() < deadline });
  } else if (msg.cmd === "stats") {
    out({ type: "stats", ...snapshot() });
  } else if (msg.cmd === "quit") {
    for (const s of sockets) s.disconnect();
    setTimeout(() => process.exit(0), 100);
  }
});
rl.on("close", () => process.exit(0));
connectAll();
