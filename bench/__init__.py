"""Benchmark suite for lambda-url-proxy (issue 5): `python -m bench` from the repository root.

See bench/README.md. It starts everything it measures itself, on 127.0.0.1 only, and stops it all.
"""
