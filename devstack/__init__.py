"""Local stand-ins for the real services (Redis, dockerd, registries, base images), for the demo and the tests."""
