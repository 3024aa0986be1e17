// Open a page in headless Chromium (Debian's, no browser download) and print window.result.
// Usage: node drive.mjs URL  →  one JSON line: {"result": ..., "console": [...]}
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const url = process.argv[2]
const userDataDir = mkdtempSync(join(tmpdir(), 'opencdp-chromium-'))
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
})
const messages = []
try {
  const page = await context.newPage()
  page.on('console', (message) => messages.push(`${message.type()}: ${message.text()}`))
  page.on('pageerror', (error) => messages.push(`pageerror: ${error.message}`))
  page.on('requestfailed', (request) => messages.push(`failed: ${request.method()} ${request.url()}`))
  await page.goto(url)
  const result = await page.evaluate(() => window.result)
  console.log(JSON.stringify({ result, console: messages }))
} catch (error) {
  console.log(JSON.stringify({ error: String(error), console: messages }))
  process.exitCode = 1
} finally {
  await context.close()
  rmSync(userDataDir, { recursive: true, force: true })
}
