// The status page in a real browser: Debian's chromium, headless, driven by playwright-core.
// Run by tests/page.rs (`status_page_in_a_real_browser`) against a daemon it started, with
//   node status_page.cjs PLAYWRIGHT_CORE_DIR URL_WITH_TOKEN_FRAGMENT SERVER_ID CHECK SCREENSHOT
// It loads the page and waits until SERVER_ID shows as active. The declared check CHECK (a tcp
// check to a closed port) must show down; its "run now" button is pressed from the keyboard
// and the page must show its run count grow. Then it prints {"phase":"raise-alert"} (the Rust
// test lowers the memory threshold below the host's use) and waits for the memory alert to
// appear in the live log and, at the same moment, in the alerts table (the event updates the
// table, not the panel's poll), and clicks its ack button. It
// clicks SERVER_ID's stop button, waits for the page to show it stopped and for the
// status-change event to appear live in the event log. Then it prints
// {"phase":"restart-daemon"} and waits for the page to notice the daemon gone and to
// reconnect by itself (the Rust test checks the ack, the check's runs and the stop over REST,
// kills the daemon and starts it again on the same port and state dir), and saves a
// screenshot once the alert shows again. It prints one JSON line with what it saw (console
// errors included) and exits 1 on any failure.
'use strict';

const [dir, url, server, check, screenshot] = process.argv.slice(2);
if (!dir || !url || !server || !check || !screenshot) {
  console.error('usage: node status_page.cjs PLAYWRIGHT_CORE_DIR URL SERVER_ID CHECK SCREENSHOT');
  process.exit(2);
}
const { chromium } = require(require('path').join(dir, 'node_modules', 'playwright-core'));

const TIMEOUT = 30000;
const MEMORY_RULE = 'performance:memory_usage_percent';

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

    // The declared check: shown down, "run now" from the keyboard, its run count grows.
    const checkRow = page.locator(`tr[data-check="${check}"]`);
    await checkRow.locator('.state', { hasText: /^down$/ }).waitFor({ timeout: TIMEOUT });
    seen.steps.push('check shown down');
    seen.check_runs_before = Number(await checkRow.locator('td.runs').textContent());
    await checkRow.locator('button[data-action="run"]').focus({ timeout: TIMEOUT });
    await page.keyboard.press('Enter');
    await page.waitForFunction(([name, before]) => {
      const td = document.querySelector(`tr[data-check="${name}"] td.runs`);
      return td && Number(td.textContent) > before;
    }, [check, seen.check_runs_before], { timeout: TIMEOUT });
    seen.check_runs_after = Number(await checkRow.locator('td.runs').textContent());
    seen.steps.push('check run from the keyboard');

    // A real alert: it appears in the table and in the event log, and is acked by a click.
    console.log(JSON.stringify({ phase: 'raise-alert' }));
    const alertRow = page.locator(`#alerts tr[data-rule="${MEMORY_RULE}"]`);
    const alertEvent = page.locator('#events li', { hasText: 'raised' }).filter({ hasText: MEMORY_RULE });
    await alertEvent.first().waitFor({ timeout: TIMEOUT });
    seen.alert_event_text = await alertEvent.first().textContent();
    seen.steps.push('alert event shown live');
    // The page handles the event in one go (log line, then the table from the event's record),
    // so the row is there as soon as the line is, without waiting for the panel's 15 s poll.
    if (await alertRow.count() === 0) throw new Error('the alert event is in the log but not in the alerts table');
    seen.steps.push('alert shown with its event');
    seen.alert_text = await alertRow.textContent();
    await alertRow.locator('button[data-action="ack"]').click({ timeout: TIMEOUT });
    await alertRow.locator('.ack-state', { hasText: /^yes$/ }).waitFor({ timeout: TIMEOUT });
    seen.steps.push('alert acked');

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
    // The restarted daemon raises the alert again (the lowered threshold is an override kept
    // in its state dir): the screenshot shows it. Let the sparklines gather a few points.
    await alertRow.waitFor({ timeout: TIMEOUT });
    seen.steps.push('alert shown after the restart');
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
