"""The deploy stage: ONNX export, predict, the HTTP service and its page (web/), benchmarks, the model card. The torch-free runtime apps embed stays at ``llkd_edge.runtime``."""
