"""What the project sync never sends, and so no run's snapshot holds: version control,
environments, caches. Its own module, so that the deploy's lsyncd role reads it without
importing the pipeline package."""

SYNC_EXCLUDE = (".git", ".venv", ".venv-*", "__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints", ".mypy_cache")
