"""The dataset figures sd-scripts writes into a LoRA's metadata (ss_bucket_info, ss_tag_frequency)."""
from __future__ import annotations

from engine.data.scan import ScannedDataset


def bucket_info(scanned: ScannedDataset) -> dict:
    """sd-scripts' ss_bucket_info shape: buckets with resolution and count, mean aspect error."""
    counts: dict[tuple[int, int], int] = {}
    errors = []
    for item in scanned.items:
        counts[item.bucket] = counts.get(item.bucket, 0) + item.num_repeats
        errors.append(abs(item.bucket[0] / item.bucket[1] - item.size[0] / item.size[1]))
    buckets = {str(n): {"resolution": list(reso), "count": count}
               for n, (reso, count) in enumerate(sorted(counts.items()))}
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}


def tag_frequency(scanned: ScannedDataset) -> dict[str, dict[str, int]]:
    """Per subset folder, how many images carry each comma-separated tag (ss_tag_frequency)."""
    sources = {s.subset_index: s.source for s in scanned.subsets}
    out: dict[str, dict[str, int]] = {}
    for item in scanned.items:
        counts = out.setdefault(sources[item.subset_index].name, {})
        for tag in item.caption.split(","):
            tag = tag.strip()
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return out
