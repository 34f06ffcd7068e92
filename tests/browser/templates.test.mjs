// Templates in the console, in headless Chromium against a spawned `omni serve`: a supervisor
// approves or rejects another's pending version on the Templates page (never their own), and
// a dispatcher answers with a canned reply from an approved template, filled in and previewed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN, ARTIFACTS, BIN, MASTER_KEY, launchChromium, signedInPage, startOmni, startTwilio } from "./harness.mjs";

const NUMBER = "+15555550100";
const CONTACT = "+15555550123";
const PASSWORD = "correct horse battery staple";

let omni, base, db, browser, carrier, key;
const sent = [];

async function call(token, method, path, body) {
  const res = await fetch(base + path, { method, headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body && JSON.stringify(body) });
  const data = await res.json().catch(() => null);
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/** Invites a user of `role`, accepts the invite and signs in: their session token. */
async function member(email, name, role) {
  const invited = await call(key, "POST", "/v1/users", { email, name, role });
  await call("", "POST", "/v1/auth/invite", { token: invited.invite_token, password: PASSWORD });
  return (await call("", "POST", "/v1/auth/login", { tenant: "north", email, password: PASSWORD })).token;
}

function definition(body) {
  return {
    channels: ["sms"],
    variables: { unit: { type: "text", max_length: 10 }, eta: { type: "number" } },
    languages: { en: { body } },
    default_language: "en",
  };
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  carrier = await startTwilio(sent);
  db = join(mkdtempSync(join(tmpdir(), "omni-templates-")), "omni.db");
  const started = await startOmni(BIN, {
    OMNI_ADDR: "127.0.0.1:0", OMNI_DB: db, OMNI_ADMIN_TOKEN: ADMIN, OMNI_MASTER_KEY: MASTER_KEY,
    OMNI_TWILIO_API_URL: `http://127.0.0.1:${carrier.address().port}`,
  });
  omni = started.child;
  base = started.url;
  await call(ADMIN, "PUT", "/v1/admin/tenants/north", { name: "PSAP north", default_region: "US" });
  await call(ADMIN, "PUT", "/v1/admin/tenants/north/providers/twilio", { account_sid: "AC0123456789abcdef0123456789abcdef", auth_token: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" });
  await call(ADMIN, "PUT", `/v1/admin/tenants/north/numbers/${NUMBER}`, { provider: "twilio", channels: ["sms", "mms"] });
  key = (await call(ADMIN, "POST", "/v1/admin/tenants/north/api-keys")).key;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  omni?.kill("SIGKILL");
  carrier?.close();
});

test("supervisors approve and reject each other's templates; a dispatcher sends a canned reply, filled in and previewed", async () => {
  const ana = await member("ana@north.example", "Ana", "supervisor");
  const ben = await member("ben@north.example", "Ben", "supervisor");
  const dan = await member("dan@north.example", "Dan", "dispatcher");
  await call(ana, "PUT", "/v1/templates/unit-dispatched", definition("Unit {{unit}} arrives in {{eta}} min"));
  await call(ana, "POST", "/v1/templates/unit-dispatched/submit");

  // The author sees it waiting for someone else; the other supervisor approves it.
  const anaPage = await signedInPage(browser, base, ana);
  await anaPage.click("#nav-templates");
  const anaRow = anaPage.locator("#templates tr[data-name=unit-dispatched]");
  await anaRow.getByText("awaiting another supervisor").waitFor();
  assert.equal(await anaRow.getByRole("button", { name: "Approve" }).count(), 0);
  const benPage = await signedInPage(browser, base, ben);
  await benPage.click("#nav-templates");
  const benRow = benPage.locator("#templates tr[data-name=unit-dispatched]");
  await benRow.locator(".status", { hasText: "v1 pending" }).waitFor();
  await benRow.getByRole("button", { name: "Approve" }).click();
  await benRow.locator(".status", { hasText: "v1 approved" }).waitFor();
  assert.equal(await benRow.locator("td").nth(1).textContent(), "v1");
  await benPage.screenshot({ path: join(ARTIFACTS, "templates-01-approved.png") });

  // A dispatcher has no Templates page but answers with the approved template.
  const spawned = spawn(BIN, ["webhook", "send", "twilio", "--tenant", "north", "--from", CONTACT, "--to", NUMBER, "--body", "Where is the ambulance?", "--url", base, "--db", db], { env: { ...process.env, OMNI_MASTER_KEY: MASTER_KEY } });
  await new Promise((resolve) => spawned.on("exit", resolve));
  const danPage = await signedInPage(browser, base, dan);
  assert.equal(await danPage.locator("#nav-templates").isVisible(), false);
  await danPage.locator("#conversations li").first().click();
  await danPage.selectOption("#canned-pick", "unit-dispatched");
  assert.equal(await danPage.locator("#canned-send").isDisabled(), true, "not before every variable is filled");
  await danPage.fill("#canned-vars input[data-var=unit]", "M12");
  await danPage.fill("#canned-vars input[data-var=eta]", "7");
  assert.equal(await danPage.locator("#canned-preview").textContent(), "Unit M12 arrives in 7 min");
  await danPage.screenshot({ path: join(ARTIFACTS, "templates-02-canned-preview.png") });
  await danPage.click("#canned-send");
  await danPage.locator(".msg.outbound .body", { hasText: "Unit M12 arrives in 7 min" }).waitFor();
  const deadline = Date.now() + 10000;
  while (!sent.some((s) => s.form.Body === "Unit M12 arrives in 7 min") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const delivered = sent.find((s) => s.form.Body === "Unit M12 arrives in 7 min")?.form;
  assert.ok(delivered, "the carrier got the rendered template");
  assert.equal(delivered.To, CONTACT);

  // A second version is rejected with its reason; the first stays in use.
  await call(ana, "PUT", "/v1/templates/unit-dispatched", definition("Unit {{unit}}: {{eta}}"));
  await call(ana, "POST", "/v1/templates/unit-dispatched/submit");
  await benPage.click("#nav-templates");
  await benRow.locator(".status", { hasText: "v2 pending" }).waitFor();
  await benRow.getByRole("textbox", { name: "Reason to reject unit-dispatched" }).fill("Too terse");
  await benRow.getByRole("button", { name: "Reject" }).click();
  await benRow.locator(".status", { hasText: "v2 rejected (Too terse)" }).waitFor();
  assert.equal(await benRow.locator("td").nth(1).textContent(), "v1");
  await benPage.screenshot({ path: join(ARTIFACTS, "templates-03-rejected.png") });
});
