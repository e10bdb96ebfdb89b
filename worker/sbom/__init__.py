"""SBOMs: what a built image holds, read from its package databases without running it, as CycloneDX."""
