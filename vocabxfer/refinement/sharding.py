"""A frozen transformer body larger than one device, sharded across the ranks
of a torch.distributed job with FSDP2 (``torch.distributed.fsdp.fully_shard``)
so that refinement can run on it.

Refinement trains only embedding rows, held whole on every rank (their
gradients are summed across ranks by distributed.py); the body is frozen,
so FSDP only gathers each layer's weights for its forward and backward and
never reduces gradients. Each transformer layer is its own FSDP unit,
resharded after its forward: a rank holds its share of the body plus about
one layer gathered at a time. The embeddings, the final norm and the head
stay whole (the README gives the memory arithmetic).
"""

from typing import Any, Optional

import torch

from vocabxfer.errors import ModelError, VocabxferError


def transformer_layers(model: Any) -> torch.nn.ModuleList:
    """The body's stack of transformer layers: the ModuleList holding the
    most parameters (encoder.layer in BERT, model.layers in Llama)."""
    best, best_count = None, 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module):
            count = sum(parameter.numel() for parameter in module.parameters())
            if count > best_count:
                best, best_count = module, count
    if best is None:
        raise ModelError(f"shard_body: found no stack of transformer layers in "
                         f"{type(model).__name__} (no ModuleList of layers)")
    return best


def is_sharded(model: Any) -> bool:
    """Whether any parameter of `model` is an FSDP2 shard (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in model.parameters())


def shard_body(model: Any, device: Optional[torch.device] = None) -> Any:
    """Shard each transformer layer of `model` across the ranks of the
    initialised process group (FSDP2, resharded after forward), and place
    everything else (embeddings, norms, head) whole on `device` (default:
    this rank's GPU under CUDA, else the CPU). Returns `model`, changed in
    place, ready for ``refine(..., device=None)``.

    Raises VocabxferError without an initialised process group, ModelError
    for a model already sharded or without a layer stack.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not (dist.is_available() and dist.is_initialized()):
        raise VocabxferError("shard_body: no torch.distributed process group is initialised; "
                             "run under torchrun (or accelerate launch) and call "
                             "torch.distributed.init_process_group first")
    if is_sharded(model):
        raise ModelError("shard_body: the model is already sharded")
    if device is None:
        device = (torch.device("cuda", torch.cuda.current_device())
                  if torch.cuda.is_available() and dist.get_backend() == "nccl"
                  else torch.device("cpu"))
    device = torch.device(device)
    layers = transformer_layers(model)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in layers:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    # What is not a layer goes whole to the device; fully_shard has already
    # moved each layer's shard there.
    in_layers = {id(tensor) for tensor in list(layers.parameters()) + list(layers.buffers())}
    for module in model.modules():
        for parameter in list(module.parameters(recurse=False)):
            if id(parameter) not in in_layers:
                parameter.data = parameter.data.to(device)
        for name, buffer in list(module.named_buffers(recurse=False)):
            if id(buffer) not in in_layers:
                setattr(module, name, buffer.to(device))
    return model
