"""runtime='cuda': PyTorch on the GPU (:mod:`.backend`) and its token budget per batch,
learnt from memory use (:mod:`.budget`, no torch)."""
