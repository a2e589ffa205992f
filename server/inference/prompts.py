"""Which of a model's prompts a text is embedded with.

Instruction-tuned models (E5, BGE, GTE, ...) expect a prompt before the text, different for
queries and for the documents searched ("query: ", "passage: "). The export records the model's
prompts in its manifest (sentence-transformers `prompts` and `default_prompt_name`, or given at
export); a prompt is prepended to the text before tokenising, as sentence-transformers does, so
its tokens count against the model's max length.

The names follow sentence-transformers: Embed uses the prompt a request names, else the model's
default; Recommend's texts are queries ("query", else the default); items are documents
("document", "passage" or "corpus", else the default), chosen by `embedrec export-items`.
"""

from __future__ import annotations

from embedrec.server.errors import InvalidArgument, quoted
from embedrec.server.manifest import ModelManifest

QUERY_PROMPT_NAMES = ("query",)
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def prompt_text(manifest: ModelManifest, prompt_name: str | None, *, field: str = "prompt_name") -> str:
    """The text of the prompt named `prompt_name`: None means the model's default (possibly none),
    "" means none. Raises InvalidArgument for a name the model does not have."""
    name = manifest.default_prompt_name if prompt_name is None else prompt_name
    if not name:
        return ""
    if name not in manifest.prompts:
        known = ", ".join(sorted(manifest.prompts)) or "none"
        raise InvalidArgument(
            f"{field} {quoted(name)} is not one of the model's prompts (it has: {known})", field=field
        )
    return manifest.prompts[name]


def query_prompt_name(manifest: ModelManifest) -> str:
    """The prompt for query texts (Recommend's texts): "query" when the model has it, else its
    default ("" for none)."""
    return _first_of(manifest, QUERY_PROMPT_NAMES)


def document_prompt_name(manifest: ModelManifest) -> str:
    """The prompt for documents (catalog items): "document", "passage" or "corpus" when the model
    has one, else its default ("" for none)."""
    return _first_of(manifest, DOCUMENT_PROMPT_NAMES)


def with_prompt(prompt: str, texts: list[str]) -> list[str]:
    """`texts` with `prompt` in front of each (the same list when there is no prompt)."""
    return [prompt + text for text in texts] if prompt else texts


def _first_of(manifest: ModelManifest, names: tuple[str, ...]) -> str:
    return next((name for name in names if name in manifest.prompts), manifest.default_prompt_name)
