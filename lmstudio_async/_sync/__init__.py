"""The sync facade: the leased loop thread, the one-hop call, :class:`Client`, sync streams."""
