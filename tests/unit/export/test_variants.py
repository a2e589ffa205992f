"""Export variants (fp32, O1-O3, int8, fp16): each one's default agreement floor."""

from __future__ import annotations


class TestVariants:
    def test_each_variant_has_a_documented_default_floor(self) -> None:
        from embedrec.export.variants import MIN_COSINE

        assert MIN_COSINE["fp32"] == MIN_COSINE["O1"] == MIN_COSINE["O2"] == 0.9999
        assert MIN_COSINE["O3"] < 0.9999 and MIN_COSINE["int8"] < MIN_COSINE["O3"]
