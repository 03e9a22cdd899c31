"""The tracking rewrite: byte-faithful edits to the text parts of a message.

- ``engine``   — runs the content hooks on a message (policy, per-part edits, finish);
- ``mime``     — finds text parts on the raw bytes, decodes, re-encodes, splices;
- ``html_scan`` — one regex-driven pass over HTML: tags, attribute spans, ``</body>``;
- ``edits``    — replacements and insertions from many plugins, applied in one pass;
- ``context``  — what content plugins receive (TrackingPolicy, RewriteContext, parts);
- ``cli``      — the ``trackrelay rewrite`` dry run.
"""
