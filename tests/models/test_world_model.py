import pytest
import torch

from models import Latent, WorldModelConfig
from models.encoders import DinoV2Encoder
from models.testing import tiny_model


def naive_rollout(model, z0: Latent, actions: torch.Tensor) -> Latent:
    """DINO-WM's loop: grow the frame sequence by concatenation, run the full
    predictor on the last num_hist frames, keep the last frame's prediction."""
    a_emb = model.action_encoder(actions)
    frames = model.tokens(z0, a_emb[:, 0]).unsqueeze(1)  # (B, 1, p, D)
    preds = []
    for t in range(actions.shape[1]):
        window = frames[:, -model.config.num_hist:]
        b, n, p, d = window.shape
        out = model.predictor(window.reshape(b, n * p, d)).view(b, n, p, d)[:, -1]
        preds.append(model.split(out))
        if t + 1 < actions.shape[1]:
            nxt = out.clone()
            model._set_action(nxt, a_emb[:, t + 1])
            frames = torch.cat([frames, nxt.unsqueeze(1)], dim=1)
    return Latent(torch.stack([z.visual for z in preds], 1), torch.stack([z.proprio for z in preds], 1))


@pytest.mark.parametrize("mode", ["feature", "token"])
def test_rollout_matches_naive_concatenating_reference(mode):
    kw = {} if mode == "feature" else {"concat_mode": "token", "action_emb_dim": 16, "proprio_emb_dim": 16}
    model = tiny_model(seed=3, **kw)
    torch.manual_seed(0)
    z0 = model.encode_observation(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), torch.randn(4, 2))
    actions = torch.randn(4, 6, model.config.action_dim)  # horizon 6 > num_hist: the window slides
    fast, ref = model.rollout(z0, actions), naive_rollout(model, z0, actions)
    torch.testing.assert_close(fast.visual, ref.visual, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.proprio, ref.proprio, rtol=1e-5, atol=1e-5)
    assert fast.visual.shape == (4, 6, model.config.num_patches, model.config.visual_dim)


def test_predictor_is_frame_causal_and_last_only_matches_full():
    model = tiny_model(seed=1)
    p, d = model.config.tokens_per_frame, model.config.token_dim
    x = torch.randn(2, 3 * p, d)
    full = model.predictor(x)
    torch.testing.assert_close(model.predictor(x, last_only=True), full[:, -p:], rtol=1e-5, atol=1e-6)
    y = x.clone()
    y[:, 2 * p:] += 1.0  # change only the last frame
    changed = model.predictor(y)
    torch.testing.assert_close(changed[:, : 2 * p], full[:, : 2 * p])  # earlier frames cannot see it
    assert not torch.allclose(changed[:, 2 * p:], full[:, 2 * p:])


def test_teacher_forced_predict_matches_rollout_first_step():
    model = tiny_model(seed=2)
    z0 = model.encode_observation(torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8), torch.randn(2, 2))
    actions = torch.randn(2, 1, model.config.action_dim)
    seq = Latent(z0.visual.unsqueeze(1), z0.proprio.unsqueeze(1))
    torch.testing.assert_close(model.predict(seq, actions).visual, model.rollout(z0, actions).visual)


def test_preprocess_uint8_and_float_agree_and_resize_to_model_size():
    model = tiny_model()
    frames = torch.randint(0, 256, (2, 48, 40, 3), dtype=torch.uint8)
    a, b = model.preprocess(frames), model.preprocess(frames.float() / 255.0)
    assert a.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a, b)
    assert a.min() >= -1.0 - 1e-6 and a.max() <= 1.0 + 1e-6  # Normalize(0.5, 0.5): [-1, 1]


def test_encode_requires_proprio_when_model_has_it():
    model = tiny_model()
    with pytest.raises(ValueError, match="proprio"):
        model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), None)


def test_model_without_proprio_plans_shapes():
    model = tiny_model(proprio_dim=0)
    z = model.encode_observation(torch.zeros(1, 32, 32, 3, dtype=torch.uint8), None)
    assert z.proprio.shape == (1, 0)
    out = model.rollout(z, torch.zeros(1, 2, model.config.action_dim))
    assert out.proprio.shape == (1, 2, 0)


def test_dinov2_encoder_has_official_parameter_names_and_patch_tokens():
    cfg = WorldModelConfig(encoder="dinov2_vits14", vit_depth=2, image_size=224)
    enc = DinoV2Encoder(cfg).eval()
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes["patch_embed.proj.weight"] == (384, 3, 14, 14)
    assert shapes["pos_embed"] == (1, 1 + 37 * 37, 384)
    assert shapes["cls_token"] == (1, 1, 384)
    assert shapes["blocks.1.attn.qkv.weight"] == (1152, 384)
    assert shapes["blocks.1.ls2.gamma"] == (384,)
    assert shapes["blocks.0.mlp.fc1.weight"] == (1536, 384)
    assert "norm.weight" in shapes and "mask_token" in shapes
    with torch.no_grad():
        tokens = enc(torch.randn(1, 3, 224, 224))  # resized to 196 inside, as DINO-WM does
    assert tokens.shape == (1, 196, 384)


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="token_grid=3"):
        WorldModelConfig(image_size=64, token_grid=3)
    with pytest.raises(ValueError, match="concat_mode='tiles'"):
        WorldModelConfig(concat_mode="tiles")
    with pytest.raises(ValueError, match="unknown world-model config keys"):
        WorldModelConfig.from_dict({"image_size": 64, "colour": "blue"})


def test_extend_with_cache_matches_full_window_forward():
    """The cached path computes only the newest frame; under the frame-causal
    mask it must equal the full window's last frame at every window length."""
    from models.predictor import KVCache

    model = tiny_model(seed=5)
    p, d = model.config.tokens_per_frame, model.config.token_dim
    x = torch.randn(3, model.config.num_hist * p, d)
    cache = KVCache(model.predictor, 3, model.config.num_hist, x.device, x.dtype)
    for f in range(model.config.num_hist):
        step = model.predictor.extend(x[:, f * p:(f + 1) * p], cache)
        full = model.predictor(x[:, :(f + 1) * p], last_only=True)
        torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="extend got"):
        model.predictor.extend(x[:, :p], cache)  # the cache is full
