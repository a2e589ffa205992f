"""The defaults of `export-model --quantize int8`, importable without the export's libraries
(the CLI's help text names them)."""

# MatMul groups an export may quantise per token or keep in fp32, by node name in optimum's
# exports (BERT, RoBERTa, XLM-R, ELECTRA: layer.N/output/dense; DistilBERT: layer.N/ffn/lin2).
MATMUL_GROUPS = {
    "ffn-output": r"/layer\.\d+/(output/dense|ffn/lin2)/MatMul$",
    "first-ffn-output": r"/layer\.0/(output/dense|ffn/lin2)/MatMul$",
}

# Catalog texts read for calibration and for the agreement sample (a seeded sample of the file).
CATALOG_SAMPLE = 2000
# The default --min-agreement: the export fails when int8 queries on fp32 items return less of
# fp32's top-10 (a reranker: of its top-5). A floor against a broken export, well below what the
# default recipe measures on real catalogs (docs/int8.md); set your own from your catalog.
DEFAULT_MIN_AGREEMENT = 0.8
# The default recipe, the best measured point of BENCHMARKS.md's int8 frontier on MiniLM:
# SmoothQuant-style scaling at alpha 0.7 (0.5 and below hurt) and a scale per token for the FFN
# output projections (the most sensitive MatMuls, per-layer measurement: a few tokens' outliers
# there leave the rest few int8 steps with one scale per tensor); nothing kept in fp32.
DEFAULT_SMOOTHING: float | None = 0.7
DEFAULT_PER_TOKEN: tuple[str, ...] = ("ffn-output",)
DEFAULT_KEEP_FP32: tuple[str, ...] = ()
