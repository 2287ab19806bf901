// Same-origin requests to the Vite dev server; its server.proxy sends /users to lambda-url-proxy.
const show = (id, text) => {
  document.getElementById(id).textContent = text
}

async function main() {
  const got = await fetch('/users/42?from=vite')
  if (!got.ok) throw new Error(`GET answered ${got.status}: ${await got.text()}`)
  const echo = await got.json()
  show('get-path', echo.path)
  show('get-access-key', echo.access_key)
  show('request-id', got.headers.get('x-amzn-RequestId') ?? '(unreadable)')

  const posted = await fetch('/users', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Ada' }),
  })
  if (!posted.ok) throw new Error(`POST answered ${posted.status}: ${await posted.text()}`)
  show('post-body', (await posted.json()).body)
}

main().then(
  () => (document.body.dataset.state = 'done'),
  (error) => {
    show('error', String(error))
    document.body.dataset.state = 'error'
  },
)
