"""Logit distillation losses: pure ``(student_logits, teacher_logits[, target])`` functions and
thin ``nn.Module`` wrappers registered by name (see :func:`graphspike_kd.common.get_loss`).

Conventions: logits are ``[N, C]``; losses sum over classes and average over the batch; the math runs
in fp32 (fp64 inputs stay fp64) whatever the input dtype; bad input raises ``ValueError`` naming the
shapes or values at fault.
"""

from graphspike_kd.common.losses.adaspec import (
    AdaSPECLoss,
    TokenKDLoss,
    acceptance_rate,
    adaspec_loss,
    adaspec_select,
    adaspec_terms,
    block_efficiency,
    shift_for_causal_lm,
    speculative_decoding_acceptance,
    token_kd_loss,
    token_kl,
)
from graphspike_kd.common.losses.angular import (
    AngularKDLoss,
    AngularViewHeads,
    angular_ensemble_target,
    angular_terms,
    inter_angle_terms,
    intra_angle_loss,
)
from graphspike_kd.common.losses.dist import DISTLoss, dist_loss, dist_terms, pearson_correlation
from graphspike_kd.common.losses.dkd import DKDLoss, dkd_loss, dkd_terms
from graphspike_kd.common.losses.kd import KDLoss, kd_loss
from graphspike_kd.common.losses.pld import PLDLoss, pld_loss, teacher_optimal_permutation
from graphspike_kd.common.losses.sdpgo import (
    PredictionHistory,
    SDPGOLoss,
    proximal_gradient_weights,
    sdpgo_loss,
    sdpgo_terms,
)
from graphspike_kd.common.losses.soft_target import soft_target_loss

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
    "soft_target_loss",
    "teacher_optimal_permutation",
    # common part 2
    "AdaSPECLoss",
    "AngularKDLoss",
    "AngularViewHeads",
    "PredictionHistory",
    "SDPGOLoss",
    "TokenKDLoss",
    "acceptance_rate",
    "adaspec_loss",
    "adaspec_select",
    "adaspec_terms",
    "angular_ensemble_target",
    "angular_terms",
    "block_efficiency",
    "inter_angle_terms",
    "intra_angle_loss",
    "proximal_gradient_weights",
    "sdpgo_loss",
    "sdpgo_terms",
    "shift_for_causal_lm",
    "speculative_decoding_acceptance",
    "token_kd_loss",
    "token_kl",
]
