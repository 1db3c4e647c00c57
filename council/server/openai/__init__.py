"""The OpenAI endpoints beyond the chat handler: chat's messages and tools checked (chat_messages.py, chat_tools.py),
``/v1/responses`` (responses*.py), ``/v1/completions`` (completions.py), ``/v1/embeddings`` (embeddings.py)."""
