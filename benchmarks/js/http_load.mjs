// HTTP publish load: `concurrency` keep-alive loops POSTing the same JSON body for
// `duration` seconds; prints one JSON line with requests/s and latency percentiles.
//
//   node http_load.mjs '{"url": "http://127.0.0.1:5050/api/events", "token": "...",
//                        "body": {...}, "concurrency": 8, "duration": 5}'
import http from "node:http";
import { performance } from "node:perf_hooks";

const cfg = JSON.parse(process.argv[2]);
const target = new URL(cfg.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.concurrency });
const body = JSON.stringify(cfg.body);
const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
if (cfg.token) headers.authorization = `Bearer ${cfg.token}`;
const latencies = [];
const statuses = {};
let errors = 0;

function post() {
  return new Promise((resolve) => {
    const started = performance.now();
    const req = http.request({ host: target.hostname, port: target.port, path: target.pathname,
      method: "POST", headers, agent }, (res) => {
      res.resume();
      res.on("end", () => {
        statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
        latencies.push(performance.now() - started);
        resolve();
      });
    });
    req.on("error", () => { errors += 1; resolve(); });
    req.end(body);
  });
}

const cpuStart = process.cpuUsage();
const started = performance.now();
const deadline = started + cfg.duration * 1000;
await Promise.all(Array.from({ length: cfg.concurrency }, async () => {
  while (performance.now() < deadline) await post();
}));
const seconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);
const pct = (q) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null;
const cpu = process.cpuUsage(cpuStart);
console.log(JSON.stringify({
  requests: latencies.length, errors, statuses, seconds, rps: latencies.length / seconds,
  p50_ms: pct(0.5), p99_ms: pct(0.99), cpu_s: (cpu.user + cpu.system) / 1e6,
}));
agent.destroy();
