"""RowAdam: with every row seeing a gradient on every step it is torch's
Adam exactly; a row without a gradient stays where it is, moments and all;
a row seen once moves by about lr, not by the decaying momentum of that one
sighting for many steps after."""

import torch

from vocabxfer.refinement.row_adam import RowAdam


def test_dense_gradients_are_plain_adam():
    generator = torch.Generator().manual_seed(0)
    ours = torch.randn(6, 4, generator=generator).requires_grad_(True)
    theirs = ours.detach().clone().requires_grad_(True)
    row_adam, adam = RowAdam([ours], lr=1e-2), torch.optim.Adam([theirs], lr=1e-2)
    for step in range(20):
        target = torch.randn(6, 4, generator=generator)
        for parameter, optimizer in ((ours, row_adam), (theirs, adam)):
            optimizer.zero_grad()
            ((parameter - target) ** 2).sum().backward()
            optimizer.step()
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), step


def test_rows_move_only_when_read():
    rows = torch.zeros(3, 2, requires_grad=True)
    optimizer = RowAdam([rows], lr=0.1)
    for step in range(10):
        optimizer.zero_grad()
        grad = torch.zeros(3, 2)
        grad[0] = 1.0  # row 0 is read every step
        if step == 0:
            grad[1] = 1.0  # row 1 once, at the start
        rows.grad = grad
        optimizer.step()
        if step == 0:
            assert torch.allclose(rows[1], torch.full((2,), -0.1))
    assert torch.allclose(rows[0], torch.full((2,), -1.0), atol=1e-5)  # lr per step
    assert torch.allclose(rows[1], torch.full((2,), -0.1))  # no momentum after
    assert torch.equal(rows[2], torch.zeros(2))
    assert optimizer.state[0][2].tolist() == [10, 1, 0]


def test_the_rate_follows_the_param_group_and_vectors_work():
    bias = torch.zeros(4, requires_grad=True)
    optimizer = RowAdam([bias], lr=0.5)
    optimizer.param_groups[0]["lr"] = 0.25
    bias.grad = torch.tensor([0.0, 2.0, 0.0, -3.0])
    optimizer.step()
    assert torch.allclose(bias, torch.tensor([0.0, -0.25, 0.0, 0.25]))
