// Open opencdp's /docs in headless Chromium (Debian's) with every request leaving the
// server's origin blocked and recorded; wait for Swagger UI to list the operations.
// Usage: node docs.mjs URL SCREENSHOT.png  →  one JSON line:
//   {"operations": [...], "outside": [...], "requests": N, "console": [...]}
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const [url, screenshot] = process.argv.slice(2)
const origin = new URL(url).origin
const userDataDir = mkdtempSync(join(tmpdir(), 'opencdp-chromium-'))
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 1600 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
})
const outside = []
const messages = []
let requests = 0
await context.route('**/*', (route) => {
  const target = route.request().url()
  requests += 1
  if (new URL(target).origin === origin) return route.continue()
  outside.push(target)
  return route.abort('blockedbyclient')
})
try {
  const page = await context.newPage()
  page.on('console', (message) => messages.push(`${message.type()}: ${message.text()}`))
  page.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`))
  await page.goto(url, { waitUntil: 'load' })
  await page.waitForSelector('.opblock .opblock-summary-path', { timeout: 30000 })
  await page.waitForLoadState('networkidle')
  const operations = await page.$$eval('.opblock', (blocks) => blocks.map((block) => ({
    method: block.querySelector('.opblock-summary-method')?.textContent?.trim(),
    path: block.querySelector('.opblock-summary-path')?.getAttribute('data-path'),
  })))
  const fallback = await page.$eval('#fallback a', (link) => link.getAttribute('href'))
  await page.screenshot({ path: screenshot, fullPage: false })
  console.log(JSON.stringify({ operations, fallback, outside, requests, console: messages }))
} catch (error) {
  console.log(JSON.stringify({ error: String(error), outside, console: messages }))
  process.exitCode = 1
} finally {
  await context.close()
  rmSync(userDataDir, { recursive: true, force: true })
}
