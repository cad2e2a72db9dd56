"""Events: the in-process bus, webhook receivers and their delivery queues.

May import `store`, `upstream` and the foundation modules only.
"""
