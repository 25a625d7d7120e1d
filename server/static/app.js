// The web chat demo: speaks WebSocket protocol v1 (server/PROTOCOL.md) like any game client.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#e0a458", "#7fb4ff", "#c49bff", "#6cc58a", "#ff9d7f", "#5fd3d0"];
const state = { token: null, personas: [], persona: null, ws: null, sessions: {}, streaming: null, msgSeq: 0 };

const playerId = localStorage.getItem("companion.player") ||
  (() => { const id = "web-" + Math.random().toString(36).slice(2, 10); localStorage.setItem("companion.player", id); return id; })();
state.sessions = JSON.parse(localStorage.getItem("companion.sessions") || "{}");

function setStatus(kind, text) { $("status").dataset.state = kind; $("status-text").textContent = text; }
function showError(text) { const e = $("error"); e.textContent = text || ""; e.hidden = !text; }
function colorOf(id) { let h = 0; for (const c of id) h = (h * 31 + c.charCodeAt(0)) >>> 0; return COLORS[h % COLORS.length]; }
function initials(name) { return name.split(/\s+/).filter(Boolean).slice(-2).map((w) => w[0]).join("").toUpperCase(); }
function avatar(el, p) { el.textContent = initials(p.name); el.style.background = colorOf(p.id); }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail?.message || `${response.status} ${response.statusText}`);
  }
  return response.json();
}

async function start() {
  $("player-id").textContent = playerId;
  try {
    state.token = (await (await fetch("/demo/config")).json()).token;
    state.personas = await (await fetch("/v1/personas")).json();
  } catch (e) {
    setStatus("error", "Server unreachable"); showError(`Could not reach the server: ${e.message}`); return;
  }
  const list = $("persona-list");
  for (const p of state.personas) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.className = "persona"; button.type = "button"; button.dataset.persona = p.id;
    button.setAttribute("aria-pressed", "false");
    const av = document.createElement("span"); av.className = "avatar"; avatar(av, p);
    const text = document.createElement("span");
    text.innerHTML = "<strong></strong><small></small>";
    text.querySelector("strong").textContent = p.name;
    text.querySelector("small").textContent = p.description;
    button.append(av, text);
    button.addEventListener("click", () => choose(p.id));
    li.append(button); list.append(li);
  }
  const wanted = new URLSearchParams(location.search).get("npc") || localStorage.getItem("companion.npc");
  choose(state.personas.some((p) => p.id === wanted) ? wanted : state.personas[0].id);
}

function choose(id) {
  state.persona = state.personas.find((p) => p.id === id);
  localStorage.setItem("companion.npc", id);
  document.querySelectorAll(".persona").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.persona === id)));
  avatar($("chat-avatar"), state.persona);
  $("chat-name").textContent = state.persona.name;
  $("chat-desc").textContent = state.persona.description;
  $("mem-name").textContent = state.persona.name;
  $("export").href = "#";
  $("messages").innerHTML = "";
  showError("");
  connect();
  refreshMemories();
}

function connect() {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  state.streaming = null; $("send").disabled = true;
  setStatus("connecting", "Connecting…");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`);
  state.ws = ws;
  ws.onopen = () => {
    const hello = { type: "hello", token: state.token, player_id: playerId, npc_id: state.persona.id, subscribe: ["memory"] };
    const session = state.sessions[state.persona.id];
    if (session) hello.session_id = session;
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (event) => onFrame(JSON.parse(event.data));
  ws.onclose = (event) => {
    setStatus("error", "Disconnected");
    $("send").disabled = true;
    if (event.code !== 4401) setTimeout(() => { if (state.ws === ws) connect(); }, 1500);
  };
}

function onFrame(frame) {
  switch (frame.type) {
    case "ready": {
      state.sessions[state.persona.id] = frame.session_id;
      localStorage.setItem("companion.sessions", JSON.stringify(state.sessions));
      setStatus("ready", `Talking to ${frame.persona.name}`);
      if (!$("messages").children.length) {
        if (frame.history.length) {
          addSystem("— earlier —");
          for (const line of frame.history) addMessage(line.role, line.text);
          addSystem("— now —");
        } else {
          addMessage("npc", frame.persona.first_message);
        }
      }
      $("send").disabled = false;
      break;
    }
    case "token": {
      const s = state.streaming;
      if (!s || s.id !== frame.reply_to) break;
      if (frame.attempt !== s.attempt) { s.attempt = frame.attempt; s.text.textContent = ""; }
      s.text.textContent += frame.text;
      s.tokens += 1;
      s.li.dataset.tokens = String(s.tokens);
      scrollDown();
      break;
    }
    case "reply": {
      const s = state.streaming;
      if (!s || s.id !== frame.reply_to) break;
      s.text.textContent = frame.text;
      s.li.classList.remove("streaming"); s.li.classList.add("final");
      s.li.append(chips(frame.metadata));
      state.streaming = null; $("send").disabled = false; $("composer-input").focus();
      scrollDown();
      break;
    }
    case "memory":
      refreshMemories(frame.event.id);
      break;
    case "error":
      showError(frame.message);
      if (state.streaming && (frame.reply_to === state.streaming.id || !frame.reply_to)) {
        state.streaming.li.remove(); state.streaming = null; $("send").disabled = false;
      }
      if (frame.code === "unknown_session") { delete state.sessions[state.persona.id]; localStorage.setItem("companion.sessions", JSON.stringify(state.sessions)); connect(); }
      break;
  }
}

function chips(meta) {
  const box = document.createElement("div"); box.className = "chips";
  const add = (cls, text, title) => { const c = document.createElement("span"); c.className = `chip ${cls}`; c.textContent = text; if (title) c.title = title; box.append(c); };
  add("strategy", meta.strategy, "reflection strategy");
  add("emotion", `you seem: ${meta.emotion}`, "emotion read from your line");
  if (meta.refused) add("refused", "refused in character");
  for (const m of meta.memories_used) add("recall", `recalled: ${m.content}`, m.type);
  if (meta.regenerated) add("", "revised", "the post-check asked for a second draft");
  return box;
}

function addMessage(role, text, streaming = false) {
  const li = document.createElement("li");
  li.className = `msg ${role}${streaming ? " streaming" : ""}`;
  const who = document.createElement("div"); who.className = "who";
  who.textContent = role === "player" ? "You" : state.persona.name;
  const body = document.createElement("div"); body.className = "text"; body.textContent = text;
  li.append(who, body);
  $("messages").append(li); scrollDown();
  return { li, text: body };
}
function addSystem(text) { const li = document.createElement("li"); li.className = "msg system"; li.textContent = text; $("messages").append(li); }
function scrollDown() { const m = $("messages"); m.scrollTop = m.scrollHeight; }

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("composer-input");
  const text = input.value.trim();
  if (!text || state.streaming || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  showError("");
  addMessage("player", text);
  const id = `w${++state.msgSeq}`;
  const bubble = addMessage("npc", "", true);
  state.streaming = { id, attempt: 1, tokens: 0, ...bubble };
  state.ws.send(JSON.stringify({ type: "say", id, text }));
  input.value = ""; $("send").disabled = true;
});
$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});

async function refreshMemories(freshId) {
  if (!state.persona) return;
  const npc = state.persona.id;
  try {
    const data = await api(`/v1/players/${encodeURIComponent(playerId)}/memories?npc_id=${encodeURIComponent(npc)}`);
    if (state.persona.id !== npc) return;
    const list = $("memories"); list.innerHTML = "";
    for (const e of data.events.slice().reverse()) {
      const li = document.createElement("li"); li.dataset.type = e.type; li.dataset.id = e.id;
      if (e.id === freshId) li.classList.add("fresh");
      const type = document.createElement("span"); type.className = "type"; type.textContent = e.type.replace("_", " ");
      const content = document.createElement("span"); content.textContent = e.content;
      li.append(type, content);
      if (e.mentions > 1) { const m = document.createElement("span"); m.className = "mentions"; m.textContent = ` ×${e.mentions}`; li.append(m); }
      list.append(li);
    }
    $("memories-empty").hidden = data.events.length > 0;
  } catch (e) { showError(`Could not load memories: ${e.message}`); }
}

$("export").addEventListener("click", async (event) => {
  event.preventDefault();
  const data = await api(`/v1/players/${encodeURIComponent(playerId)}/memories/export`);
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  const a = document.createElement("a"); a.href = url; a.download = `${playerId}-memories.json`; a.click();
  URL.revokeObjectURL(url);
});

$("forget").addEventListener("click", async () => {
  if (!confirm(`Delete everything every character remembers about you? This cannot be undone.`)) return;
  try {
    const result = await api(`/v1/players/${encodeURIComponent(playerId)}/memories`, { method: "DELETE" });
    state.sessions = {}; localStorage.removeItem("companion.sessions");
    $("messages").innerHTML = "";
    addSystem(`Forgotten: ${result.deleted_events} memories deleted.`);
    refreshMemories(); connect();
  } catch (e) { showError(`Could not delete: ${e.message}`); }
});

start();
