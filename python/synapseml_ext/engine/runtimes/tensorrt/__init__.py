"""runtime='tensorrt': TensorRT engines built from the exported ONNX graph (:mod:`.backend`),
their shape profiles (:mod:`.profiles`) and their on-disk cache (:mod:`.engine_cache`)."""
