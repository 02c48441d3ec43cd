import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.backbone import load_extractor, working_shape
from core.networks import DefectClassifier, Embedder
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


def test_gaussian_module_matches_the_numpy_model_per_position_blocked_and_free():
    from core.gaussian import GaussianDistances, GaussianModel, accumulate

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6, 5, 7)).astype(np.float32)
    query = rng.normal(size=(2, 8, 5, 7)).astype(np.float32)  # two extra channels the model ignores
    for per_position, block in ((True, 1), (True, 2), (False, 1)):
        model = GaussianModel.from_sums(accumulate(feats[:, :6], per_position, block),
                                        (5, 7) if per_position else (0, 0), block)
        want = model.distances(query)
        with torch.no_grad():
            got = GaussianDistances(model)(torch.from_numpy(query)).numpy()
        assert got.shape == (2, 1, 5, 7)
        np.testing.assert_allclose(got[:, 0], want, rtol=1e-4, atol=1e-4)


def test_gaussian_distance_is_the_mahalanobis_distance_of_its_position():
    from core.gaussian import GaussianModel, accumulate

    rng = np.random.default_rng(1)
    feats = rng.normal(size=(60, 3, 4, 4)).astype(np.float32)
    feats[:, 0, 2, 3] *= 5.0  # one place varies more along one direction
    model = GaussianModel.from_sums(accumulate(feats, True, 1), (4, 4), 1, shrink=0.0)
    # the 3x3 neighbourhood of cell (0, 0): cells (0..1, 0..1) of every image
    samples = feats[:, :, 0:2, 0:2].transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64)
    mean, cov = samples.mean(0), np.cov(samples.T, bias=True)
    q = rng.normal(size=(1, 3, 4, 4)).astype(np.float32)
    d = q[0, :, 0, 0] - mean
    assert model.distances(q)[0, 0, 0] == pytest.approx(float(np.sqrt(d @ np.linalg.solve(cov, d))), rel=1e-4)
    # a deviation along the direction that varies a lot costs less where it varies
    a = np.zeros((1, 3, 4, 4), np.float32)
    a[0, 0] = 3.0
    dist = model.distances(a)[0]
    assert dist[2, 3] < dist[0, 0]


def test_gaussian_sums_subtract_to_the_model_without_a_fold():
    from core.gaussian import GaussianModel, accumulate

    rng = np.random.default_rng(2)
    feats = rng.normal(size=(30, 4, 3, 3)).astype(np.float32)
    whole = accumulate(feats, True, 1)
    fold = accumulate(feats[:10], True, 1)
    rest = GaussianModel.from_sums(whole - fold, (3, 3), 1)
    direct = GaussianModel.from_sums(accumulate(feats[10:], True, 1), (3, 3), 1)
    np.testing.assert_allclose(rest.mean, direct.mean, atol=1e-5)
    np.testing.assert_allclose(rest.distances(feats[:2]), direct.distances(feats[:2]), rtol=1e-4)


def test_patchcore_position_channels_prefer_matches_from_the_same_place():
    from core.networks import PatchCoreDistances
    from core.patchcore import PatchCore, position_channels

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(8, 4, 4)).astype(np.float32)
    pos = position_channels(4, 4, 2.0)
    bank = np.concatenate([feats, pos]).reshape(10, -1).T  # every cell of one image, at its place
    pc = PatchCore(bank, position_weight=2.0)
    assert pc.dim == 8
    assert np.allclose(pc.distance_grid(feats), 0.0, atol=1e-2)  # GEMM-form distances round near 0
    moved = np.roll(feats, 2, axis=2)  # the same patches two cells to the right: no longer free
    assert pc.distance_grid(moved)[:, 2:].min() > 0.5
    with torch.no_grad():
        got = PatchCoreDistances(bank, pos)(torch.from_numpy(moved[None])).numpy()[0, 0]
    np.testing.assert_allclose(got, pc.distance_grid(moved), rtol=1e-4, atol=1e-4)


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


def test_working_shape_keeps_aspect_ratio_on_16_px_multiples():
    assert (working_shape(1.0, 256).height, working_shape(1.0, 256).width) == (256, 256)
    s = working_shape(4 / 1, 256)  # a long part: not squashed into a square
    assert (s.height, s.width) == (256, 1024)
    s = working_shape(1 / 2, 256)
    assert (s.height, s.width) == (512, 256)
    s = working_shape(10.0, 256)  # beyond the cap the short side shrinks, aspect is kept
    assert s.width == 1024 and abs(s.width / s.height - 10.0) < 1.5
    assert all(v % 16 == 0 for v in (s.width, s.height))


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
