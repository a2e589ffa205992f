"""Write data/demo_log.jsonl: a made-up interaction log over data/demo_catalog.jsonl, for trying
`embedrec evaluate` (docs/evaluate.md).

Deterministic (seeded). Each shopper is after one or two products of one category and looks at
their variants (standard, premium, value; mostly in one language), rates what they look at,
sometimes types a search query, and sometimes dislikes an item of another category. So the item
a shopper turns to last is related to what they did before by product, category and language:
the relations an embedding of the item texts can find. A few rows are deliberately bad (a
malformed line, an item the catalog lacks, shoppers with one interaction) to show how the
evaluation counts them.
"""

from __future__ import annotations

import datetime
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

SHOPPERS = 400
START = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.UTC)


def catalog(path: Path) -> list[dict[str, str]]:
    """The demo catalog's rows."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shopper_rows(shopper: int, rng: random.Random, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One shopper's rows, oldest first."""
    by_product: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        stem = row["id"].rsplit("-", 1)[0].removesuffix("-premium").removesuffix("-value")
        by_product[stem].append(row)
    categories = sorted({row["category"] for row in rows})
    category = rng.choice(categories)
    products = [stem for stem, items in by_product.items() if items[0]["category"] == category]
    wanted = rng.sample(products, min(len(products), rng.choice((1, 1, 2))))
    language = "zh" if rng.random() < 0.3 else "en"
    pool = [item for stem in wanted for item in by_product[stem] if item["lang"] == language or rng.random() < 0.2]
    rng.shuffle(pool)
    moment = START + datetime.timedelta(hours=shopper * 3)
    user = f"shopper-{shopper:03d}"
    found: list[dict[str, Any]] = []
    if rng.random() < 0.5:
        query = pool[0]["text"].split(",")[0].split("，")[0]
        found.append({"user": user, "query": query, "timestamp": moment.isoformat()})
    for item in pool[: rng.randint(2, 5)]:
        moment += datetime.timedelta(minutes=rng.randint(2, 90))
        found.append(
            {"user": user, "item": item["id"], "rating": rng.choice((3, 4, 4, 5, 5)), "timestamp": moment.isoformat()}
        )
    if rng.random() < 0.3:
        other = rng.choice([row for row in rows if row["category"] != category])
        found.insert(
            1,
            {
                "user": user,
                "item": other["id"],
                "rating": 1,
                "timestamp": (START + datetime.timedelta(hours=shopper * 3, minutes=1)).isoformat(),
            },
        )
    return found


def main() -> None:
    """Write the log next to this script."""
    here = Path(__file__).parent
    rows = catalog(here / "demo_catalog.jsonl")
    rng = random.Random(20260105)
    lines = [
        json.dumps(row, ensure_ascii=False) for shopper in range(SHOPPERS) for row in shopper_rows(shopper, rng, rows)
    ]
    lines += [
        '{"user": "shopper-900", "item": "no-such-product-en", "rating": 5, "timestamp": "2026-03-01T10:00:00+00:00"}',
        '{"user": "shopper-901", "item": "ac-inverter-en", "rating": 5, "timestamp": "2026-03-01T10:00:00+00:00"}',
        '{"user": "shopper-902", "item": "ac-portable-en", "rating": "five stars"}',
        "{this line is not JSON",
    ]
    path = here / "demo_log.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}: {len(lines)} rows")


if __name__ == "__main__":
    main()
