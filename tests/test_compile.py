"""torch.compile(fullgraph=True) and torch.export trace through the operators (fake kernels +
autograd)."""
import pytest
import torch

import din_ops
from din_ops import reference

from conftest import DEVICES


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_dynamic_instance_norm_compiles(memory_format, device):
    def layer(x, w, b):
        return torch.relu(din_ops.dynamic_instance_norm(x, w, b)) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, device=device)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    w = torch.randn(2, 4, 6, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, 4, dtype=torch.float64, device=device, requires_grad=True)
    y = compiled(x, w, b)
    expected = torch.relu(reference.dynamic_instance_norm(x, w, b)) * 2
    torch.testing.assert_close(y, expected)
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    expected_grads = torch.autograd.grad(expected.sum(), (x, w, b))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("device", DEVICES)
def test_instance_norm_compiles_with_inductor(device):
    compiled = torch.compile(lambda x: din_ops.instance_norm(x) + 1, fullgraph=True)
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, reference.instance_norm(x) + 1, atol=1e-5, rtol=1e-5)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    x2 = x.detach().requires_grad_()
    (e,) = torch.autograd.grad((reference.instance_norm(x2) + 1).square().sum(), x2)
    torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_dynamic_shapes(device):
    compiled = torch.compile(din_ops.dynamic_instance_norm, fullgraph=True, dynamic=True, backend="aot_eager")
    for n, c, h in [(2, 3, 5), (3, 4, 7)]:
        x = torch.randn(n, c, h, h + 1, dtype=torch.float64, device=device)
        w = torch.randn(n, c + 1, c, dtype=torch.float64, device=device)
        torch.testing.assert_close(compiled(x, w), reference.dynamic_instance_norm(x, w))


def test_unbiased_adain_trains_at_any_size_without_recompiling():
    # The unbiased content scale sqrt((M - 1) / M) of adain's backward stays symbolic in H * W.
    compiled = torch.compile(
        lambda c, s: din_ops.adain(c, s, unbiased=True), fullgraph=True, dynamic=True, backend="aot_eager"
    )
    style = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch._dynamo.config.patch(error_on_recompile=False):
        frames = []
        for h, w in [(5, 7), (6, 9), (9, 4), (11, 3)]:
            c = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
            y = compiled(c, style)
            (g,) = torch.autograd.grad(y.square().sum(), c)
            c2 = c.detach().requires_grad_()
            e = reference.adain(c2, *reference.style_stats(style, 1e-5, True), unbiased=True)
            torch.testing.assert_close(y, e)
            torch.testing.assert_close(g, torch.autograd.grad(e.square().sum(), c2)[0])
            frames.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # The first shapes compile once (duck sizing may add one more for H != W); none after that.
    assert frames[-1] == frames[1], frames


def _unbiased_calls():
    g = torch.Generator().manual_seed(5)
    w1 = torch.randn(2, 4, 3, dtype=torch.float64, generator=g)
    w3 = torch.randn(2, 3, 1, 3, 3, dtype=torch.float64, generator=g)
    gamma = torch.rand(2, 3, 1, 1, dtype=torch.float64, generator=g) + 0.5
    stats = (torch.randn(1, 3, 1, 1, dtype=torch.float64, generator=g),
             torch.rand(1, 3, 1, 1, dtype=torch.float64, generator=g) + 0.5)

    def offset(x):
        return torch.zeros(x.shape[0], 18, x.shape[2], x.shape[3], dtype=x.dtype)

    return {
        "instance_norm": lambda x, b: b.instance_norm(x, unbiased=True),
        "dynamic_instance_norm_1x1": lambda x, b: b.dynamic_instance_norm(x, w1, unbiased=True),
        "dynamic_instance_norm_depthwise3x3": lambda x, b: b.dynamic_instance_norm(
            x, w3, padding=1, groups=3, unbiased=True),
        "deformable": lambda x, b: b.dynamic_instance_norm(x, w3, padding=1, groups=3,
                                                           offset=offset(x), unbiased=True),
        "spatially_adaptive": lambda x, b: b.spatially_adaptive_instance_norm(x, gamma, unbiased=True),
        "adain_with_statistics": lambda x, b: b.adain(x, stats, unbiased=True),
    }


@pytest.mark.parametrize("name", list(_unbiased_calls()))
def test_unbiased_graphs_take_any_image_size(name):
    # unbiased=True hands the operators `unbiased`, not an eps computed from H * W, so a graph
    # traced with symbolic sizes is not specialized to one image size.
    call = _unbiased_calls()[name]

    class Ref:  # the reference backend with the same calls
        def __getattr__(self, fn):
            return lambda *a, **k: getattr(din_ops, fn)(*a, backend="reference", **k)

    compiled = torch.compile(lambda x: call(x, din_ops), fullgraph=True, dynamic=True, backend="aot_eager")
    graphs = []
    for h, w in [(5, 7), (6, 9), (9, 4), (11, 3), (4, 4)]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        y = compiled(x)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        x2 = x.detach().requires_grad_()
        e = call(x2, Ref())
        torch.testing.assert_close(y, e)
        torch.testing.assert_close(gx, torch.autograd.grad(e.square().sum(), x2)[0])
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[-1] == graphs[1], graphs


def test_unbiased_export_takes_any_image_size():
    class Net(torch.nn.Module):
        def forward(self, x):
            return din_ops.instance_norm(x, unbiased=True) * 2

    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    ep = torch.export.export(Net(), (torch.randn(2, 3, 10, 12),), dynamic_shapes=({2: h, 3: w},))
    for size in [(10, 12), (16, 16), (7, 30)]:
        x = torch.randn(2, 3, *size)
        torch.testing.assert_close(ep.module()(x), reference.instance_norm(x, unbiased=True) * 2,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [dict(), dict(din_kernel=3, din_groups=2), dict(din_kind="spatially_adaptive"),
                                  dict(din_kind="deformable", din_kernel=3)],
                         ids=["1x1", "grouped3x3", "spatially_adaptive", "deformable"])
def test_model_exports_with_dynamic_shapes(kind, tmp_path):
    """torch.export of the paper's network: batch, height and width stay symbolic, the din_ops
    operators stay in the graph (not decomposed), and the program saved and loaded again runs other
    shapes as eager does."""
    from din_ops.models import DINStyleNet

    torch.manual_seed(0)
    model = DINStyleNet(widths=(4, 6, 8), outer_kernel=3, style_encoder="mobilenet", **kind).eval()
    content, style = torch.rand(2, 3, 24, 20), torch.rand(2, 3, 20, 24)
    n = torch.export.Dim("n", min=2, max=8)
    spatial = {0: n, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    with torch.no_grad():
        program = torch.export.export(model, (content, style), dynamic_shapes=(spatial, spatial))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any(t.startswith("din_ops.") for t in targets), sorted(targets)
    torch.export.save(program, tmp_path / "net.pt2")
    loaded = torch.export.load(tmp_path / "net.pt2").module()
    other_content, other_style = torch.rand(3, 3, 32, 16), torch.rand(3, 3, 16, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(other_content, other_style), model(other_content, other_style))
