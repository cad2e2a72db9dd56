"""Several instances on one shared store: who is out there and what they are serving.

Sits beside playback/hls/playlists: imports streams (the tracker it reports on) and the
store's `Cluster` interface, never handlers or keys. All Redis access stays in
`store.redis`; this package only speaks the `Cluster` protocol.
"""
