// Omni dispatcher console: conversations, threads and replies, live over /v1/ws.
// Plain browser JavaScript, no dependencies (the console must work with no internet).
"use strict";

const KEY_STORE = "omni.apiKey";
const state = { key: null, conversations: new Map(), selected: null, messages: new Map(), ws: null, retry: 0, stopped: false };
const $ = (id) => document.getElementById(id);
const setting = (name) => (document.querySelector(`meta[name="${name}"]`)?.content || "").replace(/\/$/, "");
const API_URL = setting("omni-api-url"); // empty: same origin
const WS_URL = setting("omni-ws-url") || `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;

const CHANNELS = { sms: ["SMS", "SMS"], mms: ["MMS", "MMS"], whatsapp: ["WA", "WhatsApp"], rcs: ["RCS", "RCS"], signal: ["SIG", "Signal"] };
const TICKS = { queued: "🕓 queued", sending: "… sending", sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read", failed: "⚠ failed", undelivered: "⚠ undelivered", received: "" };

/** A number as people write it: (415) 555-2671 for NANP, spaced groups otherwise. */
function human(e164) {
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(e164 || "");
  if (m) return `(${m[1]}) ${m[2]}-${m[3]}`;
  return (e164 || "").replace(/^(\+\d{1,3})(\d{3})(\d{3})(\d+)$/, "$1 $2 $3 $4");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(method, path, body) {
  const res = await fetch(API_URL + path, {
    method,
    headers: { Authorization: `Bearer ${state.key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) { signOut("Your API key was not accepted."); throw new Error("unauthorized"); }
  if (!res.ok) throw Object.assign(new Error(data.error || `HTTP ${res.status}`), { code: data.code });
  return data;
}

// ---- sign in / out ----
async function signIn(key) {
  state.key = key;
  const res = await fetch(`${API_URL}/v1/conversations?limit=1`, { headers: { Authorization: `Bearer ${key}` } });
  if (!res.ok) { state.key = null; throw new Error(res.status === 401 ? "That API key was not accepted." : `Sign-in failed (HTTP ${res.status}).`); }
  sessionStorage.setItem(KEY_STORE, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  state.stopped = false;
  await resync();
  connect();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  state.stopped = true;
  if (state.ws) state.ws.close();
  state.key = null; state.conversations.clear(); state.messages.clear(); state.selected = null;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  $("signin-error").hidden = !message;
  $("signin-error").textContent = message || "";
  $("api-key").focus(); // autofocus does not apply to a form that was hidden at load
}

// ---- data ----
async function resync() {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const data = await api("GET", `/v1/conversations?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...data.items);
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  state.conversations = new Map(items.map((c) => [c.id, c]));
  renderList();
  if (state.selected) await loadThread(state.selected);
}

async function loadThread(id) {
  const data = await api("GET", `/v1/conversations/${id}/messages?limit=200`);
  if (state.selected !== id) return;
  state.messages = new Map(data.items.map((m) => [m.id, m]));
  renderThread();
}

async function open(id) {
  state.selected = id;
  $("app").classList.add("open");
  renderList();
  renderThread();
  await loadThread(id);
  await markRead(id);
  $("reply-body").focus();
}

async function markRead(id) {
  const c = state.conversations.get(id);
  if (!c || c.unread_count === 0) return;
  const updated = await api("POST", `/v1/conversations/${id}/read`);
  upsertConversation(updated);
}

function upsertConversation(c) {
  state.conversations.set(c.id, c);
  renderList();
  if (c.id === state.selected) renderThreadHead();
}

// ---- live feed ----
function connect() {
  if (state.stopped || !state.key) return;
  const ws = new WebSocket(`${WS_URL}?token=${encodeURIComponent(state.key)}`);
  state.ws = ws;
  ws.onopen = async () => {
    const wasDown = state.retry > 0;
    state.retry = 0;
    setConn("live", "live");
    if (wasDown) await resync().catch(() => {}); // catch up on what happened while we were away
  };
  ws.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (_) { /* ignore malformed frames */ } };
  ws.onclose = () => {
    if (state.stopped) return;
    setConn("down", "reconnecting…");
    const delay = Math.min(15000, 500 * 2 ** state.retry) * (0.5 + Math.random() / 2);
    state.retry++;
    setTimeout(connect, delay);
  };
}

function setConn(cls, text) { const c = $("conn"); c.className = `conn ${cls}`; c.textContent = text; }

function onEvent(ev) {
  if (ev.type === "conversation.updated" && ev.conversation) {
    upsertConversation(ev.conversation);
  } else if ((ev.type === "message.received" || ev.type === "message.status") && ev.message) {
    if (ev.conversation_id === state.selected) {
      state.messages.set(ev.message.id, ev.message);
      renderMessages();
      if (ev.type === "message.received" && document.visibilityState !== "hidden") markRead(ev.conversation_id).catch(() => {});
    }
    if (!state.conversations.has(ev.conversation_id)) resync().catch(() => {});
  }
}

// ---- rendering ----
function renderList() {
  const list = $("conversations");
  const items = [...state.conversations.values()].sort((a, b) => (b.last_message_at || "").localeCompare(a.last_message_at || ""));
  $("empty").hidden = items.length > 0;
  list.replaceChildren(...items.map((c) => {
    const [icon, label] = CHANNELS[c.channel] || ["•", c.channel];
    const li = el("li", {
      role: "option", tabindex: "0", "data-id": c.id, "aria-selected": String(c.id === state.selected),
      onclick: () => open(c.id),
      onkeydown: (e) => keyNav(e, c.id),
    },
      el("span", { class: `ch ${c.channel}`, title: label, "aria-label": label }, icon),
      el("span", { class: "who" }, human(c.contact)),
      el("span", {}, c.unread_count > 0 ? el("span", { class: "badge", "aria-label": `${c.unread_count} unread` }, String(c.unread_count)) : null,
        c.starred_count > 0 ? el("span", { class: "stars", "aria-label": `${c.starred_count} starred` }, ` ★${c.starred_count}`) : null),
      el("span", { class: "preview" }, c.last_message ? `${c.last_message.direction === "outbound" ? "You: " : ""}${c.last_message.body || "(media)"}` : ""));
    return li;
  }));
}

function keyNav(e, id) {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(id); return; }
  if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
  e.preventDefault();
  const sibling = e.key === "ArrowDown" ? e.currentTarget.nextElementSibling : e.currentTarget.previousElementSibling;
  if (sibling) sibling.focus();
}

function renderThreadHead() {
  const c = state.conversations.get(state.selected);
  if (!c) return;
  const [, label] = CHANNELS[c.channel] || ["", c.channel];
  $("thread-title").textContent = human(c.contact);
  $("thread-sub").textContent = `${label} · via ${human(c.tenant_number)}`;
  $("optout").hidden = !c.opted_out;
}

function renderThread() {
  $("thread").hidden = !state.selected;
  renderThreadHead();
  renderMessages();
}

// What the console shows inline: pictures, sound and video a browser plays as such (no
// SVG: it is a document that can carry script). Anything else, whatever a contact's carrier
// calls it, is only offered as a download: never opened as a page of the console's origin.
const INLINE = {
  img: ["image/jpeg", "image/png", "image/gif", "image/webp", "image/avif", "image/bmp"],
  audio: ["audio/mpeg", "audio/mp4", "audio/aac", "audio/ogg", "audio/opus", "audio/wav", "audio/webm", "audio/amr"],
  video: ["video/mp4", "video/webm", "video/ogg", "video/3gpp", "video/quicktime"],
};
const baseType = (t) => (t || "").split(";")[0].trim().toLowerCase();
const inlineTag = (t) => Object.keys(INLINE).find((tag) => INLINE[tag].includes(baseType(t)));

/** A shown picture, sound or video; `src` is a carrier's link or a blob of the shown type. */
function inlineMedia(tag, src) {
  return tag === "img"
    ? el("img", { src, alt: "attachment", loading: "lazy" })
    : el(tag, { src, controls: true, preload: "metadata" });
}

// Carrier-kept media (WhatsApp ids) by "<message id>/<index>": a pending fetch, a shown
// item {tag, url} or a download {download, url}, or "failed". Fetched once, through the API
// with the key, since the carrier's own link needs the tenant's credentials.
const mediaBlobs = new Map();

/** The bytes as something the console may hold: a blob typed as the shown type when it is
 * one, else as opaque bytes to save, which no browser renders. */
function keep(blob, declared) {
  const type = baseType(blob.type) || baseType(declared);
  const tag = inlineTag(type);
  if (tag && (!declared || inlineTag(declared) === tag)) {
    return { tag, url: URL.createObjectURL(new Blob([blob], { type })) };
  }
  return { download: true, url: URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" })) };
}

function mediaItem(m, x, i) {
  if (/^https?:\/\//.test(x.url)) {
    // The carrier's own link: its origin, never ours.
    const tag = inlineTag(x.content_type);
    return tag
      ? inlineMedia(tag, x.url)
      : el("a", { href: x.url, target: "_blank", rel: "noopener noreferrer" }, "attachment");
  }
  const key = `${m.id}/${i}`;
  const known = mediaBlobs.get(key);
  if (known === "failed") return el("span", { class: "attachment" }, "attachment unavailable");
  if (known && known.url && known.tag) return inlineMedia(known.tag, known.url);
  if (known && known.url) {
    return el("a", { href: known.url, download: `attachment-${i + 1}`, class: "attachment" }, "download attachment");
  }
  if (!known) {
    mediaBlobs.set(key, fetch(`${API_URL}/v1/messages/${m.id}/media/${i}`, { headers: { Authorization: `Bearer ${state.key}` } })
      .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(`HTTP ${res.status}`))))
      .then((blob) => mediaBlobs.set(key, keep(blob, x.content_type)), () => mediaBlobs.set(key, "failed"))
      .then(() => renderMessages()));
  }
  return el("span", { class: "attachment" }, "loading attachment…");
}

function renderMessages() {
  const ol = $("messages");
  const msgs = [...state.messages.values()].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id));
  ol.replaceChildren(...msgs.map((m) => {
    const time = new Date(m.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const media = (m.media || []).map((x, i) => mediaItem(m, x, i));
    const tick = m.direction === "outbound"
      ? el("span", { class: `tick ${m.status}`, "data-status": m.status, title: m.error_message || m.status },
          TICKS[m.status] || m.status, m.error_message && (m.status === "failed" || m.status === "undelivered") ? `: ${m.error_message}` : null)
      : null;
    const star = el("button", { class: "star", type: "button", "aria-pressed": String(!!m.starred), "aria-label": m.starred ? "Unstar" : "Star", onclick: () => toggleStar(m) }, m.starred ? "★" : "☆");
    return el("li", { class: `msg ${m.direction}`, "data-id": m.id },
      m.body ? el("div", { class: "body" }, m.body) : null, ...media,
      el("div", { class: "meta" }, el("time", { datetime: m.created_at }, time), tick, star));
  }));
  ol.scrollTop = ol.scrollHeight;
}

async function toggleStar(m) {
  const updated = await api(m.starred ? "DELETE" : "PUT", `/v1/messages/${m.id}/star`);
  state.messages.set(updated.id, updated);
  renderMessages();
}

async function sendReply(e) {
  e.preventDefault();
  const c = state.conversations.get(state.selected);
  const box = $("reply-body");
  const body = box.value.trim();
  if (!c || !body) return;
  $("reply-error").hidden = true;
  try {
    const m = await api("POST", "/v1/messages", { channel: c.channel, to: c.contact, from: c.tenant_number, body, idempotency_key: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random() });
    box.value = "";
    state.messages.set(m.id, m);
    renderMessages();
  } catch (err) {
    $("reply-error").hidden = false;
    $("reply-error").textContent = err.code === "recipient_opted_out" ? "Not sent: this contact has opted out." : `Not sent: ${err.message}`;
  }
}

// ---- wiring ----
$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try { await signIn($("api-key").value.trim()); }
  catch (err) { $("signin-error").hidden = false; $("signin-error").textContent = err.message; }
});
$("signout").addEventListener("click", () => signOut());
$("reply").addEventListener("submit", sendReply);
$("reply-body").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) sendReply(e); });
$("back").addEventListener("click", () => { state.selected = null; $("app").classList.remove("open"); renderList(); $("thread").hidden = true; });

const saved = sessionStorage.getItem(KEY_STORE);
if (saved) signIn(saved).catch(() => signOut()); else signOut();
