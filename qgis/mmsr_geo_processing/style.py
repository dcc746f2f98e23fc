"""The uncertainty band's style: a colour ramp from 0 (trust) to its 98th percentile.

Saved as ``<band>.qml`` beside the GeoTIFF, which QGIS applies whenever the file is opened
(from Processing's results, the browser or a project), not only in this session.
"""

from __future__ import annotations

import os

from qgis.core import (
    QgsColorRampShader,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)

RAMP = "Magma"
"""Dark where the output can be trusted, bright where it cannot (perceptually uniform)."""


def style_uncertainty(path: str) -> str:
    """Give the band at ``path`` its default style; returns the ``.qml`` written."""
    layer = QgsRasterLayer(path, "uncertainty")
    if not layer.isValid():
        raise ValueError(f"QGIS cannot open the uncertainty band {path}")
    _, high = layer.dataProvider().cumulativeCut(1, 0.02, 0.98)
    ramp = QgsColorRampShader(0.0, high)
    ramp.setSourceColorRamp(QgsStyle.defaultStyle().colorRamp(RAMP))
    ramp.classifyColorRamp(5, -1)  # five classes over [0, high] (not over the data)
    shader = QgsRasterShader(0.0, high)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    qml = os.path.splitext(path)[0] + ".qml"
    message, saved = layer.saveNamedStyle(qml)
    if not saved:
        raise OSError(f"could not save the uncertainty band's style to {qml}: {message}")
    return qml
