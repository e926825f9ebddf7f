"""Product parts for demos and tests: the scripted OpenAI-compatible LLM server (also an image's command) and the
Ray callables the samples use as tools."""
