#!/usr/bin/env bash
# Generates the Python stubs of ../../proto into ./gen with grpcio-tools (which ships the
# google/protobuf well-known types the protos import). Nothing generated is committed.
# Needs: python3 -m pip install grpcio grpcio-tools grpcio-status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
rm -rf "$here/gen"
mkdir -p "$here/gen"
python3 -m grpc_tools.protoc -I "$proto" --python_out="$here/gen" --grpc_python_out="$here/gen" \
  "$proto"/opconnect/v1/*.proto
echo "stubs in $here/gen"
