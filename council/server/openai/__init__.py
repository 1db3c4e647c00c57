"""OpenAI endpoints and request parts beyond chat completions' handler, one small module each."""
