// The status page in a real browser: Debian's chromium, headless, driven by playwright-core.
// Run by tests/page.rs (`status_page_in_a_real_browser`) against a daemon it started, with
//   node status_page.cjs PLAYWRIGHT_CORE_DIR URL_WITH_TOKEN_FRAGMENT SERVER_ID SCREENSHOT
// It loads the page, waits until SERVER_ID shows as active, clicks its stop button, waits for
// the page to show it stopped and for the status-change event to appear live in the event
// log. Then it prints {"phase":"restart-daemon"} and waits for the page to notice the daemon
// gone and to reconnect by itself (the Rust test kills the daemon and starts it again on the
// same port and state dir), and saves a screenshot. It prints one JSON line with what it saw
// (console errors included) and exits 1 on any failure; the Rust test checks the daemon's
// side over REST.
'use strict';

const [dir, url, server, screenshot] = process.argv.slice(2);
if (!dir || !url || !server || !screenshot) {
  console.error('usage: node status_page.cjs PLAYWRIGHT_CORE_DIR URL SERVER_ID SCREENSHOT');
  process.exit(2);
}
const { chromium } = require(require('path').join(dir, 'node_modules', 'playwright-core'));

const TIMEOUT = 30000;

(async () => {
  const seen = { console_errors: [], page_errors: [], steps: [] };
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    timeout: TIMEOUT,
  });
  let failed = null;
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  try {
    // While the daemon is down (between the two phases) the browser logs the failed
    // WebSocket connections as console errors: those, and only those, are expected then.
    let daemonDown = false;
    seen.expected_errors = 0;
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (daemonDown && /WebSocket connection to .* failed/.test(m.text())) { seen.expected_errors++; return; }
      seen.console_errors.push(m.text());
    });
    page.on('pageerror', (e) => seen.page_errors.push(String(e)));
    // CSP violations are reported on the console as errors, so they fail the test too.
    await page.goto(url, { waitUntil: 'load', timeout: TIMEOUT });
    seen.steps.push('loaded');

    const row = page.locator(`tr[data-server="${server}"]`);
    await row.locator('.state', { hasText: /^active$/ }).waitFor({ timeout: TIMEOUT });
    seen.steps.push('server shown active');
    seen.hash_after_load = await page.evaluate(() => location.hash);
    seen.token_kept = await page.evaluate(() => !!sessionStorage.getItem('vsm-daemon.token'));

    await row.locator('button[data-action="stop"]').click({ timeout: TIMEOUT });
    seen.steps.push('clicked stop');
    await row.locator('.state', { hasText: /^stopped$/ }).waitFor({ timeout: TIMEOUT });
    seen.steps.push('server shown stopped');
    const event = page.locator('#events li', { hasText: `${server}: stopping → stopped` });
    await event.first().waitFor({ timeout: TIMEOUT });
    seen.steps.push('stop event shown live');
    seen.event_text = await event.first().textContent();
    seen.rss_shown = await page.locator('#rss-now').textContent();

    // The daemon goes away and comes back: the page reconnects by itself.
    daemonDown = true;
    console.log(JSON.stringify({ phase: 'restart-daemon' }));
    await page.locator('#link.pill-bad').waitFor({ timeout: TIMEOUT });
    seen.steps.push('noticed the daemon gone: ' + await page.locator('#link').textContent());
    await page.locator('#link.pill-on', { hasText: 'live' }).waitFor({ timeout: 60000 });
    await row.waitFor({ timeout: TIMEOUT });
    daemonDown = false;
    seen.steps.push('reconnected by itself');
    // Let the sparklines gather a few points for the screenshot.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: screenshot, fullPage: true });
    seen.steps.push('screenshot saved');
  } catch (e) {
    failed = String(e && e.message ? e.message.split('\n')[0] : e);
    try { await page.screenshot({ path: screenshot, fullPage: true }); } catch (_) { /* best effort */ }
  }
  await browser.close();
  seen.failed = failed;
  console.log(JSON.stringify(seen));
  process.exit(failed || seen.console_errors.length || seen.page_errors.length ? 1 : 0);
})().catch((e) => { console.log(JSON.stringify({ failed: String(e) })); process.exit(1); });
