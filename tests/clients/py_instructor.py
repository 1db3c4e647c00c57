"""instructor on its default mode (``Mode.TOOLS``: the schema as a forced function tool):
``instructor.from_openai(OpenAI(...)).chat.completions.create(response_model=City, ...)``. Prints ``{"city"}``.
"""

import json
import os

import instructor
from openai import OpenAI
from pydantic import BaseModel


class City(BaseModel):
    name: str
    country: str


client = instructor.from_openai(OpenAI(base_url=os.environ["COUNCIL_BASE_URL"], api_key="sk-council-test"))
city = client.chat.completions.create(model="council", response_model=City, max_tokens=64, max_retries=0,
                                      messages=[{"role": "user", "content": "Name one city in France."}])
print(json.dumps({"city": city.model_dump(), "mode": str(client.mode)}))
