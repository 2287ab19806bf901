// Where lambda-url-proxy listens: its default address, or LAMBDA_PROXY_URL if set.
const proxy = process.env.LAMBDA_PROXY_URL ?? 'http://127.0.0.1:8080'

module.exports = {
  async rewrites() {
    return [{ source: '/users/:path*', destination: `${proxy}/users/:path*` }]
  },
}
