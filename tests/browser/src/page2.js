// A page on another origin than the proxy calls it directly: lambda-url-proxy needs
// --cors-origin <this page's origin>. A custom header and a JSON body make the browser send a
// preflight (OPTIONS) first, which the proxy answers itself.
const PROXY = new URLSearchParams(location.search).get('proxy') ?? 'http://127.0.0.1:8080'

const show = (id, text) => {
  document.getElementById(id).textContent = text
}

async function main() {
  const response = await fetch(`${PROXY}/users/42`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json', 'X-Client': 'page2' },
    body: JSON.stringify({ from: 'page2' }),
    credentials: 'include',
  })
  if (!response.ok) throw new Error(`PUT answered ${response.status}: ${await response.text()}`)
  const echo = await response.json()
  const header = (name) => echo.headers.find(([key]) => key.toLowerCase() === name)?.[1] ?? '-'
  show('method', echo.method)
  show('path', echo.path)
  show('x-client', header('x-client'))
  show('body', echo.body)
  // Readable only because the proxy lists it in Access-Control-Expose-Headers.
  show('request-id', response.headers.get('x-amzn-RequestId') ?? '(not exposed)')
}

main().then(
  () => (document.body.dataset.state = 'done'),
  (error) => {
    show('error', String(error))
    document.body.dataset.state = 'error'
  },
)
