"""Logit distillation losses: pure ``(student_logits, teacher_logits[, target])`` functions and
thin ``nn.Module`` wrappers registered by name (see :func:`graphspike_kd.common.get_loss`).

Conventions: logits are ``[N, C]``; losses sum over classes and average over the batch; the math runs
in fp32 (fp64 inputs stay fp64) whatever the input dtype; bad input raises ``ValueError`` naming the
shapes or values at fault.
"""

from graphspike_kd.common.losses.dist import DISTLoss, dist_loss, dist_terms, pearson_correlation
from graphspike_kd.common.losses.dkd import DKDLoss, dkd_loss, dkd_terms
from graphspike_kd.common.losses.kd import KDLoss, kd_loss
from graphspike_kd.common.losses.pld import PLDLoss, pld_loss, teacher_optimal_permutation

__all__ = [
    "DISTLoss",
    "DKDLoss",
    "KDLoss",
    "PLDLoss",
    "dist_loss",
    "dist_terms",
    "dkd_loss",
    "dkd_terms",
    "kd_loss",
    "pearson_correlation",
    "pld_loss",
    "teacher_optimal_permutation",
]
