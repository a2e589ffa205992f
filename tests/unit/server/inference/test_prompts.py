"""Prompt choice from a model's manifest: no name means the default, empty means none; query and
document prompts follow sentence-transformers' names. (Exported and served:
tests/e2e/test_prompts.py.)"""

from __future__ import annotations

import pytest

from embedrec.server.errors import InvalidArgument as CoreInvalidArgument
from embedrec.server.inference.prompts import document_prompt_name, prompt_text, query_prompt_name
from embedrec.server.manifest import ModelManifest


def manifest_with(prompts: dict[str, str], default: str = "") -> ModelManifest:
    return ModelManifest(
        "m", "", 8, 16, "cls", True, "", 17, (), 0, {}, {}, {}, prompts=prompts, default_prompt_name=default
    )


class TestPromptChoice:
    def test_no_name_means_the_models_default_and_empty_means_none(self) -> None:
        manifest = manifest_with({"query": "q: ", "document": "d: "}, default="query")
        assert prompt_text(manifest, None) == "q: "
        assert prompt_text(manifest, "") == ""
        assert prompt_text(manifest_with({}), None) == ""
        with pytest.raises(CoreInvalidArgument, match="it has: none"):
            prompt_text(manifest_with({}), "query")

    def test_queries_and_documents_follow_sentence_transformers_names(self) -> None:
        assert query_prompt_name(manifest_with({"query": "q", "document": "d"})) == "query"
        assert document_prompt_name(manifest_with({"passage": "p", "corpus": "c"})) == "passage"
        assert document_prompt_name(manifest_with({"document": "d", "passage": "p"})) == "document"
        assert document_prompt_name(manifest_with({"query": "q"}, default="query")) == "query"
        assert query_prompt_name(manifest_with({})) == ""
