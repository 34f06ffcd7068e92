// Omni dispatcher console: conversations, threads, replies, assignment, notes and who else
// is on a conversation, live over /v1/ws; users and the audit log for those allowed.
// Plain browser JavaScript, no dependencies (the console must work with no internet).
"use strict";

const KEY_STORE = "omni.apiKey";
const state = {
  key: null, me: null, conversations: new Map(), selected: null, messages: new Map(), ws: null, retry: 0, stopped: false,
  filter: { assignee: "", status: "open" },
  // conversation id → Map(user id → {name, viewing, typing}) (times until which each shows)
  presence: new Map(),
  // Whom a supervisor or admin may assign conversations to (active users).
  assignable: [],
};
const VIEWING_MS = 30000;
const TYPING_MS = 5000;
const $ = (id) => document.getElementById(id);
const setting = (name) => (document.querySelector(`meta[name="${name}"]`)?.content || "").replace(/\/$/, "");
const API_URL = setting("omni-api-url"); // empty: same origin
const WS_URL = setting("omni-ws-url") || `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/v1/ws`;

const CHANNELS = { sms: ["SMS", "SMS"], mms: ["MMS", "MMS"], whatsapp: ["WA", "WhatsApp"], rcs: ["RCS", "RCS"], signal: ["SIG", "Signal"], livechat: ["WEB", "LiveChat"] };
const TICKS = { queued: "🕓 queued", sending: "… sending", sent: "✓ sent", delivered: "✓✓ delivered", read: "✓✓ read", failed: "⚠ failed", undelivered: "⚠ undelivered", received: "" };

/** A number as people write it: (415) 555-2671 for NANP, spaced groups otherwise. */
function human(e164) {
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(e164 || "");
  if (m) return `(${m[1]}) ${m[2]}-${m[3]}`;
  return (e164 || "").replace(/^(\+\d{1,3})(\d{3})(\d{3})(\d+)$/, "$1 $2 $3 $4");
}

// Who a conversation is with: the name the contact gave (a LiveChat visitor's name or e-mail,
// a profile name), else their number or address.
function contactLabel(c) {
  return c.contact_name || human(c.contact);
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
  if (res.status === 401) { signOut("Your session has ended; sign in again."); throw new Error("unauthorized"); }
  if (!res.ok) throw Object.assign(new Error(data.error || `HTTP ${res.status}`), { code: data.code });
  return data;
}

// ---- sign in / out ----
/** Signs in with a bearer token: an API key (wall displays) or a session from the login form. */
async function signIn(key) {
  state.key = key;
  const res = await fetch(`${API_URL}/v1/me`, { headers: { Authorization: `Bearer ${key}` } });
  if (!res.ok) { state.key = null; throw new Error(res.status === 401 ? "That API key was not accepted." : `Sign-in failed (HTTP ${res.status}).`); }
  state.me = await res.json();
  sessionStorage.setItem(KEY_STORE, key);
  $("signin").hidden = true;
  $("app").hidden = false;
  state.stopped = false;
  const role = state.me.role;
  $("whoami").textContent = `${state.me.actor.name} · ${role}`;
  $("nav-users").hidden = role !== "admin";
  $("nav-audit").hidden = role !== "admin" && role !== "supervisor";
  $("nav-log").hidden = $("nav-audit").hidden;
  $("nav-webhooks").hidden = $("nav-audit").hidden;
  $("nav-templates").hidden = role !== "admin" && role !== "supervisor";
  $("f-mine").hidden = !state.me.user;
  showPage(null);
  state.assignable = ["admin", "supervisor"].includes(role)
    ? (await api("GET", "/v1/users")).items.filter((u) => u.active && !u.disabled) : [];
  // Canned replies: the approved templates (API keys of the sender role read none).
  state.templates = role === "sender" ? [] : (await api("GET", "/v1/templates").catch(() => ({ items: [] }))).items;
  await resync();
  connect();
}

async function login(e) {
  e.preventDefault();
  const body = { tenant: $("login-tenant").value.trim(), email: $("login-email").value.trim(), password: $("login-password").value };
  const res = await fetch(`${API_URL}/v1/auth/login`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  $("login-password").value = "";
  if (!res.ok) {
    $("login-error").hidden = false;
    $("login-error").textContent = res.status === 429 ? "Too many failed attempts; try again later." : (data.error || `Sign-in failed (HTTP ${res.status}).`);
    return;
  }
  $("login-error").hidden = true;
  await signIn(data.token);
}

async function acceptInvite(e) {
  e.preventDefault();
  const token = location.hash.slice("#invite=".length);
  const res = await fetch(`${API_URL}/v1/auth/invite`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token, password: $("invite-password").value }) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { $("invite-error").hidden = false; $("invite-error").textContent = data.error || `HTTP ${res.status}`; return; }
  history.replaceState(null, "", location.pathname);
  $("invite-form").hidden = true;
  $("login-email").value = data.user.email;
  $("login-error").hidden = false;
  $("login-error").textContent = "Password set: sign in.";
}

function signOut(message) {
  const token = state.key;
  if (token && token.startsWith("oms_")) fetch(`${API_URL}/v1/auth/logout`, { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  sessionStorage.removeItem(KEY_STORE);
  state.stopped = true;
  if (state.ws) state.ws.close();
  state.key = null; state.me = null; state.conversations.clear(); state.messages.clear(); state.selected = null; state.presence.clear();
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
    const f = state.filter;
    const query = `limit=200${f.status ? `&status=${f.status}` : ""}${f.assignee ? `&assignee=${f.assignee}` : ""}`;
    const data = await api("GET", `/v1/conversations?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
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
  showPage(null);
  state.selected = id;
  say("conversation.viewing", id);
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
    say("conversation.viewing", state.selected);
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

/** Tells the tenant's other dashboards this one is viewing or typing in a conversation. */
function say(type, conversationId) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && conversationId) state.ws.send(JSON.stringify({ type, conversation_id: conversationId }));
}

function setConn(cls, text) { const c = $("conn"); c.className = `conn ${cls}`; c.textContent = text; }

function onEvent(ev) {
  if (ev.conversation && ["conversation.updated", "conversation.assigned", "conversation.status"].includes(ev.type)) {
    upsertConversation(ev.conversation);
  } else if (ev.type === "note.created" && ev.note) {
    if (ev.conversation_id === state.selected) { state.messages.set(ev.note.id, { ...ev.note, kind: "note" }); renderMessages(); }
  } else if ((ev.type === "conversation.viewing" || ev.type === "conversation.typing") && ev.user) {
    const people = state.presence.get(ev.conversation_id) || new Map();
    const seen = people.get(ev.user.id) || { name: ev.user.name, viewing: 0, typing: 0 };
    seen.name = ev.user.name;
    seen.viewing = Date.now() + VIEWING_MS;
    if (ev.type === "conversation.typing") seen.typing = Date.now() + TYPING_MS;
    // Viewing one conversation is leaving the others.
    for (const [id, others] of state.presence) if (id !== ev.conversation_id) others.delete(ev.user.id);
    people.set(ev.user.id, seen);
    state.presence.set(ev.conversation_id, people);
    renderPresence();
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
/** Whether a conversation belongs in the list under the chosen filters (events move it). */
function shown(c) {
  const f = state.filter;
  if (f.status && (c.status || "open") !== f.status) return false;
  if (f.assignee === "none") return !c.assignee;
  if (f.assignee === "me") return !!(c.assignee && state.me?.user && c.assignee.id === state.me.user.id);
  return true;
}

/** Who else is on a conversation now: "Alex is replying", "Kim is viewing". */
function presenceText(id) {
  const now = Date.now();
  const people = [...(state.presence.get(id) || new Map()).entries()]
    .filter(([uid, p]) => p.viewing > now && uid !== state.me?.actor.id);
  return people.map(([, p]) => `${p.name} is ${p.typing > now ? "replying" : "viewing"}`).join(", ");
}

function renderPresence() {
  if (state.selected) $("presence").textContent = presenceText(state.selected);
  for (const li of $("conversations").children) {
    const tag = li.querySelector(".who-else");
    if (tag) tag.textContent = presenceText(li.dataset.id);
  }
}

function renderList() {
  const list = $("conversations");
  const items = [...state.conversations.values()].filter(shown).sort((a, b) => (b.last_message_at || "").localeCompare(a.last_message_at || ""));
  $("empty").hidden = items.length > 0;
  list.replaceChildren(...items.map((c) => {
    const [icon, label] = CHANNELS[c.channel] || ["•", c.channel];
    const li = el("li", {
      role: "option", tabindex: "0", "data-id": c.id, "aria-selected": String(c.id === state.selected),
      onclick: () => open(c.id),
      onkeydown: (e) => keyNav(e, c.id),
    },
      el("span", { class: `ch ${c.channel}`, title: label, "aria-label": label }, icon),
      el("span", { class: "who", title: c.contact }, contactLabel(c)),
      el("span", {}, c.unread_count > 0 ? el("span", { class: "badge", "aria-label": `${c.unread_count} unread` }, String(c.unread_count)) : null,
        c.starred_count > 0 ? el("span", { class: "stars", "aria-label": `${c.starred_count} starred` }, ` ★${c.starred_count}`) : null),
      el("span", { class: "preview" }, c.last_message ? `${c.last_message.direction === "outbound" ? "Sent: " : ""}${c.last_message.body || "(media)"}` : ""),
      el("span", { class: "tag" }, c.assignee ? `→ ${c.assignee.name}` : "unassigned", c.status === "resolved" ? " · resolved" : "",
        el("span", { class: "who-else presence" }, presenceText(c.id))));
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
  $("thread-title").textContent = contactLabel(c);
  $("thread-sub").textContent = `${c.contact_name ? `${human(c.contact)} · ` : ""}${label} · via ${human(c.tenant_number)}`;
  $("optout").hidden = !c.opted_out;
  const mine = !!(c.assignee && state.me?.user && c.assignee.id === state.me.user.id);
  $("assignee").textContent = c.assignee ? `Assigned to ${c.assignee.name}` : "Unassigned";
  $("take").hidden = !state.me?.user || mine || (!!c.assignee && !["admin", "supervisor"].includes(state.me.role));
  $("unassign").hidden = !c.assignee || (!mine && !["admin", "supervisor"].includes(state.me?.role));
  const picker = $("assign-to");
  picker.hidden = state.assignable.length === 0;
  picker.replaceChildren(el("option", { value: "" }, "Assign to…"),
    ...state.assignable.map((u) => el("option", { value: u.id, selected: c.assignee?.id === u.id }, u.name)));
  $("resolve").hidden = c.status === "resolved";
  $("reopen").hidden = c.status !== "resolved";
  $("presence").textContent = presenceText(c.id);
  renderCanned(c);
}

// ---- canned replies: approved templates, filled in and previewed ----
/** The approved version of a template and the language a send without one uses. */
function inUse(t) {
  const version = t.versions.find((v) => v.version === t.approved_version);
  const language = t.default_language || Object.keys(version.languages)[0];
  return { version, language };
}

/** The templates a conversation's channel may carry (an MMS thread is an SMS one). */
function cannedFor(c) {
  const channel = c.channel === "mms" ? "sms" : c.channel;
  return (state.templates || []).filter((t) => t.approved_version && t.channels.includes(channel));
}

function renderCanned(c) {
  const usable = cannedFor(c);
  const pick = $("canned-pick");
  const chosen = pick.value;
  $("canned").hidden = usable.length === 0;
  pick.replaceChildren(el("option", { value: "" }, "Canned reply…"),
    ...usable.map((t) => el("option", { value: t.name, selected: t.name === chosen }, t.name)));
  if (!usable.some((t) => t.name === pick.value)) pickCanned();
}

/** Shows an input per variable of the picked template. */
function pickCanned() {
  const t = (state.templates || []).find((x) => x.name === $("canned-pick").value);
  $("canned-vars").replaceChildren(...(t ? Object.entries(t.variables).map(([name, v]) =>
    el("input", { "data-var": name, "aria-label": name, placeholder: name, type: v.type === "number" ? "number" : "text",
      maxlength: v.max_length, oninput: previewCanned })) : []));
  previewCanned();
}

/** The picked template's text with the values typed so far (as text: never markup). */
function previewCanned() {
  const t = (state.templates || []).find((x) => x.name === $("canned-pick").value);
  if (!t) { $("canned-preview").textContent = ""; $("canned-send").disabled = true; return; }
  const { version, language } = inUse(t);
  const values = Object.fromEntries([...$("canned-vars").querySelectorAll("input")].map((i) => [i.dataset.var, i.value]));
  $("canned-preview").textContent = version.languages[language].body.replace(/\{\{\s*([a-z0-9_]+)\s*\}\}/g, (_, name) => values[name] || `{{${name}}}`);
  $("canned-send").disabled = Object.values(values).some((v) => v === "");
}

async function sendCanned(e) {
  e.preventDefault();
  const c = state.conversations.get(state.selected);
  const t = (state.templates || []).find((x) => x.name === $("canned-pick").value);
  if (!c || !t) return;
  const variables = Object.fromEntries([...$("canned-vars").querySelectorAll("input")].map((i) =>
    [i.dataset.var, t.variables[i.dataset.var].type === "number" ? Number(i.value) : i.value]));
  $("reply-error").hidden = true;
  try {
    const m = await api("POST", "/v1/messages", { channel: c.channel, to: c.contact, from: c.tenant_number,
      template: { name: t.name, language: inUse(t).language, variables } });
    $("canned-pick").value = "";
    pickCanned();
    state.messages.set(m.id, m);
    renderMessages();
  } catch (err) {
    $("reply-error").hidden = false;
    $("reply-error").textContent = `Not sent: ${err.message}`;
  }
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
    if (m.kind === "note") {
      return el("li", { class: "msg note", "data-id": m.id },
        el("div", { class: "body" }, m.body),
        el("div", { class: "meta" }, el("span", { class: "by" }, `Note · ${m.author.name}`), el("time", { datetime: m.created_at }, time)));
    }
    const media = (m.media || []).map((x, i) => mediaItem(m, x, i));
    const tick = m.direction === "outbound"
      ? el("span", { class: `tick ${m.status}`, "data-status": m.status, title: m.error_message || m.status },
          TICKS[m.status] || m.status, m.error_message && (m.status === "failed" || m.status === "undelivered") ? `: ${m.error_message}` : null)
      : null;
    const star = el("button", { class: "star", type: "button", "aria-pressed": String(!!m.starred), "aria-label": m.starred ? "Unstar" : "Star", onclick: () => toggleStar(m) }, m.starred ? "★" : "☆");
    return el("li", { class: `msg ${m.direction}`, "data-id": m.id },
      m.body ? el("div", { class: "body" }, m.body) : null, ...media,
      el("div", { class: "meta" }, m.sent_by ? el("span", { class: "by" }, m.sent_by.name) : null, el("time", { datetime: m.created_at }, time), tick, star));
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

async function addNote(e) {
  e.preventDefault();
  const box = $("note-body");
  const body = box.value.trim();
  if (!state.selected || !body) return;
  const note = await api("POST", `/v1/conversations/${state.selected}/notes`, { body });
  box.value = "";
  state.messages.set(note.id, note);
  renderMessages();
}

async function act(path, body) {
  if (!state.selected) return;
  upsertConversation(await api("POST", `/v1/conversations/${state.selected}/${path}`, body));
}

function setFilter(kind, value) {
  state.filter[kind] = value;
  for (const b of document.querySelectorAll(`.f-${kind}`)) b.setAttribute("aria-pressed", String(b.dataset.value === value));
  resync().catch(() => {});
}

// ---- users (admins) and the audit log (supervisors, admins) ----
function showPage(name) {
  $("users-page").hidden = name !== "users";
  $("audit-page").hidden = name !== "audit";
  $("log-page").hidden = name !== "log";
  $("webhooks-page").hidden = name !== "webhooks";
  $("templates-page").hidden = name !== "templates";
  if (name) { $("thread").hidden = true; state.selected = null; $("app").classList.add("open"); }
  if (name === "users") loadUsers().catch(() => {});
  if (name === "audit") loadAudit().catch(() => {});
  if (name === "log") loadLog().catch(showLogError);
  if (name === "webhooks") loadWebhookFailures().catch(() => {});
  if (name === "templates") loadTemplates().catch(() => {});
}

async function loadUsers() {
  const { items } = await api("GET", "/v1/users");
  $("users").replaceChildren(...items.map((u) => el("tr", { "data-id": u.id },
    el("td", {}, u.name), el("td", {}, u.email),
    el("td", {}, el("select", { "aria-label": `Role of ${u.name}`, onchange: (e) => changeUser(u.id, { role: e.target.value }) },
      ...["dispatcher", "supervisor", "admin"].map((r) => el("option", { selected: r === u.role }, r)))),
    el("td", {}, u.disabled ? "disabled" : u.active ? "active" : "invited"),
    el("td", {}, el("button", { type: "button", onclick: () => changeUser(u.id, { disabled: !u.disabled }) }, u.disabled ? "Enable" : "Disable")))));
}

async function changeUser(id, change) {
  await api("PATCH", `/v1/users/${id}`, change);
  await loadUsers();
}

async function inviteUser(e) {
  e.preventDefault();
  const invited = await api("POST", "/v1/users", { email: $("new-email").value.trim(), name: $("new-name").value.trim(), role: $("new-role").value });
  $("invite-link").hidden = false;
  $("invite-link").textContent = `Send ${invited.user.name} this link (valid 72 hours): ${invited.invite_url}`;
  $("new-email").value = ""; $("new-name").value = "";
  await loadUsers();
}

async function loadAudit() {
  const { items } = await api("GET", "/v1/audit?limit=200");
  $("audit").replaceChildren(...items.map((a) => el("tr", {},
    el("td", {}, el("time", { datetime: a.at }, new Date(a.at).toLocaleString())), el("td", {}, a.actor.name),
    el("td", {}, a.action), el("td", {}, a.target || ""))));
}

// ---- the delivery log and webhook failures (supervisors, admins) ----
/** The delivery log's query string from its filters. */
function logQuery() {
  const q = new URLSearchParams();
  for (const name of ["direction", "status", "channel", "from", "to", "q"]) {
    const v = $(`log-${name}`).value.trim();
    if (v) q.set(name, v);
  }
  if ($("log-since").value) q.set("since", new Date($("log-since").value).toISOString());
  return q;
}

function showLogError(err) { $("log-error").hidden = false; $("log-error").textContent = err.message; }

async function loadLog(cursor) {
  $("log-error").hidden = true;
  const q = logQuery();
  q.set("limit", "100");
  if (cursor) q.set("cursor", cursor);
  const { items, next_cursor } = await api("GET", `/v1/messages?${q}`);
  const rows = items.map((m) => el("tr", { "data-id": m.id, "data-status": m.status },
    el("td", {}, el("time", { datetime: m.created_at }, new Date(m.created_at).toLocaleString())),
    el("td", {}, m.direction), el("td", {}, m.channel), el("td", { class: "status" }, m.status),
    el("td", {}, human(m.from)), el("td", {}, human(m.to)), el("td", {}, m.body || ""),
    el("td", {}, [m.error_code, m.error_message].filter(Boolean).join(": ")),
    el("td", {}, ["failed", "undelivered"].includes(m.status)
      ? el("button", { type: "button", onclick: () => retry(m.id).catch(showLogError) }, "Retry") : "")));
  if (cursor) $("log").append(...rows); else $("log").replaceChildren(...rows);
  $("log-more").hidden = !next_cursor;
  $("log-more").onclick = () => loadLog(next_cursor).catch(showLogError);
}

async function retry(id) {
  const m = await api("POST", `/v1/messages/${id}/retry`);
  const row = document.querySelector(`#log tr[data-id="${m.id}"]`);
  if (row) { row.dataset.status = m.status; row.querySelector(".status").textContent = m.status; row.lastChild.replaceChildren(); }
}

/** Downloads the whole search as CSV (the API streams it with no row limit). */
async function exportLog() {
  const res = await fetch(`${API_URL}/v1/messages?${logQuery()}`, { headers: { Authorization: `Bearer ${state.key}`, Accept: "text/csv" } });
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `HTTP ${res.status}`);
  const link = el("a", { href: URL.createObjectURL(await res.blob()), download: "messages.csv" });
  document.body.append(link);
  link.click();
  link.remove();
}

async function loadWebhookFailures() {
  const { items } = await api("GET", "/v1/webhook-events?result=rejected&limit=200");
  $("webhook-failures").replaceChildren(...items.map((w) => el("tr", {},
    el("td", {}, el("time", { datetime: w.received_at }, new Date(w.received_at).toLocaleString())),
    el("td", {}, w.carrier), el("td", {}, w.reason || ""), el("td", {}, w.detail || ""),
    el("td", {}, w.body ? el("details", {}, el("summary", {}, "body"), el("pre", {}, w.body)) : ""))));
}

// ---- templates (supervisors, admins): approve or reject another's pending version ----
async function loadTemplates() {
  const { items } = await api("GET", "/v1/templates");
  state.templates = items;
  const me = state.me.actor.id;
  $("templates").replaceChildren(...items.map((t) => {
    const latest = t.versions[t.versions.length - 1];
    let actions = null;
    if (latest.status === "pending" && latest.author.id === me) actions = el("span", { class: "muted" }, "awaiting another supervisor");
    else if (latest.status === "pending") {
      const reason = el("input", { "aria-label": `Reason to reject ${t.name}`, placeholder: "reason" });
      actions = el("span", {},
        el("button", { type: "button", onclick: () => decide(t.name, "approve") }, "Approve"),
        reason,
        el("button", { type: "button", onclick: () => decide(t.name, "reject", { reason: reason.value }) }, "Reject"));
    }
    return el("tr", { "data-name": t.name },
      el("td", {}, t.name), el("td", {}, t.approved_version ? `v${t.approved_version}` : "—"),
      el("td", { class: "status" }, `v${latest.version} ${latest.status}${latest.reason ? ` (${latest.reason})` : ""}`),
      el("td", {}, latest.author.name), el("td", {}, actions));
  }));
}

async function decide(name, step, body) {
  $("templates-error").hidden = true;
  try { await api("POST", `/v1/templates/${encodeURIComponent(name)}/${step}`, body); }
  catch (err) { $("templates-error").hidden = false; $("templates-error").textContent = err.message; }
  await loadTemplates();
}

// ---- wiring ----
$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try { await signIn($("api-key").value.trim()); }
  catch (err) { $("signin-error").hidden = false; $("signin-error").textContent = err.message; }
});
$("signout").addEventListener("click", () => signOut());
$("login-form").addEventListener("submit", (e) => login(e).catch((err) => { $("login-error").hidden = false; $("login-error").textContent = err.message; }));
$("invite-form").addEventListener("submit", (e) => acceptInvite(e).catch(() => {}));
$("note").addEventListener("submit", (e) => addNote(e).catch(() => {}));
$("take").addEventListener("click", () => act("assign", { user_id: state.me.user.id }).catch(() => {}));
$("unassign").addEventListener("click", () => act("assign", { user_id: null }).catch(() => {}));
$("assign-to").addEventListener("change", (e) => { if (e.target.value) act("assign", { user_id: e.target.value }).catch(() => {}); });
$("resolve").addEventListener("click", () => act("resolve").catch(() => {}));
$("reopen").addEventListener("click", () => act("reopen").catch(() => {}));
for (const b of document.querySelectorAll(".f-assignee")) b.addEventListener("click", () => setFilter("assignee", b.dataset.value));
for (const b of document.querySelectorAll(".f-status")) b.addEventListener("click", () => setFilter("status", b.dataset.value));
$("nav-users").addEventListener("click", () => showPage("users"));
$("nav-audit").addEventListener("click", () => showPage("audit"));
$("nav-log").addEventListener("click", () => showPage("log"));
$("nav-webhooks").addEventListener("click", () => showPage("webhooks"));
$("log-filters").addEventListener("submit", (e) => { e.preventDefault(); loadLog().catch(showLogError); });
$("log-export").addEventListener("click", () => exportLog().catch(showLogError));
$("nav-templates").addEventListener("click", () => showPage("templates"));
$("canned-pick").addEventListener("change", pickCanned);
$("canned").addEventListener("submit", (e) => sendCanned(e).catch(() => {}));
$("invite-user").addEventListener("submit", (e) => inviteUser(e).catch((err) => { $("invite-link").hidden = false; $("invite-link").textContent = err.message; }));
let lastTyping = 0;
$("reply-body").addEventListener("input", () => {
  if (Date.now() - lastTyping < 2000) return;
  lastTyping = Date.now();
  say("conversation.typing", state.selected);
});
// Viewing lasts 30 s on the other dashboards: say it again while the conversation is open,
// and let what others said expire.
setInterval(() => say("conversation.viewing", state.selected), 20000);
setInterval(() => { if (state.presence.size) renderPresence(); }, 1000);
$("reply").addEventListener("submit", sendReply);
$("reply-body").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) sendReply(e); });
$("back").addEventListener("click", () => { state.selected = null; $("app").classList.remove("open"); renderList(); $("thread").hidden = true; });

const saved = sessionStorage.getItem(KEY_STORE);
if (location.hash.startsWith("#invite=")) { signOut(); $("invite-form").hidden = false; $("invite-password").focus(); }
else if (saved) signIn(saved).catch(() => signOut()); else signOut();
