"""The CLI: thin Typer commands over `humanglue_cli.core` (parse, call the core, render)."""
