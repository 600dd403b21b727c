"""The image's pinned wheels (image/requirements.txt) against what the package
asks for (pyproject.toml): every dependency pinned, every pin allowed, each
with a hash, so the image never runs sockterm on versions its own install
would refuse. tests/priv/test_image.py builds and runs the image."""

import os
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# rich's and markdown-it's own dependencies, and the installer of the build stage
TRANSITIVE = {"markdown-it-py", "mdurl", "pygments", "pip"}


def pins() -> dict:
    found = {}
    with open(os.path.join(ROOT, "image", "requirements.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                m = re.fullmatch(r"(\S+)==(\S+) --hash=sha256:[0-9a-f]{64}", line)
                assert m, f"not an exact pin with its hash: {line}"
                found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def test_every_dependency_is_pinned_to_a_version_the_package_allows():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        wanted = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    pinned = pins()
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in image/requirements.txt"
        assert req.specifier.contains(pinned[name]), f"{req.name}=={pinned[name]} is not {req}"
    assert set(pinned) - {canonicalize_name(r.name) for r in wanted} == TRANSITIVE
