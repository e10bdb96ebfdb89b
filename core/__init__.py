"""What the producer and the worker share: the spec contract, references, tags and targets, phases and steps,
results, the one error hierarchy, submitting and ending builds, and (in core.stores) every Redis key."""
