"""Teacher annotation: prompts, agreement rules, request cache, rate limits, backends, batch API."""
