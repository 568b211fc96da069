from dataclasses import dataclass, field

from qsave.versioning import code_version, config_hash, source_hash


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
