import numpy as np
import torch
import torch.nn.functional as F

from core.backbone import load_extractor, working_shape
from core.networks import DefectClassifier, Embedder, FeatureAutoencoder
from core.projection import fit_projection


def _autograd_gradcam(model: DefectClassifier, feats: torch.Tensor) -> torch.Tensor:
    """Textbook Grad-CAM: gradients of the logit w.r.t. the head's input activations."""
    a = (feats * model.scale[None, :, None, None]).detach().requires_grad_(True)
    z = model.fc2(F.relu(model.fc1(a))).flatten(1)
    logit = z.topk(model._k(z), dim=1).values.mean(dim=1)
    (grad,) = torch.autograd.grad(logit.sum(), a)
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * a).sum(dim=1, keepdim=True))


def test_closed_form_gradcam_equals_autograd():
    torch.manual_seed(0)
    model = DefectClassifier(channels=16, hidden=8, top_k=5).eval()
    model.scale.uniform_(0.5, 2.0)
    feats = torch.randn(3, 16, 6, 7)
    prob, cam = model(feats)
    assert prob.shape == (3,) and cam.shape == (3, 1, 6, 7)
    assert torch.allclose(prob, torch.sigmoid(model.logit(feats)), atol=1e-6)
    assert torch.allclose(cam, _autograd_gradcam(model, feats), atol=1e-5)
    assert (cam >= 0).all() and cam.sum() > 0


def test_autoencoder_error_map_is_per_position_squared_error():
    torch.manual_seed(0)
    ae = FeatureAutoencoder(channels=8, width=16, bottleneck=4).eval()
    x = torch.randn(2, 8, 12, 16)
    err = ae(x)
    z = ae.whiten(x)
    assert err.shape == (2, 1, 12, 16)
    assert torch.allclose(err, ((ae.reconstruct(z) - z) ** 2).sum(1, keepdim=True))


def test_embedder_applies_the_pca_projection_to_extractor_features():
    ext = load_extractor("efficientnet-lite0")
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        raw = ext(x)
    assert raw.shape == (2, ext.out_channels, 8, 12)
    patches = raw.permute(0, 2, 3, 1).reshape(-1, raw.shape[1]).numpy()
    proj = fit_projection(patches, 16)
    with torch.no_grad():
        got = Embedder(ext, proj)(x).numpy()
    want = proj.apply(patches).reshape(2, 8, 12, 16).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_working_shape_keeps_aspect_ratio_on_32_px_multiples():
    assert (working_shape(1.0, 256).height, working_shape(1.0, 256).width) == (256, 256)
    s = working_shape(4 / 1, 256)  # a long part: not squashed into a square
    assert (s.height, s.width) == (256, 1024)
    s = working_shape(1 / 2, 256)
    assert (s.height, s.width) == (512, 256)
    s = working_shape(10.0, 256)  # beyond the cap the short side shrinks, aspect is kept
    assert s.width == 1024 and abs(s.width / s.height - 10.0) < 1.5
    assert all(v % 32 == 0 for v in (s.width, s.height))


def test_patchcore_distances_module_matches_the_numpy_search():
    from core.networks import PatchCoreDistances
    from core.patchcore import PatchCore

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, 12)).astype(np.float32)
    feats = rng.normal(size=(2, 12, 5, 7)).astype(np.float32)
    with torch.no_grad():
        got = PatchCoreDistances(bank)(torch.from_numpy(feats)).numpy()
    assert got.shape == (2, 1, 5, 7)
    pc = PatchCore(bank)
    for i in range(2):
        np.testing.assert_allclose(got[i, 0], pc.distance_grid(feats[i]), rtol=1e-4, atol=1e-4)


def test_normalisation_folded_into_the_stem_is_exact():
    from efficientnet_lite_pytorch import EfficientNet

    from core.backbone import weights_path

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights_path("efficientnet-lite0"), map_location="cpu", weights_only=True))
    net.eval()
    ext = load_extractor("efficientnet-lite0")
    x = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        want = net._swish(net._bn0(net._conv_stem((x - 127.0) / 128.0)))
        got = ext.stem(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
