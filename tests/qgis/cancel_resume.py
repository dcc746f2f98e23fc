"""Cancel a run of mmsrgeo:upscale in-process, then rerun it; print what happened as JSON.

``/usr/bin/python3 cancel_resume.py SOURCE GUIDE FOLDER``: with the same parameters (an AOI
from a memory layer in EPSG:3857 included, so the rerun must re-export it identically),
1. runs to FOLDER/ref.tif, which already exists (the algorithm replaces a destination);
2. runs to FOLDER/out.tif and cancels once progress passes 20 %, which needs one finished
   tile; records the tool's process (a child of this one) before and after;
3. reruns to FOLDER/out.tif to completion.
The test compares ref.tif and out.tif.
"""

import json
import os
import re
import sys
from pathlib import Path

from bootstrap import Qgis

CANCEL_AT = 20.0


def children():
    """PIDs of this process's children (the algorithm starts the tool as one)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(entry))
    return found


def aoi_layer():
    """A memory layer in Web Mercator: the source's extent (EPSG:32633, 240 m square) less
    15 m on each side, so the algorithm must reproject it."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsVectorLayer,
    )

    geometry = QgsGeometry.fromWkt(
        "POLYGON ((500015 3999985, 500225 3999985, 500225 3999775, 500015 3999775, 500015 3999985))"
    )
    utm, mercator = (QgsCoordinateReferenceSystem(f"EPSG:{c}") for c in (32633, 3857))
    geometry.transform(QgsCoordinateTransform(utm, mercator, QgsProject.instance()))
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(geometry)
    layer.dataProvider().addFeatures([feature])
    return layer


def main(source, guide, folder):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        """Keeps the messages; cancels once progress reaches ``cancel_at``."""

        def __init__(self, cancel_at=None):
            super().__init__()
            self.cancel_at = cancel_at
            self.messages = []
            self.tool = []

        def setProgress(self, progress):
            super().setProgress(progress)
            if self.cancel_at is not None and progress >= self.cancel_at and not self.tool:
                self.tool = children()
                self.cancel()

        def pushInfo(self, info):
            super().pushInfo(info)
            self.messages.append(info)

    aoi = aoi_layer()
    parameters = {
        "INPUT": source,
        "BAND": 1,
        "GUIDE": guide,
        "SCALE": 2,
        "ITERATIONS": 60,
        "FEATURES": 4,
        "DEVICE": 1,  # cpu
        "TILE_SIZE": 12,
        "OVERLAP": 2,
        "AOI": aoi,
    }
    ref = os.path.join(folder, "ref.tif")
    out = os.path.join(folder, "out.tif")
    Path(ref).write_bytes(b"an earlier result")
    processing.run("mmsrgeo:upscale", {**parameters, "OUTPUT": ref}, feedback=Recorder())

    canceled = Recorder(cancel_at=CANCEL_AT)
    try:
        processing.run("mmsrgeo:upscale", {**parameters, "OUTPUT": out}, feedback=canceled)
        error = None
    except QgsProcessingException as exc:
        error = str(exc)
    work = Path(out + ".mmsr-work")
    report = {
        "cancel_error": error,
        "tool_pids": canceled.tool,
        "alive_after_cancel": [pid for pid in canceled.tool if Path(f"/proc/{pid}").exists()],
        "output_after_cancel": os.path.exists(out),
        "checkpoints_after_cancel": sorted(p.name for p in work.glob("tile_*.npz")),
    }
    rerun = Recorder()
    result = processing.run("mmsrgeo:upscale", {**parameters, "OUTPUT": out}, feedback=rerun)
    resumed = [re.search(r"(\d+) resumed", m) for m in rerun.messages]
    report.update(
        result=result["OUTPUT"],
        resumed=[int(m.group(1)) for m in resumed if m],
        work_left=work.exists(),
    )
    del aoi, canceled, rerun
    return report


if __name__ == "__main__":
    with Qgis(processing=True):
        print(json.dumps(main(*sys.argv[1:4])))
