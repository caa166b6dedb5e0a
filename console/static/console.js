// trocar console: the live page (frames over a WebSocket, force plots, message, mark, pause) and the
// review page (frames fetched on demand, timeline). No libraries, no build step.
"use strict";

function unpackFrame(buf) {
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  return [header, new Blob([new Uint8Array(buf, 4 + n)], {type: "image/jpeg"})];
}

function drawJpeg(canvas, blob, mark, done) {
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.onload = () => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    if (mark) {
      ctx.strokeStyle = "#3cf"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(mark[0] * canvas.width, mark[1] * canvas.height, 10, 0, 2 * Math.PI); ctx.stroke();
    }
    URL.revokeObjectURL(url);
    if (done) done();
  };
  img.src = url;
}

function showHud(h) {
  const hud = h.hud || {};
  document.getElementById("instruction").textContent = hud.instruction || "-";
  const t = document.getElementById("time");
  if (t) t.textContent = hud.time_s !== undefined ? Number(hud.time_s).toFixed(1) : "-";
  const p = document.getElementById("progress");
  if (p) p.textContent = hud.progress || "-";
  const w = document.getElementById("warnings");
  if (w) w.textContent = (hud.warnings || []).join("; ");
}

function post(url, fields) {
  const body = new URLSearchParams(Object.assign({csrf: window.CSRF}, fields));
  return fetch(url, {method: "POST", body: body, credentials: "same-origin"}).then(r => {
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  });
}

function trocarLive(sid) {
  const canvas = document.getElementById("view");
  const plot = document.getElementById("forces");
  const status = document.getElementById("status");
  const history = [[], []];  // |F| per tool, last 10 s at the frame rate
  let frames = 0, firstT = 0, sentMessage = 0, mark = null;
  window.trocarFrames = 0;
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live/" + sid + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { status.textContent = "connected"; };
  ws.onclose = () => { status.textContent = "session ended or connection closed"; };
  ws.onmessage = (ev) => {
    const [h, blob] = unpackFrame(ev.data);
    drawJpeg(canvas, blob, mark, () => {
      ws.send("ack " + h.id);
      frames += 1; window.trocarFrames = frames;
      if (!firstT) firstT = performance.now();
      const el = (performance.now() - firstT) / 1000;
      if (el > 0) document.getElementById("fps").textContent = (frames / el).toFixed(1);
    });
    showHud(h);
    const ins = (h.hud || {}).instructor || {};
    status.textContent = ins.paused ? "paused" : "live, tick " + h.tick;
    canvas.dataset.tick = h.tick;
    if (sentMessage && ins.message_id >= sentMessage) {
      document.getElementById("delivered").textContent = "on the trainee's HUD: " + ins.message;
    }
    h.force.forEach((f, i) => {
      if (i < 2) { history[i].push(Math.hypot(f[0], f[1], f[2])); if (history[i].length > 250) history[i].shift(); }
    });
    drawForces(plot, history);
  };
  document.getElementById("message-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("message");
    post("/live/" + sid + "/message", {text: input.value}).then(r => {
      sentMessage = r.message_id;
      document.getElementById("delivered").textContent = "sent, waiting for the session...";
    }).catch(e => { document.getElementById("delivered").textContent = String(e); });
  });
  canvas.addEventListener("click", (ev) => {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) / r.width, y = (ev.clientY - r.top) / r.height;
    post("/live/" + sid + "/mark", {x: x, y: y}).then(() => { mark = [x, y]; });
  });
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => {
    const want = pause.dataset.paused === "1" ? "0" : "1";
    post("/live/" + sid + "/pause", {paused: want}).then(r => {
      pause.dataset.paused = r.paused ? "1" : "0";
      pause.textContent = r.paused ? "resume" : "pause";
    });
  });
}

function drawForces(canvas, history) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, fmax = 8;  // full scale [N], as the trainee's HUD bar
  ctx.fillStyle = "#111"; ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#555"; ctx.beginPath(); ctx.moveTo(0, h - 4 / fmax * h); ctx.lineTo(w, h - 4 / fmax * h); ctx.stroke();
  ["#4c4", "#fa3"].forEach((c, i) => {
    const s = history[i];
    ctx.strokeStyle = c; ctx.beginPath();
    s.forEach((v, k) => {
      const x = w - (s.length - 1 - k) * (w / 250), y = h - Math.min(v, fmax) / fmax * h;
      if (k) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  });
}

function trocarReview(frameUrl, timeline) {
  const canvas = document.getElementById("view");
  const scrub = document.getElementById("scrub");
  const tEl = document.getElementById("t");
  scrub.max = timeline.duration;
  window.trocarFrames = 0;
  let busy = false, want = null, playing = false;
  function show(t) {
    if (busy) { want = t; return; }
    busy = true;
    fetch(frameUrl + "?t=" + t, {credentials: "same-origin"}).then(r => {
      if (!r.ok) throw new Error(r.status);
      return r.arrayBuffer();
    }).then(buf => {
      const [h, blob] = unpackFrame(buf);
      drawJpeg(canvas, blob, null, () => { window.trocarFrames += 1; canvas.dataset.t = h.t; });
      tEl.textContent = Number(h.t).toFixed(1);
      scrub.value = h.t;
      showHud(h);
    }).finally(() => {
      busy = false;
      if (want !== null) { const w = want; want = null; show(w); }
      else if (playing && Number(scrub.value) < timeline.duration) show(Number(scrub.value) + 0.2);
    });
  }
  scrub.addEventListener("input", () => show(Number(scrub.value)));
  document.getElementById("play").addEventListener("click", (ev) => {
    playing = !playing; ev.target.textContent = playing ? "stop" : "play";
    if (playing) show(Number(scrub.value) + 0.2);
  });
  const list = document.getElementById("events");
  timeline.events.forEach(e => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#"; a.className = "event"; a.textContent = e.t.toFixed(2) + " s  " + e.label;
    a.addEventListener("click", (ev) => { ev.preventDefault(); show(e.t); });
    li.appendChild(a); list.appendChild(li);
  });
  const table = document.getElementById("metrics");
  timeline.metrics.forEach(m => {
    const tr = document.createElement("tr");
    [m.label, m.value === null ? "-" : Number(m.value).toPrecision(4), m.unit].forEach(v => {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  show(0);
}
