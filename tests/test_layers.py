"""Import direction (docs/architecture.md, "Packages"): the kernel imports nothing of the project; the members
(``baselines``, ``llm_core``) and ``router`` import only the kernel and themselves; ``hybrid`` may import all.

Every ``import`` and ``from ... import`` statement is checked, at module level and inside functions,
relative imports resolved. An import inside a function is refused for project packages (a lazy import
dodges a cycle, and the cycle is the bug), except the one documented case: ``hybrid/members.py``
imports ``llm_core`` only when the core is asked for, because importing it imports torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernel", "baselines", "llm_core", "router", "hybrid")
MAY_IMPORT = {
    "kernel": {"kernel"},
    "baselines": {"kernel", "baselines"},
    "llm_core": {"kernel", "llm_core"},
    "router": {"kernel", "router"},
    "hybrid": set(PACKAGES),
}
LAZY_ALLOWED = {("hybrid/members.py", "llm_core")}  # (file, package): torch only when the core is asked for


def _package_parts(path: str) -> list[str]:
    """``hybrid/members.py`` -> ``["hybrid"]``; ``hybrid/__init__.py`` -> ``["hybrid"]`` (what ``.`` means there)."""
    parts = path.removesuffix(".py").split("/")
    return parts[:-1]


def _targets(node: ast.Import | ast.ImportFrom, path: str) -> list[str]:
    """The absolute module names an import statement in ``path`` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        return [node.module or ""]
    base = _package_parts(path)
    if node.level - 1 > len(base) - 1:
        return ["<beyond the top package>." + (node.module or "")]
    base = base[: len(base) - (node.level - 1)]
    if node.module:
        return [".".join([*base, node.module])]
    return [".".join([*base, alias.name]) for alias in node.names]  # from . import x: x may be a submodule


class _Imports(ast.NodeVisitor):
    """Collects (line, module, inside a function) for every import statement."""

    def __init__(self, path: str) -> None:
        self.path, self.depth, self.found = path, 0, []

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope  # noqa: N815

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        self.found += [(node.lineno, t, self.depth > 0) for t in _targets(node, self.path)]

    visit_ImportFrom = visit_Import  # noqa: N815


def check_source(path: str, source: str) -> list[str]:
    """Import-direction violations of one module, each ``file:line: problem``.

    Args:
        path: the module's path relative to the repository root, with ``/`` (e.g. ``kernel/data.py``).
        source: its Python source.
    """
    package = path.split("/")[0]
    visitor = _Imports(path)
    visitor.visit(ast.parse(source, filename=path))
    problems = []
    for line, module, lazy in visitor.found:
        target = module.split(".")[0]
        if target.startswith("<"):
            problems.append(f"{path}:{line}: relative import {module!r} reaches above the top-level package")
            continue
        if target not in PACKAGES:
            continue  # the standard library or a third-party package
        if target not in MAY_IMPORT[package]:
            problems.append(f"{path}:{line}: {package} must not import {module} "
                            f"({package} may import only {', '.join(sorted(MAY_IMPORT[package]))})")
        elif lazy and (path, target) not in LAZY_ALLOWED:
            problems.append(f"{path}:{line}: import of {module} inside a function; import it at module level "
                            "(a lazy import dodges a cycle: move the shared piece down a floor instead)")
    return problems


def project_modules() -> dict[str, str]:
    """Every .py file of the project packages: relative path -> source."""
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8")
            for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_import_goes_down_or_stays_in_its_package() -> None:
    modules = project_modules()
    for package in PACKAGES:  # the walk really saw every package
        assert any(path.startswith(f"{package}/") for path in modules), package
    problems = [p for path, source in modules.items() for p in check_source(path, source)]
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_the_checker_reports_upward_sideways_relative_and_lazy_imports() -> None:
    kernel = "import numpy as np\nfrom kernel.errors import HybridInputError\nfrom hybrid.config import Config\n"
    assert check_source("kernel/data.py", kernel) == [
        "kernel/data.py:3: kernel must not import hybrid.config (kernel may import only kernel)"
    ]
    sideways = "def fit():\n    import llm_core.member\n"
    assert check_source("baselines/linear.py", sideways)[0].startswith(
        "baselines/linear.py:2: baselines must not import llm_core.member")
    assert check_source("router/models.py", "from baselines import naive\n")[0].startswith(
        "router/models.py:1: router must not import baselines")
    relative = "from ..models import fit\nfrom . import features\nfrom .static import combine\n"
    tree = ast.parse(relative)
    assert [t for node in tree.body for t in _targets(node, "router/sub/x.py")] == [
        "router.models", "router.sub.features", "router.sub.static"]
    assert check_source("router/sub/x.py", relative) == []
    # the packages are top-level: a relative import can only stay inside its package or leave the project
    assert check_source("router/models.py", "from ..hybrid import members\n") == [
        "router/models.py:1: relative import '<beyond the top package>.hybrid' reaches above the top-level package"
    ]
    lazy = "class A:\n    def f(self):\n        from kernel.data import load_series\n"
    assert check_source("hybrid/api.py", lazy)[0].startswith("hybrid/api.py:3: import of kernel.data inside a function")
    members = "def core():\n    from llm_core.member import TimeLLM\n    import baselines.naive\n"
    assert check_source("hybrid/members.py", members) == [
        "hybrid/members.py:3: import of baselines.naive inside a function; import it at module level "
        "(a lazy import dodges a cycle: move the shared piece down a floor instead)"
    ]
    assert check_source("hybrid/pipeline.py", "def f():\n    import torch\n    import json\n") == []
