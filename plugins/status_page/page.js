"use strict";
// Everything on this page comes from the JSON API; every string from it reaches the page as
// text (textContent, text nodes, attributes), never as markup.
(() => {
  const REFRESH_MS = Number(document.body.dataset.refreshSeconds) * 1000;
  const MAP_REFRESH_MS = Number(document.body.dataset.mapRefreshSeconds) * 1000;
  const TOKEN_KEY = "soundspan-api-token";
  const PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1",
    "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#17becf",
  ];
  const GREY = "#9aa3ab";
  const byId = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // --- the API, with the token a person typed in ---------------------------------------------

  let memoryToken = ""; // where localStorage is refused (private windows, some policies)

  function storedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || memoryToken;
    } catch {
      return memoryToken;
    }
  }

  function storeToken(token) {
    memoryToken = token;
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      // kept in memory for this visit only
    }
    byId("forget-token").hidden = !token;
  }

  async function api(path, body) {
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { headers, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let answer;
    try {
      answer = await fetch(path, init);
    } catch {
      throw new ApiError(0, "the host does not answer");
    }
    let data = null;
    try {
      data = await answer.json();
    } catch {
      data = null;
    }
    if (answer.status === 401) askForToken(token !== "");
    if (!answer.ok) {
      const message = data && data.error && data.error.message;
      throw new ApiError(answer.status, message || `${answer.status} ${answer.statusText}`);
    }
    return data;
  }

  // what a panel says when its call failed; a missing token is asked for once, at the top
  function trouble(error) {
    return error.status === 401 ? "waiting for the API token" : error.message;
  }

  function askForToken(refused) {
    const panel = byId("token");
    byId("token-note").textContent = refused
      ? "The stored token was refused; enter the current one."
      : "";
    if (panel.hidden) {
      panel.hidden = false;
      byId("token-input").focus();
    }
  }

  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId("token-input");
    storeToken(input.value.trim());
    input.value = "";
    byId("token").hidden = true;
    refreshStatus();
    refreshMap();
  });

  byId("forget-token").addEventListener("click", () => {
    storeToken("");
    refreshStatus();
  });

  // --- small helpers --------------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function setNote(id, text, isError = false) {
    const note = byId(id);
    note.textContent = text || "";
    note.classList.toggle("error", Boolean(isError));
  }

  const number = new Intl.NumberFormat();

  function plural(count, one, many) {
    return `${number.format(count)} ${count === 1 ? one : many}`;
  }

  function duration(seconds) {
    if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h ${minutes % 60} min`;
    return `${Math.round(hours / 24)} days`;
  }

  function fileName(path) {
    return path.split("/").pop();
  }

  function trackName(track) {
    return track.title || fileName(track.path);
  }

  function byline(track) {
    return [track.artist, track.album].filter(Boolean).join(" — ");
  }

  // --- analysis progress ----------------------------------------------------------------------

  // "downloading 35 % (245 of 700 MB, 12 MB/s, about 40 s left)": a model on its way
  function downloadWords(download) {
    const megabytes = (bytes) => number.format(Math.round(bytes / 1e6));
    if (!download.bytes_total) return `downloading ${megabytes(download.bytes_done)} MB`;
    const done = Math.floor((100 * download.bytes_done) / download.bytes_total);
    const parts = [
      `${megabytes(download.bytes_done)} of ${megabytes(download.bytes_total)} MB`,
      `${megabytes(download.bytes_per_second)} MB/s`,
    ];
    if (download.eta_seconds !== null) parts.push(`about ${duration(download.eta_seconds)} left`);
    return `downloading ${done} % (${parts.join(", ")})`;
  }

  // what the analyzer's model is now, in words that are true for its state
  function modelWords(analyzer) {
    switch (analyzer.state) {
      case "unavailable":
        return "No model loaded.";
      case "downloading":
        return analyzer.download
          ? `Model ${downloadWords(analyzer.download)}.`
          : "Model downloading.";
      case "loading":
        return `Loading model ${analyzer.model_id}…`;
      default:
        return analyzer.trained
          ? `trained model ${analyzer.model_id}`
          : "untrained weights: test or random, results mean nothing";
    }
  }

  // "12 tracks (31 min of audio) waiting · 4.2 tracks/min · 9.8 audio min/min · about 3 min left"
  function paceWords(analyzer) {
    const counts = analyzer.counts;
    const remaining = counts.pending + counts.running;
    if (!remaining) return "Nothing left to analyze.";
    let waiting = plural(remaining, "track", "tracks");
    if (analyzer.audio_minutes_waiting) {
      waiting += ` (${duration(analyzer.audio_minutes_waiting * 60)} of audio)`;
    }
    if (analyzer.state !== "ready") return `${waiting} waiting for the model.`;
    const parts = [`${waiting} waiting`];
    // null until the current run has finished enough tracks to measure
    if (analyzer.tracks_per_minute == null || analyzer.audio_minutes_per_minute == null) {
      parts.push("measuring…");
    } else {
      const rate = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 });
      parts.push(`${rate.format(analyzer.tracks_per_minute)} tracks/min`);
      parts.push(`${rate.format(analyzer.audio_minutes_per_minute)} audio min/min`);
      if (analyzer.eta_seconds != null) parts.push(`about ${duration(analyzer.eta_seconds)} left`);
    }
    return parts.join(" · ");
  }

  // why pending jobs were queued, outdated workers, and a line about the model, when present;
  // `now` is the host's clock, which the workers' last_seen comes from
  function extraLines(analyzer, now) {
    const lines = [];
    if (analyzer.detail) lines.push(el("p", { class: "detail" }, analyzer.detail));
    if (analyzer.queued_because && analyzer.queued_because.length) {
      const reasons = analyzer.queued_because.map(
        (queued) => `${queued.reason} (${plural(queued.jobs, "job", "jobs")})`,
      );
      lines.push(el("p", { class: "queued" }, `Queued because: ${reasons.join(" · ")}`));
    }
    if (analyzer.outdated_workers && analyzer.outdated_workers.length) {
      const workers = analyzer.outdated_workers.map(
        (worker) => `${worker.worker} (version ${worker.version}, `
          + `seen ${duration(Math.max(0, now - worker.last_seen))} ago)`,
      );
      lines.push(
        el(
          "p",
          { class: "warning" },
          `Workers on another model version take none of these jobs: ${workers.join(", ")}`,
        ),
      );
    }
    return lines;
  }

  function analyzerCard(analyzer, now) {
    const counts = analyzer.counts;
    const total = counts.done + counts.pending + counts.running + counts.failed;
    const percent = total ? Math.floor((100 * counts.done) / total) : 100;
    const bar = el("div", {
      class: "bar",
      role: "progressbar",
      "aria-label": `${analyzer.name}: ${counts.done} of ${total} tracks analyzed`,
      "aria-valuemin": 0,
      "aria-valuemax": total,
      "aria-valuenow": counts.done,
    });
    for (const part of ["done", "running", "failed"]) {
      const segment = el("span", { class: part });
      segment.style.width = total ? `${(100 * counts[part]) / total}%` : "0";
      bar.append(segment);
    }
    const ready = analyzer.state === "ready";
    let reason = ready ? null : analyzer.reason;
    if (analyzer.state === "unavailable" && !reason) {
      reason = "The host's log says why; restart the host once that is fixed.";
    }
    return el(
      "article",
      { class: "analyzer", "data-analyzer": analyzer.name, "data-state": analyzer.state },
      el(
        "div",
        { class: "analyzer-head" },
        el("h3", {}, analyzer.name),
        el("span", { class: `badge ${analyzer.state}` }, analyzer.state),
        ready && !analyzer.trained ? el("span", { class: "badge untrained" }, "untrained") : null,
        el("span", { class: "percent" }, `${percent}%`),
      ),
      el("p", { class: ready && !analyzer.trained ? "model untrained" : "model" }, modelWords(analyzer)),
      reason ? el("p", { class: "reason" }, reason) : null,
      bar,
      el(
        "div",
        { class: "counts" },
        el("span", {}, `${number.format(counts.done)} of ${plural(total, "track", "tracks")} analyzed`),
        el("span", { class: "key running" }, `${number.format(counts.running)} running`),
        el("span", { class: "key pending" }, `${number.format(counts.pending)} pending`),
        el("span", { class: "key failed" }, `${number.format(counts.failed)} failed`),
      ),
      el("p", { class: "pace" }, paceWords(analyzer)),
      ...extraLines(analyzer, now),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "model"),
        el("dd", {}, analyzer.model_id),
        el("dt", {}, "device"),
        el("dd", {}, analyzer.device),
        el("dt", {}, "embedding"),
        el("dd", {}, `${analyzer.dimension} dimensions · version ${analyzer.version}`),
      ),
    );
  }

  // only a card whose words changed is replaced: a refresh keeps a person's text selection
  function showCards(container, cards) {
    const shown = [...container.children];
    const same = (node, i) => node.dataset.analyzer === cards[i].dataset.analyzer;
    if (shown.length !== cards.length || !shown.every(same)) {
      container.replaceChildren(...cards);
      return;
    }
    shown.forEach((node, i) => {
      if (!node.isEqualNode(cards[i])) node.replaceWith(cards[i]);
    });
  }

  // /healthz, open to anyone, says only whether the database answers: the host's version is
  // its built-in plugins' version
  async function loadHealth(plugins) {
    let line;
    try {
      const health = await api("healthz");
      const builtin = (await plugins).find((plugin) => plugin.builtin);
      const host = builtin ? `soundspan host ${builtin.version}` : "soundspan host";
      line = `${host} · database ${health.database}`;
    } catch (error) {
      line = `host: ${error.message}`;
    }
    byId("host-line").textContent = line;
  }

  async function loadStatus() {
    try {
      const status = await api("api/analysis/status");
      const library = status.library;
      byId("library").textContent = [
        plural(library.tracks, "track", "tracks"),
        plural(library.distinct_contents, "distinct recording", "distinct recordings"),
        `${number.format(library.missing)} missing`,
      ].join(" · ");
      const cards = status.analyzers.map((analyzer) => analyzerCard(analyzer, status.time));
      showCards(byId("analyzers"), cards);
      setNote("analyzers-note", status.analyzers.length ? "" : "No analyzer is enabled.");
      return true;
    } catch (error) {
      byId("analyzers").replaceChildren();
      setNote("analyzers-note", `Progress unavailable: ${trouble(error)}.`, error.status !== 401);
      return false;
    }
  }

  // --- failures -------------------------------------------------------------------------------

  function failureRow(failure) {
    const track = failure.track;
    const when = failure.finished_at ? new Date(failure.finished_at).toLocaleString() : "";
    return el(
      "tr",
      {},
      el(
        "td",
        {},
        el("div", { class: "path" }, track.path),
        byline(track) ? el("div", { class: "muted" }, byline(track)) : null,
      ),
      el("td", { "data-label": "analyzer" }, failure.analyzer),
      el("td", { class: "reason-cell" }, failure.error || "no reason recorded"),
      el("td", { class: "number", "data-label": "attempts" }, String(failure.attempts)),
      el("td", { "data-label": "when" }, when),
    );
  }

  async function loadFailures() {
    const table = byId("failures");
    try {
      const answer = await api("api/analysis/failures?limit=20");
      table.tBodies[0].replaceChildren(...answer.failures.map(failureRow));
      table.hidden = answer.failures.length === 0;
      byId("failures-count").textContent =
        answer.total > answer.failures.length
          ? `latest ${answer.failures.length} of ${number.format(answer.total)}`
          : plural(answer.total, "failure", "failures");
      setNote("failures-note", answer.total ? "" : "No analysis has failed.");
    } catch (error) {
      table.hidden = true;
      byId("failures-count").textContent = "";
      const why = error.status === 404 ? "this host does not list them" : trouble(error);
      setNote("failures-note", `Failures unavailable: ${why}.`, ![401, 404].includes(error.status));
    }
  }

  // --- search and similar tracks ---------------------------------------------------------------

  function resultRow(result) {
    const track = result.track;
    return el(
      "li",
      { "data-track": track.id },
      el(
        "div",
        { class: "track" },
        el("div", { class: "name" }, trackName(track)),
        byline(track) ? el("div", { class: "muted" }, byline(track)) : null,
        el("div", { class: "path" }, track.path),
      ),
      el("span", { class: "score", title: "similarity" }, result.score.toFixed(2)),
      el(
        "button",
        { class: "link", type: "button", onclick: () => showSimilar(track.id) },
        "similar",
      ),
    );
  }

  // which analyzer answered, and for a search by tags, which tags the words matched
  function answeredBy(answer) {
    if (!answer.matched_tags) return `Answered by ${answer.analyzer}.`;
    const byTags = `Answered by ${answer.analyzer}: no analyzer that understands text is ready,`
      + " so your words were looked up as tags.";
    if (!answer.matched_tags.length) {
      return `${byTags} They matched no tag, so no track matches them:`
        + " try a genre, mood or instrument word.";
    }
    return `${byTags} Your words matched tags: ${answer.matched_tags.join(", ")}.`;
  }

  function showResults(title, results, isError = false, playlistName = "", via = "") {
    setNote("results-title", title, isError);
    setNote("results-via", via);
    byId("results").replaceChildren(...results.map(resultRow));
    sending.trackIds = results.map((result) => result.track.id);
    // a playlist name is a plain name: no slashes, control characters or leading dots
    byId("send-name").value = playlistName.replace(/[/\\\x00-\x1f\x7f]+/g, " ")
      .replace(/^[\s.]+/, "").slice(0, 60).trim();
    setNote("send-note", "");
    showSendForm();
  }

  // --- a result list sent to the user's music server (a plugin's "send_playlist" panel) ------

  const sending = { trackIds: [], users: [] };

  function showSendForm() {
    byId("send-form").hidden = !(sending.users.length && sending.trackIds.length);
  }

  async function loadServerUsers(plugins) {
    try {
      // asked only where an enabled plugin feeds the panel: its route says who may get one
      const panel = (await plugins).flatMap((plugin) => (plugin.enabled && plugin.panels) || [])
        .find((declared) => declared.name === "send_playlist");
      sending.users = panel ? (await api(panel.route.replace(/^\//, ""))).server_users : [];
    } catch {
      sending.users = []; // it is not answering: no button
    }
    const select = byId("send-user");
    const chosen = select.value;
    select.replaceChildren(...sending.users.map((user) => el("option", { value: user }, user)));
    if (sending.users.includes(chosen)) select.value = chosen;
    showSendForm();
  }

  byId("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = byId("send-name").value.trim();
    const user = byId("send-user").value;
    setNote("send-note", `Sending “${name}” to ${user}…`);
    try {
      const body = { name, track_ids: sending.trackIds, send_to: { server_user: user } };
      const sent = (await api("api/playlists", body)).sent;
      const left = sent.unmatched
        ? `; ${plural(sent.unmatched, "track", "tracks")} left out (not on the server)`
        : "";
      const verb = sent.created ? "Made" : "Updated";
      setNote("send-note", `${verb} “${name}” for ${user}: ${plural(sent.songs, "song", "songs")}${left}.`);
    } catch (error) {
      setNote("send-note", `Not sent: ${trouble(error)}.`, true);
    }
  });

  byId("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = byId("search-input").value.trim();
    if (!text) return;
    showResults(`Searching for “${text}”…`, []);
    try {
      const answer = await api("api/vibe/search", { text, limit: 20 });
      const found = `${plural(answer.results.length, "track", "tracks")} for “${text}”`;
      showResults(found, answer.results, false, text, answeredBy(answer));
    } catch (error) {
      showResults(`Search failed: ${trouble(error)}.`, [], true);
    }
  });

  async function showSimilar(trackId) {
    showResults("Finding similar tracks…", []);
    map.selected = trackId; // ringed on the map, when it is there
    drawMap();
    try {
      const answer = await api(`api/vibe/similar/${encodeURIComponent(trackId)}?limit=20`);
      const like = `Like ${trackName(answer.track)}`;
      const title = `Like “${trackName(answer.track)}”`;
      showResults(title, answer.results, false, like, answeredBy(answer));
    } catch (error) {
      showResults(`No similar tracks: ${trouble(error)}.`, [], true);
    }
    byId("results-title").scrollIntoView({ block: "nearest" });
  }

  // --- the library map ------------------------------------------------------------------------

  const map = { points: [], colours: new Map(), placed: [], selected: null };

  function colourLabels(points) {
    const counts = new Map();
    for (const point of points) counts.set(point.label, (counts.get(point.label) || 0) + 1);
    const labels = [...counts.keys()]
      .filter((label) => label !== null)
      .sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b));
    map.colours = new Map(labels.slice(0, PALETTE.length).map((label, i) => [label, PALETTE[i]]));
    const legend = labels.slice(0, PALETTE.length).map((label) => [label, map.colours.get(label), counts.get(label)]);
    const others = points.length - legend.reduce((sum, entry) => sum + entry[2], 0);
    if (others) legend.push([labels.length > PALETTE.length ? "other" : "no label", GREY, others]);
    byId("legend").replaceChildren(
      ...legend.map(([label, colour, count]) => {
        const swatch = el("span", { class: "swatch" });
        swatch.style.background = colour;
        return el("li", { "data-label": label }, swatch, label, el("span", { class: "muted" }, `(${count})`));
      }),
    );
  }

  function drawMap() {
    const canvas = byId("map");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    const points = map.points;
    map.placed = [];
    if (!points.length) return;
    // one scale for both axes, so distances on screen keep their proportions
    const xs = points.map((point) => point.x);
    const ys = points.map((point) => point.y);
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const pad = 18;
    const scale = Math.min(
      (width - 2 * pad) / Math.max(maxX - minX, 1e-6),
      (height - 2 * pad) / Math.max(maxY - minY, 1e-6),
    );
    const radius = points.length < 300 ? 5 : points.length < 5000 ? 3 : 1.6;
    context.globalAlpha = points.length < 300 ? 0.9 : 0.7;
    for (const point of points) {
      const x = width / 2 + (point.x - (minX + maxX) / 2) * scale;
      const y = height / 2 - (point.y - (minY + maxY) / 2) * scale;
      map.placed.push([x, y, point]);
      context.fillStyle = map.colours.get(point.label) || GREY;
      context.beginPath();
      context.arc(x, y, radius, 0, 2 * Math.PI);
      context.fill();
    }
    context.globalAlpha = 1;
    const selected = map.placed.find(([, , point]) => point.id === map.selected);
    if (selected) {
      context.strokeStyle = "#1d2329";
      context.lineWidth = 2;
      context.beginPath();
      context.arc(selected[0], selected[1], radius + 4, 0, 2 * Math.PI);
      context.stroke();
    }
  }

  byId("map").addEventListener("click", (event) => {
    const box = event.currentTarget.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    let nearest = null;
    let best = 12 * 12; // within 12 px
    for (const [px, py, point] of map.placed) {
      const distance = (px - x) ** 2 + (py - y) ** 2;
      if (distance < best) [nearest, best] = [point, distance];
    }
    if (!nearest) return;
    showSimilar(nearest.id);
  });

  async function refreshMap() {
    try {
      const answer = await api("api/vibe/map");
      map.points = answer.points;
      colourLabels(answer.points);
      byId("map-note").textContent = answer.points.length
        ? `${plural(answer.points.length, "track", "tracks")} · ${answer.method.toUpperCase()} of ${answer.analyzer} embeddings · coloured by top tag`
        : "No track is analyzed yet.";
    } catch (error) {
      map.points = [];
      byId("legend").replaceChildren();
      byId("map-note").textContent =
        error.status === 503 || error.status === 404
          ? "No map: no analyzer with embeddings is enabled."
          : `Map unavailable: ${trouble(error)}.`;
    }
    byId("map").dataset.points = String(map.points.length);
    drawMap();
  }

  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(drawMap);
  });

  // --- refreshing -----------------------------------------------------------------------------

  async function refreshStatus() {
    // none when the host does not answer or asks for a token first
    const plugins = api("api/plugins").then((answer) => answer.plugins, () => []);
    const [, status] = await Promise.allSettled([
      loadHealth(plugins), loadStatus(), loadFailures(), loadServerUsers(plugins),
    ]);
    byId("updated").textContent =
      status.value === true ? `updated ${new Date().toLocaleTimeString()}` : "";
  }

  function every(milliseconds, task) {
    const run = async () => {
      try {
        if (!document.hidden) await task();
      } finally {
        setTimeout(run, milliseconds);
      }
    };
    run();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshStatus();
  });

  byId("forget-token").hidden = !storedToken();
  every(REFRESH_MS, refreshStatus);
  every(MAP_REFRESH_MS, refreshMap);
})();
