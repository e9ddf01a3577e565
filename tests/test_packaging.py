"""What `pip install` and the test suite are told in pyproject.toml: no warning a user did not cause."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_conf_folder_is_a_listed_package():
    """setuptools warns ("Package 'prune_cli.conf.data' is absent from the `packages`
    configuration") about every folder of conf/ the list leaves out: a new config group must be
    listed, and its YAML files ship with it."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {"prune_cli.conf." + ".".join(p.relative_to(ROOT / "conf").parts)
               for p in (ROOT / "conf").rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert folders and folders <= listed, sorted(folders - listed)
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["prune_cli.conf"] == ["*.yaml", "**/*.yaml"]


def test_the_suite_fails_on_warnings_and_tensorboard_is_a_dependency():
    filters = PYPROJECT["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert filters[0] == "error" and all(f.startswith("ignore:") for f in filters[1:])
    assert any(d.startswith("tensorboard") for d in PYPROJECT["project"]["dependencies"])
