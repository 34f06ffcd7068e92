// The LiveChat widget in a real browser: a page served from an allowed origin (a second
// local port) chats with the dispatcher console, in another browser context, both ways and
// with an image; the same page from another origin is refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN, ARTIFACTS, BIN, MASTER_KEY, launchChromium, signedInPage, startOmni } from "./harness.mjs";

// A 1×1 PNG.
const PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==", "base64");

let omni, base, browser, allowed, other, key, widgetKey;

/** A site embedding the widget, as a tenant's web page would. */
function startSite() {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(`<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width"><title>North County</title></head>
<body><h1>North County services</h1>
<script src="${base}/livechat/widget.js" data-widget-key="${widgetKey}" data-visitor-name="Ana Visitor" async></script></body></html>`);
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

async function admin(method, path, body) {
  const res = await fetch(base + path, { method, headers: { Authorization: `Bearer ${ADMIN}`, "content-type": "application/json" }, body: body && JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "omni-livechat-"));
  const started = await startOmni(BIN, { OMNI_ADDR: "127.0.0.1:0", OMNI_DB: join(dir, "omni.db"), OMNI_ADMIN_TOKEN: ADMIN, OMNI_MASTER_KEY: MASTER_KEY });
  omni = started.child;
  base = started.url;
  await admin("PUT", "/v1/admin/tenants/north", { name: "North County PSAP", default_region: "US" });
  key = (await admin("POST", "/v1/admin/tenants/north/api-keys")).key;
  allowed = await startSite();
  other = await startSite();
  const origin = `http://127.0.0.1:${allowed.address().port}`;
  const widget = await admin("PUT", "/v1/admin/tenants/north/livechat", {
    allowed_origins: [origin], title: "North County chat", greeting: "Hello! How can we help?", offline_message: "Reconnecting…",
  });
  widgetKey = widget.widget_key;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  omni?.kill("SIGKILL");
  allowed?.close();
  other?.close();
});

test("a visitor on an allowed site and a dispatcher chat both ways, with an image", async () => {
  const dispatcher = await signedInPage(browser, base, key);
  const context = await browser.newContext({ viewport: { width: 360, height: 640 } });
  const visitor = await context.newPage();
  await visitor.goto(`http://127.0.0.1:${allowed.address().port}/`);

  // Keyboard only: the launcher opens the panel with its greeting and title.
  const launcher = visitor.getByRole("button", { name: "Chat with us" });
  await launcher.focus();
  await visitor.keyboard.press("Enter");
  const panel = visitor.getByRole("dialog", { name: "North County chat" });
  await panel.waitFor();
  await visitor.locator("li.greeting", { hasText: "Hello! How can we help?" }).waitFor();
  const box = visitor.getByRole("textbox", { name: "Message" });
  await box.fill("Is the road to the lake open?");
  await visitor.keyboard.press("Enter");
  await visitor.locator("li.inbound", { hasText: "Is the road to the lake open?" }).waitFor();
  const width = await panel.evaluate((el) => el.getBoundingClientRect().width);
  assert.ok(width <= 360, `the panel fits a 360 px screen (${width})`);

  // The dispatcher sees it live and answers from the console.
  const item = dispatcher.locator("#conversations li").first();
  await item.waitFor();
  // Listed under the name the page gave, not the visitor id.
  assert.equal(await item.locator(".who").textContent(), "Ana Visitor");
  await item.click();
  await dispatcher.locator(".msg.inbound .body", { hasText: "Is the road to the lake open?" }).waitFor();
  await dispatcher.fill("#reply-body", "Yes, it reopened this morning.");
  await dispatcher.keyboard.press("Enter");
  await visitor.locator("li.outbound", { hasText: "Yes, it reopened this morning." }).waitFor();
  // Pushed to the open widget: delivered, then read once the visitor's panel shows it.
  await dispatcher.locator(".msg.outbound .tick[data-status=read], .msg.outbound .tick[data-status=delivered]").first().waitFor();
  await dispatcher.locator(".msg.outbound .tick[data-status=read]").waitFor();

  // The visitor sends a picture; the dispatcher sees it inline.
  await visitor.locator("input[type=file]").setInputFiles({ name: "bridge.png", mimeType: "image/png", buffer: PNG });
  await visitor.locator("li.inbound img").waitFor();
  await dispatcher.locator(".msg.inbound img").waitFor();
  await visitor.screenshot({ path: join(ARTIFACTS, "livechat-01-visitor.png") });
  await dispatcher.screenshot({ path: join(ARTIFACTS, "livechat-02-dispatcher.png") });
  await context.close();
  await dispatcher.context().close();
});

test("the same page from another origin is refused and stores nothing", async () => {
  const before = await (await fetch(base + "/v1/conversations", { headers: { Authorization: `Bearer ${key}` } })).json();
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${other.address().port}/`);
  await page.getByRole("button", { name: "Chat with us" }).click();
  await page.getByRole("status").filter({ hasText: "not available" }).waitFor();
  const after = await (await fetch(base + "/v1/conversations", { headers: { Authorization: `Bearer ${key}` } })).json();
  assert.equal(after.items.length, before.items.length);
  await page.screenshot({ path: join(ARTIFACTS, "livechat-03-refused.png") });
  await context.close();
});
