"""The package dependency picture of README.md ("Architecture") holds: no import points upward.

    configs, launch, benchmarks, scripts       entry points (config files import only vdm_jax.config)
      -> vdm_jax.training, vdm_jax.evaluation   (never each other)
      -> vdm_jax.models -> vdm_jax.sharding; vdm_jax.diffusion; data_pipelines
      -> vdm_jax.config, vdm_jax.checkpointing, vdm_jax.config_drift, vdm_jax.workdir_lock,
         vdm_jax.hardware, vdm_jax.xla_flags (leaves)

data_pipelines imports nothing of vdm_jax but vdm_jax.config; the leaves nothing but
vdm_jax.config.

Every import statement of every module counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("training", "evaluation", "models", "diffusion", "sharding")
LEAVES = {"vdm_jax.config", "vdm_jax.checkpointing", "vdm_jax.config_drift", "vdm_jax.workdir_lock",
          "vdm_jax.hardware", "vdm_jax.xla_flags"}
CORE = {"vdm_jax.models", "vdm_jax.diffusion", "vdm_jax.sharding", "data_pipelines"} | LEAVES
APPS = {"vdm_jax.training", "vdm_jax.evaluation"} | CORE
# What each package may import of the project (besides itself).
ALLOWED = {
    "configs": {"vdm_jax.config"},
    "launch": APPS, "benchmarks": APPS, "scripts": APPS,
    "vdm_jax.training": CORE, "vdm_jax.evaluation": CORE,
    "vdm_jax.models": {"vdm_jax.sharding", "vdm_jax.config"},
    "vdm_jax.diffusion": {"vdm_jax.config"},
    "vdm_jax.sharding": {"vdm_jax.config"},
    "data_pipelines": {"vdm_jax.config"},
    "vdm_jax.checkpointing": {"vdm_jax.config"}, "vdm_jax.config_drift": {"vdm_jax.config"},
    "vdm_jax.workdir_lock": set(),
    "vdm_jax.config": set(), "vdm_jax.hardware": set(), "vdm_jax.xla_flags": set(), "vdm_jax": set(),
}


def package(module: str) -> str | None:
    """The package of the dependency picture that ``module`` belongs to (None: not the project's)."""
    parts = module.removesuffix(".__init__").split(".")
    if parts[0] in ("configs", "launch", "benchmarks", "scripts", "data_pipelines"):
        return parts[0]
    if parts[0] != "vdm_jax":
        return None
    if len(parts) == 1:
        return "vdm_jax"
    return f"vdm_jax.{parts[1]}"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from vdm_jax import config`` imports the module vdm_jax.config
            out += [(node.lineno, f"{node.module}.{a.name}" if node.module == "vdm_jax" else node.module)
                    for a in node.names]
    return out


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the places (file:line) where it happens."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("tests", ".venv", "build") or rel.parts[0].startswith("."):
            continue
        source = package(".".join(rel.with_suffix("").parts))
        if source is None:
            continue
        for line, module in imported_modules(ast.parse(path.read_text(), str(rel))):
            target = package(module)
            if target is not None and target != source:
                found.setdefault((source, target), []).append(f"{rel}:{line}")
    return found


def test_every_package_is_in_the_picture():
    assert {package(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in REPO.glob("vdm_jax/*.py")
            } <= set(ALLOWED)
    assert {f"vdm_jax.{d.name}" for d in (REPO / "vdm_jax").iterdir() if (d / "__init__.py").exists()
            } == {f"vdm_jax.{s}" for s in SUBPACKAGES}


def test_no_upward_or_sideways_import():
    bad = [f"{src} -> {dst} ({', '.join(places)})" for (src, dst), places in sorted(edges().items())
           if dst not in ALLOWED[src]]
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)
