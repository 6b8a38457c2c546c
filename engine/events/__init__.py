"""What a run reports: the typed events, the JSONL event log (plus TensorBoard), and following
a log another process writes.
"""
