"""Render a raster, e.g. an mmsr-geo output, as a hillshade PNG with QGIS, without a display.

A hillshade is the quickest way to judge a super-resolved surface: detail the guide brought
shows as relief, tile seams or blocky upsampling as lines. Run it with the Python that has
PyQGIS (on Debian /usr/bin/python3, not a virtual environment's):

    /usr/bin/python3 examples/qgis_render.py demo-output/rmnp-dem_x2.tif rmnp-hillshade.png

In a geographic CRS the horizontal units are degrees and the heights metres: the z-factor
then converts metres to degrees at the raster's centre latitude (--exaggeration multiplies
it). ``examples/qgis_hillshade.py`` styles the same layer inside QGIS desktop instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

METRES_PER_DEGREE = 111_320.0
"""Of latitude, and of longitude at the equator (WGS 84, to 0.3 %)."""


def z_factor(layer, exaggeration: float) -> float:
    """Height units to horizontal units: 1 in a projected CRS; in degrees, metres per degree
    averaged over the two axes at the centre latitude."""
    if not layer.crs().isGeographic():
        return exaggeration
    latitude = math.radians(layer.extent().center().y())
    return exaggeration / (METRES_PER_DEGREE * (1 + math.cos(latitude)) / 2)


def render(path: str, png: str, width: int, exaggeration: float, band: int) -> str | None:
    """Write the hillshade of ``band`` of ``path`` to ``png``; returns what went wrong, if
    anything (exiting from here would keep the layer alive until after exitQgis)."""
    from qgis.core import (
        Qgis,
        QgsHillshadeRenderer,
        QgsMapRendererParallelJob,
        QgsMapSettings,
        QgsRasterDataProvider,
        QgsRasterLayer,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    layer = QgsRasterLayer(path, os.path.basename(path))
    if not layer.isValid():
        return f"QGIS cannot open {path}"
    # resample the heights before shading ("early resampling" in the layer's symbology):
    # shading nearest-neighbour pixels at a size that is not a whole multiple of the
    # raster's draws a stripe wherever a row or column is repeated
    provider = layer.dataProvider()
    layer.setResamplingStage(Qgis.RasterResamplingStage.Provider)
    provider.setZoomedInResamplingMethod(QgsRasterDataProvider.ResamplingMethod.Bilinear)
    provider.setZoomedOutResamplingMethod(QgsRasterDataProvider.ResamplingMethod.Bilinear)
    renderer = QgsHillshadeRenderer(provider, band, 315.0, 45.0)  # azimuth, altitude
    renderer.setZFactor(z_factor(layer, exaggeration))
    layer.setRenderer(renderer)

    extent = layer.extent()
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, round(width * extent.height() / extent.width())))
    settings.setBackgroundColor(QColor("white"))  # nodata shows as white
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()  # blocks without an event loop
    errors = [error.message for error in job.errors()]
    if errors:
        return f"rendering {path} failed: {'; '.join(errors)}"
    if not job.renderedImage().save(png, "PNG"):
        return f"cannot write {png}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", help="GeoTIFF (or any raster QGIS opens)")
    parser.add_argument("png", help="PNG to write")
    parser.add_argument("--width", type=int, default=800, help="pixels [default: 800]")
    parser.add_argument("--band", type=int, default=1, help="[default: 1]")
    parser.add_argument("--exaggeration", type=float, default=1.0, help="[default: 1]")
    args = parser.parse_args()

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath(os.environ.get("QGIS_PREFIX_PATH", "/usr"), True)
    app = QgsApplication([], False)
    app.initQgis()
    error = render(args.raster, args.png, args.width, args.exaggeration, args.band)
    app.exitQgis()  # render's QGIS objects are gone by now: held ones crash the exit
    if error:
        sys.exit(error)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
