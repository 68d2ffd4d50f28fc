"""PPO maths against hand computations, plain loops, and TRL reference numbers.

Each vectorised function is checked against the plain loop it equals (OpenRLHF habit) on random
inputs, and against a small example worked by hand. TRL 1.16 ships no PPO; the whitening numbers
below were produced once by TRL 1.12's ``trl.experimental.ppo.ppo_trainer.masked_whiten`` (run in
a separate virtualenv, not a dependency of these tests).
"""

from __future__ import annotations

import math

import pytest
import torch

from learner.ppo.advantages import (
    gae,
    masked_mean,
    masked_var,
    masked_whiten,
    rloo_advantages,
    sequence_rewards,
    token_rewards,
)
from learner.ppo.kl import AdaptiveKLController, FixedKLController, kl_per_token
from learner.ppo.losses import entropy_from_logits, logprobs_of, policy_loss, value_loss
from learner.ppo.rollout import response_mask_from


def _random_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(3, 6, generator=g)
    values = torch.randn(3, 6, generator=g)
    lengths = [6, 4, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (6 - n) for n in lengths])
    return rewards, values, mask


# --- KL ---------------------------------------------------------------------------------------


def test_kl_estimators_by_hand() -> None:
    logp, ref = torch.tensor([[-1.0]]), torch.tensor([[-2.0]])  # log r = -1
    assert kl_per_token(logp, ref, "k1").item() == pytest.approx(1.0)
    assert kl_per_token(logp, ref, "k3").item() == pytest.approx(math.exp(-1) - 1 + 1)
    with pytest.raises(ValueError):
        kl_per_token(logp, ref, "k2")  # type: ignore[arg-type]


def test_kl_estimators_are_unbiased_on_samples() -> None:
    """Both estimators average to the exact KL(p || q) over samples from p."""
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(
        p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    logp, logq = p.log()[samples], q.log()[samples]
    for estimator in ("k1", "k3"):
        assert kl_per_token(logp, logq, estimator).mean().item() == pytest.approx(exact, abs=0.01)
    assert (kl_per_token(logp, logq, "k3") >= 0).all()


def test_adaptive_controller_by_hand() -> None:
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(8.0, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))  # error clipped
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(6.6, 256) == pytest.approx(0.1 * (1 + 0.1 * 256 / 10000))
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(0.0, 256) == pytest.approx(0.1 * (1 - 0.2 * 256 / 10000))
    assert FixedKLController(0.3).update(100.0, 256) == 0.3


# --- whitening --------------------------------------------------------------------------------

WHITEN_IN = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]])
WHITEN_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).float()
# From trl==1.12.0 masked_mean / masked_var / masked_whiten on the inputs above.
TRL_MEAN, TRL_VAR = 0.6000000238418579, 1.4250001907348633
TRL_WHITENED = [
    [-0.08377079665660858, -1.3403323888778687, 1.1727908849716187, -0.29319772124290466],
    [0.7539369463920593, -0.5026246905326843, -0.9214785695075989, 2.0104987621307373],
]
TRL_WHITENED_KEEP_MEAN = [
    [0.5162292122840881, -0.7403323650360107, 1.7727909088134766, 0.30680230259895325],
    [1.3539369106292725, 0.09737533330917358, -0.32147854566574097, 2.6104989051818848],
]


def test_whitening_matches_trl_numbers() -> None:
    assert masked_mean(WHITEN_IN, WHITEN_MASK).item() == pytest.approx(TRL_MEAN, rel=1e-6)
    assert masked_var(WHITEN_IN, WHITEN_MASK).item() == pytest.approx(TRL_VAR, rel=1e-6)
    torch.testing.assert_close(masked_whiten(WHITEN_IN, WHITEN_MASK), torch.tensor(TRL_WHITENED))
    torch.testing.assert_close(
        masked_whiten(WHITEN_IN, WHITEN_MASK, shift_mean=False),
        torch.tensor(TRL_WHITENED_KEEP_MEAN),
    )


def test_whitening_gives_zero_mean_unit_variance_on_valid_entries() -> None:
    values = WHITEN_IN[WHITEN_MASK.bool()]  # the 5 valid numbers
    whitened = masked_whiten(WHITEN_IN, WHITEN_MASK)[WHITEN_MASK.bool()]
    expected = (values - values.mean()) / values.std(unbiased=True)
    torch.testing.assert_close(whitened, expected, rtol=1e-5, atol=1e-6)


# --- rewards and GAE --------------------------------------------------------------------------


def test_token_rewards_equal_plain_loop() -> None:
    _, _, mask = _random_batch()
    kl = torch.rand(3, 6)
    scores = torch.tensor([1.0, -2.0, 0.5])
    got = token_rewards(scores, kl, mask, kl_coef=0.1)
    for b in range(3):
        last = int(mask[b].sum().item()) - 1
        for t in range(6):
            expected = -0.1 * kl[b, t].item() * mask[b, t].item()
            if t == last:
                expected += scores[b].item()
            assert got[b, t].item() == pytest.approx(expected, abs=1e-6)


def test_gae_by_hand() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, torch.tensor([[0.43675, 0.565, 0.7]]))
    torch.testing.assert_close(ret, torch.tensor([[0.93675, 0.965, 1.0]]))
    # The response ends at t = 1: no bootstrap from the value after it, nothing past it.
    adv, _ = gae(
        torch.tensor([[0.0, 1.0, 5.0]]),
        values,
        torch.tensor([[1.0, 1.0, 0.0]]),
        gamma=1.0,
        lam=0.95,
    )
    torch.testing.assert_close(adv, torch.tensor([[0.47, 0.6, 0.0]]))


def test_gae_equals_plain_loop() -> None:
    rewards, values, mask = _random_batch(1)
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b in range(3):
        n = int(mask[b].sum().item())
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            running = delta + gamma * lam * running
            assert adv[b, t].item() == pytest.approx(running, abs=1e-5)
            assert ret[b, t].item() == pytest.approx(running + values[b, t].item(), abs=1e-5)
        assert (adv[b, n:] == 0).all()


# --- losses -----------------------------------------------------------------------------------


def test_policy_loss_by_hand() -> None:
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    out = policy_loss(
        logp, torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 2.0]]), torch.ones(1, 3), clip_range=0.2
    )
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, rel=1e-5)
    assert out.clipfrac.item() == pytest.approx(2 / 3)
    assert out.ratio.item() == pytest.approx((1.5 + 0.5 + 1.1) / 3, rel=1e-5)
    logs = [math.log(1.5), math.log(0.5), math.log(1.1)]
    assert out.approxkl.item() == pytest.approx(0.5 * sum(x * x for x in logs) / 3, rel=1e-5)


def test_policy_loss_equals_plain_loop() -> None:
    g = torch.Generator().manual_seed(2)
    logp, old, adv = (torch.randn(3, 6, generator=g) * 0.3 for _ in range(3))
    _, _, mask = _random_batch()
    out = policy_loss(logp, old, adv, mask, clip_range=0.2)
    terms, clipped_count = [], 0
    for b in range(3):
        for t in range(6):
            if mask[b, t] == 0:
                continue
            ratio = math.exp(logp[b, t].item() - old[b, t].item())
            a = adv[b, t].item()
            unclipped, clipped = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            terms.append(max(unclipped, clipped))
            clipped_count += clipped > unclipped
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-6)
    assert out.clipfrac.item() == pytest.approx(clipped_count / len(terms))


def test_value_loss_by_hand() -> None:
    loss, clipfrac = value_loss(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.5, 0.5]]),
        torch.tensor([[2.0, 0.0]]),
        torch.ones(1, 2),
        0.2,
    )
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2, rel=1e-5)
    assert clipfrac.item() == pytest.approx(1.0)


def test_value_loss_equals_plain_loop() -> None:
    g = torch.Generator().manual_seed(3)
    v, old, ret = (torch.randn(3, 6, generator=g) for _ in range(3))
    _, _, mask = _random_batch()
    loss, _ = value_loss(v, old, ret, mask, 0.2)
    terms = []
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                vc = old[b, t].item() + min(max(v[b, t].item() - old[b, t].item(), -0.2), 0.2)
                terms.append(
                    max((v[b, t].item() - ret[b, t].item()) ** 2, (vc - ret[b, t].item()) ** 2)
                )
    assert loss.item() == pytest.approx(0.5 * sum(terms) / len(terms), rel=1e-5)


def test_entropy_and_logprobs_match_torch_distributions() -> None:
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(4))
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(5))
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(entropy_from_logits(logits), dist.entropy())
    torch.testing.assert_close(logprobs_of(logits, tokens), dist.log_prob(tokens))


def test_entropy_and_logprobs_match_trl() -> None:
    pytest.importorskip("trl", reason="trl==1.16.0 is the numeric reference (pip install)")
    from trl.trainer.utils import entropy_from_logits as trl_entropy
    from trl.trainer.utils import selective_log_softmax

    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(6))
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(entropy_from_logits(logits), trl_entropy(logits))
    torch.testing.assert_close(logprobs_of(logits, tokens), selective_log_softmax(logits, tokens))


def test_response_mask_keeps_first_eos_only() -> None:
    responses = torch.tensor([[5, 6, 2, 0, 0], [5, 5, 5, 5, 5], [2, 7, 2, 7, 7]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert torch.equal(response_mask_from(responses, eos_token_id=2), expected)


# --- RLOO -------------------------------------------------------------------------------------


def test_rloo_by_hand() -> None:
    # Two prompts, k = 3: A_i = R_i - mean of the other two.
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    torch.testing.assert_close(rloo_advantages(rewards, 3), expected)


def test_rloo_equals_plain_loop_and_sums_to_zero_per_prompt() -> None:
    g = torch.Generator().manual_seed(1)
    rewards, k = torch.randn(12, generator=g), 4
    loop = torch.zeros(12)
    for start in range(0, 12, k):
        for i in range(start, start + k):
            others = [rewards[j] for j in range(start, start + k) if j != i]
            loop[i] = rewards[i] - sum(others) / (k - 1)
    out = rloo_advantages(rewards, k)
    torch.testing.assert_close(out, loop)
    # Leave-one-out advantages are k/(k-1) times the mean-centred rewards: zero-sum per group.
    torch.testing.assert_close(out.view(-1, k).sum(-1), torch.zeros(3), atol=1e-5, rtol=0)


def test_rloo_rejects_bad_groups() -> None:
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError):
        rloo_advantages(torch.zeros(5), 2)


def test_sequence_rewards_subtract_the_masked_kl() -> None:
    scores = torch.tensor([1.0, -1.0])
    kl = torch.tensor([[0.5, 0.5, 9.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(
        sequence_rewards(scores, kl, mask, 0.1), torch.tensor([1.0 - 0.1, -1.0 - 0.1])
    )
