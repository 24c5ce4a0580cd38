"""Example web apps that use backend.recognizer (included by docs/LOADER_API.md, tested in tests/serving)."""
