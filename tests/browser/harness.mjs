// What the browser tests share: the spawned server, the browser, a signed-in console.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
/** The `omni` binary under test. */
export const BIN = process.env.OMNI_BIN || join(here, "../../target/debug/omni");
/** Where the screenshots go. */
export const ARTIFACTS = join(here, "artifacts");
/** The spawned server's admin token and master key. */
export const ADMIN = "browser-test-admin-token-0123456789abcdef";
export const MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/** A Twilio Messages.json fake that records what it was sent in `sent`. */
export function startTwilio(sent) {
  return new Promise((resolve) => {
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const form = Object.fromEntries(new URLSearchParams(body));
        const sid = `SM${String(sent.length + 1).padStart(32, "0")}`;
        sent.push({ path: req.url, auth: req.headers.authorization, form, sid });
        // The delivery log's test: this text is refused the first time, for good.
        if (form.Body === "Refused once" && sent.filter((s) => s.form.Body === "Refused once").length === 1) {
          res.writeHead(400, { "content-type": "application/json" });
          res.end(JSON.stringify({ code: 21610, message: "Attempt to send to unsubscribed recipient", status: 400 }));
          return;
        }
        res.writeHead(201, { "content-type": "application/json" });
        res.end(JSON.stringify({ sid, status: "queued" }));
      });
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/** Starts `omni serve` from `bin` with `env`; its child process and base URL. */
export function startOmni(bin, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ["serve"], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const timer = setTimeout(() => reject(new Error(`omni did not start:\n${out}`)), 30000);
    const onData = (d) => {
      out += d;
      const m = /omni listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => reject(new Error(`omni exited ${code}:\n${out}`)));
  });
}

/** Headless Chromium (Debian's, or $CHROMIUM). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** A console page of `base` signed in with an API key, live. */
export async function signedInPage(browser, base, key) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.fill("#api-key", key);
  await page.click("button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector(".conn.live");
  return page;
}
