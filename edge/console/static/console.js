// store-edge console: live figures over server-sent events (GET /events), a small chart of
// the outbox depth. No dependencies, nothing fetched from outside the hub.
"use strict";
(function () {
  const history = [];
  const MAX_POINTS = 300;

  function setFigures(figures) {
    for (const el of document.querySelectorAll("[data-figure]")) {
      const name = el.getAttribute("data-figure");
      if (name in figures) el.textContent = String(figures[name]);
    }
    const alerts = document.getElementById("alerts");
    if (alerts && Array.isArray(figures.alerts)) {
      alerts.replaceChildren();
      if (figures.alerts.length === 0) {
        const li = document.createElement("li");
        li.className = "ok";
        li.textContent = "none";
        alerts.appendChild(li);
      }
      for (const alert of figures.alerts) {
        const li = document.createElement("li");
        li.className = alert.level;
        const code = document.createElement("b");
        code.textContent = alert.code;
        li.append(code, " " + alert.message);
        alerts.appendChild(li);
      }
    }
    history.push(Number(figures.pending) || 0);
    if (history.length > MAX_POINTS) history.shift();
    draw();
  }

  function draw() {
    const canvas = document.getElementById("outbox-chart");
    if (!canvas) return;
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 20;
    ctx.clearRect(0, 0, w, h);
    const top = Math.max(10, ...history);
    ctx.fillStyle = "#586069";
    ctx.font = "12px sans-serif";
    ctx.fillText(String(top), 2, 12);
    ctx.fillText("0", 2, h - 4);
    ctx.strokeStyle = "#0366d6";
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((value, i) => {
      const x = pad + (i * (w - pad - 4)) / (MAX_POINTS - 1);
      const y = h - 4 - (value * (h - 16)) / top;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  function connect() {
    if (!window.EventSource) return;
    const source = new EventSource("/events");
    source.addEventListener("figures", (event) => setFigures(JSON.parse(event.data)));
    source.onerror = () => {
      document.body.classList.add("disconnected");
    };
    source.onopen = () => document.body.classList.remove("disconnected");
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
