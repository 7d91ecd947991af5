"""`seqtool serve`: the HTTP JSON API over the Python API (seqtool.api), micro-batched.

batcher.py queues requests and decodes them in batches on one worker; app.py is the HTTP layer
(routes, body limits, errors); server.py binds and runs it under uvicorn. It sits above the API in
the layers (pyproject.toml)."""
