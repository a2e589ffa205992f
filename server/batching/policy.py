"""The knobs of batch formation and admission: the `Batching` settings group of `embedrec serve`.

Each field is a flag of the same name (`--max-batch-tokens`); the inference batcher takes this
object as it is. The engine counts a neutral cost per item: for texts it is the token count, so
`max_batch_tokens` is a padded-token budget and `max_queued_texts` the queue bound; the search
batcher builds its own policy where every search costs 1 (`SearchSettings.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from embedrec.server.config import check_minimums, setting


@dataclass(frozen=True)
class BatchPolicy:
    """Batching: how queued texts form inference batches"""

    max_batch_size: int = setting(32, "most texts in one inference batch (32 is near the CPU optimum here)", minimum=1)
    max_batch_tokens: int = setting(
        1024,
        "padded-token budget of a batch: texts x longest text. On CPU throughput per token is flat from 512 "
        "tokens up, so a small budget keeps long-text batches short and well grouped; raise it on a GPU",
        minimum=1,
    )
    max_wait_ms: float = setting(
        0.0,
        "how long a partial batch may wait for more texts while the runtime is "
        "idle; 0 runs at once (lowest latency; batches still form under load)",
        minimum=0,
    )
    max_queued_texts: int = setting(
        256,
        "texts waiting for inference before new calls get RESOURCE_EXHAUSTED; 256 is about 2 s of queue at "
        "this machine's CPU throughput: deeper queues only turn overload into latency",
        minimum=1,
    )
    length_grouping: bool = setting(
        True, "group queued texts of similar token length into a batch (less padding); false: plain FIFO"
    )
    min_batch_efficiency: float = setting(
        0.8,
        "a text joins a batch only while real/padded tokens stays at or above this; on CPU padding costs "
        "as much as real tokens and batching long texts gains nothing, so 0.8; on a GPU 0.5 or lower",
        minimum=0.0,
    )
    batch_lookahead: int = setting(
        64,
        "oldest queued texts considered when grouping by length; bounds how far a text can be overtaken",
        minimum=1,
    )

    def __post_init__(self) -> None:
        check_minimums(self)
        if self.min_batch_efficiency > 1.0:
            raise ValueError(f"--min-batch-efficiency must be at most 1, got {self.min_batch_efficiency}")
