"""X-ray use cases: upload and diagnosis, rendering, the history and the worklist."""
