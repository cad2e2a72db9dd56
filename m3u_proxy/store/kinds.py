"""What the store holds: one name per kind of document, for every store backend."""

STREAMS = "stream"  # stream definitions (streams.registry), key: stream id
WEBHOOKS = "webhook"  # webhook receivers (events.webhooks), key: md5(url)
PLAYLISTS = "playlist"  # imported playlists and their channel pages (playlists.manager)
SETTINGS = "settings"  # the generated URL-signing secret (app)
