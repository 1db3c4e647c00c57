"""The OpenAI endpoints, one serving module each: chat (chat.py), ``/v1/responses`` (responses*.py),
``/v1/completions`` (completions.py), ``/v1/embeddings`` (embeddings.py). Their requests and replies are the typed
protocol models of ``council/server/protocol/``."""
