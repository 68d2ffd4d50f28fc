"""HTTP routes, one resource per file (full-stack-fastapi-template's ``api/routes/``)."""
