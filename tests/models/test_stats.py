import pytest
import torch

from models import ActionCodec, NormStats


def stats(**kw):
    base = dict(action_mean=[1.0, -2.0], action_std=[0.5, 4.0], proprio_mean=[0.0], proprio_std=[1.0],
                provenance={"dataset": "d", "split": "train"})
    base.update(kw)
    return NormStats(**base)


def test_codec_groups_frameskip_in_env_step_order_and_round_trips():
    codec = ActionCodec(stats(), frameskip=3)
    env = torch.arange(12, dtype=torch.float32).view(6, 2)  # 6 env steps = 2 model steps
    model = codec.to_model(env)
    assert model.shape == (2, 6)
    # model step 0 = env steps 0,1,2 normalised and concatenated
    expected0 = ((env[:3] - torch.tensor([1.0, -2.0])) / torch.tensor([0.5, 4.0])).flatten()
    torch.testing.assert_close(model[0], expected0)
    torch.testing.assert_close(codec.to_env(model), env)


def test_codec_rejects_partial_model_steps():
    with pytest.raises(ValueError, match="need"):
        ActionCodec(stats(), frameskip=3).to_model(torch.zeros(4, 2))


def test_statistics_of_unknown_origin_are_refused():
    with pytest.raises(ValueError, match="unknown origin"):
        stats(provenance={"dataset": "d", "split": "all"})
    with pytest.raises(ValueError, match="provenance needs 'split'"):
        stats(provenance={"dataset": "d"})
    with pytest.raises(ValueError, match="provenance needs 'dataset'"):
        stats(provenance={"split": "train"})


@pytest.mark.parametrize("provenance, missing", [
    ({"split": "all_loaded", "rule": "DINO-WM wall loader"}, "num_episodes"),
    ({"split": "all_loaded", "num_episodes": 1920}, "rule"),
    ({"split": "published"}, "source"),
    ({"split": "published", "source": ""}, "source"),
])
def test_other_trainers_rules_must_be_recorded(provenance, missing):
    with pytest.raises(ValueError, match=missing):
        stats(provenance={"dataset": "d", **provenance})


@pytest.mark.parametrize("provenance", [
    {"split": "train"},
    {"split": "all_loaded", "rule": "DINO-WM datasets/wall_dset.py", "num_episodes": 1920},
    {"split": "published", "source": "DINO-WM datasets/pusht_dset.py"},
])
def test_train_split_trainer_rule_and_published_constants_are_accepted(provenance):
    assert stats(provenance={"dataset": "d", **provenance}).provenance["split"] == provenance["split"]


def test_constant_dimension_gets_a_std_floor_not_inf():
    s = stats(action_std=[0.0, 1.0])
    out = ActionCodec(s, 1).to_model(torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(out).all()
