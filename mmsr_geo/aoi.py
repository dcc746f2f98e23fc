"""Area of interest: a GeoJSON file or URL, or a WKT polygon, brought into the source CRS.

GeoJSON follows RFC 7946 (longitude/latitude, EPSG:4326) unless it names a ``crs`` member
(the pre-RFC ``{"type": "name", "properties": {"name": "EPSG:32633"}}`` form); WKT carries no
CRS, so it is taken in the source's CRS (pixel coordinates for a pixel-only source).

A GeoJSON AOI may be an ``http(s)://`` URL: it is fetched with the standard library (rasterio
reads rasters only, and an AOI is a few kilobytes), with a timeout and a size cap. GDAL virtual
paths (``/vsicurl/``, ``/vsis3/``, ``s3://``) are rasters' business and are refused for an AOI.
A GeoJSON AOI is identified by its file name and a hash of its content (:meth:`Aoi.record`), so
an edited file, local or remote, is a different AOI.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_geom
from shapely import wkt
from shapely.errors import ShapelyError
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from shapely.validation import explain_validity

from .errors import InputError

GEOJSON_CRS = CRS.from_epsg(4326)

URL_TIMEOUT_S = 30.0
"""Seconds to wait for an AOI URL to connect or send more bytes."""
URL_MAX_BYTES = 32 << 20
"""The largest AOI document fetched from a URL (32 MiB: an AOI is a few polygons)."""


def _geojson_geometry(document: dict) -> tuple[BaseGeometry, CRS]:
    kind = document.get("type")
    if kind == "FeatureCollection":
        parts = [shape(f["geometry"]) for f in document.get("features", []) if f.get("geometry")]
    elif kind == "Feature":
        parts = [shape(document["geometry"])] if document.get("geometry") else []
    else:
        parts = [shape(document)]
    if not parts:
        raise InputError("the AOI GeoJSON contains no geometry")
    crs = GEOJSON_CRS
    named = document.get("crs", {}).get("properties", {}).get("name")
    if named:
        try:
            crs = CRS.from_user_input(named)
        except CRSError:
            raise InputError(f"the AOI GeoJSON names an unknown crs {named!r}") from None
    return unary_union(parts), crs


def _check_lon_lat(geometry: BaseGeometry, crs: CRS, named: bool) -> None:
    """A GeoJSON without a ``crs`` member is longitude/latitude (RFC 7946): coordinates beyond
    +-180 / +-90 are projected ones (UTM metres, say), and the message says so."""
    if named or crs != GEOJSON_CRS:
        return
    minx, miny, maxx, maxy = geometry.bounds
    if max(abs(minx), abs(maxx)) > 180 or max(abs(miny), abs(maxy)) > 90:
        raise InputError(
            f"the AOI GeoJSON has coordinates beyond longitude/latitude (x {minx:.6g} to "
            f"{maxx:.6g}, y {miny:.6g} to {maxy:.6g}): GeoJSON without a \"crs\" member is "
            "lon/lat (RFC 7946); name its CRS in a \"crs\" member, or pass WKT in the "
            "source's CRS"
        )


def is_url(text: str) -> bool:
    """Whether an AOI is given as an ``http(s)://`` URL."""
    return text.lower().startswith(("http://", "https://"))


def fetch_url(url: str, timeout: float = URL_TIMEOUT_S, max_bytes: int = URL_MAX_BYTES) -> bytes:
    """The body of an http(s) URL, at most ``max_bytes``; any failure is an
    :class:`InputError` that says what went wrong (status, reason, timeout, size)."""
    request = urllib.request.Request(url, headers={"User-Agent": "mmsr-geo"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot fetch the AOI {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot fetch the AOI {url}: {exc.reason}") from None
    except TimeoutError:
        raise InputError(f"cannot fetch the AOI {url}: no answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # a connection reset mid-body, a malformed URL
        raise InputError(f"cannot fetch the AOI {url}: {exc}") from None
    if len(body) > max_bytes:
        raise InputError(
            f"the AOI {url} is larger than {max_bytes >> 20} MiB: an AOI should be a few "
            "polygons (simplify it, or download it and pass the file)"
        )
    return body


@dataclass(frozen=True)
class Aoi:
    """An AOI as given: a GeoJSON document read from a file or URL, or WKT text."""

    text: str
    """The ``--aoi`` value as given."""
    name: str | None = None
    """File name of a GeoJSON document (None for WKT)."""
    document: bytes | None = None
    """The GeoJSON bytes (None for WKT)."""

    def record(self) -> str:
        """How the AOI identifies a run: WKT as given, a GeoJSON document by name and a
        hash of its content (editing the file invalidates checkpoints; its folder or host
        is not recorded)."""
        if self.document is None:
            return self.text
        return f"{self.name}#{hashlib.blake2b(self.document, digest_size=16).hexdigest()}"

    def geometry(self, target_crs: CRS | None) -> BaseGeometry:
        """The AOI polygon(s) in ``target_crs``."""
        try:
            if self.document is not None:
                document = json.loads(self.document.decode("utf-8-sig"))
                geometry, crs = _geojson_geometry(document)
                if target_crs is None:
                    raise InputError(
                        "a GeoJSON AOI needs a georeferenced source: use WKT in pixel coordinates"
                    )
                _check_lon_lat(geometry, crs, named=document.get("crs") is not None)
                if crs != target_crs:
                    geometry = shape(transform_geom(crs, target_crs, mapping(geometry)))
            else:
                geometry = wkt.loads(self.text)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(f"the AOI {self.text} is not valid GeoJSON") from None
        except ShapelyError:
            raise InputError(
                f"the AOI {self.text!r} is neither an existing GeoJSON file, a GeoJSON URL nor "
                "a WKT geometry"
            ) from None
        if not geometry.is_empty and not geometry.is_valid:
            raise InputError(
                f"the AOI is not a valid polygon ({explain_validity(geometry)}): repair it, "
                "e.g. with QGIS's 'Fix geometries'"
            )
        if geometry.is_empty or geometry.area <= 0:
            raise InputError("the AOI has no area: give a polygon")
        return geometry.buffer(0)


def read_aoi(text: str) -> Aoi:
    """The AOI ``text`` names: a GeoJSON URL (fetched now), a GeoJSON file (read now) or WKT."""
    if is_url(text):
        name = Path(unquote(urlsplit(text).path)).name or "aoi.geojson"
        return Aoi(text, name, fetch_url(text))
    if "://" in text or text.startswith("/vsi"):
        raise InputError(
            f"the AOI {text}: only local GeoJSON files, http(s) URLs and WKT are read (GDAL "
            "virtual paths and s3:// are for rasters: download the AOI and pass the file)"
        )
    path = Path(text)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a long WKT string is not a valid path on some systems
        is_file = False
    if not is_file:
        return Aoi(text)
    try:
        return Aoi(text, path.name, path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read the AOI file {text}: {exc.strerror or exc}") from None


def load_aoi(text: str, target_crs: CRS | None) -> BaseGeometry:
    """The AOI polygon(s) in ``target_crs`` from a GeoJSON file path or URL, or a WKT string."""
    return read_aoi(os.fspath(text)).geometry(target_crs)
