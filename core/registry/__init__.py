"""The registry adapter both sides use: the distribution HTTP API (manifests, blobs, indexes, referrers), the
credentials for it, and the OCI documents it reads and writes."""
