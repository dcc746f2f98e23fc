"""QGIS plugin entry point: QGIS (and ``qgis_process``, which passes ``iface=None``) calls
``classFactory``. The import stays inside it, so that the package's QGIS-free modules
(:mod:`.command`, :mod:`.runner`) import where QGIS does not, as in the tests."""


def classFactory(iface):
    from .plugin import MmsrGeoPlugin

    return MmsrGeoPlugin()
