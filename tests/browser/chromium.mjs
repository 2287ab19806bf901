// Headless Chromium as the browser tests drive it (drive.mjs, visit.mjs): Debian's
// (/usr/bin/chromium, or $CHROMIUM), driven by playwright-core, with only 127.0.0.1 traffic: no
// background services, no QUIC, no component updates. Playwright gives every launch a new,
// empty profile (--user-data-dir).
import { chromium } from 'playwright-core'

// One launch with `args` added, in which `work(browser)` fills `result`; then `result` (with the
// failure, if any) is printed as one JSON line, and the process exits: 0 if `work` finished.
export async function run(timeout, args, result, work) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    timeout,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...args,
    ],
  })
  let status = 1
  try {
    await work(browser)
    status = 0
  } catch (error) {
    result.failure = String(error)
  } finally {
    await browser.close()
  }
  console.log(JSON.stringify(result))
  process.exit(status)
}

// Wait until a page of the tests says it is done (<body data-state="done|error">); what it says,
// and the textContent of every element with an id.
export async function settled(page) {
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]')
  return {
    state: await page.getAttribute('body', 'data-state'),
    text: await page.$$eval('[id]', (elements) =>
      Object.fromEntries(elements.map((element) => [element.id, element.textContent])),
    ),
  }
}
