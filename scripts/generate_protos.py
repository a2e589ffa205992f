"""Regenerate the Python stubs of protos/ (the only way they are written; never edit them).

Usage: python scripts/generate_protos.py [--out DIR]

Writes embedrec/v1/embedrec_pb2.py, embedrec_pb2_grpc.py and embedrec_pb2.pyi under DIR
(default: the repository root). Generating with -Iprotos makes the grpc module import its
messages as `from embedrec.v1 import embedrec_pb2`, the package path the server and the client
share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILES = ["embedrec/v1/embedrec.proto"]


def generate(out_root: Path) -> list[Path]:
    """Run protoc on PROTO_FILES into `out_root`; return the files written.

    Raises RuntimeError when protoc fails.
    """
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--pyi_out={out_root}",
        *(str(PROTO_ROOT / name) for name in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = []
    for name in PROTO_FILES:
        stem = out_root / name.removesuffix(".proto")
        written += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2_grpc.py"), Path(f"{stem}_pb2.pyi")]
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root")
    arguments = parser.parse_args()
    for path in generate(arguments.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
