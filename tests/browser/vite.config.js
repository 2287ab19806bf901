import { defineConfig } from 'vite'

// Where lambda-url-proxy listens: its default address, or LAMBDA_PROXY_URL if set.
const proxy = process.env.LAMBDA_PROXY_URL ?? 'http://127.0.0.1:8080'

export default defineConfig({
  server: {
    proxy: {
      // Same prefix as the proxy's route: /users/42 -> lambda-url-proxy /users/42 -> function /42
      '/users': proxy,
    },
  },
})
