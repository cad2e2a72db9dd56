"""Persistence behind one small interface (`Store`); SQLite is the embedded default.

Imports only the foundation modules (`errors`).
"""
