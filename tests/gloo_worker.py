"""Worker of the 2-process gloo test: imports only the diffusion math (fairseq blocked), so that
spawned processes start in a second."""
import sys
from pathlib import Path

sys.modules.setdefault("fairseq", None)  # type: ignore[arg-type]  # as if not installed

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from diffusion_plugin.diffusion.adaptive_schedule import AdaptiveNoiseSchedule  # noqa: E402
from diffusion_plugin.diffusion.timestep_samplers import LossSecondMomentSampler  # noqa: E402


def record_and_refit(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Each rank records different losses (and a different number of batches), ends update 1
    (a refit with U = 1) and saves its schedule and sampler state as ``rank{r}.pt``."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    schedule = AdaptiveNoiseSchedule("sqrt", 40, positions=3, bucket_size=10, update_interval=1)
    sampler = LossSecondMomentSampler(40, history=2)
    generator = torch.Generator().manual_seed(100 + rank)
    for _ in range(2 + rank):
        t = torch.randint(1, 41, (8,), generator=generator)
        loss = torch.rand(8, 3, generator=generator)
        schedule.record(t, loss, torch.ones(8, 3, dtype=torch.bool))
        sampler.record(t, loss.mean(1))
    schedule.end_update(1)
    sampler.end_update()
    state = {
        **{f"schedule.{k}": v for k, v in schedule.state_dict().items()},
        **{f"sampler.{k}": v for k, v in sampler.state_dict().items()},
        "probabilities": sampler.probabilities(),
    }
    torch.save(state, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
