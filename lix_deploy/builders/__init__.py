"""Artefact builders behind `python -m lix_deploy.build_engine` (lix_train/engine/ is the training loop).

candidate          build_candidate(request, watch, report): what build_engine asks each builder for
onnxruntime_build  FP32 optimisation, INT8 Q/DQ quantisation (CPU, testable in CI), FP16 conversion
tensorrt_plan      the TensorRT 10/11 version gate (pure): typing, flags and ONNX preparation per precision
tensorrt_build     TensorRT 10/11 engines: ONNX preparation, flags, profiles, timing cache, inspection
cache              engine cache keys (TensorRT version, GPU, ONNX hash, precision, shapes)
inspect            IEngineInspector JSON -> per-layer precision histogram -> pass / fail
report             the JSON build report written next to each artefact
atomic             temp-file-and-rename writes of bytes / JSON (no reader ever sees half a file)

Every TensorRT / ModelOpt import is lazy: importing this package needs neither.
"""
