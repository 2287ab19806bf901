// Open one page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// wait until the page says it is done (<body data-state="done|error">), print what it shows.
//
//   node drive.mjs URL [TIMEOUT_MS] [SCREENSHOT.png]
//
// Prints one JSON object: {state, text: {id: textContent}, console, requests, failure?}.
// Exit status 0 whenever the page settled, done or error; 1 if it never did or Chromium failed.
import { run, settled } from './chromium.mjs'

const [url, timeoutArg = '20000', screenshot] = process.argv.slice(2)
if (!url) {
  console.error('usage: node drive.mjs URL [TIMEOUT_MS] [SCREENSHOT.png]')
  process.exit(2)
}
const timeout = Number(timeoutArg)

const result = { state: null, text: {}, console: [], requests: [] }
await run(timeout, [], result, async (browser) => {
  const page = await browser.newPage()
  page.setDefaultTimeout(timeout)
  page.on('console', (message) => result.console.push(`${message.type()}: ${message.text()}`))
  page.on('pageerror', (error) => result.console.push(`pageerror: ${error.message}`))
  // Every request the page started, CORS preflights included (Playwright's own request events
  // leave preflights out); a request that its preflight stopped is listed too.
  const cdp = await page.context().newCDPSession(page)
  await cdp.send('Network.enable')
  cdp.on('Network.requestWillBeSent', ({ request }) => {
    result.requests.push(`${request.method} ${request.url}`)
  })
  await page.goto(url)
  Object.assign(result, await settled(page))
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true })
})
