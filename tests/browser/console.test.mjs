// Dispatcher console in a real browser: headless Chromium (Debian package) driven by
// playwright-core, against a spawned `omni serve` and a Twilio fake on loopback.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN, ARTIFACTS, BIN, MASTER_KEY, launchChromium, signedInPage, startOmni, startTwilio } from "./harness.mjs";

const TOKEN_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NUMBER_A = "+15555550100";
const NUMBER_B = "+15555550200";
const CONTACT = "+15555550123";

let omni, base, db, browser, carrier, graph, sent = [], reports = [];

const WA_SECRET = "west-whatsapp-app-secret-0001";
const WA_PHONE_ID = "200000000000009";
const NUMBER_W = "+15555550300";
const HTML_MEDIA = "300000000000009";

/** The Graph API fake: a contact's document whose bytes are an HTML page that reports the
 * origin it runs on (by navigating to /report), were it ever opened as a page. */
function startGraph() {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      const here = `http://127.0.0.1:${server.address().port}`;
      const url = new URL(req.url, here);
      if (url.pathname === `/${HTML_MEDIA}`) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ url: `${here}/lookaside/${HTML_MEDIA}`, mime_type: "text/html", file_size: 200 }));
      } else if (url.pathname === `/lookaside/${HTML_MEDIA}`) {
        res.writeHead(200, { "content-type": "text/html" });
        res.end(`<!doctype html><script>location.href = "${here}/report?origin=" + encodeURIComponent(location.origin) + "&opener=" + encodeURIComponent(String(!!window.opener));</script>`);
      } else if (url.pathname === "/report") {
        reports.push(Object.fromEntries(url.searchParams));
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("reported");
      } else {
        res.writeHead(404);
        res.end();
      }
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

async function tenant(id, token, number) {
  await admin("PUT", `/v1/admin/tenants/${id}`, { name: `PSAP ${id}`, default_region: "US" });
  await admin("PUT", `/v1/admin/tenants/${id}/providers/twilio`, { account_sid: "AC0123456789abcdef0123456789abcdef", auth_token: token });
  await admin("PUT", `/v1/admin/tenants/${id}/numbers/${number}`, { provider: "twilio", channels: ["sms", "mms"] });
  return (await admin("POST", `/v1/admin/tenants/${id}/api-keys`)).key;
}

/** `omni webhook …`, as a demo user would run it. */
function cli(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["webhook", ...args, "--url", base, "--db", db], { env: { ...process.env, OMNI_MASTER_KEY: MASTER_KEY } });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`omni webhook ${args.join(" ")}: ${code}\n${out}`))));
  });
}

let keyA, keyB;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  carrier = await startTwilio(sent);
  graph = await startGraph();
  const dir = mkdtempSync(join(tmpdir(), "omni-console-"));
  db = join(dir, "omni.db");
  const started = await startOmni(BIN, {
    OMNI_ADDR: "127.0.0.1:0", OMNI_DB: db, OMNI_ADMIN_TOKEN: ADMIN, OMNI_MASTER_KEY: MASTER_KEY,
    OMNI_TWILIO_API_URL: `http://127.0.0.1:${carrier.address().port}`,
    OMNI_WHATSAPP_API_URL: `http://127.0.0.1:${graph.address().port}`,
  });
  omni = started.child;
  base = started.url;
  keyA = await tenant("north", TOKEN_A, NUMBER_A);
  keyB = await tenant("south", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", NUMBER_B);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  omni?.kill("SIGKILL");
  carrier?.close();
  graph?.close();
});

test("a dispatcher sees, reads and answers a text live; another tenant sees none of it", async () => {
  const page = await signedInPage(browser, base, keyA);
  assert.equal(await page.evaluate(() => location.href.includes("omk_")), false, "the key never appears in the URL bar");
  const other = await signedInPage(browser, base, keyB);

  await cli(["send", "twilio", "--tenant", "north", "--from", CONTACT, "--to", NUMBER_A, "--body", "Smoke on 5th street"]);

  // Appears live with an unread badge, no reload.
  const item = page.locator("#conversations li").first();
  await item.locator(".badge").waitFor();
  assert.equal(await item.locator(".badge").textContent(), "1");
  assert.match(await item.textContent(), /\(555\) 555-0123/);
  await page.screenshot({ path: join(ARTIFACTS, "01-inbound-unread.png") });

  // Opening it clears the badge (and the server's unread count).
  await item.click();
  await page.locator(".msg.inbound .body", { hasText: "Smoke on 5th street" }).waitFor();
  await page.waitForFunction(() => !document.querySelector("#conversations li .badge"));
  const list = await (await fetch(base + "/v1/conversations", { headers: { Authorization: `Bearer ${keyA}` } })).json();
  assert.equal(list.items[0].unread_count, 0);

  // A reply reaches the carrier fake.
  await page.fill("#reply-body", "Units are on the way");
  await page.keyboard.press("Enter");
  const deadline = Date.now() + 10000;
  while (!sent.some((s) => s.form.Body === "Units are on the way") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const delivery = sent.find((s) => s.form.Body === "Units are on the way");
  assert.ok(delivery, "the carrier got the reply");
  assert.equal(delivery.form.To, CONTACT);
  assert.equal(delivery.form.From, NUMBER_A);
  await page.locator(".msg.outbound .tick[data-status=queued], .msg.outbound .tick[data-status=sent]").first().waitFor();

  // Its tick advances when the status callback arrives.
  await cli(["status", "--tenant", "north", "--sid", delivery.sid, "--status", "delivered", "--from", NUMBER_A, "--to", CONTACT]);
  await page.locator(".msg.outbound .tick[data-status=delivered]").waitFor();
  await page.screenshot({ path: join(ARTIFACTS, "02-thread-delivered.png") });

  // Tenant B saw none of it.
  assert.equal(await other.locator("#conversations li").count(), 0);
  assert.equal(await other.locator("#empty").isVisible(), true);
  await other.screenshot({ path: join(ARTIFACTS, "03-other-tenant-empty.png") });
});

test("works on a phone-sized screen and with the keyboard; opted-out contacts show a banner", async () => {
  await cli(["send", "twilio", "--tenant", "north", "--from", "+15555550188", "--to", NUMBER_A, "--body", "STOP"]);
  const context = await browser.newContext({ viewport: { width: 390, height: 760 } });
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.keyboard.type(keyA);
  await page.keyboard.press("Enter");
  await page.waitForSelector(".conn.live");
  const item = page.locator("#conversations li", { hasText: "(555) 555-0188" });
  await item.waitFor();
  await item.focus();
  await page.keyboard.press("Enter");
  await page.locator("#optout:not([hidden])").waitFor();
  assert.equal(await page.locator("#conversations").isVisible(), false, "the thread takes the whole phone screen");
  await page.screenshot({ path: join(ARTIFACTS, "04-phone-opted-out.png") });
  await page.fill("#reply-body", "Are you safe?");
  await page.keyboard.press("Enter");
  await page.locator("#reply-error:not([hidden])").waitFor();
  assert.match(await page.locator("#reply-error").textContent(), /opted out/);
});

test("a contact's HTML attachment is a download that never runs on the console's origin; the console is served under a strict policy", async () => {
  // The console's own headers.
  const index = await fetch(base + "/");
  const csp = index.headers.get("content-security-policy") || "";
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.equal(index.headers.get("x-content-type-options"), "nosniff");
  assert.equal(index.headers.get("referrer-policy"), "no-referrer");

  // A WhatsApp tenant, and a contact's document that is an HTML page.
  await admin("PUT", "/v1/admin/tenants/west", { name: "PSAP west", default_region: "US" });
  await admin("PUT", "/v1/admin/tenants/west/providers/whatsapp", { phone_number_id: WA_PHONE_ID, access_token: "EAAG-west-access-token", app_secret: WA_SECRET, verify_token: "west-verify-token" });
  await admin("PUT", `/v1/admin/tenants/west/numbers/${NUMBER_W}`, { provider: "whatsapp", channels: ["whatsapp"] });
  const keyW = (await admin("POST", "/v1/admin/tenants/west/api-keys")).key;
  const body = JSON.stringify({ object: "whatsapp_business_account", entry: [{ id: "100000000000009", changes: [{ field: "messages", value: {
    messaging_product: "whatsapp", metadata: { display_phone_number: NUMBER_W.slice(1), phone_number_id: WA_PHONE_ID },
    contacts: [{ profile: { name: "Mallory" }, wa_id: CONTACT.slice(1) }],
    messages: [{ from: CONTACT.slice(1), id: "wamid.HTMLATTACHMENT0001", timestamp: String(Math.floor(Date.now() / 1000)), type: "document",
      document: { id: HTML_MEDIA, mime_type: "text/html", filename: "invoice.html", caption: "see attached" } }] } }] }] });
  const signature = "sha256=" + createHmac("sha256", WA_SECRET).update(body).digest("hex");
  const hook = await fetch(base + "/webhooks/whatsapp", { method: "POST", headers: { "content-type": "application/json", "x-hub-signature-256": signature }, body });
  assert.equal(hook.status, 200, await hook.text());

  const page = await signedInPage(browser, base, keyW);
  const opened = [];
  page.context().on("page", (p) => opened.push(p));
  await page.locator("#conversations li").first().click();
  await page.locator(".msg.inbound .body", { hasText: "see attached" }).waitFor();
  const link = page.locator(".msg.inbound a.attachment[download]");
  await link.waitFor();
  assert.equal(await page.locator(".msg.inbound img, .msg.inbound iframe, .msg.inbound a[target]").count(), 0, "an HTML page is neither shown nor opened");
  assert.match(await link.getAttribute("href"), /^blob:/);
  await page.screenshot({ path: join(ARTIFACTS, "05-html-attachment-download.png") });

  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  assert.equal(download.suggestedFilename(), "attachment-1");
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(opened.length, 0, "no page was opened");
  assert.equal(page.url(), base + "/", "the console stayed where it was");
  assert.deepEqual(reports, [], "the attachment's script never ran");
});

const PASSWORD = "correct horse battery staple";

/** A user of tenant `north` with a password, invited by the platform operator. */
async function user(email, name, role) {
  const invited = await admin("POST", "/v1/admin/tenants/north/users", { email, name, role });
  const res = await fetch(base + "/v1/auth/invite", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: invited.invite_token, password: PASSWORD }) });
  assert.equal(res.status, 200, await res.text());
  return invited.user;
}

/** A browser context of its own signed in with e-mail and password through the console. */
async function signedInAs(email) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.fill("#login-tenant", "north");
  await page.fill("#login-email", email);
  await page.fill("#login-password", PASSWORD);
  await page.click("#login-submit");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector(".conn.live");
  return page;
}

test("two dispatchers: one takes a conversation and the other sees it move; each sees the other on it; notes and who replied; no Users page for dispatchers", async () => {
  const alex = await user("alex@north.example", "Alex", "dispatcher");
  await user("kim@north.example", "Kim", "dispatcher");
  const contact = "+15555550177";

  // An invite link opens the set-password form (a third person, never used after).
  const invited = await admin("POST", "/v1/admin/tenants/north/users", { email: "lee@north.example", name: "Lee", role: "dispatcher" });
  const invitePage = await (await browser.newContext()).newPage();
  await invitePage.goto(invited.invite_url);
  await invitePage.locator("#invite-form:not([hidden])").waitFor();
  await invitePage.fill("#invite-password", PASSWORD);
  await invitePage.click("#invite-submit");
  await invitePage.locator("#login-error", { hasText: "Password set" }).waitFor();
  assert.equal(await invitePage.inputValue("#login-email"), "lee@north.example");

  const a = await signedInAs("alex@north.example");
  const k = await signedInAs("kim@north.example");
  assert.match(await a.locator("#whoami").textContent(), /Alex · dispatcher/);
  assert.equal(await a.locator("#nav-users").isVisible(), false, "a dispatcher sees no Users page");
  assert.equal(await a.locator("#nav-audit").isVisible(), false);
  const token = await a.evaluate(() => sessionStorage.getItem("omni.apiKey"));
  assert.match(token, /^oms_/);
  const refused = await fetch(base + "/v1/users", { method: "POST", headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ email: "x@north.example", name: "X", role: "admin" }) });
  assert.equal(refused.status, 403, "and the API refuses it");
  assert.match((await refused.json()).error, /users\.manage/);
  assert.equal((await fetch(base + "/v1/users", { headers: { Authorization: `Bearer ${token}` } })).status, 403);

  await cli(["send", "twilio", "--tenant", "north", "--from", contact, "--to", NUMBER_A, "--body", "Car on fire, highway 9"]);
  await k.click("#f-unassigned");
  const kimItem = k.locator("#conversations li", { hasText: "(555) 555-0177" });
  await kimItem.waitFor();

  // Alex takes it: it leaves Kim's Unassigned list live, and shows as Alex's under All.
  const alexItem = a.locator("#conversations li", { hasText: "(555) 555-0177" });
  await alexItem.click();
  await a.click("#take");
  await a.locator("#assignee", { hasText: "Assigned to Alex" }).waitFor();
  await kimItem.waitFor({ state: "detached" });
  await k.click("#f-all");
  await kimItem.locator(".tag", { hasText: "Alex" }).waitFor();
  await a.click("#f-mine");
  await alexItem.waitFor();
  await k.screenshot({ path: join(ARTIFACTS, "06-kim-sees-alex-assigned.png") });

  // Both open it: each sees the other; Alex typing shows as replying.
  await kimItem.click();
  await k.locator("#presence", { hasText: "Alex is viewing" }).waitFor();
  await a.locator("#presence", { hasText: "Kim is viewing" }).waitFor();
  await a.fill("#reply-body", "Units are on the way");
  await a.type("#reply-body", "!");
  await k.locator("#presence", { hasText: "Alex is replying" }).waitFor();
  await a.keyboard.press("Enter");
  await k.locator(".msg.outbound .by", { hasText: "Alex" }).waitFor();
  await k.screenshot({ path: join(ARTIFACTS, "07-kim-sees-alex-replying.png") });

  // A note stays apart from the messages, and is never sent to the contact.
  await k.fill("#note-body", "Second caller on this incident");
  await k.click("#note button[type=submit]");
  await a.locator(".msg.note", { hasText: "Second caller on this incident" }).waitFor();
  assert.match(await a.locator(".msg.note .by").textContent(), /Note · Kim/);
  assert.equal(sent.filter((s) => s.form.Body === "Second caller on this incident").length, 0);

  // Resolve from one console; the other sees it leave Open.
  await a.click("#resolve");
  await k.locator("#reopen:not([hidden])").waitFor();
  await k.click("#f-all");
  await k.click("#f-resolved");
  await kimItem.waitFor();
  assert.equal(alex.role, "dispatcher");
});

test("an admin assigns to anyone, has a Users page (invite, role, disable) and an Audit page", async () => {
  await user("sam@north.example", "Sam", "admin");
  const page = await signedInAs("sam@north.example");
  // An admin (or supervisor) may give a conversation to anyone (this one was resolved).
  await page.click("#f-resolved");
  await page.locator("#conversations li", { hasText: "(555) 555-0177" }).click();
  await page.selectOption("#assign-to", { label: "Kim" });
  await page.locator("#assignee", { hasText: "Assigned to Kim" }).waitFor();
  await page.click("#nav-users");
  await page.locator("#users tr", { hasText: "Kim" }).waitFor();
  await page.fill("#new-email", "pat@north.example");
  await page.fill("#new-name", "Pat");
  await page.selectOption("#new-role", "supervisor");
  await page.click("#invite-user button[type=submit]");
  await page.locator("#invite-link", { hasText: "/#invite=omi_" }).waitFor();
  const kim = page.locator("#users tr", { hasText: "Kim" });
  await kim.locator("select").selectOption("supervisor");
  await kim.locator("button", { hasText: "Disable" }).click();
  await kim.locator("td", { hasText: "disabled" }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, "08-users.png") });
  await page.click("#nav-audit");
  await page.locator("#audit tr", { hasText: "conversation.assign" }).first().waitFor();
  assert.ok(await page.locator("#audit tr", { hasText: "user.change" }).count() > 0);
  await page.screenshot({ path: join(ARTIFACTS, "09-audit.png") });
});

test("a supervisor searches the delivery log, exports it, retries a failed send and sees refused webhooks", async () => {
  await user("lou@north.example", "Lou", "supervisor");
  const refused = await (await fetch(base + "/v1/messages", {
    method: "POST", headers: { Authorization: `Bearer ${keyA}`, "content-type": "application/json" },
    body: JSON.stringify({ channel: "sms", to: "+15555550166", body: "Refused once" }),
  })).json();
  // A forged webhook for our number: refused, and logged.
  const forged = await fetch(base + "/webhooks/twilio", {
    method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": "forged" },
    body: new URLSearchParams({ MessageSid: "SMforged", From: CONTACT, To: NUMBER_A, Body: "hi", NumMedia: "0" }).toString(),
  });
  assert.equal(forged.status, 401);

  const page = await signedInAs("lou@north.example");
  await page.click("#nav-log");
  await page.selectOption("#log-status", "failed");
  await page.fill("#log-q", "refused");
  for (let i = 0; i < 50; i++) {
    await page.click("#log-filters button[type=submit]");
    if (await page.locator(`#log tr[data-id="${refused.id}"]`).count()) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const row = page.locator(`#log tr[data-id="${refused.id}"]`);
  await row.locator("td", { hasText: "21610" }).waitFor();
  assert.equal(await page.locator("#log tr").count(), 1, "only the failed send that says 'refused'");
  await page.screenshot({ path: join(ARTIFACTS, "10-delivery-log.png") });

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#log-export")]);
  const csv = await new Promise((resolve) => {
    download.createReadStream().then((stream) => { let t = ""; stream.on("data", (c) => (t += c)); stream.on("end", () => resolve(t)); });
  });
  assert.match(csv, /^id,created_at,/);
  assert.ok(csv.includes(refused.id), csv);

  await row.locator("button", { hasText: "Retry" }).click();
  await page.locator(`#log tr[data-id="${refused.id}"][data-status=queued]`).waitFor();
  const deadline = Date.now() + 10000;
  while (sent.filter((s) => s.form.Body === "Refused once").length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(sent.filter((s) => s.form.Body === "Refused once").length, 2, "the retry reached the carrier");

  await page.click("#nav-webhooks");
  const failure = page.locator("#webhook-failures tr", { hasText: "bad_signature" }).first();
  await failure.waitFor();
  assert.equal(await failure.locator("details").count(), 0, "a supervisor does not see bodies");
  await page.screenshot({ path: join(ARTIFACTS, "11-webhook-failures.png") });
});
