"""langchain-openai: ``ChatOpenAI(...).with_structured_output(City)``, by its default method (``json_schema``,
a ``response_format``) or ``method="function_calling"`` (a tool the library forces by name). Prints
``{"city": {...}}``.

    COUNCIL_BASE_URL=http://127.0.0.1:8000/v1 python py_langchain_structured.py [json_schema|function_calling]
"""

import json
import os
import sys

from langchain_openai import ChatOpenAI
from pydantic import BaseModel


class City(BaseModel):
    name: str
    country: str


method = sys.argv[1] if len(sys.argv) > 1 else "json_schema"
llm = ChatOpenAI(model="council", base_url=os.environ["COUNCIL_BASE_URL"], api_key="sk-council-test",
                 max_tokens=64, temperature=0)
structured = llm.with_structured_output(City) if method == "json_schema" else \
    llm.with_structured_output(City, method=method)
city = structured.invoke("Name one city in France and its country.")
if not isinstance(city, City):
    raise SystemExit(f"not a City: {city!r}")
print(json.dumps({"city": city.model_dump()}))
