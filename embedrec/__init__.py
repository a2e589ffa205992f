"""embedrec: BERT embeddings and exact embedding-similarity recommendations over gRPC.

`embedrec.v1` holds the stubs generated from protos/ (see scripts/generate_protos.py);
`embedrec.cli` is the `embedrec` command.
"""

__version__ = "0.1.0"
