#!/usr/bin/env bash
# Super-resolve a folder of IEEE GRSS Data Fusion Contest 2019 (US3D) tiles x4.
#
# Layout it expects (as the contest ships it):
#   $DFC/Track1-Truth/JAX_004_006_DSM.tif   (or *_AGL.tif)  -- the rasters to super-resolve
#   $DFC/Track1-RGB/JAX_004_006_RGB.tif                     -- their guides
# The default guide rule maps X_DSM.tif / X_AGL.tif to X_RGB.tif; --guide-dir says where the
# guides are. Usage:  DFC=/data/dfc2019 OUT=results ./examples/dfc_batch.sh [extra options]
#
# Rerun the same command after a crash, a kill or a SLURM time-out: finished outputs are
# skipped and interrupted rasters resume from their tile checkpoints. The run ends with a
# JSON report and a GeoJSON footprint index (results/batch-index.geojson) to open in QGIS.
set -euo pipefail

DFC=${DFC:?set DFC to the folder that holds Track1-Truth and Track1-RGB}
OUT=${OUT:-results}
# On a GPU machine: DEVICE=cuda. On a Dask cluster add: --scheduler tcp://HOST:8786
DEVICE=${DEVICE:-auto}

mmsr-geo batch "$DFC/Track1-Truth/*_DSM.tif" \
    --guide-dir "$DFC/Track1-RGB" \
    --scale 4 \
    --preset remote-sensing \
    --iterations 1000 \
    --device "$DEVICE" \
    --cog \
    -o "$OUT" \
    "$@"

echo "Report: $OUT/batch-report.json  Footprints: $OUT/batch-index.geojson"
