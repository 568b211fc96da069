from dataclasses import dataclass, field
from pathlib import Path

from qsave.versioning import code_version, config_hash, module_closure, source_hash


@dataclass
class Inner:
    lr: float = 1e-4


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(Outer()) == config_hash(Outer())
    assert config_hash(Outer()) != config_hash(Outer(inner=Inner(lr=2e-4)))


def test_code_and_source_versions():
    assert len(source_hash()) == 12
    version = code_version()
    assert version.startswith("src-") or len(version.split("-")[0]) == 12


def _package(root: Path) -> Path:
    """A throwaway ``qsave`` package: ``a`` imports ``b`` inside a function, ``c`` stands alone."""
    pkg = root / "qsave"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from qsave.sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("X = 1\n")
    (pkg / "c.py").write_text("Y = 2\n")
    (root / "task.py").write_text("import os\nfrom qsave.a import f\n")
    return pkg


def test_module_closure_follows_imports_inside_functions_and_nothing_else(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    closure = module_closure([tmp_path / "task.py"], package_dir=pkg)
    names = [p.relative_to(tmp_path).as_posix() for p in closure]
    assert names == ["qsave/__init__.py", "qsave/a.py", "qsave/sub/__init__.py", "qsave/sub/b.py", "task.py"]


def test_each_task_file_is_versioned_by_the_code_it_runs() -> None:
    repo = Path(__file__).resolve().parent.parent
    training = {p.name for p in module_closure([repo / "tasks" / "training.py"])}
    evaluation = {p.name for p in module_closure([repo / "tasks" / "evaluation.py"])}
    assert {"sft.py", "grpo.py", "losses.py", "vision_init.py"} <= training
    assert not {"serving.py", "registry.py", "gate.py", "scoring.py", "baseline.py"} & training
    assert {"scoring.py", "metrics.py", "report.py"} <= evaluation
    versions = {source_hash(repo / "tasks" / f"{name}.py") for name in ("training", "evaluation", "data")}
    assert len(versions) == 3 and all(len(v) == 12 for v in versions)
