// Where lambda-url-proxy listens: its default address, or LAMBDA_PROXY_URL if set.
const proxy = process.env.LAMBDA_PROXY_URL ?? 'http://127.0.0.1:8080'

module.exports = {
  mode: 'development',
  devServer: {
    // webpack-dev-server 5 takes a list; the object form of version 4 is refused.
    proxy: [{ context: ['/users'], target: proxy }],
  },
}
