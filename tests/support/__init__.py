"""What several test modules share (no fixtures: those live in ``tests/conftest.py``).

No test module imports another test module; a helper two of them need lives here:

- ``db``: the test database and account types, the cheap password context, PostgreSQL test schemas
- ``apptest``: driving ``app.py`` through Streamlit's AppTest (start, log in, read the page)
- ``pages``: the dashboard's pages as ``app.py`` registers them (for the login-gate test)
- ``stubs``: stand-ins for models that need a published version (the detector)
- ``migration_rows``: raw rows for the migration tests
- ``nih_samples``: tiny NIH-shaped data folders made from ``assets/samples``
- ``xray_samples``: real sample films and distinct variants of them
- ``model_versions``: temporary models folders for the promotion tests
- ``browser``: the real-browser tests' throwaway server and chromium page
"""
