"""Losses of LIX-Seg: pure functions (tested against identities) plus thin nn.Module wrappers.

One file per method: ce (L_H), dkd, dwld (L_L), kernels + cka + arfd (L_F), and the baselines
kd, cwd, at, mgd, halluc (modality hallucination) and aux_x (a teacher-free auxiliary X head). The distillers in
`lix_train.distillers` combine them.
"""

from lix_train.losses.arfd import ARFDConfig, ARFDLoss, arfd_loss, arfd_stage_loss, recalibrate, to_tokens
from lix_train.losses.at import ATLoss, at_loss, at_stage_loss, attention_map
from lix_train.losses.aux_x import AuxXConfig, AuxXHead, AuxXLoss, aux_x_loss, known_x_mask
from lix_train.losses.ce import PixelCrossEntropy, pixel_cross_entropy
from lix_train.losses.cka import center_gram, hsic, kernel_cka, linear_cka
from lix_train.losses.cwd import CWDLoss, cwd_loss
from lix_train.losses.dkd import DKDLoss, dkd_loss, dkd_terms, weighted_decoupled_loss
from lix_train.losses.dwld import DWLDConfig, DWLDLoss, DynamicWeightController, grad_reverse
from lix_train.losses.halluc import HallucConfig, HallucLoss, halluc_loss, halluc_stage_loss, hallucination_projector
from lix_train.losses.kd import KDLoss, kd_loss, kd_pixel_map
from lix_train.losses.kernels import gaussian_kernel, kernel_regression, laplace_kernel, median_bandwidth
from lix_train.losses.mgd import MGDConfig, MGDLoss, generation_block, mgd_loss, mgd_stage_loss, random_keep_mask

__all__ = [
    "ARFDConfig", "ARFDLoss", "arfd_loss", "arfd_stage_loss", "recalibrate", "to_tokens",
    "ATLoss", "at_loss", "at_stage_loss", "attention_map",
    "AuxXConfig", "AuxXHead", "AuxXLoss", "aux_x_loss", "known_x_mask",
    "PixelCrossEntropy", "pixel_cross_entropy",
    "center_gram", "hsic", "kernel_cka", "linear_cka",
    "CWDLoss", "cwd_loss",
    "DKDLoss", "dkd_loss", "dkd_terms", "weighted_decoupled_loss",
    "DWLDConfig", "DWLDLoss", "DynamicWeightController", "grad_reverse",
    "HallucConfig", "HallucLoss", "halluc_loss", "halluc_stage_loss", "hallucination_projector",
    "KDLoss", "kd_loss", "kd_pixel_map",
    "MGDConfig", "MGDLoss", "generation_block", "mgd_loss", "mgd_stage_loss", "random_keep_mask",
    "gaussian_kernel", "kernel_regression", "laplace_kernel", "median_bandwidth",
]
