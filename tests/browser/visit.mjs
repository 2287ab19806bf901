// Open several URLs, one after another, in one headless Chromium (one launch for them all), and
// print what each showed.
//
//   node visit.mjs TIMEOUT_MS HOST_RESOLVER_RULES URL...
//
// HOST_RESOLVER_RULES is Chromium's --host-resolver-rules, or '' for none: with
// 'MAP evil.test 127.0.0.1', a page of another site is served from this machine. Each URL is
// opened in the same tab, as if typed in the address bar. A page of the tests (<body data-state>)
// is waited for until it says done or error; any other (an answer of the proxy) until it loaded.
// Prints one JSON object: {visits: [{url, status, state, text: {id: textContent}, body}],
// failure?}. Exit status 0 when every URL was visited; 1 if one was not, or Chromium failed.
import { run, settled } from './chromium.mjs'

const [timeoutArg, rules, ...urls] = process.argv.slice(2)
if (!urls.length) {
  console.error('usage: node visit.mjs TIMEOUT_MS HOST_RESOLVER_RULES URL...')
  process.exit(2)
}
const timeout = Number(timeoutArg)

const result = { visits: [] }
await run(timeout, rules ? [`--host-resolver-rules=${rules}`] : [], result, async (browser) => {
  const page = await browser.newPage()
  page.setDefaultTimeout(timeout)
  for (const url of urls) {
    const response = await page.goto(url)
    const visit = { url, status: response?.status() ?? null, state: null, text: {}, body: '' }
    if (await page.$('body[data-state]')) Object.assign(visit, await settled(page))
    visit.body = (await page.textContent('body')) ?? ''
    result.visits.push(visit)
  }
})
