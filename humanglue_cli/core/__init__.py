"""Shared domain code for the CLI and the worker.

Import-light by rule: nothing here imports typer, rich, celery, redis or `worker`
(tests/test_architecture.py checks it).
"""
