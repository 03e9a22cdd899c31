"""The tracker: the aiohttp app recipients' mail clients reach, and people and CRMs read.

One module per concern:

- ``web``        — ``create_web_app(app)``: routes, ops endpoints, life cycle
- ``recipient``  — ``/o/<token>.gif`` and ``/c/<token>`` (the hot path)
- ``client``     — client address behind trusted proxies, IP truncation, User-Agent
                   parsing, offline GeoIP
- ``lookups``    — LRU caches in front of the store for token targets
- ``api``        — the JSON API under ``/api/v1`` (bearer tokens, scopes)
- ``openapi``    — the OpenAPI document of that API
- ``serialize``  — the JSON objects shared by the API, webhooks and the CLI
- ``webhooks``   — outbox feeder and signed delivery with retries
- ``signing``    — the ``X-Trackrelay-Signature`` format
- ``cli``        — ``trackrelay stats`` and ``trackrelay events``
"""
