"""The live robot card: a small HTML/JS page (rendered with ``st.iframe``) that
connects to the worker's websocket telemetry (``core/worker/telemetry.py``:
``ws://HOST:PORT/telemetry?ticket=TICKET``, JSON text frames; the ticket is the viewer's
short-lived read-only one, storage/credentials.py) and draws, at the rate frames
arrive, one robot's camera frame, the steps-to-go curve d(o,g) of its running episode with
the detector threshold s, the detector state, the step, the checkpoint and the robot status.

Why in the browser: a Streamlit rerun per frame would cost a server round trip and a page
diff per frame per robot; here frames go straight from the worker's socket to an <img>, and
the Streamlit side only re-runs when a person clicks a button.

Each card subscribes to its own robot (``{"type": "subscribe", "robots": [name]}``) and
reads ``{"type": "frame"}`` messages: ``robot`` (name), ``robot_id``, ``step``, ``d``,
``detector`` {count, patience, threshold, fired}, ``checkpoint_id``, ``episode_uid`` /
``episode_id``, ``status``, ``instruction``, ``jpeg`` (base64); and ``{"type": "episode"}`` events (the
last outcome). The card also shows the robot's task (from the page) and the running episode's
instruction (from the frames; before the first frame, the one the page read from the episodes
table), and a click on the camera frame enlarges it: an overlay over the whole card that goes on
updating live (a button there makes it full screen). In the card and not in a Streamlit dialog
because the frames only exist in the browser: a dialog would need a server round trip and could
only show a stored, still frame. Frames per second actually drawn are shown on the card and exposed as
``document.body.dataset.fps`` (read by the end-to-end test).
"""
from __future__ import annotations

import json
import re
from typing import Optional

from ui.config import Telemetry

CARD_HEIGHT = 340

_TEMPLATE = r"""<!doctype html>
<html><head><meta charset="utf-8"><style>
 body { margin:0; font:12px system-ui, sans-serif; color:#e8e8e8; background:#0e1117; }
 .card { position:relative; border:1px solid #333; border-radius:8px; padding:6px; height:__H__px; box-sizing:border-box; }
 .top { display:flex; gap:6px; height:160px; overflow:hidden; }
 #frame { cursor:zoom-in; }
 .instr { margin-top:3px; height:30px; overflow:hidden; display:-webkit-box; -webkit-line-clamp:2;
          -webkit-box-orient:vertical; line-height:15px; color:#cfd8e3; font-style:italic; }
 .zoom { position:absolute; inset:0; background:rgba(8,10,14,.96); border-radius:8px; display:flex;
         flex-direction:column; align-items:center; padding:4px; box-sizing:border-box; z-index:10; }
 .zoom[hidden] { display:none; }
 .zoom img { width:auto; height:auto; max-width:100%; max-height:calc(100% - 36px); flex:1 1 auto; min-height:0;
             aspect-ratio:1 / 1; object-fit:contain; cursor:zoom-out; align-self:center; }
 .zoom .cap { width:100%; display:flex; gap:6px; align-items:center; height:30px; }
 .zoom .cap span { flex:1; min-width:0; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
 .zoom button { background:#333; color:#eee; border:1px solid #555; border-radius:4px; font-size:11px; cursor:pointer; }
 img { width:min(150px, 55%); height:auto; aspect-ratio:1 / 1; align-self:flex-start; flex:none;
       image-rendering:pixelated; background:#222; border-radius:4px; }
 .meta { flex:1; min-width:0; display:flex; flex-direction:column; gap:3px; overflow:hidden; }
 .meta > div { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; flex:none; }  /* narrow cards: no wrap pushing the curve out */
 .meta > div.wrap { white-space:normal; }  /* the detector badge may drop to its own line */
 .name { font-weight:600; font-size:13px; }
 .badge { display:inline-block; padding:1px 6px; border-radius:8px; background:#444; }
 .badge.fired { background:#1f7a3a; } .badge.near { background:#8a6d1a; } .badge.off { background:#6b2222; }
 canvas { width:100%; height:110px; margin-top:4px; background:#161a22; border-radius:4px; }
 .dim { color:#999; }
</style></head><body data-fps="0" data-frames="0" data-zoom="0">
<div class="card">
 <div class="top">
  <img id="frame" alt="live camera frame" title="click to enlarge">
  <div class="meta">
   <div class="name" id="name"></div>
   <div class="dim">task <span id="task">-</span></div>
   <div class="dim" id="nodeline" hidden>node <span id="node"></span></div>
   <div class="wrap">detector <span id="det" class="badge">waiting</span></div>
   <div>d(o,g) <b id="d">-</b> &nbsp; step <b id="step">-</b></div>
   <div>checkpoint <b id="ckpt">-</b></div>
   <div>episode <b id="ep">-</b> <span id="status" class="dim"></span></div>
   <div class="dim" id="last">&nbsp;</div>
   <div class="dim"><span id="fps">0.0</span> frames/s · <span id="conn">connecting</span></div>
  </div>
 </div>
 <div class="instr" id="instr"></div>
 <canvas id="curve" width="600" height="220"></canvas>
 <div class="zoom" id="zoom" hidden>
  <div class="cap"><span id="zcap"></span><button id="zfull" type="button">full screen</button><button id="zclose" type="button" title="close (Esc)">&#x2715;</button></div>
  <img id="big" alt="live camera frame, enlarged" title="click to close">
 </div>
</div>
<script>
(function () {
  const CFG = __CFG__;
  const $ = (id) => document.getElementById(id);
  $("name").textContent = CFG.name;  // user text goes in as text only, never into markup
  $("task").textContent = CFG.task || "-"; $("task").title = CFG.task || "";  // the whole name on hover
  if (CFG.node) { $("node").textContent = CFG.node; $("nodeline").hidden = false; }  // its Ray node
  const img = $("frame"), canvas = $("curve"), ctx = canvas.getContext("2d"), zoom = $("zoom"), big = $("big");
  function setInstruction(text) {  // textContent and a title property: never markup
    const t = text === undefined || text === null ? "" : String(text);
    $("instr").textContent = t ? "\u201c" + t + "\u201d" : "no instruction yet";
    $("instr").title = t;
    $("zcap").textContent = CFG.name + (t ? " \u00b7 " + t : "");
  }
  setInstruction(CFG.instruction);
  function openZoom() { if (img.src) big.src = img.src; zoom.hidden = false; document.body.dataset.zoom = "1"; }
  function closeZoom() {
    if (document.fullscreenElement) { try { document.exitFullscreen(); } catch (e) { /* not full screen */ } }
    zoom.hidden = true; document.body.dataset.zoom = "0";
  }
  img.addEventListener("click", openZoom);
  big.addEventListener("click", closeZoom);
  $("zclose").addEventListener("click", closeZoom);
  $("zfull").addEventListener("click", () => { try { zoom.requestFullscreen(); } catch (e) { /* not allowed here */ } });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeZoom(); });
  let curve = [], lastStep = -1, lastEpisode = null, stamps = [], total = 0, threshold = CFG.threshold;

  function mine(m) {
    return (m.robot !== undefined && m.robot !== null && String(m.robot) === CFG.name) ||
           (m.robot_id !== undefined && m.robot_id !== null && String(m.robot_id) === CFG.id);
  }
  function pick(m, names) { for (const n of names) if (m[n] !== undefined && m[n] !== null) return m[n]; return undefined; }

  function detectorText(det, d) {
    if (det === undefined) {
      if (d === undefined || threshold === null) return ["-", ""];
      return d <= threshold ? ["below s", "near"] : ["watching", ""];
    }
    if (typeof det === "string") return [det, /fire|success|done/i.test(det) ? "fired" : (/below|near|count/i.test(det) ? "near" : "")];
    if (typeof det === "boolean") return det ? ["fired", "fired"] : ["watching", ""];
    if (det.fired) return ["fired", "fired"];
    if (det.state) return detectorText(String(det.state), d);
    if (det.count) return ["below s " + det.count + (det.patience ? "/" + det.patience : ""), "near"];
    return ["watching", ""];
  }

  function draw() {
    const W = canvas.width, H = canvas.height, pad = 22;
    ctx.clearRect(0, 0, W, H);
    if (!curve.length) return;
    const maxT = Math.max(10, curve[curve.length - 1][0]);
    let maxD = 1; for (const p of curve) if (p[1] > maxD) maxD = p[1];
    if (threshold !== null && threshold > maxD) maxD = threshold;
    const x = (t) => pad + (W - 2 * pad) * t / maxT, y = (d) => H - pad - (H - 2 * pad) * d / maxD;
    ctx.strokeStyle = "#444"; ctx.lineWidth = 1; ctx.beginPath(); ctx.moveTo(pad, H - pad); ctx.lineTo(W - pad, H - pad); ctx.stroke();
    if (threshold !== null) {
      ctx.strokeStyle = "#d9a400"; ctx.setLineDash([8, 6]); ctx.beginPath();
      ctx.moveTo(pad, y(threshold)); ctx.lineTo(W - pad, y(threshold)); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = "#d9a400"; ctx.font = "20px sans-serif"; ctx.fillText("s", W - pad + 4, y(threshold) + 6);
    }
    ctx.strokeStyle = "#4fa3ff"; ctx.lineWidth = 3; ctx.beginPath();
    curve.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
    ctx.stroke();
    ctx.fillStyle = "#aaa"; ctx.font = "18px sans-serif";
    ctx.fillText("steps-to-go " + maxD.toFixed(0), 4, 18);
  }

  function handle(m) {
    if (Array.isArray(m.robots) && m.type !== "hello") { m.robots.forEach((r) => handle(Object.assign({}, m, {robots: undefined}, r))); return; }
    if (!mine(m)) return;
    if (m.type === "episode") {
      const ok = m.override !== undefined && m.override !== null ? m.override : m.detector_success;
      $("last").textContent = "last episode " + (m.episode_id ?? m.episode_uid ?? "") + ": " +
        (ok ? "success" : "failure") + (m.end_reason ? " (" + m.end_reason + ")" : "");
      return;
    }
    if (m.type !== undefined && m.type !== "frame") return;
    const step = pick(m, ["step", "t"]), d = pick(m, ["d", "d_og", "steps_to_go"]);
    const ep = pick(m, ["episode_uid", "episode_id", "episode"]);
    const det0 = pick(m, ["detector", "detector_state"]);
    if (det0 && typeof det0 === "object" && det0.threshold !== undefined && det0.threshold !== null) threshold = Number(det0.threshold);
    const s = pick(m, ["threshold", "s", "detector_threshold"]);
    if (s !== undefined && s !== null) threshold = Number(s);
    // A phase message (evaluation starting, the job ended) carries no step: the card starts blank.
    if ((m.status === "evaluating" || m.status === "offline") && step === undefined) { curve = []; lastEpisode = null; lastStep = -1; }
    if ((ep !== undefined && ep !== lastEpisode) || (step !== undefined && step < lastStep)) curve = [];
    if (ep !== undefined) lastEpisode = ep;
    if (step !== undefined) lastStep = step;
    if (step !== undefined && d !== undefined && d !== null) { curve.push([Number(step), Number(d)]); if (curve.length > 2000) curve.shift(); }
    let frame = pick(m, ["frame", "jpeg", "image"]);
    if (typeof frame === "string" && frame.length) {
      img.src = frame.startsWith("data:") ? frame : "data:image/jpeg;base64," + frame;
      if (!zoom.hidden) big.src = img.src;  // the enlarged view stays live
      const now = performance.now(); stamps.push(now); total += 1;
      while (stamps.length && now - stamps[0] > 2000) stamps.shift();
    }
    const instr = pick(m, ["instruction"]);
    if (instr !== undefined && typeof instr !== "object") setInstruction(instr);
    $("step").textContent = step === undefined ? "-" : step;
    $("d").textContent = d === undefined || d === null ? "-" : Number(d).toFixed(1);
    const ck = pick(m, ["checkpoint", "checkpoint_id", "policy_version"]);
    $("ckpt").textContent = ck === undefined || ck === null ? "-" : ck;
    const epId = pick(m, ["episode_id", "episode_uid", "episode"]);
    $("ep").textContent = epId === undefined ? "-" : epId;
    $("status").textContent = m.status && m.status !== "running" ? "(" + m.status + ")" : "";
    const [txt, cls] = detectorText(pick(m, ["detector", "detector_state"]), d);
    const det = $("det"); det.textContent = txt; det.className = "badge " + cls;
    draw();
  }

  setInterval(() => {
    const now = performance.now();
    while (stamps.length && now - stamps[0] > 2000) stamps.shift();
    const fps = stamps.length >= 2 ? (stamps.length - 1) * 1000 / (stamps[stamps.length - 1] - stamps[0] || 1) : 0;
    const shown = now - (stamps[stamps.length - 1] || 0) > 1500 ? 0 : fps;
    $("fps").textContent = shown.toFixed(1);
    document.body.dataset.fps = shown.toFixed(2); document.body.dataset.frames = String(total);
  }, 500);

  function url() {
    let host = CFG.host;
    if (!host) { try { host = window.parent.location.hostname; } catch (e) { host = ""; } }
    if (!host) host = "localhost";
    const proto = (function () { try { return window.parent.location.protocol === "https:" ? "wss" : "ws"; } catch (e) { return "ws"; } })();
    const q = new URLSearchParams();
    q.set("ticket", CFG.ticket);
    return proto + "://" + host + ":" + CFG.port + "/telemetry?" + q.toString();
  }

  function connect() {
    let ws;
    try { ws = new WebSocket(url()); } catch (e) { $("conn").textContent = "bad address"; return; }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { $("conn").textContent = "live"; ws.send(JSON.stringify({type: "subscribe", robots: [CFG.name]})); };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      try { handle(JSON.parse(ev.data)); } catch (e) { /* a malformed message is skipped, the feed goes on */ }
    };
    ws.onclose = (ev) => {
      // 4401: the ticket was refused (expired, or another worker secret): only a new page helps.
      if (ev.code === 4401) { $("conn").textContent = "ticket refused: reload the page"; return; }
      $("conn").textContent = "reconnecting"; setTimeout(connect, 1000);
    };
    ws.onerror = () => { $("conn").textContent = "no telemetry (is the worker running?)"; };
  }
  connect();
})();
</script></body></html>
"""


def card_html(*, robot_id: int, robot_name: str, telemetry: Telemetry, threshold: Optional[float],
              task_name: Optional[str] = None, instruction: Optional[str] = None,
              node: Optional[str] = None) -> str:
    """The HTML for one robot's live card (matched to telemetry by name or robots.id).
    ``task_name``: the robot's task; ``instruction``: its running (or last) episode's, shown
    until the frames bring their own; ``node``: the cluster node its simulator runs on."""
    cfg = {"name": robot_name, "id": str(robot_id), "port": telemetry.port, "host": telemetry.host,
           "ticket": telemetry.ticket, "threshold": threshold}
    cfg.update({k: v for k, v in (("task", task_name), ("instruction", instruction), ("node", node))
                if v is not None})
    # No user text is substituted into markup: the name travels inside the script-safe config and
    # the card sets it with textContent. One pass over the template, so no value is ever scanned
    # for placeholders (a robot named "__CFG__<img onerror=...>" once became live HTML that way).
    values = {"__H__": str(CARD_HEIGHT - 8), "__CFG__": _script_json(cfg)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], _TEMPLATE)


_PLACEHOLDER = re.compile(r"__(?:H|CFG)__")


def _script_json(value: dict) -> str:
    """JSON safe inside a <script> element: no <, > or & survives literally, so no text a robot
    sends can end the script or open a tag."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
