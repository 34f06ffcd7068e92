// What the browser tests share: the spawned server, the browser, a signed-in console.
import { spawn } from "node:child_process";
import { chromium } from "playwright-core";

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
