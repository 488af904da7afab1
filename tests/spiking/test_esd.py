import math

import pytest
import torch
import torch.nn.functional as F

from graphspike_kd.spiking.esd import DeepConv, ESDNet, esd_loss, esd_step_loss, reliable_teacher
from graphspike_kd.spiking.models import SpikingVGG, resnet18

# 3 exits, 3 samples, 3 classes; labels 0, 1, 2
Z = torch.tensor([
    [[3.0, 0.0, 0.0], [2.0, 0.0, 0.5], [0.0, 0.0, 1.0]],   # exit 1: right on 0 and 2, wrong on 1
    [[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [0.0, 1.0, 2.0]],   # exit 2: wrong, wrong, right
    [[2.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 0.0, 4.0]],   # exit 3 (SNN head): right, wrong, right
])
Y = torch.tensor([0, 1, 2])


def test_teacher_edge_cases_none_one_all_right():
    teacher, valid = reliable_teacher(Z, Y)
    assert valid.tolist() == [True, False, True]
    assert torch.equal(teacher[1], torch.zeros(3))                       # no exit right: excluded
    assert torch.equal(teacher[0], (Z[0, 0] + Z[2, 0]) / 2)              # exits 1 and 3 right
    assert torch.equal(teacher[2], Z[:, 2].mean(0))                       # all right: mean of all logits
    one = Z.clone()
    one[2, 0] = torch.tensor([0.0, 5.0, 0.0])
    teacher, valid = reliable_teacher(one, Y)
    assert torch.equal(teacher[0], Z[0, 0])                               # exactly one right: its logits


def test_sample_without_correct_exit_is_excluded_and_loss_matches_hand_computation():
    tau, T, alpha, beta = 3.0, 4, 1.0, 0.3
    z = Z.clone().requires_grad_()
    out = esd_loss(list(z), Y, T=T, alpha=alpha, beta=beta, temperature=tau)
    ce = sum(F.cross_entropy(z[i], Y) for i in range(3))
    teacher = torch.stack([(Z[0, 0] + Z[2, 0]) / 2, Z[:, 2].mean(0)])  # valid samples 0 and 2 only
    p = F.softmax(teacher / tau, -1)
    sd = 0.0
    for i in range(3):
        q = F.log_softmax(z[i][[0, 2]] / tau, -1)
        sd = sd + (p * (p.log() - q)).sum(-1).mean()
    sd = sd * tau**2
    assert out["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out["sd"].item() == pytest.approx(sd.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(((alpha * ce + beta * sd) / T).item(), rel=1e-6)
    assert out["teacher_valid"].item() == pytest.approx(2 / 3)
    # the teacher is detached: the gradient is that of the hand-computed loss with a constant teacher
    out["loss"].backward()
    ref = z.detach().clone().requires_grad_()
    ce_r = sum(F.cross_entropy(ref[i], Y) for i in range(3))
    sd_r = sum((p * (p.log() - F.log_softmax(ref[i][[0, 2]] / tau, -1))).sum(-1).mean() for i in range(3))
    ((alpha * ce_r + beta * tau**2 * sd_r) / T).backward()
    assert torch.allclose(z.grad, ref.grad, atol=1e-6)


def test_no_exit_right_anywhere_gives_pure_ce():
    y = torch.tensor([2, 2, 0])
    z = torch.tensor([[[5.0, 0, 0]] * 3] * 2).requires_grad_()  # every exit says class 0 ... for sample 2
    z = z.detach().clone()
    z[:, 2] = torch.tensor([0.0, 4.0, 0.0])
    z.requires_grad_()
    out = esd_loss(z, y, T=2)
    assert out["teacher_valid"].item() == 0 and out["sd"].item() == 0
    ce = sum(F.cross_entropy(z[i], y) for i in range(2)) / 2
    assert out["loss"].item() == pytest.approx(ce.item())
    out["loss"].backward()
    assert torch.isfinite(z.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="target"):
        reliable_teacher(Z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target values"):
        reliable_teacher(Z, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="non-finite"):
        esd_loss(Z * float("nan"), Y, T=1)


def test_branches_reproduce_official_resnet18_layout():
    model = ESDNet(resnet18(T=1), 10, (3, 32, 32))
    assert model.branch_stages == [0, 1, 2]
    widths = [[blk.shortcut[0].out_channels for blk in b.blocks] for b in model.branches]
    assert widths == [[128, 256, 512], [256, 512], [512]]
    y = DeepConv(8, 16)(torch.randn(2, 8, 7, 7))
    assert y.shape == (2, 16, 4, 4) and (y >= 0).all()


def test_esd_step_trains_branches_and_backbone_bn_stats_handled():
    torch.manual_seed(0)
    backbone = SpikingVGG([8, "A", 16, "A", 16, "A"], in_channels=1, num_classes=4, T=3)
    model = ESDNet(backbone, 4, (1, 8, 8))
    assert len(model.branches) == 2 and [len(b.blocks) for b in model.branches] == [2, 1]
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 4, (6,))
    snn_bn = backbone.stem_bn
    branch_bn = model.branches[0].blocks[0].shortcut[1]
    snn_tracked, branch_tracked = int(snn_bn.num_batches_tracked), int(branch_bn.num_batches_tracked)
    out = esd_step_loss(model, x, y, 3)
    out["loss"].backward()
    assert len(out["exit_logits"]) == 3 and out["logits"].shape == (6, 4)
    assert int(snn_bn.num_batches_tracked) == snn_tracked + 1       # spike pass only
    assert int(branch_bn.num_batches_tracked) == branch_tracked + 1  # ordinary BN in the rate pass
    assert model.branches[0].fc.weight.grad.abs().sum() > 0
    assert backbone.stem_conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(x, T=3).shape == (6, 4)  # inference: the plain SNN, no branch
    assert math.isfinite(out["loss"].item())


def test_backbone_with_one_stage_rejected():
    with pytest.raises(ValueError, match="at least one stage"):
        ESDNet(SpikingVGG([4, 8], in_channels=1, num_classes=2), 2, (1, 6, 6))
