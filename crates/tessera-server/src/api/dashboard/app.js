// Tessera's dashboard: asks /v1/status?scope=pool of the server that
// served this page every second and draws the answer. Everything a server
// says is written as text (textContent), never parsed as markup.
"use strict";

const POLL_MS = 1000;
const POLL_HIDDEN_MS = 5000;
const HISTORY_SAMPLES = 600; // ten minutes at one a second
const TOKEN_KEY = "tessera-dashboard-token";

const usage = new Map(); // feature -> [{t, inUse}], since this page opened
let token = takeToken();

// A token in the address's fragment (#token=...) moves to the tab's
// session storage and out of the address bar.
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    window.history.replaceState(null, "", location.pathname + location.search);
    return given;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function cell(value, numeric) {
  return el("td", numeric ? { class: "num" } : {}, value);
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function clock(date) {
  return date.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function replaceRows(tableId, rows) {
  document.querySelector("#" + tableId + " tbody").replaceChildren(...rows);
}

function inUse(feature) {
  return feature.servers.reduce((sum, row) => sum + (row.in_use || 0), 0);
}

function record(features, now) {
  for (const feature of features) {
    const samples = usage.get(feature.feature) || [];
    samples.push({ t: now, inUse: inUse(feature) });
    if (samples.length > HISTORY_SAMPLES) samples.shift();
    usage.set(feature.feature, samples);
  }
}

// Seats in use over the time this page has been open, against the limit.
function chart(feature) {
  const samples = usage.get(feature.feature) || [];
  const width = 300, height = 60, top = 4;
  const drawing = svg("svg", {
    class: "history", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `seats in use of ${feature.feature} since this page opened`,
  });
  const ceiling = Math.max(feature.hard_limit, 1, ...samples.map((s) => s.inUse));
  const y = (value) => height - 1 - (value / ceiling) * (height - 1 - top);
  const limit = y(feature.hard_limit);
  drawing.append(svg("line", { class: "limit", x1: 0, x2: width, y1: limit, y2: limit }));
  if (samples.length > 0) {
    const first = samples[0].t, span = Math.max(samples[samples.length - 1].t - first, 1);
    const points = samples.map((s) => {
      const x = samples.length === 1 ? width : ((s.t - first) / span) * width;
      return `${x.toFixed(1)},${y(s.inUse).toFixed(1)}`;
    });
    if (samples.length === 1) points.unshift(`0,${y(samples[0].inUse).toFixed(1)}`);
    drawing.append(svg("polyline", { class: "use", points: points.join(" ") }));
  }
  return drawing;
}

function featureCard(feature) {
  const used = inUse(feature);
  const share = feature.hard_limit > 0 ? Math.min(used / feature.hard_limit, 1) : 0;
  const denied = (feature.denials || []).reduce((sum, d) => sum + d.count, 0);
  const deniedBy = (feature.denials || []).map((d) => `${d.code} ${d.count}`).join(", ");
  const available = feature.servers.reduce((sum, row) => sum + (row.available || 0), 0);
  const facts = [
    ["available", available],
    ["waiting", (feature.waiters || []).length],
    ["refused", denied ? `${denied} requests (${deniedBy})` : 0],
  ];
  if (feature.lingering_seats) facts.push(["lingering", feature.lingering_seats]);
  if (feature.temporary_seats) facts.push(["temporary", feature.temporary_seats]);
  for (const rule of feature.reserves || []) facts.push([`reserve ${rule.rule}`, `${rule.held} of ${rule.seats}`]);
  for (const rule of feature.maxima || []) facts.push([`max ${rule.rule}`, `${rule.held} of ${rule.seats}`]);
  const list = el("dl");
  for (const [name, value] of facts) list.append(el("dt", {}, name), el("dd", {}, value));
  const bar = el("div", { class: share >= 1 ? "bar full" : "bar" }, el("div"));
  bar.firstChild.style.width = (share * 100).toFixed(1) + "%";
  return el("article", { class: "feature", "data-feature": feature.feature },
    el("h3", {}, feature.feature),
    el("div", { class: "figure" }, el("span", { class: "in-use" }, used),
      el("small", {}, ` of ${feature.hard_limit} seats in use`)),
    bar, chart(feature), list);
}

function render(status) {
  const now = Date.now();
  document.getElementById("pool").textContent = `pool ${status.pool_id}`;
  const leader = status.server.leader_id;
  const unanswered = status.unanswered || [];
  const state = document.getElementById("state");
  if (unanswered.length > 0) {
    state.className = "partial";
    state.textContent = "PARTIAL: " + unanswered.map((u) => `server ${u.id} at ${u.address} did not answer`).join("; ")
      + ". Their seats are not counted below.";
  } else {
    state.className = "";
    state.textContent = `${status.servers.length} server${status.servers.length === 1 ? "" : "s"}, `
      + (leader ? `leader ${leader}` : "no leader") + `; asked server ${status.server.id}, which is ${status.server.state}.`;
  }

  record(status.features, now);
  document.getElementById("features").replaceChildren(...status.features.map(featureCard));

  const listed = status.grants.length;
  replaceRows("holders", status.grants.map((g) => el("tr", { "data-grant": g.grant_id },
    cell(g.feature), cell(g.user), cell(g.host), cell(g.display || ""), cell(g.count, true),
    cell(g.server_id), cell(clock(new Date(now - g.age_ms))), cell(duration(g.expires_in_ms), true))));
  const holdersNote = document.getElementById("holders-note");
  if (status.grants_total > 0 && listed === 0) {
    holdersNote.textContent = `${status.grants_total} grants; who holds them needs a token of role read or admin.`;
  } else if (status.grants_total > listed) {
    holdersNote.textContent = `The oldest ${listed} of ${status.grants_total} grants.`;
  } else {
    holdersNote.textContent = "";
  }

  const waiters = status.features.flatMap((f) => (f.waiters || []).map((w) => ({ feature: f.feature, ...w })));
  replaceRows("queue", waiters.map((w) => el("tr", {},
    cell(w.feature), cell(w.position, true), cell(w.user || "-"), cell(w.host || "-"), cell(w.seats, true),
    cell(clock(new Date(w.since_unix_ms))))));

  const silent = new Map(unanswered.map((u) => [u.id, u.error]));
  replaceRows("servers", status.servers.map((s) => {
    const role = s.id === leader ? "leader" : s.role;
    const answered = s.id === status.server.id || !silent.has(s.id);
    return el("tr", { "data-server": s.id },
      cell(s.id), cell(s.address), el("td", { class: "role-" + role }, role),
      el("td", answered ? {} : { class: "down", title: silent.get(s.id) }, answered ? (s.up ? "up" : "not heard from") : "did not answer"),
      cell(s.id === status.server.id ? "this server" : (s.last_contact_ms == null ? "never" : duration(s.last_contact_ms) + " ago")));
  }));

  replaceRows("allocations", status.features.flatMap((f) => f.servers.map((row) => el("tr", {},
    cell(f.feature), cell(row.server_id), cell(row.allocation, true), cell(row.in_use ?? "-", true),
    cell(row.available ?? "-", true), cell(row.reserved, true), cell(row.target ?? "", true)))));

  document.getElementById("updated").textContent = `Updated ${clock(new Date(now))} from ${location.host}; `
    + `seats in use drawn since this page opened.`;
}

function showSignin(note) {
  document.getElementById("signin").hidden = false;
  if (note) document.getElementById("signin-note").textContent = note;
}

async function poll() {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const answer = await fetch("/v1/status?scope=pool", { headers, cache: "no-store" });
    const body = await answer.json();
    if (answer.status === 401 && token) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin(`The token was refused (${body.error.code}): ${body.error.message}`);
      return;
    }
    if (!answer.ok) throw new Error(`${body.error.code}: ${body.error.message}`);
    render(body);
    if (!token) showSignin();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (error) {
    const state = document.getElementById("state");
    state.className = "down";
    state.textContent = `The server does not answer (${error.message}); the figures below are from ${document.getElementById("updated").textContent ? "the last answer" : "nothing yet"}.`;
  }
}

document.getElementById("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const given = document.getElementById("token").value.trim();
  if (!given) return;
  token = given;
  sessionStorage.setItem(TOKEN_KEY, given);
  document.getElementById("token").value = "";
  document.getElementById("signin").hidden = true;
  poll();
});

// A token given later in the fragment (the page is not reloaded for that).
window.addEventListener("hashchange", () => {
  const given = takeToken();
  if (given && given !== token) {
    token = given;
    poll();
  }
});

async function loop() {
  await poll();
  setTimeout(loop, document.hidden ? POLL_HIDDEN_MS : POLL_MS);
}
loop();
