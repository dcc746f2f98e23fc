"""Load an mmsr-geo output into QGIS with a hillshade under a colour ramp.

Run it from the QGIS Python console (Plugins > Python Console > Show Editor > Open, then Run),
after setting OUTPUT below. It adds two layers: a hillshade (the best way to see whether the
super-resolved surface has detail and no tile seams) and a semi-transparent elevation ramp.
"""

from qgis.core import (
    QgsColorRampShader,
    QgsHillshadeRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)

OUTPUT = "/path/to/dem_x4.tif"  # the GeoTIFF written by `mmsr-geo upscale`


def add_hillshade(path: str, name: str = "SR hillshade") -> QgsRasterLayer:
    layer = QgsRasterLayer(path, name)
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open {path}")
    renderer = QgsHillshadeRenderer(layer.dataProvider(), 1, 315.0, 45.0)  # band, azimuth, altitude
    renderer.setZFactor(1.0)  # raise for geographic CRSs (degrees vs metres)
    layer.setRenderer(renderer)
    QgsProject.instance().addMapLayer(layer)
    return layer


def add_elevation_ramp(path: str, name: str = "SR elevation") -> QgsRasterLayer:
    layer = QgsRasterLayer(path, name)
    stats = layer.dataProvider().bandStatistics(1)
    ramp = QgsStyle.defaultStyle().colorRamp("Spectral")
    ramp.invert()
    shader_function = QgsColorRampShader(stats.minimumValue, stats.maximumValue, ramp)
    shader_function.classifyColorRamp(10)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_function)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader))
    layer.renderer().setOpacity(0.45)
    QgsProject.instance().addMapLayer(layer)
    return layer


add_hillshade(OUTPUT)
add_elevation_ramp(OUTPUT)
