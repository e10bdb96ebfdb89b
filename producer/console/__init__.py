"""The web console: server-rendered pages over the same client as the API, signed in with an API token."""
