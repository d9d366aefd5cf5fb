// The queued web page: plain DOM, no framework, no inline script or style.
// Every view is a URL (filters are query parameters, the same as the JSON
// API's); live updates come from /api/events (Server-Sent Events read with
// fetch, so that the token can travel as a header), stop while the tab is
// hidden, and are off with ?live=0.
"use strict";

const STATES = ["pending", "held", "running", "failed", "completed", "dead", "canceled"];
const TERMINAL = ["completed", "dead", "canceled"];
const params = new URLSearchParams(location.search);
const LIVE = params.get("live") !== "0";
const main = document.getElementById("main");
let token = sessionStorage.getItem("queued-token") || "";
let view = null; // {render(snapshot), refresh()}
let stream = null; // AbortController of the open event stream
let lastSnapshot = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function headers(extra) {
  const found = Object.assign({}, extra || {});
  if (token) found["Authorization"] = "Bearer " + token;
  return found;
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function act(name, body) {
  const response = await fetch("/api/actions/" + name, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(answer.error || response.statusText);
    error.answer = answer;
    throw error;
  }
  return answer;
}

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

async function doAction(name, body, done) {
  try {
    const answer = await act(name, body);
    say(describe(name, answer), false);
    if (done) done(answer);
    if (view) view.refresh();
  } catch (error) {
    say(name + ": " + error.message, true);
  }
}

function describe(name, answer) {
  if (answer.message) return answer.message;
  if (answer.kind === "changed") {
    const refused = Object.keys(answer.refused || {}).length;
    return name + ": " + answer.ids.length + " job(s)" + (refused ? ", " + refused + " left as they were" : "");
  }
  if (answer.kind === "cleaned") return name + ": " + answer.count + " job(s) removed";
  return name + ": done";
}

function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 1) return (seconds * 1000).toFixed(0) + " ms";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + String(Math.round(seconds % 60)).padStart(2, "0") + "s";
  return Math.floor(seconds / 3600) + "h" + String(Math.floor((seconds % 3600) / 60)).padStart(2, "0") + "m";
}

function stateBadge(state, paused) {
  return el("span", { class: "state state-" + state }, paused ? state + " (paused)" : state);
}

function needsToken(button) {
  if (!token) {
    button.disabled = true;
    button.title = "needs the web token";
  }
  return button;
}

// -- overview -----------------------------------------------------------------

// A queue's limit, with (for the token's holder) a field to change it: empty
// means no limit but the global one.
function queueLimit(q) {
  const shown = q.concurrency === null ? "—" : String(q.concurrency);
  if (!token) return shown;
  const input = el("input", { type: "number", min: 1, max: 4096, class: "queue-limit", placeholder: "none",
    value: q.concurrency === null ? "" : q.concurrency, "aria-label": "limit of queue " + q.name });
  const set = el("button", { class: "queue-set", onclick: () => {
    const text = input.value.trim();
    doAction("queue-concurrency", { queue: q.name, concurrency: text === "" ? null : Number(text) });
  } }, "Set");
  input.addEventListener("keydown", (event) => { if (event.key === "Enter") set.click(); });
  return el("span", { class: "queue-limit-form edit-group" }, input, set);
}

function overview() {
  let range = params.get("range") === "day" ? "day" : "hour";
  const root = el("div", { id: "overview" });
  main.replaceChildren(root);
  // A field being edited (or its button, on the way to a click) is not
  // redrawn under the user's hands: the newest snapshot waits until the
  // focus leaves them, or the action is done.
  let held = null;
  root.addEventListener("focusout", () => setTimeout(() => {
    if (held && !editing()) { const snapshot = held; held = null; render(snapshot); }
  }, 0));
  function editing() {
    const active = document.activeElement;
    return root.contains(active) && (active.tagName === "INPUT" || active.closest(".edit-group") !== null);
  }
  function render(snapshot, force) {
    if (editing() && !force) { held = snapshot; return; }
    held = null;
    const status = snapshot.status;
    const counts = status.counts;
    const busy = status.running;
    const cards = el("div", { class: "cards", id: "counts" },
      STATES.map((state) => el("a", { class: "card", href: "/jobs?state=" + state, id: "count-" + state },
        el("span", { class: "n" }, counts[state] || 0), el("span", { class: "label" }, state))),
      el("div", { class: "card", id: "slots" }, el("span", { class: "n" }, busy + " / " + status.concurrency),
        el("span", { class: "label" }, "slots busy")));
    const queues = el("table", { id: "queues" },
      el("thead", {}, el("tr", {}, el("th", {}, "queue"), el("th", { class: "num" }, "limit"),
        el("th", { class: "num" }, "running"), el("th", { class: "num" }, "waiting"), el("th", { class: "num" }, "held"),
        el("th", {}, "state"), el("th", {}, ""))),
      el("tbody", {}, status.queues.map((q) => el("tr", { "data-queue": q.name },
        el("td", {}, el("a", { href: "/jobs?queue=" + encodeURIComponent(q.name) }, q.name)),
        el("td", { class: "num" }, queueLimit(q)),
        el("td", { class: "num" }, q.running), el("td", { class: "num" }, q.pending + q.failed),
        el("td", { class: "num" }, q.held), el("td", {}, q.paused ? "paused" : "active"),
        el("td", {}, needsToken(el("button", { class: "queue-pause", onclick: () =>
          doAction("queue-pause", { queue: q.name, paused: !q.paused }) }, q.paused ? "Resume" : "Pause")))))));
    const slots = el("table", { id: "running" },
      el("thead", {}, el("tr", {}, el("th", { class: "num" }, "job"), el("th", {}, "queue"), el("th", {}, "started"),
        el("th", {}, "command"))),
      el("tbody", {}, snapshot.slots.map((s) => el("tr", {},
        el("td", { class: "num" }, el("a", { href: "/job/" + s.job_id }, s.job_id)), el("td", {}, s.queue),
        el("td", {}, duration(snapshot.now - s.started_at) + " ago"), el("td", { class: "command" }, s.command)))));
    const scaleInput = el("input", { type: "number", min: 0, max: 4096, value: status.concurrency, id: "scale-input", "aria-label": "slots" });
    const actions = el("div", { class: "actions" },
      needsToken(el("button", { id: "retry-dead", onclick: () => {
        if (confirm("Retry all " + (counts.dead || 0) + " dead jobs?")) doAction("retry", { all_dead: true });
      } }, "Retry all dead")),
      needsToken(el("button", { class: "danger", id: "purge-dead", onclick: () => {
        if (confirm("Remove all " + (counts.dead || 0) + " dead jobs and their logs?")) doAction("purge-dead", {});
      } }, "Purge dead")),
      el("span", { class: "edit-group" }, el("span", {}, " slots: "), scaleInput,
        needsToken(el("button", { id: "scale", onclick: () => doAction("scale", { concurrency: Number(scaleInput.value) }) }, "Scale"))));
    const stamp = Math.floor(Date.now() / 5000);
    const chartLinks = el("div", { class: "pager" },
      el("a", { href: "/?range=hour", class: range === "hour" ? "current" : "" }, "last hour"),
      el("a", { href: "/?range=day", class: range === "day" ? "current" : "" }, "last day"));
    const charts = el("div", { class: "charts" },
      el("img", { src: "/charts/throughput.svg?range=" + range + "&t=" + stamp, alt: "throughput chart", width: 640, height: 200 }),
      el("img", { src: "/charts/latency.svg?range=" + range + "&t=" + stamp, alt: "latency chart", width: 640, height: 200 }));
    const problems = status.problems.length ? el("p", { class: "error" }, status.problems.join("; ")) : null;
    root.replaceChildren(...[el("h1", {}, "Overview"), problems, cards, el("h2", {}, "Queues"), queues,
      el("h2", {}, "Running"), snapshot.slots.length ? slots : el("p", { class: "muted" }, "Nothing runs."),
      el("h2", {}, "Actions"), actions, el("h2", {}, "Throughput and latency"), chartLinks, charts,
      el("p", { class: "muted" }, "queued " + status.version + ", pid " + status.pid + ", up since " + when(status.started_at))
    ].filter(Boolean));
    if (!token) for (const b of root.querySelectorAll("button")) b.disabled = true;
  }
  return {
    render,
    refresh: async () => render(await api("/api/status"), true),
  };
}

// -- jobs ---------------------------------------------------------------------

const FILTERS = ["state", "queue", "label", "command", "since", "until"];

function filterQuery() {
  const query = new URLSearchParams();
  for (const key of FILTERS) for (const value of params.getAll(key)) if (value) query.append(key, value);
  return query;
}

function jobsView() {
  const root = el("div", { id: "jobs" });
  main.replaceChildren(root);
  const stateSelect = el("select", { name: "state", id: "filter-state" }, el("option", { value: "" }, "any state"),
    STATES.map((s) => el("option", { value: s, selected: params.get("state") === s }, s)));
  const form = el("form", { class: "filters", method: "get", action: "/jobs", id: "filters" },
    el("label", {}, "state", stateSelect),
    FILTERS.slice(1).map((key) => el("label", {}, key,
      el("input", { name: key, id: "filter-" + key, value: params.get(key) || "",
        placeholder: key === "since" || key === "until" ? "2026-01-31T12:00" : "" }))),
    params.get("live") === "0" ? el("input", { type: "hidden", name: "live", value: "0" }) : null,
    el("button", { type: "submit", id: "filter-apply" }, "Filter"));
  form.addEventListener("submit", () => {
    for (const input of form.querySelectorAll("input, select")) if (!input.value) input.disabled = true;
  });
  const body = el("div", {});
  root.append(el("h1", {}, "Jobs"), form, body);
  async function refresh() {
    const query = filterQuery();
    if (params.get("before")) query.set("before", params.get("before"));
    const found = await api("/api/jobs?" + query);
    const table = el("table", { id: "job-table" },
      el("thead", {}, el("tr", {}, ["id", "state", "queue", "label", "attempts", "added", "started", "ended", "command"].map(
        (h) => el("th", { class: h === "id" || h === "attempts" ? "num" : "" }, h)))),
      el("tbody", {}, found.jobs.map((job) => el("tr", { "data-id": job.id },
        el("td", { class: "num" }, el("a", { href: "/job/" + job.id }, job.id)),
        el("td", {}, stateBadge(job.state, job.paused)), el("td", {}, job.queue), el("td", {}, job.label || ""),
        el("td", { class: "num" }, job.attempts), el("td", {}, when(job.created_at)), el("td", {}, when(job.started_at)),
        el("td", {}, when(job.ended_at)), el("td", { class: "command", title: job.command }, job.command)))));
    const pager = el("div", { class: "pager" });
    if (params.get("before")) {
      const first = filterQuery();
      if (!LIVE) first.set("live", "0");
      pager.append(el("a", { href: "/jobs?" + first, id: "newest" }, "← newest"));
    }
    if (found.next_before) {
      const next = filterQuery();
      next.set("before", found.next_before);
      if (!LIVE) next.set("live", "0");
      pager.append(el("a", { href: "/jobs?" + next, id: "older" }, "older →"));
    }
    const bulk = el("div", { class: "actions", id: "bulk" });
    if (found.jobs.length && token) {
      for (const [name, label] of [["cancel", "Cancel"], ["retry", "Retry"]]) {
        bulk.append(el("button", { id: "bulk-" + name, class: name === "cancel" ? "danger" : "", onclick: async () => {
          const { count } = await api("/api/jobs/count?" + filterQuery());
          if (!confirm(label + " every job matching this filter: " + count + " job(s)?")) return;
          doAction(name, { filter: Object.fromEntries(filterQuery()), expect: count });
        } }, label + " every job matching this filter…"));
      }
    }
    body.replaceChildren(found.jobs.length ? table : el("p", { class: "muted", id: "no-jobs" }, "No job matches."), pager, bulk);
  }
  return { render: () => refresh(), refresh };
}

// -- one job --------------------------------------------------------------------

function jobView(id) {
  const root = el("div", { id: "job" });
  main.replaceChildren(root);
  let following = null; // {attempt, controller}
  let shown = null; // what the page shows, to draw it again only when it changed
  async function refresh() {
    const detail = await api("/api/jobs/" + id);
    const job = detail.job;
    const key = JSON.stringify([job.state, job.updated_at, job.paused, detail.runs.map((r) => [r.ended_at, r.pid]), detail.dependents]);
    if (key === shown) return;
    shown = key;
    const links = (ids) => ids.length ? ids.map((d) => [el("a", { href: "/job/" + d }, d), " "]) : "none";
    const facts = el("dl", { class: "facts", id: "job-facts" },
      el("dt", {}, "state"), el("dd", { id: "job-state" }, stateBadge(job.state, job.paused), job.error ? " " + job.error : ""),
      el("dt", {}, "command"), el("dd", {}, el("code", { id: "job-command" }, job.command)),
      el("dt", {}, "working directory"), el("dd", {}, el("code", {}, job.cwd)),
      el("dt", {}, "environment"), el("dd", { class: "keys", id: "env-keys" },
        detail.env_keys.length ? detail.env_keys.map((k) => el("code", {}, k)) : "none",
        el("span", { class: "muted" }, " (names only: values are never sent)")),
      el("dt", {}, "queue"), el("dd", {}, job.queue + ", priority " + job.priority),
      el("dt", {}, "label"), el("dd", {}, job.label || "none"),
      el("dt", {}, "attempts"), el("dd", {}, job.attempts + " of at most " + (job.max_retries + 1)),
      el("dt", {}, "timeout"), el("dd", {}, job.timeout ? duration(job.timeout) : "none"),
      el("dt", {}, "depends on"), el("dd", {}, links(job.depends_on), job.waiting_on.length ? " (waiting on " + job.waiting_on.join(", ") + ")" : ""),
      el("dt", {}, "dependents"), el("dd", {}, links(detail.dependents)),
      el("dt", {}, "added"), el("dd", {}, when(job.created_at)),
      el("dt", {}, TERMINAL.includes(job.state) ? "ended" : "next run"),
      el("dd", {}, TERMINAL.includes(job.state) ? when(job.ended_at) : job.state === "running" ? "running now" : when(job.run_at)));
    const actions = el("div", { class: "actions" });
    if (!TERMINAL.includes(job.state)) actions.append(needsToken(el("button", { class: "danger", id: "cancel", onclick: () => {
      if (confirm("Cancel job " + id + "?")) doAction("cancel", { ids: [id] });
    } }, "Cancel")));
    else actions.append(needsToken(el("button", { id: "retry", onclick: () => doAction("retry", { ids: [id] }) }, "Retry")));
    const attempts = el("table", { id: "attempts" },
      el("thead", {}, el("tr", {}, ["attempt", "pid", "started", "ended", "duration", "exit", "reason"].map((h) => el("th", {}, h)))),
      el("tbody", {}, detail.runs.map((run) => el("tr", {},
        el("td", {}, run.attempt), el("td", {}, run.pid || ""), el("td", {}, when(run.started_at)),
        el("td", {}, run.ended_at ? when(run.ended_at) : "running"),
        el("td", {}, duration((run.ended_at || Date.now() / 1000) - run.started_at)),
        el("td", {}, run.signal ? "signal " + run.signal : run.exit_code === null ? "" : run.exit_code),
        el("td", {}, [run.error, run.log_incomplete].filter(Boolean).join("; "))))));
    const logs = el("div", { id: "logs" });
    for (const run of detail.runs.slice().reverse()) {
      for (const streamName of ["stdout", "stderr"]) {
        const pre = el("pre", { class: "log", id: "log-" + run.attempt + "-" + streamName });
        logs.append(el("h2", {}, "Attempt " + run.attempt + " " + streamName + (run.ended_at ? "" : " (live)")), pre);
        if (!run.ended_at && LIVE) follow(id, run.attempt, streamName, pre);
        else api("/api/jobs/" + id + "/log?attempt=" + run.attempt + "&stream=" + streamName)
          .then((chunk) => { pre.textContent = chunk.text || "(empty)"; })
          .catch((error) => { pre.textContent = "(" + error.message + ")"; });
      }
    }
    root.replaceChildren(el("h1", {}, "Job " + id), facts, actions, el("h2", {}, "Attempts"),
      detail.runs.length ? attempts : el("p", { class: "muted" }, "Not started yet."), logs);
  }
  function follow(jobId, attempt, streamName, pre) {
    const key = attempt + streamName;
    if (following && following[key]) {
      pre.replaceWith(following[key].pre);
      return;
    }
    following = following || {};
    const controller = new AbortController();
    following[key] = { pre, controller };
    readEvents("/api/jobs/" + jobId + "/output?attempt=" + attempt + "&stream=" + streamName, controller, (name, data) => {
      if (name === "output") pre.textContent += data.text;
      else if (name === "end") { pre.textContent += data.text; if (!pre.textContent) pre.textContent = "(empty)"; pre.dataset.ended = "1"; }
      else if (name === "failed") pre.textContent += "(" + data.error + ")";
      pre.scrollTop = pre.scrollHeight;
    });
  }
  return { render: () => refresh(), refresh };
}

// -- live ---------------------------------------------------------------------

async function readEvents(path, controller, onEvent) {
  try {
    const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        onEvent(name, data ? JSON.parse(data) : null);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") say("live updates: " + error.message, true);
    return false;
  }
}

function startLive() {
  const badge = document.getElementById("live");
  if (!LIVE) { badge.textContent = "live updates off"; return; }
  if (stream || document.hidden) return;
  stream = new AbortController();
  badge.textContent = "● live";
  badge.className = "live on";
  const mine = stream;
  readEvents("/api/events", mine, (name, data) => {
    if (name !== "snapshot") return;
    lastSnapshot = data;
    if (view) Promise.resolve(view.render(data)).catch((error) => say(error.message, true));
  }).then(() => {
    if (stream === mine) { stream = null; badge.textContent = "live updates stopped"; badge.className = "live"; }
  });
}

function stopLive() {
  if (stream) { stream.abort(); stream = null; }
  const badge = document.getElementById("live");
  badge.textContent = "paused (tab hidden)";
  badge.className = "live";
}

document.addEventListener("visibilitychange", () => {
  if (!LIVE) return;
  if (document.hidden) stopLive();
  else { if (view) view.refresh().catch(() => {}); startLive(); }
});

// -- token and start ----------------------------------------------------------

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const forget = document.getElementById("token-forget");
  if (location.hash.startsWith("#token=")) {
    token = decodeURIComponent(location.hash.slice(7));
    sessionStorage.setItem("queued-token", token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (token) { input.hidden = true; document.getElementById("token-save").hidden = true; forget.hidden = false; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) return;
    const response = await fetch("/api/auth", { headers: { Authorization: "Bearer " + candidate } });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok || !answer.token) { say("that is not the web token (queuectl web token shows it)", true); return; }
    sessionStorage.setItem("queued-token", candidate);
    location.reload();
  });
  forget.addEventListener("click", () => { sessionStorage.removeItem("queued-token"); location.reload(); });
}

function start() {
  setupToken();
  const path = location.pathname;
  const job = path.match(/^\/job\/(\d+)$/);
  if (job) view = jobView(Number(job[1]));
  else if (path === "/jobs") view = jobsView();
  else view = overview();
  const current = path === "/jobs" ? "nav-jobs" : path === "/" ? "nav-overview" : null;
  if (current) document.getElementById(current).className = "current";
  view.refresh().then(() => { document.body.dataset.ready = "1"; }).catch((error) => say(error.message, true));
  startLive();
}

start();
