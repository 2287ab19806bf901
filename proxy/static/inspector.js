// The inspector's page (issue #15): no build step, no dependencies. The list comes live from
// /_proxy/events (Server-Sent Events read with fetch, which can send the access token as a
// header; EventSource cannot). Every request of this page is same-origin; the replay is a POST
// with the X-Proxy-Inspector header, which a form on another site cannot send.
'use strict'

const rows = new Map() // id -> the row's data, as the proxy sent it
const routes = new Set()
let selected = null // the id shown in the detail
let shownCurl = ''
const $ = (id) => document.getElementById(id)

// The access token, when the proxy has one: from #token=... in the address (never sent to a
// server), else asked for; kept in this tab's sessionStorage.
function token() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token')
  if (fromHash) {
    sessionStorage.setItem('lambda-url-proxy-token', fromHash)
    history.replaceState(null, '', location.pathname)
  }
  return sessionStorage.getItem('lambda-url-proxy-token')
}

function headers(extra = {}) {
  const value = token()
  return value ? { 'X-Proxy-Token': value, ...extra } : extra
}

async function call(path, options = {}) {
  const response = await fetch(path, { cache: 'no-store', ...options, headers: headers(options.headers) })
  if (response.status === 401) askForToken()
  return response
}

function askForToken() {
  $('token-form').hidden = false
  document.body.dataset.state = 'token'
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault()
  sessionStorage.setItem('lambda-url-proxy-token', $('token').value)
  $('token-form').hidden = true
  connect()
})

function connected(on, text) {
  $('connection').className = on ? 'on' : 'off'
  $('connection').textContent = text
}

async function connect() {
  let response
  try {
    response = await call('/_proxy/events')
  } catch (error) {
    connected(false, 'proxy unreachable')
    setTimeout(connect, 2000)
    return
  }
  if (!response.ok) {
    connected(false, `refused (${response.status})`)
    if (response.status !== 401) setTimeout(connect, 5000)
    return
  }
  connected(true, 'live')
  document.body.dataset.state = 'live'
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buffer += value
      let end
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        receive(buffer.slice(0, end))
        buffer = buffer.slice(end + 2)
      }
      render()
    }
  } catch (error) {
    // the connection broke: reconnect below
  }
  connected(false, 'reconnecting')
  setTimeout(connect, 1000)
}

// One Server-Sent Event: `event: request` with the row as JSON; comments keep the stream alive.
function receive(block) {
  let kind = 'message'
  let data = ''
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) kind = line.slice(7)
    else if (line.startsWith('data: ')) data += line.slice(6)
  }
  if (kind !== 'request' || !data) return
  const row = JSON.parse(data)
  rows.set(row.id, row)
  if (!routes.has(row.route)) {
    routes.add(row.route)
    const option = document.createElement('option')
    option.value = option.textContent = row.route
    $('filter-route').append(option)
  }
}

function matches(row) {
  const route = $('filter-route').value
  const status = $('filter-status').value
  const text = $('filter-text').value.trim().toLowerCase()
  if (route && row.route !== route) return false
  if (status && String(Math.floor(row.status / 100)) !== status) return false
  if (text) {
    const haystack = [row.method, row.path, row.route, row.status, row.request_id, row.outcome]
    if (!haystack.join(' ').toLowerCase().includes(text)) return false
  }
  return true
}

function cell(text, className) {
  const td = document.createElement('td')
  td.textContent = text ?? ''
  if (className) td.className = className
  return td
}

function render() {
  const body = $('rows')
  const shown = [...rows.values()].filter(matches).sort((a, b) => b.id - a.id)
  body.replaceChildren(...shown.map((row) => {
    const tr = document.createElement('tr')
    tr.dataset.id = row.id
    tr.dataset.path = row.path
    tr.title = row.request_id ? `x-amzn-RequestId ${row.request_id}` : ''
    if (row.id === selected) tr.className = 'selected'
    tr.append(
      cell(new Date(row.time * 1000).toLocaleTimeString()),
      cell(row.method),
      cell(row.path, 'path'),
      cell(row.route),
      cell(row.status || '-', `s${Math.floor(row.status / 100)}`),
      cell(row.duration_ms, 'num'),
      cell(row.bytes, 'num'),
      cell(row.request_id, 'id'),
      cell(row.outcome),
    )
    tr.addEventListener('click', () => show(row.id))
    return tr
  }))
  $('empty').hidden = rows.size > 0
  document.body.dataset.rows = rows.size
}

for (const id of ['filter-route', 'filter-status', 'filter-text']) {
  $(id).addEventListener('input', render)
}

function pairs(table, list) {
  $(table).replaceChildren(...list.map(([name, value]) => {
    const tr = document.createElement('tr')
    tr.append(cell(name), cell(value))
    return tr
  }))
}

function bodyText(view) {
  if (view.kind === 'none') return '(no body)'
  if (view.kind === 'binary') return `(binary, ${view.size} bytes)`
  const cut = view.truncated ? `\n… (the first ${new Blob([view.text]).size} of ${view.size} bytes)` : ''
  return view.text + cut
}

async function show(id) {
  selected = id
  render()
  const response = await call(`/_proxy/requests/${id}`)
  if (!response.ok) {
    $('action-status').textContent = `cannot show it (${response.status})`
    return
  }
  const data = await response.json()
  if (selected !== id) return
  $('detail').hidden = false
  $('detail-title').textContent = `${data.method} ${data.path} → ${data.status || data.outcome}`
  $('diagnosis-box').hidden = !data.diagnosis
  $('diagnosis').textContent = data.diagnosis ?? ''
  const labels = { credentials_ms: 'wait for credentials', signing_ms: 'signing', connect_ms: 'upstream connect', first_byte_ms: 'first byte', total_ms: 'total' }
  pairs('timings', Object.entries(data.timings).map(([key, value]) => [labels[key], value ?? '-']))
  pairs('request-headers', data.request_headers)
  pairs('response-headers', data.response_headers)
  $('request-body').textContent = bodyText(data.request_body)
  $('response-body').textContent = bodyText(data.response_body)
  const signature = data.signature
  $('canonical-request').textContent = signature ? signature.canonical_request : `(${data.not_signed})`
  $('string-to-sign').textContent = signature ? signature.string_to_sign : ''
  $('curl').textContent = shownCurl = data.curl
  $('replay').disabled = !data.replayable
  $('action-status').textContent = ''
  document.body.dataset.shown = id
}

$('replay').addEventListener('click', async () => {
  $('action-status').textContent = 'replaying…'
  const response = await call(`/_proxy/requests/${selected}/replay`, {
    method: 'POST',
    headers: { 'X-Proxy-Inspector': 'replay' },
  })
  const data = await response.json()
  $('action-status').textContent = response.ok
    ? `replayed: ${data.status}`
    : `not replayed: ${data.message}`
  document.body.dataset.replayed = response.ok ? data.status : 'error'
})

$('copy-curl').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(shownCurl)
    $('action-status').textContent = 'curl command copied'
    document.body.dataset.copied = 'yes'
  } catch (error) {
    $('action-status').textContent = 'copy it from the curl box below'
    document.body.dataset.copied = 'no'
  }
})

token()
render()
connect()
