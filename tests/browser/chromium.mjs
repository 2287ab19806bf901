// Headless Chromium as the browser tests launch it: Debian's (/usr/bin/chromium, or $CHROMIUM),
// driven by playwright-core, with only 127.0.0.1 traffic: no background services, no QUIC, no
// component updates. Playwright gives every launch a new, empty profile (--user-data-dir).
import { chromium } from 'playwright-core'

export function launch(timeout, args = []) {
  return chromium.launch({
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
}
