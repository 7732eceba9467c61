"""packed_linear.Linear: oneDNN-packed weights give F.linear's values; unpacked keeps autograd."""
import pytest
import torch
import torch.nn.functional as F

from diffusion_plugin.models.packed_linear import Linear, can_pack


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
