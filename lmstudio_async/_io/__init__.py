"""The aiohttp transport: discovery, sockets, authentication, keepalive, reconnects, deadlines."""
