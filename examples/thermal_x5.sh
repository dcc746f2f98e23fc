#!/usr/bin/env bash
# Thermal super-resolution x5 with a multispectral guide, e.g. a 100 m land-surface
# temperature band and a 20 m NIR-R-G-B composite of the same scene (any CRS/grid: the guide
# is warped onto the 20 m output grid tile by tile).
#
# Usage: ./examples/thermal_x5.sh LST.tif RGBN.tif [extra options]
# Writes LST_x5.tif (Cloud Optimized GeoTIFF, ZSTD) and LST_x5-preview.png beside LST.tif.
set -euo pipefail

THERMAL=${1:?usage: thermal_x5.sh THERMAL.tif GUIDE.tif [options]}
GUIDE=${2:?usage: thermal_x5.sh THERMAL.tif GUIDE.tif [options]}
shift 2
OUTPUT="${THERMAL%.*}_x5.tif"

# --preset remote-sensing: 5x5 / 3x3 filters as in the paper's thermal experiment (section 4.4)
# --guide-bands 1,2,3,4: use all four guide bands (NIR helps on vegetation and water)
# --tile-size 40: 40 source pixels = 200 output pixels per tile
mmsr-geo upscale "$THERMAL" \
    --guide "$GUIDE" \
    --scale 5 \
    --guide-bands 1,2,3,4 \
    --preset remote-sensing \
    --tile-size 40 --overlap 8 \
    --cog --co COMPRESS=ZSTD \
    --preview "${OUTPUT%.tif}-preview.png" \
    -o "$OUTPUT" \
    "$@"
