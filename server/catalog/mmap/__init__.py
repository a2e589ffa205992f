"""The memory-mapped item store: an item directory's matrix, int8 codes, exact scan, ids, hidden set, texts."""
