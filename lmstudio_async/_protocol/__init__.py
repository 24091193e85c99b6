"""Sans-I/O core of the LM Studio protocol: wire messages, demultiplexing,
error mapping, model infos and KV-config conversion. No sockets, no awaits."""
