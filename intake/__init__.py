"""The 114 intake reference server: the API of docs/intake-api.md, persisted in SQLite, with fault modes."""
