"""Export: a Hugging Face BERT-family model → validated ONNX, and a catalog → item matrix.

Heavy libraries (torch, transformers, optimum) are imported inside the functions that need
them, so `embedrec --help` stays fast.
"""
