"""The status page: one HTML page with its stylesheet and script, shipped as package data.

``page.html`` is the skeleton; ``page.css`` and ``page.js`` are inlined into it once by
`m3u_proxy.handlers.ui`, which serves the result at ``/`` and ``/ui``. The script polls
the JSON API with relative URLs (so it works under ``root_path`` and behind a reverse
proxy that strips a prefix) and writes every value from the API as text, never as HTML.
No build step and nothing fetched from elsewhere. Nothing here is imported as code.
"""
