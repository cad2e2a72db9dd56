"""Imported M3U playlists: sans-io parsing and planning, the stored model, fetching and
the manager that applies imports and refreshes.

May import `streams`, `events`, `store`, `upstream` and below; never a handler.
"""
