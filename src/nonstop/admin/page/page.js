// The live status page of nonstop: reads /events (server-sent events) with fetch(), so that
// it can send "Authorization: Bearer" (an EventSource cannot), and renders what it reads.
// No build step, no library, nothing loaded from another host.
"use strict";

(() => {
  const WINDOW = 300; // seconds of traffic the chart shows
  const STALL = 45000; // ms without a byte (three heartbeats): the stream is dead
  const MAX_BACKOFF = 30000;
  const TOKEN_KEY = "nonstop-token";

  const state = {
    status: null,
    samples: [],
    timelines: new Map(), // app -> {release, previous, steps, outcome}
    events: [],
    epoch: null,
    lastId: null,
    retry: 2000,
    failures: 0,
  };

  // -- the token: from the fragment (never sent to a server), kept for this tab only ------

  function takeToken() {
    const match = location.hash.match(/(?:^#|&)token=([^&]*)/);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  // -- DOM helpers ----------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) el.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
    return el;
  }

  function replace(id, ...children) {
    document.getElementById(id).replaceChildren(...children.flat());
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
    if (value < 3600) return `${Math.floor(value / 60)} min ${Math.floor(value % 60)} s`;
    if (value < 86400) return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
    return `${Math.floor(value / 86400)} d ${Math.floor((value % 86400) / 3600)} h`;
  }

  function clock(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
  }

  function badge(text, kind) {
    return h("span", { class: `badge badge-${kind}` }, text);
  }

  function serverKind(server) {
    if (server.draining) return "drain";
    if (server.state === "up") return "ok";
    if (server.state === "full") return "warn";
    return "bad";
  }

  // -- connection status and the token message ------------------------------------------

  function setConnection(kind, text) {
    const el = document.getElementById("connection");
    el.dataset.state = kind;
    el.textContent = text;
  }

  function showAuth(text) {
    const el = document.getElementById("auth");
    el.hidden = !text;
    el.replaceChildren();
    if (!text) return;
    el.append(h("strong", {}, text.title), h("p", {}, text.body));
  }

  const NEEDS_TOKEN = {
    title: "This admin listener needs a token.",
    body:
      "Open this page as /#token=YOUR_TOKEN (the token from [admin] token or token_file). " +
      "The part after # stays in the browser: it is never sent to the server or written to its logs.",
  };
  const TOKEN_REFUSED = {
    title: "The token was refused.",
    body: "Open this page again as /#token=YOUR_TOKEN with the token from [admin] token or token_file.",
  };

  // -- server-sent events, parsed by hand (the framing of the HTML standard) ---------------

  function sseParser(dispatch) {
    let buffer = "";
    let data = [];
    let event = "";
    let id = null;
    return (text) => {
      buffer += text;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an incomplete line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (data.length) dispatch({ event: event || "message", data: data.join("\n"), id });
          data = [];
          event = "";
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^\d+$/.test(value)) state.retry = Number(value);
      }
    };
  }

  // One connection at a time: a new token (typed into the fragment) starts a new one.
  let current = null;

  function start(token) {
    if (current) current.stop();
    const run = { stopped: false, abort: new AbortController(), timer: null };
    run.stop = () => {
      run.stopped = true;
      run.abort.abort();
      clearTimeout(run.timer);
    };
    current = run;
    state.failures = 0;
    connect(token, run);
  }

  async function connect(token, run) {
    if (run.stopped) return;
    const headers = { Accept: "text/event-stream" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (state.lastId !== null) headers["Last-Event-ID"] = String(state.lastId);
    const abort = run.abort;
    let response;
    try {
      response = await fetch("/events", { headers, cache: "no-store", signal: abort.signal });
    } catch (err) {
      return reconnect(token, run, "cannot reach nonstop");
    }
    if (run.stopped) return;
    if (response.status === 401) {
      setConnection("auth", "not connected: needs a token");
      showAuth(token ? TOKEN_REFUSED : NEEDS_TOKEN);
      return; // retrying cannot help: a new token needs a new URL
    }
    if (!response.ok || !response.body) {
      return reconnect(token, run, `the server answered ${response.status}`);
    }
    showAuth(null);
    setConnection("live", "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parse = sseParser(handle);
    let watchdog = setTimeout(() => abort.abort(), STALL);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        clearTimeout(watchdog);
        watchdog = setTimeout(() => abort.abort(), STALL);
        state.failures = 0;
        parse(value);
      }
    } catch (err) {
      // aborted by the watchdog, or the connection broke: reconnect below
    } finally {
      clearTimeout(watchdog);
    }
    reconnect(token, run, "the stream ended");
  }

  function reconnect(token, run, why) {
    if (run.stopped) return;
    run.abort = new AbortController();
    state.failures += 1;
    const base = Math.min(state.retry * 2 ** (state.failures - 1), MAX_BACKOFF);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    setConnection("down", `${why}: reconnecting in ${Math.ceil(delay / 1000)} s`);
    run.timer = setTimeout(() => connect(token, run), delay);
  }

  // -- what each event does -------------------------------------------------------------

  function handle(message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (err) {
      return;
    }
    if (message.event === "snapshot") return onSnapshot(data);
    const id = message.id === null ? null : Number(message.id);
    if (id !== null) {
      if (state.lastId !== null && id <= state.lastId) return; // already seen
      state.lastId = id;
    }
    const apply = {
      deploy: onDeploy,
      health: onServerChange,
      drain: onServerChange,
      instance: onInstance,
    }[message.event];
    if (apply) apply(data);
    if (data.event !== "waiting") logEvent(message.event, data); // the timeline shows the wait

  }

  function onSnapshot(data) {
    if (data.epoch !== undefined && data.epoch !== state.epoch) {
      // another daemon (or a restarted one): its event ids start again
      state.epoch = data.epoch;
      state.lastId = null;
      state.timelines.clear();
    }
    state.status = data.status || {};
    if (data.history) state.samples = data.history.slice();
    if (data.sample) state.samples.push(data.sample);
    const newest = state.samples.length ? state.samples[state.samples.length - 1].t : 0;
    state.samples = state.samples.filter((s) => s.t >= newest - WINDOW);
    render();
  }

  function onDeploy(event) {
    const app = event.app || "?";
    let line = state.timelines.get(app);
    if (event.event === "begin" || !line) {
      line = { release: null, previous: null, steps: [], outcome: null };
      state.timelines.set(app, line);
    }
    if (event.event === "begin") {
      line.release = event.release;
      line.previous = event.previous;
    }
    if (event.event === "done") line.outcome = event.outcome || "done";
    // The health gate's wait is one step that counts up, not a step a second.
    const last = line.steps[line.steps.length - 1];
    if (event.event === "waiting" && last && last.event === "waiting" && last.port === event.port) {
      line.steps[line.steps.length - 1] = event;
    } else {
      line.steps.push(event);
    }
    renderDeploys();
  }

  function findServer(upstream, address) {
    const servers = ((state.status || {}).upstreams || {})[upstream] || [];
    return servers.find((server) => server.address === address);
  }

  function onServerChange(event) {
    const server = findServer(event.upstream, event.address);
    if (!server) return;
    if ("healthy" in event) server.health_ok = Boolean(event.healthy);
    if ("draining" in event) server.draining = Boolean(event.draining);
    if (server.draining) server.state = "draining";
    else if (server.health_ok === false) server.state = "unhealthy";
    else if (server.state === "unhealthy" || server.state === "draining") server.state = "up";
    renderUpstreams();
  }

  function onInstance(event) {
    const app = ((state.status || {}).apps || {})[event.app];
    if (!app) return;
    app.instances = app.instances || [];
    const found = app.instances.find((i) => i.port === event.port);
    if (found) Object.assign(found, event);
    else app.instances.push({ ...event });
    renderApps();
  }

  function describe(kind, data) {
    switch (kind) {
      case "deploy":
        return `${data.app}: ${data.message || data.event}`;
      case "health":
        return `${data.upstream} ${data.address} ${data.healthy ? "healthy" : "unhealthy"}` +
          (data.detail ? ` (${data.detail})` : "");
      case "drain":
        return `${data.upstream} ${data.address} ${data.draining ? "draining" : "back in service"}`;
      case "reload":
        return data.message || (data.ok === false ? "reload refused" : "configuration reloaded");
      case "instance":
        return `${data.app} :${data.port} ${data.state || ""} ${data.release || ""}`.trim();
      default:
        return data.message || kind;
    }
  }

  function logEvent(kind, data) {
    state.events.unshift({ at: data.at || Date.now() / 1000, kind, text: describe(kind, data) });
    state.events.length = Math.min(state.events.length, 50);
    replace(
      "events",
      state.events.map((e) =>
        h("li", { "data-kind": e.kind }, h("time", {}, clock(e.at)), " ", h("span", { class: "kind" }, e.kind), " ", e.text),
      ),
    );
  }

  // -- rendering ------------------------------------------------------------------------

  function render() {
    const s = state.status;
    const parts = [];
    if (s.pid) parts.push(`pid ${s.pid}`);
    if (s.uptime !== undefined) parts.push(`up ${seconds(s.uptime)}`);
    if (s.reloads !== undefined) parts.push(`${s.reloads} reloads`);
    if (s.connections !== undefined) parts.push(`${s.connections} connections`);
    if (s.listen) parts.push(`listening on ${s.listen.join(", ")}`);
    document.getElementById("daemon").textContent = parts.join(" · ");
    renderTraffic();
    renderDeploys();
    renderApps();
    renderUpstreams();
  }

  function renderTraffic() {
    const samples = state.samples.filter((s) => s.interval > 0);
    const chart = document.getElementById("chart");
    const title = document.getElementById("chart-label");
    chart.replaceChildren(title);
    if (!samples.length) return;
    const rate = (s) => s.requests / s.interval;
    const share = (s) => (s.requests ? s.errors / s.requests : 0);
    const last = samples[samples.length - 1];
    const recent = samples.filter((s) => s.t > last.t - 10); // smooth the figures over 10 s
    const requests = recent.reduce((n, s) => n + s.requests, 0);
    const errors = recent.reduce((n, s) => n + s.errors, 0);
    const span = recent.reduce((n, s) => n + s.interval, 0);
    const rps = span ? requests / span : 0;
    const errorShare = requests ? errors / requests : 0;
    document.getElementById("rps").textContent = rps < 10 ? rps.toFixed(1) : Math.round(rps);
    document.getElementById("error-rate").textContent = `${(errorShare * 100).toFixed(errorShare < 0.1 ? 2 : 1)} %`;
    title.textContent =
      `Requests per second over the last 5 minutes: now ${rps.toFixed(1)}, ` +
      `peak ${Math.max(...samples.map(rate)).toFixed(1)}; 5xx share now ${(errorShare * 100).toFixed(2)} %`;

    const W = 600;
    const H = 120;
    const top = niceCeiling(Math.max(1, ...samples.map(rate)));
    const errTop = Math.max(0.05, ...samples.map(share));
    const x = (t) => W - ((last.t - t) / WINDOW) * W;
    const yRate = (v) => H - (v / top) * (H - 14);
    const yErr = (v) => H - (v / errTop) * (H - 14);
    for (const fraction of [0.5, 1]) {
      const y = yRate(top * fraction);
      chart.append(svg("line", { x1: 0, x2: W, y1: y, y2: y, class: "grid" }));
    }
    const points = samples.map((s) => `${x(s.t).toFixed(1)},${yRate(rate(s)).toFixed(1)}`);
    chart.append(
      svg("path", { d: `M${x(samples[0].t).toFixed(1)},${H} L${points.join(" L")} L${x(last.t).toFixed(1)},${H} Z`, class: "area" }),
      svg("polyline", { points: points.join(" "), class: "rps" }),
      svg("polyline", {
        points: samples.map((s) => `${x(s.t).toFixed(1)},${yErr(share(s)).toFixed(1)}`).join(" "),
        class: "err",
      }),
    );
    const label = svg("text", { x: 4, y: 11, class: "axis" });
    label.textContent = `${top} req/s`;
    chart.append(label);
  }

  function niceCeiling(value) {
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  const STEP_NAMES = {
    begin: "Begin",
    started: "Started",
    waiting: "Waiting",
    healthy: "Healthy",
    refused: "Refused",
    switched: "Switched",
    drained: "Drained",
    verify: "Verify",
    rollback: "Rollback",
    stopped: "Stopped",
    done: "Done",
  };

  function stepKind(step) {
    if (step.event === "refused" || step.event === "rollback") return "bad";
    if (step.event === "done") return step.outcome === "ok" ? "ok" : "bad";
    return "ok";
  }

  function renderDeploys() {
    if (!state.timelines.size) return;
    const cards = [];
    for (const [app, line] of state.timelines) {
      const running = line.outcome === null;
      const live = (((state.status || {}).apps || {})[app] || {}).deploy;
      const heading = h(
        "h3",
        {},
        `${app}: `,
        line.previous ? `${line.previous} → ` : "",
        line.release || "?",
        " ",
        running
          ? badge(live && live.phase ? `in progress: ${live.phase}` : "in progress", "drain")
          : badge(line.outcome, line.outcome === "ok" ? "ok" : "bad"),
      );
      const steps = line.steps.map((step) =>
        h(
          "li",
          { "data-event": step.event, class: `step step-${stepKind(step)}` },
          h("span", { class: "step-name" }, STEP_NAMES[step.event] || step.event),
          h("span", { class: "step-time" }, step.t === undefined ? "" : `+${Number(step.t).toFixed(2)} s`),
          h("span", { class: "step-message" }, step.message || ""),
        ),
      );
      cards.push(h("article", { class: "card deploy", "data-app": app }, heading, h("ol", { class: "timeline" }, steps)));
    }
    replace("deploys", cards);
  }

  function table(caption, columns, rows) {
    return h(
      "div",
      { class: "scroll" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows),
      ),
    );
  }

  function renderApps() {
    const apps = (state.status || {}).apps || {};
    const names = Object.keys(apps).sort();
    if (!names.length) return replace("apps", h("p", { class: "muted" }, "No app is configured."));
    replace(
      "apps",
      names.map((name) => {
        const app = apps[name];
        const live = app.live;
        const facts = h(
          "dl",
          { class: "facts" },
          h("dt", {}, "live"),
          h("dd", { class: "live-release" }, live ? `${live.release} (slot ${live.slot}, ${live.since == null ? "not recorded yet" : `since ${clock(live.since)}`})` : "nothing deployed yet"),
          h("dt", {}, "previous"),
          h("dd", { class: "previous-release" }, (live && live.previous_release) || "–"),
        );
        if (app.deploy) {
          facts.append(
            h("dt", {}, "deploying"),
            h("dd", {}, `${app.deploy.release}: ${app.deploy.phase}, ${seconds(app.deploy.elapsed)}`),
          );
        }
        const last = (app.history || [])[0];
        if (last && !app.deploy) {
          facts.append(
            h("dt", {}, "last"),
            h("dd", {}, `${last.kind} of ${last.release}: ${last.outcome} in ${seconds(last.duration)}`),
          );
        }
        const rows = (app.instances || []).map((i) =>
          h(
            "tr",
            { "data-port": i.port },
            h("td", {}, `:${i.port}`),
            h("td", {}, i.release || "–"),
            h("td", {}, badge(i.state || "?", i.state === "running" ? "ok" : i.state === "crashed" ? "bad" : "drain")),
            h("td", { class: "num" }, i.in_flight ?? "–"),
            h("td", {}, i.live ? "live" : i.health || "–"),
            h("td", {}, i.pid ?? "–"),
            h("td", { class: "num" }, i.responses ?? "–"),
            h("td", { class: "num" }, i.responses_5xx ?? "–"),
          ),
        );
        const columns = ["port", "release", "state", "in flight", "health", "pid", "answers", "5xx"];
        const instances = table(`Instances of ${name}`, columns, rows);
        return h("article", { class: "card", "data-app": name }, h("h3", {}, name), facts, rows.length ? instances : h("p", { class: "muted" }, "No instance runs."));
      }),
    );
  }

  function renderUpstreams() {
    const upstreams = (state.status || {}).upstreams || {};
    const names = Object.keys(upstreams).sort();
    if (!names.length) return replace("upstreams", h("p", { class: "muted" }, "No upstream is configured."));
    replace(
      "upstreams",
      names.map((name) => {
        const servers = upstreams[name] || [];
        const up = servers.filter((s) => s.state === "up" && !s.draining).length;
        const rows = servers.map((s) =>
          h(
            "tr",
            { "data-address": s.address, "data-state": s.state },
            h("th", { scope: "row" }, s.address, s.backup ? " (backup)" : ""),
            h("td", { class: "server-state" }, badge(s.state, serverKind(s))),
            h("td", { class: "num server-load" }, s.max_conns ? `${s.conns} / ${s.max_conns}` : s.conns ?? "–"),
            h("td", { class: "server-health" }, s.health_ok === false ? "failing" : s.health_ok ? "passing" : "–"),
            h("td", { class: "server-drain" }, s.draining ? "draining" : "no"),
            h("td", { class: "num" }, s.fails ?? "–"),
            h("td", { class: "num" }, s.weight ?? "–"),
          ),
        );
        return h(
          "article",
          { class: "card", "data-upstream": name },
          h("h3", {}, name, " ", h("span", { class: "muted" }, `${up} of ${servers.length} serving`)),
          table(`Servers of ${name}`, ["server", "state", "in flight", "health check", "drain", "fails", "weight"], rows),
        );
      }),
    );
  }

  window.addEventListener("hashchange", () => {
    if (/(?:^#|&)token=/.test(location.hash)) start(takeToken());
  });
  start(takeToken());
})();
