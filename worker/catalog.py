"""The catalogue of official pretrained networks that `POST /v1/models {"catalog": name}` imports.

The bundled list (worker/catalog.json) is transcribed from the READMEs of NVlabs/stylegan2-ada-pytorch
("Data repository") and NVlabs/stylegan3 ("Additional material"): name, architecture, resolution, URL and
licence. NVIDIA publishes no checksums for these files, so `sha256` is null there; we never make one up.
An operator can replace the list (`STYLEGAN_CATALOG_FILE`), e.g. with an internal mirror whose URLs and
checksums they know; the same JSON layout applies.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLED_CATALOG = Path(__file__).with_name("catalog.json")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ARCHITECTURES = ("stylegan2", "stylegan3-t", "stylegan3-r")


class CatalogError(ValueError):
    """The catalogue file is malformed (a deployment error, reported at first use)."""


class UnknownCatalogEntry(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no catalogue entry named {name!r}; GET /v1/catalog lists them")
        self.name = name
        self.known = known


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    architecture: str
    resolution: int
    url: str
    sha256: str | None
    description: str
    license: str
    license_url: str | None
    commercial_use: bool
    listed_in: str | None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> CatalogEntry:
        try:
            entry = cls(
                name=d["name"],
                architecture=d["architecture"],
                resolution=int(d["resolution"]),
                url=d["url"],
                sha256=d.get("sha256"),
                description=d.get("description", ""),
                license=d["license"],
                license_url=d.get("license_url"),
                commercial_use=bool(d.get("commercial_use", False)),
                listed_in=d.get("listed_in"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"{where}: malformed entry {d!r}: {exc}") from None
        if not _NAME.match(entry.name):
            raise CatalogError(f"{where}: entry name {entry.name!r} must be lower-case [a-z0-9._-]")
        if entry.architecture not in _ARCHITECTURES:
            raise CatalogError(f"{where}: {entry.name}: unknown architecture {entry.architecture!r}")
        if not entry.url.startswith(("https://", "http://")):
            raise CatalogError(f"{where}: {entry.name}: url must be http(s), got {entry.url!r}")
        if entry.sha256 is not None and not _SHA256.match(entry.sha256):
            raise CatalogError(f"{where}: {entry.name}: sha256 must be 64 lower-case hex digits or null")
        return entry


@functools.cache
def load_catalog(path: Path = BUNDLED_CATALOG) -> tuple[CatalogEntry, ...]:
    """The entries of a catalogue file, in file order; read once per path."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"cannot read the model catalogue {path}: {exc}") from None
    raw = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(raw, list):
        raise CatalogError(f"{path}: expected an object with an `entries` list")
    entries = tuple(CatalogEntry.from_dict(item, str(path)) for item in raw)
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise CatalogError(f"{path}: entry names must be unique")
    return entries


def catalog_entry(name: str, path: Path = BUNDLED_CATALOG) -> CatalogEntry:
    entries = load_catalog(path)
    for entry in entries:
        if entry.name == name:
            return entry
    raise UnknownCatalogEntry(name, [entry.name for entry in entries])
