"""packed_linear.Linear: oneDNN-packed weights give F.linear's values; unpacked keeps autograd."""
import pytest
import torch
import torch.nn.functional as F

from diffusion_plugin.models.packed_linear import Linear, activation_name, can_pack


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", [(13, 64), (2, 5, 64), (0, 64)])
def test_packed_linear_equals_f_linear(dtype, tolerance, shape):
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 64, dtype=dtype), torch.randn(96, dtype=dtype)
    x = torch.randn(*shape, dtype=dtype)
    for b in (bias, None):
        linear = Linear(weight, b)
        assert linear.packed == can_pack(weight)
        out = linear(x)
        assert out.shape == (*shape[:-1], 96) and out.dtype == dtype
        torch.testing.assert_close(out.float(), F.linear(x, weight, b).float(), atol=tolerance * 64, rtol=tolerance)


def test_packing_is_a_snapshot_and_unpacked_maps_keep_gradients():
    weight = torch.randn(8, 4, requires_grad=True)
    x = torch.randn(3, 4)
    packed = Linear(weight)
    before = packed(x)
    with torch.no_grad():
        weight.mul_(2.0)
    assert torch.allclose(packed(x), before, atol=1e-6)  # the copy taken at packing time
    plain = Linear(weight, pack=False)
    assert not plain.packed and plain.weight is weight
    plain(x).sum().backward()
    assert torch.allclose(weight.grad, x.sum(dim=0).expand(8, 4))


def test_what_packs():
    assert not can_pack(torch.randn(4, 4, dtype=torch.float64))
    assert not Linear(torch.randn(4, 4, dtype=torch.float64)).packed
    assert can_pack(torch.randn(4, 4)) == torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_activation_equals_the_activation_after_the_map(dtype, tolerance, activation):
    """ffn_in = act(x·Wᵀ + b), fused into the packed map (oneDNN post-op; erf GELU), or applied
    after F.linear unpacked; a transformer layer's activation function maps to its name."""
    torch.manual_seed(0)
    weight, bias, x = torch.randn(96, 64, dtype=dtype), torch.randn(96, dtype=dtype), torch.randn(13, 64, dtype=dtype)
    fn = {"relu": F.relu, "gelu": F.gelu}[activation]
    expected = fn(F.linear(x, weight, bias).float())
    for pack in (True, False):
        out = Linear(weight, bias, pack, activation)(x)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), expected, atol=tolerance * 64, rtol=tolerance)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, activation=activation)
    assert activation_name(layer.activation) == activation
    with pytest.raises(ValueError, match="no fused form of the activation"):
        activation_name(torch.tanh)
    with pytest.raises(ValueError, match=r"activation must be None or one of \['gelu', 'relu'\], got 'silu'"):
        Linear(weight, bias, activation="silu")
