"""The defaults of `export-model --quantize int8`, importable without the export's libraries
(the CLI's help text names them)."""

# Catalog texts read for calibration and for the agreement sample (a seeded sample of the file).
CATALOG_SAMPLE = 2000
# The default --min-agreement: the export fails when int8 queries on fp32 items return less of
# fp32's top-10 (a reranker: of its top-5). A floor against a broken export, well below what the
# default recipe measures on real catalogs (docs/int8.md); set your own from your catalog.
DEFAULT_MIN_AGREEMENT = 0.8
# The default recipe, the best measured point of BENCHMARKS.md's int8 frontier on MiniLM:
# SmoothQuant-style scaling at alpha 0.7 (0.5 and below hurt) and the first layer's FFN output
# projection (by far the most sensitive MatMul, per-layer measurement) kept in fp32.
DEFAULT_SMOOTHING: float | None = 0.7
DEFAULT_KEEP_FP32: tuple[str, ...] = ("first-ffn-output",)
