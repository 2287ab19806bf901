"""lambda-url-proxy: plain HTTP in on localhost, SigV4-signed requests out to Function URLs."""

__version__ = "0.1.0"
