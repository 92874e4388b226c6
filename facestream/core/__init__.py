"""The recognition core: decode images, find and encode faces, decide who they are.

No Kafka and no Redis here: the services, the HTTP API and the command line all build on it.
"""
