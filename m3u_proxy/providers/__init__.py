"""Providers: the accounts streams are played from, and their connection limits.

The model (`model`: validated definitions, longest-prefix URL matching, the persistent
directory), the slot ledger (`ledger`: who holds which of an account's connections,
behind a small interface so that a networked ledger can count across instances) and
the full-provider policy (`policy`: zap, the next URL of the chain, wait, reject or
preempt). May import `streams`, `events`, `store` and the foundation modules; nothing
above (playback and hls call in; handlers render).
"""
