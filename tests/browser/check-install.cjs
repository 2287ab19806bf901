// Exit 0 if node_modules holds exactly what package-lock.json pins (so `npm ci` can be skipped),
// 1 otherwise, saying why. Used by .ci/browser-deps.sh and tests/test_browser.py.
const fs = require('node:fs')
const path = require('node:path')

const read = (file) => JSON.parse(fs.readFileSync(path.join(__dirname, file), 'utf8')).packages
let wanted
let installed
try {
  wanted = read('package-lock.json')
  installed = read('node_modules/.package-lock.json') // npm's record of what it installed
} catch (error) {
  console.log(`not installed: ${error.message}`)
  process.exit(1)
}
const problems = []
for (const [name, entry] of Object.entries(wanted)) {
  // Optional packages for other platforms (esbuild's, rollup's) are rightly absent.
  if (name && !entry.optional && installed[name]?.version !== entry.version) {
    problems.push(`${name}: want ${entry.version}, have ${installed[name]?.version ?? 'none'}`)
  }
}
for (const [name, entry] of Object.entries(installed)) {
  if (wanted[name]?.version !== entry.version) problems.push(`${name}: not in package-lock.json`)
}
if (problems.length) {
  console.log(`node_modules differs from package-lock.json: ${problems.slice(0, 5).join('; ')}`)
  process.exit(1)
}
console.log('node_modules matches package-lock.json')
