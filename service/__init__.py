"""headstart front doors: the command line and the FastAPI service."""
