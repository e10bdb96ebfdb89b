"""Build phases and steps; `str` enums so they serialise to JSON and Redis as they are."""

from enum import Enum


class BuildPhase(str, Enum):
    """Where a build is in its life (PrimeHub's phase names)."""

    PENDING = "Pending"  # accepted and queued, no worker has started it
    RUNNING = "Running"  # a worker is pulling, building or pushing it
    SUCCEEDED = "Succeeded"  # the image is at its target (pushed now, or already there: skipped)
    FAILED = "Failed"  # ended without an image; `error` says which step and why
    CANCELLED = "Cancelled"  # stopped on request before it finished

    @property
    def is_final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset({BuildPhase.SUCCEEDED, BuildPhase.FAILED, BuildPhase.CANCELLED})
# The same test for Lua scripts that read a phase out of stored JSON.
LUA_IS_FINAL = (
    "local function is_final(phase)\n  return "
    + " or ".join(f"phase == '{phase.value}'" for phase in sorted(FINAL_PHASES)) + "\nend\n"
)


class BuildStep(str, Enum):
    """What a running build is doing now; also the Celery custom state name, upper-cased."""

    PULLING = "pulling"  # pulling the base image with its pull secret
    BUILDING = "building"  # running the rendered Dockerfile on the engine
    PUSHING = "pushing"  # pushing the image to the target registry

    @property
    def celery_state(self) -> str:
        return self.value.upper()
