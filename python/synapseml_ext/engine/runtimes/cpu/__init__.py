"""runtime='cpu': PyTorch on the CPU, fp32 or bf16 (:mod:`.backend`)."""
