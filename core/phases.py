"""Build phases and steps, each list written once; `str` enums so they serialise to JSON and Redis as they are."""

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
    """The steps of a build, in the order the worker's pipeline runs them (worker/pipeline.py). The reported ones
    are the build's `step` while they run, its Celery custom state (upper-cased), a metrics label and a stage of
    the console's progress; checking and rendering take no time worth a stage."""

    CHECKING = "checking"  # is the target there already? (a skipped build ends here)
    PULLING = "pulling"  # pulling the base image with its pull secret
    RENDERING = "rendering"  # the Dockerfile, from the spec
    BUILDING = "building"  # running the rendered Dockerfile on the engine
    PUSHING = "pushing"  # pushing the image to the target registry
    SBOM = "sbom"  # reading what the image holds, and attaching its SBOM to it in the registry

    @property
    def reported(self) -> bool:
        return self in REPORTED_STEPS

    @property
    def celery_state(self) -> str:
        return self.value.upper()


REPORTED_STEPS = (BuildStep.PULLING, BuildStep.BUILDING, BuildStep.PUSHING, BuildStep.SBOM)
