// Drive the proxy's inspector page (issue #15) in headless Chromium, as a developer would: open
// it, send requests with curl while it is open, watch them appear, filter, open one, replay it,
// copy it as curl.
//
//   node inspect.mjs PAGE_URL TIMEOUT_MS SCREENSHOT.png CURLS_JSON OPEN_PATH
//
// CURLS_JSON: a JSON list of curl argument lists, run once the page is live. OPEN_PATH: the path
// (and query) of the row to open. Prints one JSON object: what the page showed at each step.
import { execFileSync } from 'node:child_process'
import { run } from './chromium.mjs'

const [url, timeoutArg, screenshot, curlsArg, openPath] = process.argv.slice(2)
if (!openPath) {
  console.error('usage: node inspect.mjs PAGE_URL TIMEOUT_MS SCREENSHOT.png CURLS_JSON OPEN_PATH')
  process.exit(2)
}
const timeout = Number(timeoutArg)
const curls = JSON.parse(curlsArg)

const visibleRows = (page) =>
  page.$$eval('#rows tr', (rows) =>
    rows.map((row) => ({
      id: Number(row.dataset.id),
      cells: [...row.children].map((cell) => cell.textContent),
    })),
  )

const result = { console: [], curl: [] }
await run(timeout, [], result, async (browser) => {
  const context = await browser.newContext({ viewport: { width: 1440, height: 860 } })
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], {
    origin: new URL(url).origin,
  })
  const page = await context.newPage()
  page.setDefaultTimeout(timeout)
  page.on('console', (message) => result.console.push(`${message.type()}: ${message.text()}`))
  page.on('pageerror', (error) => result.console.push(`pageerror: ${error.message}`))
  // Without the token in the address, a proxy that needs one: the page asks for it.
  const bare = new URL(url)
  bare.hash = ''
  await page.goto(bare.href)
  await page.waitForSelector('body[data-state="token"], body[data-state="live"]')
  result.withoutToken = await page.getAttribute('body', 'data-state')
  result.tokenFormShown = await page.isVisible('#token-form')
  await page.goto('about:blank')
  let loads = 0
  page.on('load', () => loads++)
  await page.goto(url)
  await page.waitForSelector('body[data-state="live"]')
  result.before = await visibleRows(page)

  // Requests sent while the page is open appear without a reload.
  for (const args of curls) {
    result.curl.push(execFileSync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...args]).toString())
  }
  const expected = result.before.length + curls.length
  await page.waitForFunction((n) => Number(document.body.dataset.rows) >= n, expected)
  result.rows = await visibleRows(page)
  result.connection = await page.textContent('#connection')

  // Filters: status class, then text, then none.
  await page.selectOption('#filter-status', '4')
  result.filtered4xx = (await visibleRows(page)).map((row) => row.cells[2])
  await page.selectOption('#filter-status', '')
  await page.fill('#filter-text', openPath)
  result.filteredText = (await visibleRows(page)).map((row) => row.cells[2])
  await page.fill('#filter-text', '')

  // Open one.
  await page.click(`#rows tr[data-path="${openPath}"]`)
  await page.waitForSelector('body[data-shown]')
  const text = async (id) => page.textContent(`#${id}`)
  result.detail = {}
  for (const id of ['detail-title', 'request-body', 'response-body', 'canonical-request', 'string-to-sign', 'curl', 'diagnosis']) {
    result.detail[id] = await text(id)
  }
  for (const id of ['timings', 'request-headers', 'response-headers']) {
    result.detail[id] = await page.$$eval(`#${id} tr`, (rows) =>
      rows.map((row) => [...row.children].map((cell) => cell.textContent)),
    )
  }
  await page.screenshot({ path: screenshot })

  // Replay: a new row arrives.
  await page.click('#replay')
  await page.waitForSelector('body[data-replayed]')
  result.replayed = await page.getAttribute('body', 'data-replayed')
  await page.waitForFunction((n) => Number(document.body.dataset.rows) >= n, expected + 1)
  result.afterReplay = await visibleRows(page)

  // Copy as curl: what the clipboard holds.
  await page.click('#copy-curl')
  await page.waitForSelector('body[data-copied]')
  result.copied = await page.getAttribute('body', 'data-copied')
  result.clipboard = await page.evaluate(() => navigator.clipboard.readText())
  result.loads = loads
})
