// Omni LiveChat widget: one dependency-free script, embedded with
//   <script src="https://omni.example/livechat/widget.js" data-widget-key="lcw_…" async></script>
// It talks to the server it was loaded from. Everything it draws lives in a shadow root, so
// the host page's styles neither break it nor are broken by it.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var KEY = script.getAttribute("data-widget-key") || "";
  // What the page knows of its visitor, if anything: dispatchers see the conversation by it.
  var PROFILE = {
    name: script.getAttribute("data-visitor-name") || undefined,
    email: script.getAttribute("data-visitor-email") || undefined,
  };
  var API = new URL(script.src).origin;
  var STORE = "omni-livechat:" + KEY;
  var session = null, socket = null, retry = 0, shown = new Map(), reading = null;

  var host = document.createElement("div");
  host.setAttribute("data-omni-livechat", "");
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" +
    ":host{all:initial}*{box-sizing:border-box;font:14px/1.4 system-ui,sans-serif}" +
    ".launch{position:fixed;right:16px;bottom:16px;z-index:2147483647;border:0;border-radius:24px;padding:12px 18px;background:#1a56db;color:#fff;cursor:pointer}" +
    ".launch:focus-visible,button:focus-visible,textarea:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}" +
    ".panel{position:fixed;right:16px;bottom:72px;z-index:2147483647;width:min(360px,calc(100vw - 32px));height:min(520px,calc(100vh - 96px));display:flex;flex-direction:column;background:#fff;color:#111;border:1px solid #ccc;border-radius:12px;box-shadow:0 8px 24px rgba(0,0,0,.2)}" +
    ".panel[hidden]{display:none}header{display:flex;justify-content:space-between;align-items:center;padding:10px 12px;background:#1a56db;color:#fff;border-radius:12px 12px 0 0}" +
    "header h2{margin:0;font-weight:600}header button{border:0;background:none;color:#fff;font-size:18px;cursor:pointer}" +
    ".status{padding:6px 12px;background:#fef3c7;color:#78350f}.status[hidden]{display:none}" +
    "ol{list-style:none;margin:0;padding:12px;flex:1;overflow-y:auto;display:flex;flex-direction:column;gap:6px}" +
    "li{max-width:80%;padding:6px 10px;border-radius:10px;background:#f1f5f9;align-self:flex-start;word-wrap:break-word}" +
    "li.inbound{align-self:flex-end;background:#dbeafe}li.greeting{background:#ecfdf5}.meta{font-size:11px;color:#555}" +
    "li img{max-width:100%;display:block;border-radius:6px}" +
    "form{display:flex;gap:6px;padding:8px;border-top:1px solid #ddd;align-items:flex-end}" +
    "textarea{flex:1;resize:none;height:40px;padding:8px;border:1px solid #bbb;border-radius:8px}" +
    "form button,label.attach{border:0;border-radius:8px;padding:8px 10px;background:#1a56db;color:#fff;cursor:pointer}" +
    "label.attach{background:#e5e7eb;color:#111}input[type=file]{position:absolute;width:1px;height:1px;opacity:0}" +
    "progress{width:100%}progress[hidden]{display:none}.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}" +
    "</style>" +
    '<button class="launch" type="button" aria-expanded="false" aria-controls="panel">Chat with us</button>' +
    '<section class="panel" id="panel" role="dialog" aria-labelledby="title" hidden>' +
    '<header><h2 id="title">Chat</h2><button type="button" class="close" aria-label="Close chat">×</button></header>' +
    '<div class="status" role="status" hidden></div>' +
    '<ol class="log" role="log" aria-live="polite" aria-label="Conversation"></ol>' +
    '<progress class="upload" max="100" value="0" hidden aria-label="Upload progress"></progress>' +
    '<form><label class="attach" tabindex="0">Attach<input type="file" accept="image/jpeg,image/png,image/gif,image/webp,application/pdf" aria-label="Attach a file"></label>' +
    '<label class="sr" for="body">Message</label><textarea id="body" aria-label="Message" placeholder="Type a message…"></textarea>' +
    '<button type="submit" aria-label="Send message">Send</button></form></section>';
  var $ = function (sel) { return root.querySelector(sel); };
  var launch = $(".launch"), panel = $(".panel"), log = $(".log"), status = $(".status");
  var input = $("textarea"), file = $("input[type=file]"), progress = $(".upload");
  var settings = { title: "Chat", greeting: "", offline: "You are offline; we will reconnect." };

  function say(text) { status.textContent = text || ""; status.hidden = !text; }

  // The visitor's own messages are ticked once stored.
  function ticks(m) { return m.direction === "inbound" ? "✓ sent" : ""; }

  function render(m) {
    var li = shown.get(m.id);
    if (!li) {
      li = document.createElement("li");
      li.className = m.direction;
      li.setAttribute("data-id", m.id);
      shown.set(m.id, li);
      log.appendChild(li);
    }
    li.replaceChildren();
    if (m.body) li.appendChild(document.createTextNode(m.body));
    (m.media || []).forEach(function (x) {
      if (/^image\//.test(x.content_type || "")) {
        var img = document.createElement("img");
        img.src = x.url;
        img.alt = "attachment";
        li.appendChild(img);
      } else {
        var a = document.createElement("a");
        a.href = x.url;
        a.textContent = "attachment";
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        li.appendChild(a);
      }
    });
    var meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = [m.sender_name, ticks(m)].filter(Boolean).join(" · ");
    li.appendChild(meta);
    log.scrollTop = log.scrollHeight;
    if (m.direction === "outbound" && !panel.hidden) markRead(m.id);
  }

  function markRead(id) {
    clearTimeout(reading);
    reading = setTimeout(function () { call("POST", "/livechat/v1/read", { up_to: id }).catch(function () {}); }, 300);
  }

  function call(method, path, body) {
    var headers = { "content-type": "application/json" };
    if (session) headers.authorization = "Bearer " + session.token;
    return fetch(API + path, { method: method, headers: headers, body: body && JSON.stringify(body) })
      .then(function (res) {
        return res.json().catch(function () { return null; }).then(function (data) {
          if (res.status === 401 && session && path !== "/livechat/v1/sessions") {
            session = null;
            localStorage.removeItem(STORE);
            return start().then(function () { return call(method, path, body); });
          }
          if (!res.ok) throw new Error((data && data.error) || "HTTP " + res.status);
          return data;
        });
      });
  }

  function start() {
    var saved = null;
    try { saved = JSON.parse(localStorage.getItem(STORE) || "null"); } catch (e) { saved = null; }
    if (saved && Date.parse(saved.expires_at) - Date.now() > 3600e3) {
      session = saved;
      return Promise.resolve(session);
    }
    var renew = saved && Date.parse(saved.expires_at) > Date.now();
    if (renew) session = saved;
    return (renew ? call("POST", "/livechat/v1/sessions/refresh") : call("POST", "/livechat/v1/sessions", { widget_key: KEY, visitor: PROFILE }))
      .then(function (s) {
        session = s;
        localStorage.setItem(STORE, JSON.stringify(s));
        return s;
      });
  }

  // The tenant's title, greeting and offline message, as the session carries them.
  function dress(s) {
    var w = (s && s.widget) || {};
    if (w.title) $("#title").textContent = w.title;
    if (w.offline_message) settings.offline = w.offline_message;
    if (w.greeting && !$(".greeting")) {
      var li = document.createElement("li");
      li.className = "greeting";
      li.textContent = w.greeting;
      log.insertBefore(li, log.firstChild);
    }
  }

  function history() {
    return call("GET", "/livechat/v1/messages?limit=100").then(function (page) { page.items.forEach(render); });
  }

  // The session names the socket when it is not this server's (on AWS, the WebSocket API).
  function socketUrl() {
    var base = session.socket_url || API.replace(/^http/, "ws") + "/livechat/v1/ws";
    return base + (base.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(session.token);
  }

  function connect() {
    if (!session) return;
    socket = new WebSocket(socketUrl());
    // A frame now and then keeps API Gateway from closing an idle socket (10 minutes).
    var keepalive = setInterval(function () {
      if (socket && socket.readyState === 1) socket.send('{"type":"ping"}');
    }, 300000);
    socket.onopen = function () { retry = 0; say(""); history().catch(function () {}); };
    socket.onmessage = function (e) {
      var frame = JSON.parse(e.data);
      if (frame.message) render(frame.message);
      if (frame.type === "typing") {
        say("Typing…");
        setTimeout(function () { say(""); }, 3000);
      }
    };
    socket.onclose = function () {
      clearInterval(keepalive);
      say(settings.offline);
      // Reconnect with backoff: 1 s, 2 s, 4 s … at most 30 s.
      var delay = Math.min(30000, 1000 * Math.pow(2, retry++));
      setTimeout(function () { start().then(connect, connect); }, delay);
    };
  }

  function send(body, media) {
    return call("POST", "/livechat/v1/messages", {
      body: body, media: media, client_message_id: Date.now().toString(36) + Math.random().toString(36).slice(2),
    }).then(render);
  }

  function upload(f) {
    return new Promise(function (resolve, reject) {
      var form = new FormData();
      form.append("file", f);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", API + "/livechat/v1/media");
      xhr.setRequestHeader("authorization", "Bearer " + session.token);
      progress.hidden = false;
      progress.value = 0;
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
      xhr.onload = function () {
        progress.hidden = true;
        var data = null;
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
        if (xhr.status === 201) resolve(data); else reject(new Error((data && data.error) || "upload failed"));
      };
      xhr.onerror = function () { progress.hidden = true; reject(new Error("upload failed")); };
      xhr.send(form);
    });
  }

  var opened = false;
  function open() {
    panel.hidden = false;
    launch.setAttribute("aria-expanded", "true");
    input.focus();
    if (opened) return;
    opened = true;
    start().then(function (s) { dress(s); return history(); }).then(connect).catch(function () {
      say("This chat is not available on this site.");
    });
  }
  function close() {
    panel.hidden = true;
    launch.setAttribute("aria-expanded", "false");
    launch.focus();
  }

  launch.addEventListener("click", function () { if (panel.hidden) open(); else close(); });
  $(".close").addEventListener("click", close);
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") close(); });
  $("label.attach").addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } });
  $("form").addEventListener("submit", function (e) {
    e.preventDefault();
    var body = input.value.trim();
    if (!body) return;
    input.value = "";
    send(body, []).catch(function (err) { say(err.message); input.value = body; });
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
  });
  file.addEventListener("change", function () {
    var f = file.files && file.files[0];
    if (!f) return;
    upload(f).then(function (up) { return send(input.value.trim(), [up.id]); })
      .then(function () { input.value = ""; file.value = ""; })
      .catch(function (err) { say(err.message); file.value = ""; });
  });

  function mount() { document.body.appendChild(host); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
