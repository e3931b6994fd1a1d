// Switchyard dashboard. Plain JavaScript, no build step, no dependencies.
//
// The registry's pages follow its Watch through server-sent events read with
// fetch (so the operator token goes in a header): the services page gets the
// counts of the services that changed, a service page gets its instances and
// then every change, which is also its history. A lost stream reconnects and
// resumes from the last position it saw. The gateway's pages show its
// endpoints and their balancing figures, sampled by the gateway each second.
"use strict";

const SERVER = document.body.dataset.server;
const TOKEN_KEY = "switchyard-operator-token";
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- helpers

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function pill(text, cls) {
  return `<span class="pill ${esc(cls ?? text)}">${esc(text)}</span>`;
}

function ago(seconds) {
  if (!seconds) return "";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

// Schedules one render per frame however many messages arrive; none once
// the page is left (`main` replaced).
function throttle(main, render) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; if (main.isConnected) render(); });
  };
}

// An element of this page (not of a page left since, with the same id).
function scoped(main) {
  return (id) => main.querySelector(`#${id}`);
}

function setLive(state, text) {
  const el = $("live");
  el.dataset.state = state;
  el.textContent = text;
}

// ------------------------------------------------------------- the stream

// Reads server-sent events from `path` with fetch; `onMessage(kind, data)`.
// Reconnects after a loss, resuming from the last id (a position).
function follow(path, onMessage, onError) {
  const abort = new AbortController();
  let lastId = null;
  let delay = 500;
  async function run() {
    while (!abort.signal.aborted) {
      let url = path;
      if (lastId) url += (url.includes("?") ? "&" : "?") + "since=" + encodeURIComponent(lastId);
      try {
        const response = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal: abort.signal });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          onError(body.error || `${response.status} ${response.statusText}`);
          if (response.status < 500) return;
        } else {
          setLive("live", "live");
          delay = 500;
          await read(response.body, (kind, data, id) => {
            if (abort.signal.aborted) return;
            if (id) lastId = id;
            onMessage(kind, JSON.parse(data));
          });
        }
      } catch (e) {
        if (abort.signal.aborted) return;
      }
      setLive("lost", "reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
  run();
  return () => abort.abort();
}

async function read(body, dispatch) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let kind = "message", data = "", id = null;
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = val;
        else if (field === "data") data += (data ? "\n" : "") + val;
        else if (field === "id") id = val;
      }
      if (data) dispatch(kind, data, id);
    }
  }
}

// ---------------------------------------------------------------- banners

function showBanners(banner, extra) {
  const out = [];
  if (banner) {
    if (banner.warming_up) {
      out.push(["warn", "Warming up: the registry waits for every lease's owner to renew before it lets any expire. Nothing is dropped yet."]);
    }
    if (banner.brake) {
      out.push(["bad", `The brake holds expiries: ${banner.brake}. Instances whose lease lapsed are kept (marked held) until it releases.`]);
    }
    if (!banner.authoritative && !banner.warming_up && !banner.brake) {
      out.push(["warn", "This view is not authoritative: clients keep what they have rather than apply an empty list."]);
    }
  }
  if (extra) out.push(extra);
  $("banners").innerHTML = out.map(([cls, text]) => `<div class="banner ${cls}">${esc(text)}</div>`).join("");
}

// ---------------------------------------------------- registry: services

// Rows a list shows before "Show all": trouble sorts first, so what needs
// a look is on the first screen; a table of a thousand rows takes Chromium
// half a second to lay out on a small machine (bench/dashboard.sh), two
// hundred a fifth of that.
const FIRST_ROWS = 200;

// Trouble first: unhealthy or held, then draining or out of service.
function serviceRank(s) {
  if (s.unhealthy + s.expired_held > 0) return 0;
  return (s.by_state.DRAINING || 0) + (s.by_state.OUT_OF_SERVICE || 0) > 0 ? 1 : 2;
}

function serviceCells(s) {
  const st = (k) => s.by_state[k] || 0;
  return `<td><a href="#/services/${encodeURIComponent(s.service)}">${esc(s.service)}</a></td>
    <td class="num">${s.instances}</td><td class="num">${st("SERVING")}</td>
    <td class="num">${st("STARTING")}</td><td class="num">${st("DRAINING")}</td>
    <td class="num">${st("OUT_OF_SERVICE")}</td><td class="num">${s.unhealthy}</td>
    <td class="num">${s.expired_held}</td><td class="num">${s.mod_revision}</td>`;
}

function servicesPage(main) {
  const el = scoped(main);
  const services = new Map();
  let banner = null;
  const filters = { text: "", show: "all", all: false };
  // What the last full render decided for each service (passes the
  // filters, its rank) and the rows it made: a change that keeps both is
  // patched into its row, no new table.
  let decided = new Map();
  let rows = new Map();
  main.innerHTML = `
    <h1>Services</h1>
    <div class="toolbar">
      <input type="search" id="search" placeholder="Search services" autofocus>
      <select id="show">
        <option value="all">All services</option>
        <option value="unhealthy">With unhealthy instances</option>
        <option value="DRAINING">With draining instances</option>
        <option value="OUT_OF_SERVICE">With instances out of service</option>
        <option value="held">With instances held by the brake</option>
      </select>
      <span class="counts" id="counts"></span>
    </div>
    <div id="table"></div>`;
  const passes = (s) => {
    if (filters.text && !s.service.toLowerCase().includes(filters.text.toLowerCase())) return false;
    switch (filters.show) {
      case "unhealthy": return s.unhealthy > 0;
      case "held": return s.expired_held > 0;
      case "all": return true;
      default: return (s.by_state[filters.show] || 0) > 0;
    }
  };
  const verdict = (s) => (passes(s) ? serviceRank(s) : -1);
  const counts = (matching) => {
    let instances = 0;
    for (const s of services.values()) instances += s.instances;
    el("counts").textContent = `${matching} of ${services.size} services, ${instances} instances`;
  };
  const render = throttle(main, () => {
    const list = [...services.values()].filter(passes);
    list.sort((a, b) => serviceRank(a) - serviceRank(b) || a.service.localeCompare(b.service));
    decided = new Map([...services.values()].map((s) => [s.service, verdict(s)]));
    rows = new Map();
    counts(list.length);
    if (!list.length) {
      el("table").innerHTML = `<div class="empty">${services.size ? "No service matches." : "No service is registered yet."}</div>`;
      return;
    }
    const shown = filters.all ? list : list.slice(0, FIRST_ROWS);
    const more = list.length - shown.length;
    const body = shown.map((s) => {
      const cls = ["unhealthy", "draining", ""][serviceRank(s)];
      return `<tr class="${cls}" data-service="${esc(s.service)}">${serviceCells(s)}</tr>`;
    }).join("");
    el("table").innerHTML = `<table class="fixed"><thead><tr><th>Service</th><th class="num">Instances</th>
      <th class="num">Serving</th><th class="num">Starting</th><th class="num">Draining</th>
      <th class="num">Out of service</th><th class="num">Unhealthy</th><th class="num">Held</th>
      <th class="num">Revision</th></tr></thead><tbody>${body}</tbody></table>
      ${more > 0 ? `<p class="muted">${more} more services. Search or filter to narrow them, or
        <button type="button" class="small" id="show-all">show all ${list.length}</button></p>` : ""}`;
    for (const tr of el("table").querySelectorAll("tr[data-service]")) rows.set(tr.dataset.service, tr);
  });
  // Changes that keep every changed service where it was are patched in.
  const apply = (changed, removed) => {
    if (removed.length || changed.some((s) => decided.get(s.service) !== verdict(s))) {
      render();
      return;
    }
    for (const s of changed) {
      const tr = rows.get(s.service);
      if (tr) tr.innerHTML = serviceCells(s);
    }
    counts([...decided.values()].filter((v) => v >= 0).length);
  };
  main.addEventListener("click", (e) => {
    if (e.target.id === "show-all") { filters.all = true; render(); }
  });
  el("search").addEventListener("input", (e) => { filters.text = e.target.value; render(); });
  el("show").addEventListener("change", (e) => { filters.show = e.target.value; render(); });
  return follow("/api/events", (kind, m) => {
    banner = m.banner;
    showBanners(banner);
    if (kind !== "services") return;
    if (m.reset) services.clear();
    for (const s of m.services) services.set(s.service, s);
    for (const name of m.removed) services.delete(name);
    if (m.reset) render(); else apply(m.services, m.removed);
  }, (error) => showBanners(banner, ["bad", `The registry refused the stream: ${error}`]));
}

// ----------------------------------------------------- registry: service

// What changed between two versions of an instance, in words.
function describe(change, now, before) {
  if (change !== "put") return [change === "deregistered" ? "deregistered" : `${change} (lease)`];
  if (!before) {
    return [`registered: ${now.state}, health ${now.health}, weight ${now.weight}`];
  }
  const out = [];
  if (before.state !== now.state) out.push(`state ${before.state} → ${now.state}`);
  if (before.weight !== now.weight) out.push(`weight ${before.weight} → ${now.weight}`);
  if (before.health !== now.health) {
    out.push(`health ${before.health} → ${now.health}${now.health_detail ? `: ${now.health_detail}` : ""}`);
  }
  const o = now.override, p = before.override;
  if (o && JSON.stringify(o) !== JSON.stringify(p)) {
    out.push(`operator override${o.reason ? ` (${o.reason})` : ""}${o.expires_at ? `, until ${clock(o.expires_at)}` : ""}`);
  } else if (!o && p) {
    out.push(p.expires_at && p.expires_at * 1000 <= Date.now() + 1000 ? "override expired" : "override cleared");
  }
  if (before.expired_held !== now.expired_held) out.push(now.expired_held ? "lease lapsed, held by the brake" : "released by the brake");
  if (before.address !== now.address) out.push(`address ${before.address} → ${now.address}`);
  if (before.version !== now.version) out.push(`version ${before.version || "–"} → ${now.version || "–"}`);
  if (JSON.stringify(before.metadata) !== JSON.stringify(now.metadata) || JSON.stringify(before.tags) !== JSON.stringify(now.tags)) {
    out.push("tags or metadata changed");
  }
  return out.length ? out : ["re-registered"];
}

function servicePage(main, name) {
  const el = scoped(main);
  const instances = new Map();
  const history = [];
  const lastSeen = new Map();
  let banner = null;
  let ready = false;
  const pending = [];
  main.innerHTML = `
    <p><a href="#/">← Services</a></p>
    <h1>${esc(name)}</h1>
    <div id="instances"></div>
    <h2>History <span class="muted" id="history-note"></span></h2>
    <div id="history"></div>`;

  function record(e) {
    const before = lastSeen.get(e.instance.instance_id);
    history.push({ at: e.at, revision: e.revision, id: e.instance.instance_id, what: describe(e.change, e.instance, before) });
    if (e.change === "put") lastSeen.set(e.instance.instance_id, e.instance);
    else lastSeen.delete(e.instance.instance_id);
  }

  const render = throttle(main, () => {
    const rows = [...instances.values()];
    const rank = (i) => (i.health === "UNHEALTHY" || i.expired_held ? 0 : i.state !== "SERVING" ? 1 : 2);
    rows.sort((a, b) => rank(a) - rank(b) || a.instance_id.localeCompare(b.instance_id));
    el("instances").innerHTML = rows.length ? `<table><thead><tr><th>Instance</th><th>Address</th>
      <th>Zone</th><th>State</th><th class="num">Weight</th><th>Health</th><th>Version</th>
      <th>Tags and metadata</th><th class="num">Revision</th><th>Actions</th></tr></thead><tbody>
      ${rows.map(instanceRow).join("")}</tbody></table>`
      : `<div class="empty">No instance of ${esc(name)} is registered.</div>`;
    const recent = history.slice(-200).reverse();
    el("history").innerHTML = recent.length ? `<table class="history"><thead><tr><th>When</th>
      <th class="num">Revision</th><th>Instance</th><th>What changed</th></tr></thead><tbody>
      ${recent.map((h) => `<tr><td>${esc(clock(h.at))}</td><td class="num">${h.revision}</td>
        <td>${esc(h.id)}</td><td>${h.what.map(esc).join("; ")}</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">No change this replica still holds.</div>`;
  });

  function instanceRow(i) {
    const o = i.override;
    const overrideNote = o ? pill(`override${o.reason ? ": " + o.reason : ""}${o.expires_at ? " until " + clock(o.expires_at) : ""}`, "override") : "";
    const meta = [...(i.tags || []).map((t) => esc(t)), ...Object.entries(i.metadata || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`)].join(", ");
    const cls = i.health === "UNHEALTHY" || i.expired_held ? "unhealthy" : i.state !== "SERVING" ? "draining" : "";
    const id = esc(i.instance_id);
    return `<tr class="${cls}" data-instance="${id}">
      <td>${id}${i.tls ? " " + pill("tls", "") : ""}</td><td><code>${esc(i.address)}</code> <span class="kv">${esc(i.protocol)}</span></td>
      <td class="nowrap">${esc(i.zone)}</td>
      <td>${pill(i.state)} ${i.expired_held ? pill("held") : ""} ${overrideNote}</td>
      <td class="num">${i.weight}</td>
      <td>${pill(i.health)} <span class="kv">${esc(i.health_detail)}${i.health_changed_at ? " · since " + esc(ago(i.health_changed_at)) : ""}</span></td>
      <td>${esc(i.version)}</td><td class="kv">${meta}</td><td class="num">${i.mod_revision}</td>
      <td class="actions">
        ${i.state !== "DRAINING" ? `<button class="small" data-action="drain" data-id="${id}">Drain</button>` : ""}
        ${i.state !== "SERVING" ? `<button class="small" data-action="serve" data-id="${id}">Serve</button>` : ""}
        <button class="small" data-action="weight" data-id="${id}">Weight…</button>
        ${o ? `<button class="small" data-action="clear" data-id="${id}">Clear override</button>` : ""}
      </td></tr>`;
  }

  main.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    if (b) openAction(name, instances.get(b.dataset.id), b.dataset.action);
  });

  const stop = follow(`/api/events?service=${encodeURIComponent(name)}`, (kind, m) => {
    banner = m.banner;
    showBanners(banner);
    if (kind === "snapshot") {
      if (m.reset) instances.clear();
      for (const i of m.instances) instances.set(i.instance_id, i);
    } else if (kind === "delta") {
      for (const e of m.events) {
        if (e.change === "put") instances.set(e.instance.instance_id, e.instance);
        else instances.delete(e.instance.instance_id);
        if (ready) record(e); else pending.push(e);
      }
    }
    render();
  }, (error) => showBanners(banner, ["bad", `The registry refused the stream: ${error}`]));

  // The changes the registry still holds, then what arrived meanwhile.
  getJson(`/api/services/${encodeURIComponent(name)}/history`).then((h) => {
    const seen = new Set(h.events.map((e) => `${e.revision}/${e.instance.instance_id}`));
    for (const e of h.events) record(e);
    for (const e of pending) if (!seen.has(`${e.revision}/${e.instance.instance_id}`)) record(e);
    el("history-note").textContent = "(what this replica still holds, newest first)";
  }).catch((e) => {
    el("history-note").textContent = `(history unavailable: ${e.message})`;
    for (const e of pending) record(e);
  }).finally(() => { ready = true; pending.length = 0; render(); });
  return stop;
}

// ------------------------------------------------------------- actions

const ACTIONS = {
  drain: { title: "Drain", body: { state: "DRAINING" }, what: "New requests stop going to it; requests in flight finish." },
  serve: { title: "Serve", body: { state: "SERVING" }, what: "It takes requests again." },
  weight: { title: "Set weight", body: {}, what: "Its share of requests, relative to the others (0 to 10000)." },
  clear: { title: "Clear override", body: { clear: true }, what: "Its own state and weight apply again." },
};

function openAction(service, instance, action) {
  if (!instance) return;
  const a = ACTIONS[action];
  const dialog = $("action-dialog");
  $("action-title").textContent = `${a.title}: ${service} / ${instance.instance_id}`;
  $("action-what").textContent = a.what;
  $("action-weight-row").hidden = action !== "weight";
  $("action-weight").value = instance.weight;
  $("action-reason").value = "";
  $("action-minutes").value = "";
  $("action-error").textContent = token() ? "" : "No operator token set: the registry will refuse this.";
  $("action-confirm").onclick = async () => {
    const body = Object.assign({}, a.body);
    if (action === "weight") body.weight = Number($("action-weight").value);
    if (action !== "clear") {
      body.reason = $("action-reason").value;
      const minutes = Number($("action-minutes").value);
      if (minutes > 0) body.expires_in_seconds = Math.round(minutes * 60);
    }
    const url = `/api/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(instance.instance_id)}/override`;
    const response = await fetch(url, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    }).catch((e) => ({ ok: false, json: async () => ({ error: e.message }) }));
    if (response.ok) { dialog.close(); return; }
    const error = await response.json().catch(() => ({}));
    $("action-error").textContent = `Refused: ${error.error || response.status}`;
  };
  dialog.showModal();
}

// ------------------------------------------------------------ gateway

function gatewayServices(main) {
  const el = scoped(main);
  let filter = "";
  let latest = [];
  main.innerHTML = `
    <h1>Services at the gateway</h1>
    <p class="muted">The gateway's own view: the endpoints it picks from and their balancing figures, sampled each second.</p>
    <div class="toolbar"><input type="search" id="search" placeholder="Search services" autofocus><span class="counts" id="counts"></span></div>
    <div id="table"></div>`;
  const render = throttle(main, () => {
    const rows = latest.filter((s) => s.service.toLowerCase().includes(filter.toLowerCase()));
    const bad = (s) => s.endpoints.filter((e) => e.unhealthy || e.ejected).length;
    rows.sort((a, b) => (bad(b) > 0) - (bad(a) > 0) || a.service.localeCompare(b.service));
    el("counts").textContent = `${rows.length} of ${latest.length} services`;
    el("table").innerHTML = rows.length ? `<table><thead><tr><th>Service</th><th>Policy</th><th>Source</th>
      <th class="num">Endpoints</th><th class="num">Serving</th><th class="num">Unhealthy or ejected</th>
      <th class="num">In flight</th></tr></thead><tbody>${rows.map((s) => `<tr class="${bad(s) ? "unhealthy" : ""}">
        <td><a href="#/services/${encodeURIComponent(s.service)}">${esc(s.service)}</a></td><td>${esc(s.policy)}</td>
        <td>${esc(s.source)}</td><td class="num">${s.endpoints.length}</td>
        <td class="num">${s.endpoints.filter((e) => e.serving).length}</td><td class="num">${bad(s)}</td>
        <td class="num">${s.endpoints.reduce((n, e) => n + e.in_flight, 0)}</td></tr>`).join("")}</tbody></table>`
      : `<div class="empty">The gateway follows no service yet.</div>`;
  });
  el("search").addEventListener("input", (e) => { filter = e.target.value; render(); });
  return follow("/api/events", (kind, m) => { latest = m.services; render(); },
    (error) => showBanners(null, ["bad", `The gateway refused the stream: ${error}`]));
}

function gatewayService(main, name) {
  const el = scoped(main);
  main.innerHTML = `<p><a href="#/">← Services</a></p><h1>${esc(name)} <span class="muted" id="policy"></span></h1><div id="table"></div>`;
  const render = (s) => {
    if (!s) { el("table").innerHTML = `<div class="empty">The gateway does not follow ${esc(name)}.</div>`; return; }
    el("policy").textContent = `${s.policy}, from the ${s.source}`;
    const secs = (v) => (v ? `${v.toFixed(1)}s` : "");
    el("table").innerHTML = s.endpoints.length ? `<table><thead><tr><th>Instance</th><th>Address</th><th>State</th>
      <th class="num">In flight</th><th class="num">EWMA ms</th><th class="num">Failures in a row</th><th>Breaker</th>
      <th>Ejected</th></tr></thead><tbody>${s.endpoints.map((e) => `<tr class="${e.unhealthy || e.ejected ? "unhealthy" : e.serving ? "" : "draining"}">
        <td>${esc(e.instance_id)}${e.tls ? " " + pill("tls", "") : ""}</td><td><code>${esc(e.address)}</code></td>
        <td>${pill(e.serving ? "serving" : "not serving", e.serving ? "SERVING" : "DRAINING")} ${e.unhealthy ? pill("unhealthy") : ""} ${e.expired_held ? pill("held") : ""}</td>
        <td class="num">${e.in_flight}</td><td class="num">${e.ewma_ms.toFixed(2)}</td><td class="num">${e.consecutive_failures}</td>
        <td>${pill(e.breaker)}</td><td>${e.ejected ? pill("ejected", "open") : ""} <span class="kv">${e.ejected_by_balancer_seconds ? "by the balancer, " + secs(e.ejected_by_balancer_seconds) + " left" : ""}${e.ejected_locally_seconds ? "locally, " + secs(e.ejected_locally_seconds) + " left" : ""}</span></td>
        </tr>`).join("")}</tbody></table>` : `<div class="empty">No endpoint.</div>`;
  };
  return follow(`/api/events?service=${encodeURIComponent(name)}`, (kind, m) => render(m.services[0]),
    (error) => showBanners(null, ["bad", `The gateway refused the stream: ${error}`]));
}

// ------------------------------------------------------------- routing

let stop = null;

function route() {
  if (stop) stop();
  showBanners(null);
  setLive("connecting", "connecting");
  const main = $("main");
  const fresh = main.cloneNode(false);
  main.replaceWith(fresh);
  const match = location.hash.match(/^#\/services\/(.+)$/);
  const name = match ? decodeURIComponent(match[1]) : null;
  if (SERVER === "gateway") {
    stop = name ? gatewayService(fresh, name) : gatewayServices(fresh);
  } else {
    stop = name ? servicePage(fresh, name) : servicesPage(fresh);
  }
  document.title = name ? `${name} · Switchyard` : "Switchyard";
}

function tokenDialog() {
  const dialog = $("token-dialog");
  const update = () => { $("token-button").textContent = token() ? "Operator token ✓" : "Operator token"; };
  $("token-button").addEventListener("click", () => { $("token-input").value = token(); dialog.showModal(); });
  $("token-save").addEventListener("click", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    dialog.close(); update(); route();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    dialog.close(); update(); route();
  });
  for (const b of document.querySelectorAll("dialog [data-close]")) {
    b.addEventListener("click", () => b.closest("dialog").close());
  }
  update();
}

$("server").textContent = SERVER === "gateway" ? "gateway" : "registry";
if (SERVER === "gateway") $("token-button").hidden = true;
tokenDialog();
window.addEventListener("hashchange", route);
route();
