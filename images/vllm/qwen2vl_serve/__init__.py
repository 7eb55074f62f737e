"""The serving image's Python package: the Ray Serve application around vLLM's OpenAI server, and
the smoke-test client. It must run on the pinned vLLM (GPU) and on the CPU build used in the tests,
so it drives vLLM only through its command line, which both share."""
