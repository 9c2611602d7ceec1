// The eventbus live page: agent activity, health and performance, alerts, connections and
// rooms, and a chat panel for one session. Two Socket.IO connections (/monitoring and
// /chat) through EventBusClient, which resumes every room after a reconnect; the server's
// status API is polled for connection and room counts. Every value from the wire is shown
// with textContent, never parsed as HTML.

import { EventBusClient } from "../../clients/js/eventbus-client.js";

const MAX_TIMELINE = 300;
const MAX_ALERTS = 100;
const MAX_POINTS = 60;
const STATUS_EVERY_MS = 3000;
const TOKEN_KEY = "eventbus.token";

const $ = (id) => document.getElementById(id);
const root = (document.body.dataset.root || "").replace(/\/+$/, "");
const origin = window.location.origin;

/** A DOM element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const time = (iso) => h("time", { datetime: iso }, (iso || "").slice(11, 19) || "--:--:--");
const str = (value) => (value === undefined || value === null ? "" : String(value));
const ms = (value) => (typeof value === "number" ? (value >= 1000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`) : "");

function prepend(list, item, max) {
  list.prepend(item);
  while (list.children.length > max) list.lastElementChild.remove();
}

// -- token ----------------------------------------------------------------------------

function takeTokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    // Do not leave the token in the address bar, the history or a screenshot.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The claims of a JWT, for display only (the server verifies it). */
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

// -- connection status ----------------------------------------------------------------

const connection = { clients: [], resumed: false, refused: null };

function showConnection() {
  const pill = $("conn");
  const states = connection.clients.map((c) => c.state);
  let state;
  if (connection.refused) state = "refused";
  else if (!states.length || states.every((s) => s === "disconnected")) state = "offline";
  else if (states.includes("reconnecting") || states.includes("disconnected")) state = "reconnecting";
  else if (states.includes("connecting")) state = "connecting";
  else state = connection.resumed ? "resumed" : "connected";
  pill.dataset.state = state;
  pill.textContent = connection.refused ? `refused: ${connection.refused}` : state;
  pill.title = state === "resumed"
    ? `reconnected and resumed every room without a gap (${new Date().toLocaleTimeString()})`
    : "Socket.IO connection";
}

function track(client) {
  connection.clients.push(client);
  client.onStateChange((state, previous) => {
    if (state === "connected" && previous === "reconnecting") connection.resumed = true;
    if (state === "connected") connection.refused = null;
    showConnection();
  });
  showConnection();
  return client;
}

function onClientError(err) {
  if (err && ["unauthorized", "token_expired", "forbidden"].includes(err.code)) {
    connection.refused = err.code;
    showConnection();
    signIn(`${err.code}: ${err.message}`);
  }
}

// -- agent activity ---------------------------------------------------------------------

const agents = new Map();

function agentChip(name, state) {
  if (!name) return;
  let chip = agents.get(name);
  if (!chip) {
    chip = h("span", { class: "agent" }, name);
    agents.set(name, chip);
    $("agents").append(chip);
    $("agent-count").textContent = `${agents.size} agents`;
  }
  chip.dataset.state = state;
}

function durationBar(duration, failed) {
  const bar = h("span", { class: `dur${failed ? " failed" : ""}` });
  bar.style.width = `${Math.min(60, 4 + Math.sqrt(duration) * 1.2)}px`; // CSSOM: allowed by the CSP
  return bar;
}

function timelineRow(env, text, { failed = false, duration = null } = {}) {
  const badge = h("span", { class: `type type-${failed ? "failed" : env.type}` }, env.type);
  const bar = duration === null ? h("span")
    : h("span", { class: "dur-wrap", title: ms(duration) },
      durationBar(duration, failed),
      " ", h("span", { class: "dur-label" }, ms(duration)));
  prepend($("timeline"), h("li", { dataset: { type: env.type, seq: str(env.seq) } }, time(env.timestamp), badge, text, bar), MAX_TIMELINE);
}

function onAgentEvent(env) {
  const d = env.data || {};
  const agent = d.agent_name || env.source || "agent";
  switch (env.type) {
    case "agent_started":
      agentChip(agent, "running");
      timelineRow(env, h("span", {}, h("b", {}, agent), " started", d.task ? ` — ${d.task}` : ""));
      break;
    case "agent_completed": {
      const failed = d.status && !["ok", "success", "succeeded", "completed", "done"].includes(d.status);
      agentChip(agent, failed ? "failed" : "done");
      timelineRow(env, h("span", {}, h("b", {}, agent), ` completed (${str(d.status || "ok")})`),
        { failed, duration: typeof d.duration_ms === "number" ? d.duration_ms : null });
      break;
    }
    case "tool_executed": {
      const failed = d.ok === false;
      timelineRow(env, h("span", {}, h("b", {}, agent), " ran ", h("code", {}, str(d.tool)),
        failed ? ` — failed${d.error ? `: ${d.error}` : ""}` : ""),
      { failed, duration: typeof d.duration_ms === "number" ? d.duration_ms : null });
      break;
    }
    case "agent_handoff":
      agentChip(d.from_agent, "done");
      agentChip(d.to_agent, "running");
      timelineRow(env, h("span", {}, h("b", {}, str(d.from_agent)), " → ", h("b", {}, str(d.to_agent)),
        d.reason ? ` — ${d.reason}` : ""));
      break;
    default: {
      // A type a plugin registered: its description from the registry, and its data.
      const spec = eventTypes.get(env.type);
      const summary = JSON.stringify(d);
      timelineRow(env, h("span", { title: spec ? spec.description : "" }, h("b", {}, str(env.source || env.user_id || "-")),
        " ", summary.length > 160 ? `${summary.slice(0, 159)}…` : summary));
      break;
    }
  }
}

// -- event types, from the server's registry --------------------------------------------

/** name -> {name, category, namespace, room, description, ...} (GET /api/event-types). */
const eventTypes = new Map();

async function loadEventTypes() {
  try {
    const response = await fetch(`${root}/api/event-types`, { headers: { Authorization: `Bearer ${session.token}` } });
    if (!response.ok) return;
    for (const spec of (await response.json()).types || []) eventTypes.set(spec.name, spec);
  } catch {
    // The page still shows the built-in types; unknown ones appear without a description.
  }
}

/** Renderers of the types the page draws in a place of their own; every other type on
 * /monitoring goes to the activity timeline. */
const MONITORING_VIEWS = {
  health_update: (env) => onHealth(env),
  performance_update: (env) => onPerformance(env),
  alert_created: (env) => onAlert(env),
  user_joined: (env) => onPresence(env),
  user_left: (env) => onPresence(env),
};

function onMonitoring(type, env) {
  const view = MONITORING_VIEWS[type];
  if (view) view(env);
  else if (env && typeof env === "object" && env.type === type) onAgentEvent(env);
}

// -- health and performance ---------------------------------------------------------------

const healthRows = new Map();
const series = new Map();

function onHealth(env) {
  const d = env.data || {};
  const component = str(d.component || env.source || "system");
  const status = str(d.status || "ok").toLowerCase();
  let row = healthRows.get(component);
  if (!row) {
    row = {
      status: h("span"),
      strip: h("span", { class: "strip", title: "recent samples, newest right" }),
    };
    healthRows.set(component, row);
    $("health").append(h("div", { class: "row", dataset: { component } }, h("span", {}, component), row.status, row.strip));
  }
  row.status.className = `status-${status}`;
  row.status.textContent = status;
  row.strip.append(h("i", { class: status, title: `${status} ${(env.timestamp || "").slice(11, 19)}` }));
  while (row.strip.children.length > 40) row.strip.firstElementChild.remove();
  for (const [key, value] of Object.entries(d)) {
    if (typeof value === "number") addPoint(`${component}.${key}`, value);
  }
}

function onPerformance(env) {
  const metrics = (env.data && env.data.metrics) || {};
  for (const [key, value] of Object.entries(metrics)) {
    if (typeof value === "number" && Number.isFinite(value)) addPoint(key, value);
  }
}

const SVG = "http://www.w3.org/2000/svg";

function addPoint(name, value) {
  let s = series.get(name);
  if (!s) {
    const line = document.createElementNS(SVG, "polyline");
    const area = document.createElementNS(SVG, "polygon");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${MAX_POINTS - 1} 100`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.append(area, line);
    const current = h("span", { class: "value" });
    $("perf").append(h("div", { class: "chart", dataset: { metric: name } },
      h("div", { class: "label" }, h("span", {}, name), current), svg));
    s = { points: [], line, area, current };
    series.set(name, s);
  }
  s.points.push(value);
  if (s.points.length > MAX_POINTS) s.points.shift();
  const lo = Math.min(...s.points);
  const hi = Math.max(...s.points);
  const span = hi - lo || 1;
  const offset = MAX_POINTS - s.points.length;
  const coords = s.points.map((v, i) => `${offset + i},${(96 - ((v - lo) / span) * 90).toFixed(1)}`);
  s.line.setAttribute("points", coords.join(" "));
  s.area.setAttribute("points", `${offset},100 ${coords.join(" ")} ${MAX_POINTS - 1},100`);
  s.current.textContent = Number.isInteger(value) ? String(value) : value.toFixed(2);
}

// -- alerts ---------------------------------------------------------------------------------

let alertCount = 0;

function onAlert(env) {
  const d = env.data || {};
  const severity = str(d.severity || "info").toLowerCase();
  alertCount += 1;
  $("alert-count").textContent = String(alertCount);
  prepend($("alerts"), h("li", { dataset: { severity } }, time(env.timestamp),
    h("span", { class: `sev sev-${severity}` }, severity), h("span", {}, str(d.message))), MAX_ALERTS);
}

// -- presence, connections and rooms ----------------------------------------------------------

const presence = new Map(); // room -> [user]

function onPresence(env) {
  const d = env.data || {};
  if (Array.isArray(d.presence) && d.room) setPresence(d.room, d.presence);
  const verb = env.type === "user_joined" ? "joined" : "left";
  timelineRow(env, h("span", {}, h("b", {}, str(d.user_id)), ` ${verb} `, h("code", {}, str(d.room))));
}

function setPresence(room, users) {
  presence.set(room, users);
  if (room === chat.room) $("chat-presence").textContent = users.length ? `here: ${users.join(", ")}` : "";
  renderRooms();
}

let lastStatus = null;

function renderRooms() {
  const body = $("rooms");
  body.replaceChildren();
  // Per-room figures are in the status only for admins (`detail`); everyone else sees the
  // counts of the fixed rooms and the rooms this page is in.
  const detail = (lastStatus && lastStatus.detail) || {};
  const byNamespace = detail.presence || {};
  const clients = detail.rooms || (lastStatus && lastStatus.rooms) || {};
  const rows = new Map();
  for (const [namespace, rooms] of Object.entries(byNamespace)) {
    for (const room of Object.keys(rooms)) rows.set(room, namespace);
  }
  for (const room of presence.keys()) if (!rows.has(room)) rows.set(room, room.startsWith("session:") ? "/chat" : "");
  for (const [room, namespace] of [...rows].sort()) {
    const users = presence.get(room);
    const counted = byNamespace[namespace] && byNamespace[namespace][room];
    body.append(h("tr", { dataset: { room } }, h("td", {}, h("code", {}, room)), h("td", {}, namespace),
      h("td", {}, str(clients[room] ?? "")),
      h("td", {}, users ? users.join(", ") : counted !== undefined ? `${counted} users` : "")));
  }
}

function renderServer(status) {
  const ns = status.namespaces || {};
  const counters = status.counters || {};
  const drops = Object.values(status.drops || {}).reduce((a, b) => a + b, 0);
  const failures = Object.values(status.failures || {}).reduce((a, b) => a + b, 0);
  const items = [
    ["status", status.status], ["mode", status.async_mode], ["connections", status.connections],
    ...Object.entries(ns).map(([name, n]) => [name, n]),
    ["events", counters.emitted ?? 0], ["drops", drops], ["failures", failures],
    ["uptime", `${Math.round(status.uptime_s || 0)} s`],
  ];
  $("server").replaceChildren(...items.map(([k, v]) => h("span", { dataset: { key: k } }, `${k} `, h("b", {}, str(v)))));
  $("totals").textContent = `${status.connections} connections · ${counters.emitted ?? 0} events`;
}

async function pollStatus() {
  try {
    // An admin token adds the per-room detail; the public status has counts only.
    const headers = session.isAdmin ? { Authorization: `Bearer ${session.token}` } : {};
    const response = await fetch(`${root}/api/websocket/status`, { cache: "no-store", headers });
    if (response.ok) {
      lastStatus = await response.json();
      renderServer(lastStatus);
      renderRooms();
    }
  } catch {
    // The connection pill already shows that the server is unreachable.
  }
  if (session.isAdmin) {
    try {
      const response = await fetch(`${root}/api/connections`, {
        cache: "no-store", headers: { Authorization: `Bearer ${session.token}` },
      });
      if (response.ok) renderConnections((await response.json()).connections || []);
    } catch { /* shown on the next poll */ }
  }
}

function renderConnections(list) {
  const rows = list.map((c) => h("tr", {}, h("td", {}, str(c.user_id)), h("td", {}, str(c.namespace)),
    h("td", {}, str(c.transport)), h("td", {}, (c.rooms || []).join(", "))));
  $("connections").replaceChildren(h("table", { class: "conn-list" },
    h("thead", {}, h("tr", {}, h("th", {}, "user"), h("th", {}, "namespace"), h("th", {}, "transport"), h("th", {}, "rooms"))),
    h("tbody", {}, rows)));
}

// -- chat -------------------------------------------------------------------------------------

const chat = { client: null, room: null, sessionId: null, typingTimer: null, typingSent: false, typists: new Map() };

function onChat(env) {
  if (env.room !== chat.room) return;
  const list = $("messages");
  const seq = Number.isInteger(env.seq) ? env.seq : Infinity;
  const children = [...list.children];
  if (children.some((li) => li.dataset.id === env.id)) return; // already shown (history and live overlap)
  const d = env.data || {};
  const mine = env.type === "chat_message" && env.user_id === session.user;
  const who = env.type === "chat_response" ? str(d.agent || env.source || "agent") : str(env.user_id || env.source || "user");
  if (env.type === "chat_response") clearTypist(who);
  const li = h("li", { class: `${mine ? "mine" : ""} ${env.type === "chat_response" ? "agent" : ""}`.trim(),
                       dataset: { type: env.type, id: env.id, seq: str(env.seq) } },
  h("span", { class: "who" }, `${who} · `, time(env.timestamp)), str(d.message));
  // Keep seq order: history fetched after the join may arrive after newer live messages.
  const later = children.find((other) => Number(other.dataset.seq) > seq);
  list.insertBefore(li, later || null);
  while (list.children.length > 200) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function onTyping(env) {
  if (env.room !== chat.room) return;
  const d = env.data || {};
  const who = str(d.user || env.user_id || env.source);
  if (!who || who === session.user) return;
  if (d.typing === false) clearTypist(who);
  else {
    clearTimeout(chat.typists.get(who));
    chat.typists.set(who, setTimeout(() => clearTypist(who), 6000));
  }
  renderTyping();
}

function clearTypist(who) {
  clearTimeout(chat.typists.get(who));
  chat.typists.delete(who);
  renderTyping();
}

function renderTyping() {
  const names = [...chat.typists.keys()];
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

async function joinSession(sessionId) {
  const room = `session:${sessionId}`;
  if (room === chat.room) return;
  const previous = chat.room;
  chat.room = room;
  chat.sessionId = sessionId;
  $("messages").replaceChildren();
  chat.typists.clear();
  renderTyping();
  $("chat-error").textContent = "";
  if (previous) chat.client.leave(previous).catch(() => {});
  try {
    const ack = await chat.client.join(room);
    if (ack && Array.isArray(ack.presence)) setPresence(room, ack.presence);
    await loadHistory(room);
  } catch (err) {
    $("chat-error").textContent = `cannot join ${room}: ${err.code || ""} ${err.message}`;
  }
}

/** The session's earlier messages, so a page opened mid-conversation shows them. */
async function loadHistory(room) {
  try {
    const response = await fetch(`${root}/api/events?room=${encodeURIComponent(room)}&after=0&limit=200`, {
      cache: "no-store", headers: { Authorization: `Bearer ${session.token}` },
    });
    if (!response.ok) return;
    const body = await response.json();
    for (const env of body.events || []) {
      if (env.type === "chat_message" || env.type === "chat_response") onChat(env);
    }
  } catch { /* history is a convenience */ }
}

function sendTyping(typing) {
  if (!chat.sessionId || chat.typingSent === typing) return;
  chat.typingSent = typing;
  chat.client.send("typing_indicator", { session_id: chat.sessionId, typing }).catch(() => {});
}

function wireChat() {
  $("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("chat-input");
    const message = input.value.trim();
    if (!message || !chat.sessionId) return;
    $("chat-error").textContent = "";
    clearTimeout(chat.typingTimer);
    sendTyping(false);
    try {
      await chat.client.send("chat_message", { session_id: chat.sessionId, message });
      input.value = "";
    } catch (err) {
      $("chat-error").textContent = `${err.code || "error"}: ${err.message}`;
    }
  });
  $("chat-input").addEventListener("input", () => {
    sendTyping(true);
    clearTimeout(chat.typingTimer);
    chat.typingTimer = setTimeout(() => sendTyping(false), 2500);
  });
  $("session-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("session").value.trim();
    if (value) joinSession(value);
  });
}

// -- start ------------------------------------------------------------------------------------

const session = { token: null, user: null, isAdmin: false, started: false };

function signIn(message = "") {
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("token").focus();
}

function start(token) {
  const claims = claimsOf(token);
  session.token = token;
  session.user = claims.sub || null;
  session.isAdmin = Array.isArray(claims.roles) && claims.roles.includes("admin");
  $("whoami").textContent = session.user ? `${session.user}${session.isAdmin ? " (admin)" : ""}` : "";
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  if (session.started) {
    for (const client of connection.clients) client.connect();
    return;
  }
  session.started = true;
  const options = { url: origin, token: () => session.token, onError: onClientError,
                    socketOptions: { path: `${root}/socket.io/` } };

  loadEventTypes();
  const monitor = track(new EventBusClient({ ...options, namespace: "/monitoring" }));
  monitor.on("*", onMonitoring);  // every type the server sends, plugins' included
  monitor.join("monitoring").then((ack) => ack && Array.isArray(ack.presence) && setPresence("monitoring", ack.presence), () => {});

  chat.client = track(new EventBusClient({ ...options, namespace: "/chat" }));
  chat.client.on("chat_message", onChat);
  chat.client.on("chat_response", onChat);
  chat.client.on("typing_indicator", onTyping);
  chat.client.on("user_joined", onPresence);
  chat.client.on("user_left", onPresence);
  wireChat();
  joinSession($("session").value.trim() || "demo");

  pollStatus();
  setInterval(pollStatus, STATUS_EVERY_MS);
}

function main() {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    connection.refused = null;
    start(token);
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    for (const client of connection.clients) client.close();
    $("app").hidden = true;
    $("signout").hidden = true;
    signIn();
  });
  window.addEventListener("hashchange", () => {
    const token = takeTokenFromFragment();
    if (token && token !== session.token) start(token);
  });
  const token = takeTokenFromFragment();
  if (token) start(token);
  else signIn();
}

main();
