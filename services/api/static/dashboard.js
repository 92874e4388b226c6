// facestream store dashboard. Plain script, no library: reads /api/v1 (the login cookie goes
// along by itself) and draws the hourly chart as SVG. Every time shown is the store's local
// time, as the server writes it (ISO 8601 with the store's offset), so the browser's own time
// zone never matters.
"use strict";

(function () {
  const root = document.body.dataset.root || "";
  const api = root + "/api/v1";
  const SVG = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 30000;
  const FEED_KEEP = 40;

  const $ = (id) => document.getElementById(id);
  const state = { stores: [], store: null, day: null, feed: null, timer: null };

  // -- small helpers -------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const clock = (iso) => iso.slice(11, 16); // "2026-11-27T18:05:00+01:00" -> "18:05"
  const isoDay = (iso) => iso.slice(0, 10);

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return Math.round(seconds) + " s";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function longDate(day) {
    const [y, m, d] = day.split("-").map(Number);
    // Noon UTC of that calendar date, printed in UTC: the weekday of the date itself.
    const at = new Date(Date.UTC(y, m - 1, d, 12));
    return at.toLocaleDateString("en-GB", {
      weekday: "long", day: "numeric", month: "long", year: "numeric", timeZone: "UTC",
    });
  }

  function shortDate(day) {
    const [y, m, d] = day.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d, 12)).toLocaleDateString("en-GB", {
      weekday: "short", day: "numeric", month: "short", timeZone: "UTC",
    });
  }

  function notice(text, bad) {
    const box = $("notice");
    box.hidden = !text;
    box.textContent = text || "";
    box.classList.toggle("bad", Boolean(bad));
  }

  async function getJSON(path) {
    const response = await fetch(api + path, { headers: { Accept: "application/json" } });
    if (response.status === 401) {
      // The session ended: back to the login page, then here again.
      const next = location.pathname + location.search;
      location.assign(root + "/login?next=" + encodeURIComponent(next));
      throw new Error("not logged in");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (body.error && body.error.message) || response.statusText;
      throw new Error(message);
    }
    return body;
  }

  const storeInfo = (id) => state.stores.find((s) => s.store === id);

  // -- rendering -----------------------------------------------------------------------------

  function renderFigures(day) {
    $("title").textContent = day.store;
    $("subtitle").textContent = longDate(day.date) + " · " + day.timezone;
    $("kpi-pv").textContent = day.pv;
    $("kpi-uv").textContent = day.uv;
    $("kpi-new").textContent = day.new;
    $("kpi-returning").textContent = day.returning;
    const share = (n) => (day.uv ? Math.round((100 * n) / day.uv) + "% of visitors" : "");
    $("kpi-new-share").textContent = share(day.new);
    $("kpi-returning-share").textContent = share(day.returning);
    $("kpi-dwell").textContent = duration(day.dwell_seconds_avg);
    $("kpi-dwell-note").textContent = day.dwell_visits
      ? "over " + day.dwell_visits + " visit" + (day.dwell_visits === 1 ? "" : "s")
      : "no visit long enough";
    $("kpi-members").textContent = day.members.length;
    $("chart-zone").textContent = "local time, " + day.timezone;
  }

  function niceStep(max) {
    const raw = Math.max(1, max) / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * power >= raw) return Math.max(1, m * power);
    return 10 * power;
  }

  function renderChart(hourly) {
    const box = $("chart");
    box.replaceChildren();
    const W = 760, H = 260, left = 36, right = 8, top = 18, bottom = 28;
    const max = Math.max(0, ...hourly);
    const step = niceStep(max);
    const ceiling = Math.max(step, Math.ceil(max / step) * step);
    const plotW = W - left - right, plotH = H - top - bottom;
    const slot = plotW / 24;
    const y = (v) => top + plotH - (v / ceiling) * plotH;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" });
    for (let v = 0; v <= ceiling; v += step) {
      chart.append(svg("line", { class: "grid-line", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      chart.append(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, v));
    }
    hourly.forEach((count, hour) => {
      const x = left + hour * slot;
      if (count > 0) {
        const bar = svg("rect", {
          class: "bar", x: x + slot * 0.14, width: slot * 0.72,
          y: y(count), height: top + plotH - y(count), rx: 3,
        });
        const label = String(hour).padStart(2, "0") + ":00–" + String(hour).padStart(2, "0") + ":59";
        bar.append(svg("title", {}, label + ": " + count + " visit" + (count === 1 ? "" : "s")));
        chart.append(bar);
        chart.append(svg("text", { class: "value", x: x + slot / 2, y: y(count) - 4, "text-anchor": "middle" }, count));
      }
      if (hour % 2 === 0) {
        chart.append(svg("text", { class: "axis", x: x + slot / 2, y: H - 8, "text-anchor": "middle" },
          String(hour).padStart(2, "0")));
      }
    });
    chart.dataset.total = String(hourly.reduce((a, b) => a + b, 0));
    box.append(chart);
    box.dataset.hourly = hourly.join(",");
  }

  function renderRecent(day) {
    const body = $("recent").tBodies[0];
    body.replaceChildren();
    for (const visit of day.recent) {
      const row = el("tr");
      row.append(el("td", {}, clock(visit.start)));
      row.append(el("td", {}, clock(visit.end)));
      const who = el("td");
      if (visit.kind === "member") {
        who.append(el("span", { class: "tag member" }, "member"), " ", visit.member_id);
      } else {
        who.append(el("span", { class: "tag" }, "visitor"));
      }
      row.append(who);
      row.append(el("td", { class: "num" }, visit.events));
      row.append(el("td", { class: "num" }, duration(visit.dwell_seconds)));
      body.append(row);
    }
    $("recent-empty").hidden = day.recent.length > 0;
  }

  function renderStores(days) {
    const body = $("stores").tBodies[0];
    body.replaceChildren();
    for (const day of days) {
      const row = el("tr", { class: "pick" + (day.store === state.store ? " current" : ""), "data-store": day.store });
      row.append(el("td", {}, day.store));
      for (const key of ["pv", "uv", "new", "returning"]) row.append(el("td", { class: "num" }, day[key]));
      row.append(el("td", { class: "num" }, duration(day.dwell_seconds_avg)));
      row.addEventListener("click", () => select(day.store, state.day));
      body.append(row);
    }
  }

  function addArrival(arrival, fresh) {
    const list = $("arrivals");
    const item = el("li", fresh ? { class: "fresh" } : {});
    item.append(el("span", { class: "time" }, clock(arrival.at)));
    item.append(el("span", { class: "who" }, arrival.member_id));
    const when = isoDay(arrival.at) === state.todayLocal ? "" : shortDate(isoDay(arrival.at)) + " · ";
    item.append(el("span", { class: "where" }, when + "camera " + arrival.camera_id));
    list.prepend(item);
    while (list.children.length > FEED_KEEP) list.lastElementChild.remove();
    $("arrivals-empty").hidden = true;
  }

  // -- loading -------------------------------------------------------------------------------

  async function loadDay() {
    const { store, day } = state;
    try {
      const all = await Promise.all(
        state.stores.map((s) => getJSON(`/stores/${encodeURIComponent(s.store)}/days/${day}`)),
      );
      const mine = all.find((d) => d.store === store);
      renderFigures(mine);
      renderChart(mine.hourly);
      renderRecent(mine);
      renderStores(all);
      notice("");
      document.body.dataset.loaded = store + "/" + day;
    } catch (error) {
      notice("Could not load the figures: " + error.message, true);
    }
  }

  function openFeed(store) {
    if (state.feed) state.feed.close();
    $("arrivals").replaceChildren();
    $("arrivals-empty").hidden = false;
    const live = $("live-state");
    live.className = "live";
    live.textContent = "connecting";
    const source = new EventSource(`${api}/stores/${encodeURIComponent(store)}/arrivals/stream`);
    let backlog = true;
    source.addEventListener("open", () => {
      live.className = "live on";
      live.textContent = "live";
    });
    source.addEventListener("arrival", (event) => {
      addArrival(JSON.parse(event.data), !backlog);
    });
    // The backlog comes in one burst on connect; later events are new arrivals.
    setTimeout(() => { backlog = false; }, 1500);
    source.addEventListener("error", () => {
      live.className = "live off";
      live.textContent = "reconnecting";
    });
    state.feed = source;
  }

  function select(store, day) {
    const info = storeInfo(store);
    const changedStore = store !== state.store;
    state.store = store;
    state.todayLocal = info ? info.today : null;
    state.day = day || state.todayLocal;
    $("store").value = store;
    $("day").value = state.day;
    const query = new URLSearchParams({ store, date: state.day });
    history.replaceState(null, "", location.pathname + "?" + query);
    if (changedStore) openFeed(store);
    loadDay();
    clearInterval(state.timer);
    // Today's figures move while the store is open; a past day's do not.
    if (state.day === state.todayLocal) state.timer = setInterval(loadDay, REFRESH_MS);
  }

  async function start() {
    const params = new URLSearchParams(location.search);
    try {
      state.stores = (await getJSON("/stores")).stores;
    } catch (error) {
      $("title").textContent = "Store dashboard";
      notice("Could not load the stores: " + error.message, true);
      return;
    }
    if (!state.stores.length) {
      $("title").textContent = "No store data yet";
      notice("The pipeline has not counted any visit yet. Figures appear here once it has.");
      return;
    }
    const picker = $("store");
    for (const s of state.stores) picker.append(el("option", { value: s.store }, s.store));
    const wanted = params.get("store");
    const store = storeInfo(wanted) ? wanted : state.stores[0].store;
    const day = /^\d{4}-\d{2}-\d{2}$/.test(params.get("date") || "") ? params.get("date") : null;
    picker.addEventListener("change", () => select(picker.value, state.day));
    $("day").addEventListener("change", (e) => { if (e.target.value) select(state.store, e.target.value); });
    $("today").addEventListener("click", () => select(state.store, storeInfo(state.store).today));
    select(store, day);
  }

  start();
})();
