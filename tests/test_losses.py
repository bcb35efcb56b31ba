import math

import pytest
import torch

from w2sclip.losses import adaptconf_loss, kd_loss, logconf_loss


def test_kd_loss_hand_computed():
    s = torch.tensor([[0.0, math.log(3.0)]])  # softmax = [0.25, 0.75]
    t = torch.tensor([[0.0, 0.0]])  # softmax = [0.5, 0.5]
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kd_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_temperature_and_mean():
    s = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    ps, pt = torch.softmax(s[0] / 2, 0), torch.softmax(t[0] / 2, 0)
    kl0 = float((pt * (pt.log() - ps.log())).sum())
    assert kd_loss(s, t, T=2.0).item() == pytest.approx(4 * kl0 / 2, rel=1e-5)


def test_logconf_loss_hand_computed():
    s = torch.tensor([[math.log(3.0), 0.0]])  # p_s = [0.75, 0.25], argmax 0
    p_w = torch.tensor([[0.2, 0.8]])
    target = torch.tensor([0.5 * 0.2 + 0.5, 0.5 * 0.8])
    expected = -(target[0] * math.log(0.75) + target[1] * math.log(0.25))
    assert logconf_loss(s, p_w, alpha=0.5).item() == pytest.approx(float(expected), rel=1e-6)


def test_adaptconf_loss_hand_computed():
    s = torch.tensor([[math.log(3.0), 0.0]])  # p_s = [0.75, 0.25]
    w = torch.tensor([[0.0, math.log(4.0)]])  # p_w = [0.2, 0.8], argmax 1
    ce_self, ce_weak = -math.log(0.75), -math.log(0.25)
    a = math.exp(ce_self / 0.5) / (math.exp(ce_self / 0.5) + math.exp(ce_weak / 0.5))
    kl = 0.2 * math.log(0.2 / 0.75) + 0.8 * math.log(0.8 / 0.25)
    expected = (1 - a) * kl + a * ce_self
    assert adaptconf_loss(s, w, theta=0.5).item() == pytest.approx(expected, rel=1e-6)
