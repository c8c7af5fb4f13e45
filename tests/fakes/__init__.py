"""Local fakes for tests and benchmarks (no network): an OpenAI-compatible HTTP server."""
