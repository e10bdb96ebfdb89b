"""The layers, enforced: producer → core ← worker, all → config (which takes only the root error and the platform
names from core); only core's stores speak to Redis; only the engine, registry and builder adapters speak to Docker,
HTTP or the Docker CLI; and no module imports itself round a circle."""

import ast
import fnmatch
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "core", "producer", "worker")
FORBIDDEN = {"producer": ("worker",), "core": ("producer", "worker"), "config": ("core", "producer", "worker")}
# the one root of the error hierarchy, and the platform names, sit below settings too
ALLOWED_DOWN = {"config": ("core.errors", "core.platforms")}
ONLY_IN = {"redis": ("core/stores/",), "kombu": ("core/stores/",),
           "docker": ("worker/engine.py", "worker/builders/", "worker/sbom/imagefiles.py"),
           "requests": ("worker/engine.py", "core/registry/client.py"),
           "subprocess": ("worker/builders/",)}


def modules() -> dict[str, set[str]]:
    """Every module of the four packages, with every module it imports (at any depth: a function's too; `from a
    import b` imports module a.b where there is one)."""
    paths = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    names = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path for path in paths}
    return {name: set(imported(ast.parse(path.read_text()), names)) for name, path in names.items()}


def imported(tree: ast.AST, known: dict) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names]
    return found


def path_of(module: str) -> str:
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(package):
    crossing = [(module, imported) for module, imports in modules().items() if module.split(".")[0] == package
                for imported in imports if imported.split(".")[0] in FORBIDDEN[package]
                and not imported.startswith(ALLOWED_DOWN.get(package, ("-",)))]
    assert crossing == []


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_outside_libraries_are_spoken_to_by_their_adapters_only(library):
    users = [module for module, imports in modules().items() if any(i.split(".")[0] == library for i in imports)]
    assert [m for m in users if not path_of(m).startswith(ONLY_IN[library])] == []


def test_no_module_imports_itself_round_a_circle():
    graph = {module: {i for i in imports if i in modules_} for modules_ in [modules()] for module, imports in
             modules_.items()}
    visiting, done, circles = set(), set(), []

    def visit(module: str, trail: list[str]) -> None:
        if module in visiting:
            circles.append(trail[trail.index(module):] + [module])
        if module in visiting or module in done:
            return
        visiting.add(module)
        for imported in sorted(graph[module]):
            visit(imported, [*trail, module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert circles == []


def test_the_project_image_installs_every_package_it_runs():
    # Given the package patterns pyproject installs and the project's Dockerfile
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    # When every package directory of the tree and the Dockerfile's COPY lines are read
    packages = {".".join(init.parent.relative_to(ROOT).parts) for name in PACKAGES
                for init in (ROOT / name).rglob("__init__.py")}
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    # Then each one is installed and copied into the image (a missing one installs fine and fails at start)
    assert [p for p in sorted(packages) if not any(fnmatch.fnmatchcase(p, pattern) for pattern in include)] == []
    assert set(PACKAGES) <= copied
