#!/bin/sh
# The "build" of the example: a greeting from the pipeline's variables.
mkdir -p cache
count=$(cat cache/builds 2>/dev/null || echo 0)
count=$((count + 1))
echo "$count" > cache/builds
echo "$GREETING (build number $count on this machine)"
