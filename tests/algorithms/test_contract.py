"""One set of output rules for the trainer and the verifier: each broken rule is named, with where it
broke and how to fix it."""

import pytest
import torch

from poise.algorithms.contract import CandidateError, ContractError, check_loss, check_tensor


@pytest.mark.parametrize("x, words", [
    ([0.0], "must return a torch.Tensor of shape [4, 3] or [4], got list at step 7"),
    (torch.zeros(4, 2), "returned shape [4, 2] at step 7; expected [4, 3] or [4]"),
    (torch.tensor([0.0, float("nan"), 1.0, float("inf")]), "returned 2 non-finite values (NaN or inf) of 4 at step 7"),
])
def test_tensor_rules(x, words):
    with pytest.raises(ContractError) as e:
        check_tensor(x, "compute_advantages", [(4, 3), (4,)], "at step 7")
    assert words in str(e.value) and isinstance(e.value, CandidateError)  # the trainer's failure type


def test_a_good_tensor_comes_back_as_it_is():
    x = torch.ones(4, 3)
    assert check_tensor(x, "compute_advantages", [(4, 3), (4,)], "at step 0") is x


def test_loss_rules():
    logp = torch.zeros(3, requires_grad=True)
    where = "on probe 'mixed'"
    for out, words in [(logp.sum(), "must return (loss, metrics_dict), got Tensor on probe 'mixed'"),
                       ((logp, {}), "must return a scalar tensor loss, got shape [3] on probe 'mixed'"),
                       ((logp.sum().detach(), {}), "loss with no gradient on probe 'mixed'"),
                       ((logp.sum() * float("nan"), {}), "non-finite loss (nan) on probe 'mixed'")]:
        with pytest.raises(ContractError, match=None) as e:
            check_loss(out, where)
        assert words in str(e.value), (words, str(e.value))
    loss, info = check_loss((logp.sum(), None), where)
    assert loss.requires_grad and info == {}  # metrics that are not a dict are dropped, not an error
