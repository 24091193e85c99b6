"""A plain script with the sync ``lmstudio_async.Client`` (no asyncio in sight).

Same API as ``AsyncClient``, without ``await``; safe from any thread and inside Jupyter.

    lmstudio-async serve --port 41343 &
    python examples/sync_script.py --host 127.0.0.1:41343
"""

from __future__ import annotations

import argparse
import os

import lmstudio_async as lms


def main(host: str | None) -> None:
    with lms.Client(host) as client:
        downloaded = client.llm.list_downloaded()
        print(f"downloaded LLMs: {', '.join(m.model_key for m in downloaded)}")

        # A new instance of its own (with a progress callback). client.llm.model() would get
        # one that is already loaded, perhaps someone else's, which this script must not
        # unload at the end. The server names it: the key, or "key:2" if that is taken.
        llm = client.llm.load("llama-3.2-1b-instruct", on_progress=lambda p: None)
        print(f"load(): {llm.identifier} (context length {llm.get_context_length()})")
        print(f"loaded: {llm in client.llm.list_loaded()}")

        # A scoped instance with a load config: unloaded when the block exits.
        config = lms.LlmLoadConfig(context_length=2048, gpu_offload="max")
        with client.llm.loaded("smollm2-135m-instruct", config=config) as small:
            loaded_with = small.get_load_config()
            print(f"loaded(): {small.identifier} context_length={loaded_with.context_length}")
        print(f"after the block: {small.identifier} loaded: {small in client.llm.list_loaded()}")

        try:
            client.llm.load("llama-3.2-1b-instruct", llm.identifier)
        except lms.ServerError as exc:
            print(f"duplicate identifier -> {type(exc).__name__}: {exc}")

        llm.unload()
        print(f"unloaded: {llm.identifier} loaded: {llm in client.llm.list_loaded()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("LMSTUDIO_API_HOST"))
    main(parser.parse_args().host)
