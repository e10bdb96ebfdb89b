"""The `imagebuilder` command: submit, status, logs, specs and schedules, the API; and the worker's own commands,
installed beside it."""

from __future__ import annotations

import importlib.metadata
import json
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
import yaml

from config.settings import Settings, load_settings
from core.outcomes import EXIT_NOT_SUCCEEDED, EXIT_SUCCEEDED, exiting_on_errors
from core.phases import BuildPhase
from core.result import BuildResult, PackageChanges, SbomReport
from core.schedule import Policy
from core.tagging import ensure_enabled
from producer.client import BuildClient
from producer.specfile import load_spec_file, load_spec_files

COMMANDS_ENTRY_POINTS = "imagebuilder.commands"
CANCEL_WAIT_S = 30.0
MAX_API_WORKERS = 64
API_GRACEFUL_SHUTDOWN_S = 10  # live logs may run as long as a build: a stop closes them after this


@contextmanager
def _client() -> Iterator[BuildClient]:
    """A client on the environment's settings, with usage errors reported as such."""
    with exiting_on_errors(), BuildClient(_settings()) as client:
        yield client


def _settings() -> Settings:
    with exiting_on_errors():
        return load_settings()


class WithInstalledCommands(click.Group):
    """The commands here, and those other parts of the service install (the worker's `worker` and `beat`, under
    the `imagebuilder.commands` entry points): the producer never imports them, and loads one only to run it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(point.name for point in _installed())})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        return found or next((point.load() for point in _installed() if point.name == name), None)


def _installed() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=COMMANDS_ENTRY_POINTS))


@click.group(cls=WithInstalledCommands)
def main() -> None:
    """Build container images from image specs on Celery workers."""


@main.command()
@click.argument("file")
@click.option("--force", is_flag=True, help="Build and push even if the target image exists.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the result, showing progress on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
def submit(file: str, force: bool, wait_: bool, as_json: bool) -> None:
    """Submit the spec in FILE (YAML or JSON, '-' for stdin)."""
    settings = _settings()
    with exiting_on_errors(), BuildClient(settings) as client:
        ensure_enabled(settings)
        _finish(client, client.submit(load_spec_file(file), force=force), wait_, as_json)


def _finish(client: BuildClient, result: BuildResult, wait_: bool, as_json: bool) -> None:
    """Print the submitted build; with `wait_`, follow it to its end and exit 0 only if it Succeeded."""
    if not wait_:
        _print(result, as_json)
        return
    if sys.stderr.isatty():
        _show_progress(client, result.id)
    result = client.wait(result.id)
    _print(result, as_json)
    sys.exit(EXIT_SUCCEEDED if result.succeeded else EXIT_NOT_SUCCEEDED)


@main.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
def status(build_id: str, as_json: bool) -> None:
    """Show a build's phase, step, image and error; exit 0 only if it Succeeded."""
    with _client() as client:
        result = client.status(build_id)
        _print(result, as_json)
        sys.exit(EXIT_SUCCEEDED if result.succeeded else EXIT_NOT_SUCCEEDED)


@main.command()
@click.argument("build_id")
@click.option("--platform", help="Of a multi-platform build, the image of this platform (default: the first).")
def sbom(build_id: str, platform: str | None) -> None:
    """Print the CycloneDX SBOM of a build's image, as attached in its registry."""
    with _client() as client:
        click.echo(client.sboms.of_build(build_id, platform).decode())


@main.command()
@click.argument("build_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the build ends.")
def logs(build_id: str, follow: bool) -> None:
    """Print a build's pull, build and push log."""
    with _client() as client:
        for line in client.logs(build_id, follow=follow):
            click.echo(line)


@main.command()
@click.argument("build_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option("--timeout", "timeout_s", default=CANCEL_WAIT_S, show_default=True, help="Seconds to wait for the stop.")
def cancel(build_id: str, as_json: bool, timeout_s: float) -> None:
    """Cancel a build: a queued one never starts, a running one stops and pushes nothing."""
    with _client() as client:
        client.cancel(build_id)
        result = client.wait(build_id, timeout_s=timeout_s)
        _print(result, as_json)
        sys.exit(EXIT_SUCCEEDED if result.phase is BuildPhase.CANCELLED else EXIT_NOT_SUCCEEDED)


@main.command()
@click.option("--worker", "of_worker", is_flag=True, help="Also require the worker of this container to be alive.")
def health(of_worker: bool) -> None:
    """Exit 0 if Redis answers (and, with --worker, this machine's worker was seen in the last half minute)."""
    from pathlib import Path

    from core.stores.metrics import WORKER_NAME_FILE

    with _client() as client:
        client.service.redis_answers()
        name = Path(WORKER_NAME_FILE).read_text().strip() if of_worker and Path(WORKER_NAME_FILE).exists() else None
        if of_worker and not (name and client.service.worker_seen(name)):
            click.echo("error: no live worker in this container", err=True)
            sys.exit(EXIT_NOT_SUCCEEDED)
        click.echo("ok")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, MAX_API_WORKERS),
              help="Server processes, each with its own connections (and its own live log stream limit).")
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API and the web console (/ui/). X-Forwarded-* headers are believed only from
    IMAGEBUILDER_TRUSTED_PROXIES (the app applies them), never by uvicorn's own default."""
    import uvicorn

    from producer.api import create_api

    with exiting_on_errors():
        app = create_api(_settings())  # settings and tokens checked here, before any server process starts
    _allow_open_files()
    served = {"host": host, "port": port, "proxy_headers": False, "timeout_graceful_shutdown": API_GRACEFUL_SHUTDOWN_S}
    if workers == 1:
        uvicorn.run(app, **served)
    else:  # each process makes its own app from the same environment
        uvicorn.run("producer.api:api_from_environment", factory=True, workers=workers, **served)


def _allow_open_files() -> None:
    """Every live log holds a connection: raise the open-file limit from its soft value (often 1,024) to its hard
    one, as a server that holds many connections does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@main.group()
def spec() -> None:
    """Stored specs: apply, list, show, delete."""


@spec.command("apply")
@click.argument("file")
def spec_apply(file: str) -> None:
    """Create or update the specs in FILE (several documents, or a PrimeHub List); new or changed ones build."""
    with _client() as client:
        for image_spec in load_spec_files(file):
            stored, build = client.specs.apply(image_spec)
            outcome = f"changed, building {build.image} as {build.id}" if build else "unchanged"
            click.echo(f"{stored.spec.name}: {outcome}")


@spec.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def spec_list(as_json: bool) -> None:
    """Every stored spec with its tag and base image."""
    with _client() as client:
        stored = client.specs.all()
        if as_json:
            click.echo(json.dumps([s.model_dump(mode="json", by_alias=True) for s in stored]))
            return
        for item in stored:
            click.echo(f"{item.spec.name:<30} {item.tag}  {item.spec.base_image}")


@spec.command("show")
@click.argument("name")
def spec_show(name: str) -> None:
    """A stored spec, as YAML; comments after it name the platforms it inherits, the stored spec it is built on
    and those built on it."""
    with _client() as client:
        detail = client.specs.detail(name)
        click.echo(yaml.safe_dump(detail.written.to_wire(), sort_keys=False), nl=False)
        if detail.platforms_from:
            click.echo(f"# platforms: {', '.join(p.value for p in detail.spec.platforms)} "
                       f"(those of {detail.platforms_from}, whose image it is built on)")
        click.echo(f"# upstream: {detail.upstream or '-'}")
        click.echo(f"# downstream: {', '.join(detail.downstream) or '-'}")


@spec.command("delete")
@click.argument("name")
def spec_delete(name: str) -> None:
    """Delete a stored spec, its history and its schedule."""
    with _client() as client:
        client.specs.delete(name)
        click.echo(f"{name}: deleted")


@main.command("build")
@click.argument("name")
@click.option("--force", is_flag=True, help="Build and push even if the target image exists.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the result, showing progress on a terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
def build_stored(name: str, force: bool, wait_: bool, as_json: bool) -> None:
    """Build the stored spec NAME."""
    with _client() as client:
        _finish(client, client.specs.build(name, force=force), wait_, as_json)


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(name: str, as_json: bool) -> None:
    """Builds of the stored spec NAME, newest first."""
    with _client() as client:
        entries = client.specs.history(name)
        if as_json:
            click.echo(json.dumps([e.model_dump(mode="json") for e in entries]))
            return
        for e in entries:
            click.echo(f"{e.submitted_at:%Y-%m-%d %H:%M:%S}  {e.phase.value:<10} {e.trigger.value:<13} {e.tag}  "
                       f"{e.id}  {e.error or (e.changes.summary() if e.changes else '')}")


@main.group()
def schedule() -> None:
    """Scheduled rebuilds of stored specs (run `imagebuilder beat` for them to fire)."""


@schedule.command("set")
@click.argument("name")
@click.argument("cron", required=False)
@click.option("--every", "every_s", type=int, help="Instead of CRON: every so many seconds.")
@click.option("--policy", type=click.Choice([p.value for p in Policy]), default=Policy.ON_BASE_CHANGE.value,
              show_default=True, help="Rebuild only when the base image's digest changed, or always.")
@click.option("--tz", default="UTC", show_default=True, help="Time zone the CRON is read in.")
def schedule_set(name: str, cron: str | None, every_s: int | None, policy: str, tz: str) -> None:
    """Schedule NAME with a CRON expression ("0 3 * * *") or --every SECONDS."""
    with _client() as client:
        _echo_schedule(client.schedules.set(name, cron=cron, every_s=every_s, tz=tz, policy=policy))


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def schedule_list(as_json: bool) -> None:
    """Every schedule, with its state (a self-disabled one says why)."""
    with _client() as client:
        schedules = client.schedules.all()
        if as_json:
            click.echo(json.dumps([s.model_dump(mode="json") for s in schedules]))
            return
        for item in schedules:
            _echo_schedule(item)


@schedule.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Remove the schedule of NAME (the spec stays)."""
    with _client() as client:
        client.schedules.remove(name)
        click.echo(f"{name}: schedule removed")


@schedule.command("enable")
@click.argument("name")
def schedule_enable(name: str) -> None:
    """Resume a schedule that disabled itself."""
    with _client() as client:
        _echo_schedule(client.schedules.enable(name))


def _echo_schedule(item) -> None:
    timing = f"cron '{item.cron}' {item.tz}" if item.cron else f"every {item.every_s} s"
    state = "enabled" if item.enabled else f"DISABLED: {item.disabled_reason}"
    checked = f"last checked {item.last_checked:%Y-%m-%d %H:%M:%S}" if item.last_checked else "never checked"
    error = f"; last error: {item.last_error}" if item.last_error else ""
    click.echo(f"{item.name:<30} {timing:<28} {item.policy.value:<15} {state}; {checked}{error}")


def _show_progress(client: BuildClient, build_id: str) -> None:
    for line in client.logs(build_id, follow=True):
        click.echo(line, err=True)


def _sbom_line(sbom: SbomReport | None) -> str | None:
    if sbom is None:
        return None
    return f"{sbom.packages} packages, attached as {sbom.digest}" if sbom.digest else sbom.error


def _changes_line(changes: PackageChanges | None) -> str | None:
    return f"{changes.summary()} (since build {changes.since})" if changes else None


def _print(result: BuildResult, as_json: bool) -> None:
    if as_json:
        click.echo(result.to_json())
        return
    phase = result.phase.value + (" (skipped: already built)" if result.skipped else "")
    rows = {
        "id": result.id, "phase": phase, "step": result.step.value if result.step else None,
        "image": result.image, "digest": result.digest, "base digest": result.base_digest, "error": result.error,
        "sbom": _sbom_line(result.sbom), "changes": _changes_line(result.changes),
    }
    for key, value in rows.items():
        if value:
            click.echo(f"{key + ':':<13}{value}")
