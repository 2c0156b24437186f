"""lix_seg: ROS 2 glue (parameters, QoS, message conversion, threading, diagnostics) over lix_deploy.runtime.

Nothing here imports torch; inference is `lix_deploy.runtime.Segmenter` (ONNX Runtime or TensorRT).
Modules: segmenter (the node), lifecycle (managed variant), pipeline (topics <-> inference thread),
conversions (Image <-> numpy), latest_frame, worker, parameters, diagnostics, segment_bag (bag CLI).
"""

__version__ = "0.1.0"
