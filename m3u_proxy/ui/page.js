// The status page: polls the JSON API once a second and renders it.
// URLs are relative to the page, so it works under root_path and behind a reverse proxy.
// Every value from the API is written with textContent: names come from provider playlists.
"use strict";

const TOKEN_KEY = "m3u-proxy.api-token";
const VIEWER_EVENTS = "client_connected,client_disconnected";
const PROVIDERS_RETRY_MS = 30000; // after a 404: this proxy has no /providers yet
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = 0;
let busy = false; // one request round at a time, whoever asks for it
let pressed = false; // a pointer is down: a row must not be replaced under a click
let providersMissingAt = 0;
let names = new Map(); // stream_id -> display name, from the last /stats

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// -- formatting ------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  for (n = Number(n) || 0; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return (i ? n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) : n) + " " + units[i];
}

function bitrate(bps) {
  const n = Number(bps) || 0;
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " Mbit/s";
  if (n >= 1e3) return (n / 1e3).toFixed(0) + " kbit/s";
  return n.toFixed(0) + " bit/s";
}

function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  s %= 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function since(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? "" : duration((Date.now() - t) / 1000);
}

// Only the host (and port) of an upstream URL: never user:pass, paths or queries.
function host(url) {
  try {
    return new URL(url).host || "?";
  } catch {
    return "?";
  }
}

// Free text (a failure reason) with every URL in it reduced to its host.
function hostsOnly(text) {
  return String(text).replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"'<>]+/gi, (url) => host(url));
}

function streamName(stream) {
  const m = stream.metadata || {};
  return m.name || m["tvg-name"] || m.title || m.channel || stream.stream_id;
}

// -- the API ---------------------------------------------------------------------

async function api(path, method = "GET") {
  const headers = { Accept: "application/json" };
  const sent = token;
  if (sent) headers["X-API-Token"] = sent;
  const response = await fetch(path, { method, headers, cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    if (sent === token) showLogin(response.status === 403 ? "That token is not valid." : "");
    throw new Error("auth");
  }
  return response;
}

async function detail(response) {
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return response.statusText;
  }
}

// -- rendering -------------------------------------------------------------------

function cell(tr, label, content, className) {
  const td = el("td", null, className);
  td.setAttribute("data-label", label);
  if (content instanceof Node) td.append(content);
  else td.textContent = content === undefined || content === null ? "" : String(content);
  tr.append(td);
  return td;
}

function twoLines(main, sub) {
  const span = el("span");
  span.append(el("span", main), el("span", sub, "sub"));
  return span;
}

function button(label, className, onClick) {
  const b = el("button", label, className);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function fill(id, rows) {
  $(id).querySelector("tbody").replaceChildren(...rows);
  $(id + "-empty").hidden = rows.length > 0;
  const count = $(id + "-count");
  if (count) count.textContent = rows.length;
}

function renderServer(stats) {
  const cards = [
    ["Version", stats.version],
    ["Uptime", duration(stats.uptime_seconds)],
    ["Viewers", stats.active_clients],
    ["Streams playing", stats.active_streams],
    ["Throughput", bitrate(stats.bandwidth_bps)],
    ["Sent in total", bytes(stats.total_bytes_served)],
    ["Failovers", stats.failovers_total],
    ["Memory", stats.memory_rss_bytes == null ? "n/a" : bytes(stats.memory_rss_bytes)],
  ];
  $("server").replaceChildren(
    ...cards.map(([label, value]) => {
      const div = el("div");
      div.append(el("dt", label), el("dd", value));
      return div;
    }),
  );
}

function renderStreams(stats) {
  const byStream = new Map();
  for (const c of stats.clients) {
    if (!byStream.has(c.stream_id)) byStream.set(c.stream_id, []);
    byStream.get(c.stream_id).push(c);
  }
  const rows = stats.streams
    .filter((s) => s.client_count > 0)
    .map((s) => {
      const clients = byStream.get(s.stream_id) || [];
      const first = Math.min(...clients.map((c) => Date.parse(c.connected_at)));
      const shared = s.shared === true || clients.some((c) => c.shared === true);
      const tr = el("tr");
      cell(tr, "Stream", twoLines(streamName(s), s.stream_id), "name");
      cell(tr, "Kind", s.stream_type);
      const upstream = host(s.current_url);
      const index = s.current_failover_index;
      cell(tr, "Upstream", twoLines(upstream, index < 0 ? "primary" : `backup ${index + 1}`));
      cell(tr, "Viewers", s.client_count, "n");
      cell(tr, "Bitrate", bitrate(s.bandwidth_bps), "n");
      cell(tr, "Uptime", Number.isFinite(first) ? duration((Date.now() - first) / 1000) : "", "n");
      cell(tr, "Failovers", s.failover_attempts, "n");
      cell(tr, "Shared", el("span", shared ? "shared" : "per viewer", shared ? "tag on" : "tag"));
      const act = s.has_failover
        ? button("Fail over now", "danger", () => failover(s))
        : el("span", "no backup", "sub");
      cell(tr, "", act);
      tr.dataset.streamId = s.stream_id;
      return tr;
    });
  fill("streams", rows);
}

function renderViewers(stats) {
  const rows = stats.clients.map((c) => {
    const tr = el("tr");
    cell(tr, "Address", c.ip_address, "mono");
    cell(tr, "User", c.username || "—");
    const ua = cell(tr, "Player", c.user_agent || "—", "ua");
    ua.title = c.user_agent || "";
    cell(tr, "Stream", names.get(c.stream_id) || c.stream_id);
    cell(tr, "Sent", bytes(c.bytes_served), "n");
    cell(tr, "Bitrate", bitrate(c.bandwidth_bps), "n");
    cell(tr, "Connected", since(c.created_at || c.connected_at), "n");
    cell(tr, "Skipped", bytes(c.skipped_bytes || 0), "n");
    cell(tr, "", button("Disconnect", "danger", () => disconnect(c)));
    tr.dataset.clientId = c.client_id;
    return tr;
  });
  fill("viewers", rows);
}

function renderProviders(list) {
  $("providers-section").hidden = list === null;
  if (list === null) return;
  const rows = list.map((p) => {
    const tr = el("tr");
    cell(tr, "Provider", p.name);
    const limit = p.max_connections;
    const slots = el("span", `${p.in_use} / ${limit == null ? "∞" : limit}`);
    if (limit) {
      const bar = el("span", null, p.in_use >= limit ? "bar full" : "bar");
      const fillBar = el("span");
      fillBar.style.width = Math.min(100, (100 * p.in_use) / limit) + "%";
      bar.append(fillBar);
      slots.append(bar);
    }
    cell(tr, "Slots in use", slots);
    cell(tr, "Viewers", Array.isArray(p.viewers) ? p.viewers.length : p.viewers, "n");
    cell(tr, "Rejected", p.rejected_total, "n");
    cell(tr, "Preempted", p.preempted_total, "n");
    cell(tr, "When full", p.on_limit);
    return tr;
  });
  fill("providers", rows);
}

const EVENT_LABELS = {
  failover_triggered: ["Failover", "kind-warn"],
  stream_failed: ["Stream failed", "kind-bad"],
  provider_limit_reached: ["Limit reached", "kind-bad"],
  client_preempted: ["Viewer preempted", "kind-warn"],
  stream_started: ["Stream started", "kind-info"],
  stream_stopped: ["Stream stopped", "kind-info"],
  client_connected: ["Viewer joined", "kind-info"],
  client_disconnected: ["Viewer left", "kind-info"],
};

function eventText(e) {
  const d = e.data || {};
  return hostsOnly(eventFacts(e.event_type, d));
}

function eventFacts(type, d) {
  switch (type) {
    case "failover_triggered":
      return `${d.reason || "?"} → ${host(d.new_url)}`;
    case "stream_failed":
      return [d.reason, d.status].filter((x) => x !== undefined && x !== null).join(" · ");
    case "stream_started":
      return `from ${host(d.url)}`;
    case "stream_stopped":
      return d.reason || "";
    case "client_connected":
      return [d.ip_address, d.username, d.user_agent].filter(Boolean).join(" · ");
    case "client_disconnected":
      return `${d.reason || ""} · ${bytes(d.bytes_served)} in ${duration(d.duration || 0)}`;
    default: // anything else: its plain values
      return Object.entries(d)
        .filter(([k, v]) => k !== "metadata" && v !== null && typeof v !== "object")
        .map(([k, v]) => `${k}: ${v}`)
        .join(" · ");
  }
}

function renderEvents(events) {
  const items = events.map((e) => {
    const li = el("li");
    const [label, kind] = EVENT_LABELS[e.event_type] || [e.event_type, "kind-info"];
    const when = el("time", new Date(e.timestamp).toLocaleTimeString());
    when.dateTime = e.timestamp;
    const meta = (e.data && e.data.metadata) || {};
    const stream = e.stream_id ? names.get(e.stream_id) || streamName({ ...e, metadata: meta }) : "";
    li.append(when, el("span", label, kind), el("span", stream), el("span", eventText(e), "detail"));
    return li;
  });
  $("events").replaceChildren(...items);
  $("events-empty").hidden = items.length > 0;
}

// -- polling ---------------------------------------------------------------------

async function providers() {
  if (providersMissingAt && Date.now() - providersMissingAt < PROVIDERS_RETRY_MS) return null;
  const response = await api("providers");
  if (response.status === 404) {
    providersMissingAt = Date.now();
    return null;
  }
  providersMissingAt = 0;
  return response.ok ? (await response.json()).providers : null;
}

async function tick() {
  clearTimeout(timer);
  if (busy || !$("login").hidden) return;
  busy = true;
  try {
    const eventsPath = "events/recent?limit=50" + ($("show-viewers").checked ? "" : "&exclude=" + VIEWER_EVENTS);
    const [stats, events, provs] = await Promise.all([api("stats?active_only=true"), api(eventsPath), providers()]);
    if (!stats.ok || !events.ok) throw new Error("status " + stats.status);
    const data = await stats.json();
    const recent = (await events.json()).events;
    // Hold the picture still while the operator selects text or presses a button.
    const still = pressed || String(getSelection()) !== "";
    if (!still) {
      names = new Map(data.streams.map((s) => [s.stream_id, streamName(s)]));
      renderServer(data);
      renderStreams(data);
      renderViewers(data);
      renderProviders(provs);
      renderEvents(recent);
    }
    $("data").hidden = false;
    setLive(still ? "wait" : "ok", still ? "paused while text is selected" : "live");
  } catch (error) {
    if (error.message === "auth") return;
    setLive("down", "offline, retrying");
  } finally {
    busy = false;
  }
  timer = setTimeout(tick, document.hidden ? 5000 : 1000);
}

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live").textContent = text;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

// -- actions ---------------------------------------------------------------------

function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function act(question, okLabel, path, method, done) {
  if (!(await confirmAction(question, okLabel))) return;
  try {
    const response = await api(path, method);
    toast(response.ok ? done(await response.json()) : "Failed: " + (await detail(response)));
  } catch (error) {
    if (error.message !== "auth") toast("Failed: the proxy did not answer");
  }
  tick();
}

function failover(stream) {
  const id = encodeURIComponent(stream.stream_id);
  act(`Move every viewer of “${streamName(stream)}” to its next URL now?`, "Fail over now",
    `streams/${id}/failover`, "POST", (r) => `Moved to ${host(r.new_url)}`);
}

function disconnect(client) {
  const id = encodeURIComponent(client.client_id);
  const who = client.username || client.ip_address;
  const what = names.get(client.stream_id) || client.stream_id;
  act(`Disconnect ${who} from “${what}”?`, "Disconnect",
    `clients/${id}`, "DELETE", () => `Disconnected ${who}`);
}

// -- login -----------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  for (const id of ["server", "events"]) $(id).replaceChildren();
  for (const id of ["streams", "viewers", "providers"]) $(id).querySelector("tbody").replaceChildren();
  $("data").hidden = true;
  $("logout").hidden = true;
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
  $("login").hidden = false;
  setLive("wait", "locked");
  $("token").focus();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value;
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("logout").hidden = false;
  tick();
});

document.addEventListener("pointerdown", () => (pressed = true));
document.addEventListener("pointerup", () => (pressed = false));
document.addEventListener("pointercancel", () => (pressed = false));
addEventListener("blur", () => (pressed = false));
$("logout").addEventListener("click", () => showLogin(""));
$("logout").hidden = !token;
$("confirm-cancel").addEventListener("click", () => $("confirm").close("cancel"));
$("confirm-ok").addEventListener("click", () => $("confirm").close("ok"));
$("show-viewers").addEventListener("change", tick);
document.addEventListener("visibilitychange", () => document.hidden || tick());
tick();
