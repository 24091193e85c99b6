"""The asyncio client: :class:`AsyncClient`, namespaces, model handles, prediction streams."""
