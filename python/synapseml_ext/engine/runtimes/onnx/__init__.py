"""runtime='onnx': ONNX Runtime on the CPU, fp32 (:mod:`.backend`); the graph it runs is
exported by :mod:`synapseml_ext.engine.runtimes.onnx_export`, shared with TensorRT."""
