import torch

from ebomlc.models import MetaNet, SmallCNN, resnet32


def test_resnet32_shapes_and_size():
    model = resnet32(10)
    logits, feature = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10) and feature.shape == (4, 64)
    n_params = sum(p.numel() for p in model.parameters())
    assert 460_000 < n_params < 470_000  # ResNet-32 with option-A shortcuts: ~0.46M parameters
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31  # 1 stem + 3 stages x 5 blocks x 2; shortcuts have no parameters


def test_small_cnn_shapes():
    logits, feature = SmallCNN(10, 1)(torch.randn(5, 1, 8, 8))
    assert logits.shape == (5, 10) and feature.shape == (5, 64)


def test_meta_net_outputs_log_probabilities():
    meta = MetaNet(64, 10, 128)
    out = meta(torch.randn(6, 64), torch.randint(0, 10, (6,)))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(6))
    assert all(torch.all(m.bias == 0) for m in meta.net if isinstance(m, torch.nn.Linear))
    ref = MetaNet(64, 10, 128, reference=True)
    assert any(isinstance(m, torch.nn.Dropout) for m in ref.net)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in ref.net)
