"""``llm`` (the CLI): Council as an extra OpenAI-compatible model (``extra-openai-models.yaml`` in a fresh
``LLM_USER_PATH``), then ``llm -m council --schema 'name, country' '...'`` (a streamed ``json_schema`` request).
Prints ``{"city", "raw"}``.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as home:
    (Path(home) / "extra-openai-models.yaml").write_text(
        f"- model_id: council\n  model_name: council\n  api_base: \"{os.environ['COUNCIL_BASE_URL']}\"\n"
        "  supports_schema: true\n")
    env = dict(os.environ, LLM_USER_PATH=home, OPENAI_API_KEY="sk-council-test")
    llm = Path(sys.executable).parent / "llm"
    done = subprocess.run([str(llm), "-m", "council", "--schema", "name, country", "-o", "max_tokens", "64",
                           "Name one city in France."], capture_output=True, text=True, env=env, timeout=200)
if done.returncode != 0:
    raise SystemExit(f"llm exit {done.returncode}: {done.stderr.strip()}")
print(json.dumps({"city": json.loads(done.stdout), "raw": done.stdout}))
