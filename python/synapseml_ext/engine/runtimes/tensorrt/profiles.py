"""TensorRT optimization profiles and how batches are routed to them (pure, no tensorrt).

An engine built with dynamic shapes serves only the shapes inside its profiles. The profiles
here cover batch 1..max rows and sequence 1..maxSeqLength in a few length buckets, so short
texts run on kernels tuned for short shapes; :func:`split_for_profiles` cuts a padded batch
into pieces that each fit one profile. Rows are only ever split, never truncated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from synapseml_ext.engine.batching import round_up

# Padded tokens per engine call the profiles are built for (activations of e5-large at this
# size take a few GiB in fp16).
TRT_MAX_TOKENS = 32768
TRT_MAX_ROWS = 1024
MAX_BUCKETS = 4
SMALLEST_BUCKET = 64
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class Profile:
    """Sequence ``min_seq..max_seq`` with ``1..max_rows`` rows, tuned at ``opt``."""

    min_seq: int
    opt_seq: int
    max_seq: int
    opt_rows: int
    max_rows: int

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """``(min, opt, max)`` (rows, seq) shapes for ``IOptimizationProfile.set_shape``."""
        return (1, self.min_seq), (self.opt_rows, self.opt_seq), (self.max_rows, self.max_seq)

    def to_dict(self) -> dict:
        return asdict(self)


def bucket_limits(max_seq_length: int, max_buckets: int = MAX_BUCKETS,
                  smallest: int = SMALLEST_BUCKET, pad_multiple: int = PAD_MULTIPLE) -> list[int]:
    """Upper sequence bounds, ascending: ``max_seq_length`` (rounded up to the padding
    multiple, since batches are padded to it), then halvings down to ``smallest``."""
    if max_seq_length < 1:
        raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
    top = round_up(max_seq_length, pad_multiple)
    limits = [top]
    while len(limits) < max_buckets:
        below = round_up(limits[-1] // 2, pad_multiple)
        if below < smallest or below >= limits[-1]:
            break
        limits.append(below)
    return sorted(limits)


def plan_profiles(max_seq_length: int, max_tokens: int = TRT_MAX_TOKENS,
                  max_rows: int = TRT_MAX_ROWS, max_buckets: int = MAX_BUCKETS) -> tuple[Profile, ...]:
    """One profile per length bucket; each allows as many rows as ``max_tokens`` allows at
    its longest sequence (at least 1, at most ``max_rows``)."""
    profiles = []
    low = 1
    for high in bucket_limits(max_seq_length, max_buckets):
        rows = max(1, min(max_rows, max_tokens // high))
        opt_seq = max(low, round_up((low + high) // 2, PAD_MULTIPLE))
        profiles.append(Profile(min_seq=low, opt_seq=min(opt_seq, high), max_seq=high,
                                opt_rows=rows, max_rows=rows))
        low = high + 1
    return tuple(profiles)


def route(width: int, profiles: tuple[Profile, ...]) -> int:
    """Index of the profile for a batch padded to ``width``: the smallest bucket it fits."""
    for i, p in enumerate(profiles):
        if p.min_seq <= width <= p.max_seq:
            return i
    raise ValueError(
        f"a batch of sequence length {width} fits no TensorRT profile (longest "
        f"{profiles[-1].max_seq}); the encoder truncates to maxSeqLength, so this is a bug")


def split_for_profiles(rows: int, width: int,
                       profiles: tuple[Profile, ...]) -> list[tuple[int, int, int]]:
    """``(profile_index, start_row, stop_row)`` pieces covering ``rows`` rows of ``width``
    tokens, each within its profile's row limit, in row order."""
    index = route(width, profiles)
    step = profiles[index].max_rows
    return [(index, start, min(start + step, rows)) for start in range(0, rows, step)]
