"""`embedrec evaluate`: how good the recommendations are, measured on interaction logs.

Reads a log (interactions), splits it (split), builds each user's profile from the history part
(profiles), asks running servers through the real client (served) and runs baselines (baselines)
on the same users, scores them with ir-measures (metrics), compares them with paired bootstrap
intervals (compare) and reports (report, results). Needs the `evaluate` extra.

    from embedrec.client.evaluate import EvaluationConfig, ServerTarget, evaluate
    result = evaluate(Path("log.jsonl"), [ServerTarget("fp32", "127.0.0.1:50051")])
    print(result.target("fp32").metrics["NDCG@10"])
"""

from embedrec.client.evaluate.profiles import Feedback
from embedrec.client.evaluate.results import EvaluationResult, TargetResult
from embedrec.client.evaluate.run import EvaluationConfig, evaluate
from embedrec.client.evaluate.served import EvaluationError, ServerTarget
from embedrec.client.evaluate.split import SplitSpec

__all__ = [
    "EvaluationConfig",
    "EvaluationError",
    "EvaluationResult",
    "Feedback",
    "ServerTarget",
    "SplitSpec",
    "TargetResult",
    "evaluate",
]
