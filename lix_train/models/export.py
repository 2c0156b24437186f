"""What an exported student computes: logits only, or the label map, without the training features.

`torch.onnx.export(..., dynamo=True)` traces the wrapped model; the deployment tools export
`ExportWrapper(student, output="labels")` so the runtime copies H x W bytes instead of C x H x W
floats. `export_dynamic_shapes` declares batch, height and width dynamic, the spatial sizes as
multiples of 32 (the constraint the encoder imposes).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SIZE_DIVISOR

OUTPUTS = ("logits", "labels", "both")
LABEL_DTYPES = {"int32": torch.int32, "uint8": torch.uint8, "int64": torch.int64}


class ExportWrapper(nn.Module):
    """Wrap a `(logits, features)` model for export: forward(image) -> logits, labels or both.

    The wrapper puts itself (and so the model) in eval mode: an export traces inference, with
    BatchNorm running statistics and no dropout.

    Args:
        model: a student (or any module whose forward(image) returns (logits, features)).
        output: "logits" ([B, C, H, W] float), "labels" (argmax, [B, H, W]) or "both" (logits, labels).
        label_dtype: "int32", "uint8" (needs <= 256 classes) or "int64".
    """

    def __init__(self, model: nn.Module, output: str = "logits", label_dtype: str = "int32") -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r} is not one of {', '.join(OUTPUTS)}")
        if label_dtype not in LABEL_DTYPES:
            raise ValueError(f"label_dtype={label_dtype!r} is not one of {', '.join(LABEL_DTYPES)}")
        num_classes = getattr(model, "num_classes", None)
        if label_dtype == "uint8" and num_classes is not None and num_classes > 256:
            raise ValueError(f"label_dtype='uint8' holds at most 256 classes, the model has {num_classes}")
        self.model = model
        self.output = output
        self.label_dtype = LABEL_DTYPES[label_dtype]
        self.eval()

    def forward(self, image: torch.Tensor):
        logits, _ = self.model(image)
        if self.output == "logits":
            return logits
        labels = logits.argmax(dim=1).to(self.label_dtype)
        return labels if self.output == "labels" else (logits, labels)


def export_dynamic_shapes(batch: bool = True, size: bool = True, max_batch: int = 64) -> dict:
    """`dynamic_shapes=` for torch.onnx.export(wrapper, (image,), dynamo=True): batch and/or H, W dynamic."""
    dims: dict[int, object] = {}
    if batch:
        dims[0] = torch.export.Dim("batch", min=1, max=max_batch)
    if size:
        dims[2] = SIZE_DIVISOR * torch.export.Dim("height_blocks", min=1, max=256)
        dims[3] = SIZE_DIVISOR * torch.export.Dim("width_blocks", min=1, max=256)
    return {"image": dims}
