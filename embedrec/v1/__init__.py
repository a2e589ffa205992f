"""Generated gRPC stubs of the embedrec.v1 contract (scripts/generate_protos.py; do not edit)."""
