"""The submitting side: the Python client and the `imagebuilder` CLI. Importing it never imports `docker`."""
