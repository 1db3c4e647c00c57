"""llama-index-llms-openai-like with its defaults: ``OpenAILike(model="council", api_base=..., api_key=...)``
is not a chat model (``is_chat_model=False``), so ``.complete()`` posts to ``/v1/completions``. Prints
``{"text", "is_chat_model"}``.
"""

import json
import os

from llama_index.llms.openai_like import OpenAILike

llm = OpenAILike(model="council", api_base=os.environ["COUNCIL_BASE_URL"], api_key="sk-council-test", max_tokens=32)
response = llm.complete("The capital of France is")
print(json.dumps({"text": response.text, "is_chat_model": llm.is_chat_model}))
