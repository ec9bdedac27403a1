#!/bin/sh
# Build a serving virtualenv at /opt/venv from one hashed lock file (Dockerfile build stages).
# Then drop what serving never needs: pip and setuptools, the test suites the packages ship,
# uvloop's 10 MB of debug symbols (only uvloop: the patched libraries of the numpy and scipy
# wheels break when stripped), ONNX Runtime's C library (its Python module carries its own copy)
# and its model-conversion tools. numpy stays whole: scipy's `from numpy import *` needs f2py.
set -eu
python -m venv /opt/venv
/opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: -r "$1"
/opt/venv/bin/pip uninstall --yes pip setuptools
site=/opt/venv/lib/python3.11/site-packages
find /opt/venv -depth -type d -name tests -exec rm -rf {} +
strip --strip-debug "$site"/uvloop/*.so
rm -rf "$site"/onnxruntime/capi/libonnxruntime.so.* "$site"/onnxruntime/tools \
    "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
    "$site"/onnxruntime/datasets
