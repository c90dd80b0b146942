"""Print the sha256 of pyproject.toml's dependency tables (what the locks were compiled from)."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def deps_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    tables = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    sys.stdout.write(deps_digest() + "\n")
