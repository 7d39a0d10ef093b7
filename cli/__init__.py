"""cli: the Typer app, one module per command, thin over hashae and index."""
