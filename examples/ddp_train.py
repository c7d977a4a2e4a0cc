"""Train a tiny two-tower model with the relaxed contrastive loss under DDP.

Run on CPU (gloo) or on GPUs (NCCL), unchanged::

    torchrun --nproc_per_node=2 examples/ddp_train.py --tiny
    torchrun --nproc_per_node=8 examples/ddp_train.py --steps 200 --global-batch 4096

Without torchrun it runs as a single process. Every rank draws the same synthetic global batch
(paired "image" and "report" feature vectors sharing a latent code) and keeps its own slice;
a global batch that does not divide by the world size gives uneven local batches, which the
loss handles exactly. The loss sees the global batch (``relaxclip.distributed``), and at step 0
rank 0 checks the DDP gradients against a single-process run on the concatenated global batch.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from relaxclip.loss import relaxed_contrastive_loss


class TwoTower(nn.Module):
    """Image and text MLP towers plus CLIP's learnable log logit scale."""

    def __init__(self, d_image: int, d_text: int, d_hidden: int, d_embed: int) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Linear(d_image, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_embed)
        )
        self.text = nn.Sequential(
            nn.Linear(d_text, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_embed)
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(
        self, images: torch.Tensor, texts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.image(images), self.text(texts), self.log_scale.exp()


def synthetic_batch(
    step: int, n: int, d_image: int, d_text: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: n pairs whose two views share an 8-d latent code."""
    gen = torch.Generator().manual_seed(seed)
    mix_image = torch.randn(8, d_image, generator=gen)
    mix_text = torch.randn(8, d_text, generator=gen)
    gen.manual_seed(seed * 100_003 + step)
    latent = torch.randn(n, 8, generator=gen)
    images = latent @ mix_image + 0.3 * torch.randn(n, d_image, generator=gen)
    texts = latent @ mix_text + 0.3 * torch.randn(n, d_text, generator=gen)
    return images, texts


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a few steps of a very small model (CI)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--global-batch", type=int, default=256)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--mode", choices=("local", "global"), default="local")
    p.add_argument("--backend", default="auto", help="auto, dense, chunked or triton")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.tiny:
        # 17 pairs: uneven local batches on 2, 3, 4, ... ranks
        args.steps, args.global_batch, args.embed_dim, args.lr = 6, 17, 16, 1e-2
    return args


def main() -> None:
    args = parse_args()
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        train(args, device, distributed)
    finally:
        if distributed:
            # train() has returned, so no autograd graph through the gather is alive any more;
            # on gloo (torch 2.13) a graph still referenced while the process group is torn
            # down can abort the process at exit (see docs/distributed.md)
            gc.collect()
            dist.destroy_process_group()


def train(args: argparse.Namespace, device: torch.device, distributed: bool) -> None:
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    d_image, d_text = 32, 24
    d_hidden = 32 if args.tiny else 256

    torch.manual_seed(args.seed)  # identical initial weights everywhere (DDP also broadcasts)
    model = TwoTower(d_image, d_text, d_hidden, args.embed_dim).to(device)
    ddp = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=args.lr)
    if rank == 0:
        print(f"world size {world}, device {device}, mode {args.mode}, backend {args.backend}")

    for step in range(args.steps):
        images, texts = synthetic_batch(step, args.global_batch, d_image, d_text, args.seed)
        # this rank's slice (tensor_split allows uneven slices, like the last batch of an epoch)
        mine = torch.arange(args.global_batch).tensor_split(world)[rank]
        before = copy.deepcopy(model) if step == 0 and rank == 0 else None

        x, y, scale = ddp(images[mine].to(device), texts[mine].to(device))
        loss = relaxed_contrastive_loss(
            x, y, scale, threshold=args.threshold, backend=args.backend, distributed_mode=args.mode
        )  # the global-batch loss: distributed=None switches it on under torch.distributed
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

        if before is not None:  # single-process reference on the concatenated global batch
            x1, y1, s1 = before(images.to(device), texts.to(device))
            ref = relaxed_contrastive_loss(
                x1, y1, s1, threshold=args.threshold, backend=args.backend, distributed=False
            )
            ref.backward()
            diff = max(
                float((p.grad - q.grad).abs().max())  # type: ignore[operator]
                for p, q in zip(model.parameters(), before.parameters(), strict=True)
            )
            print(f"step 0 check: max |grad diff| vs single process = {diff:.3e}")

        optimizer.step()
        mean_loss = loss.detach().clone()
        if distributed:
            dist.all_reduce(mean_loss)
            mean_loss /= world  # the mean of the per-rank losses is the global loss
        if rank == 0:
            print(
                f"step {step}: loss {float(mean_loss):.4f}, "
                f"logit_scale {float(model.log_scale.detach().exp()):.2f}, local batch {len(mine)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
