"""Run under ``mpiexec -n N python -m benchmarks.mpi_steps JSON_CONFIG OUT``: time training steps of N ranks.

Rank 0 leads as under ``fastrnn train`` (the others follow its commands,
:func:`fastrnn.distributed.follow`): every rank builds a :class:`fastrnn.Trainer`
with an MPI world (its share of the batch) and warms its kernels up, then
rank 0 times ``rounds`` calls of ``steps`` steps. Rank 0 writes OUT
(JSON): seconds per round, allreduce calls and seconds (rank 0's wait
included: an allreduce also absorbs the ranks' imbalance), and the bytes of
the flat gradient buffer each allreduce sums.
"""
from __future__ import annotations

import json
import sys
import time

import fastrnn
from fastrnn.distributed import follow, world_from_environment
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer


def main(config_json: str, out: str, steps: int, rounds: int) -> None:
    world = world_from_environment()
    if world is None:
        raise SystemExit("run me under mpiexec -n 2 or more")
    corpus = fastrnn.load_corpus(None)
    if not world.is_leader:  # rank 0's commands, as under fastrnn train
        sys.exit(follow(world, lambda setup: Trainer(corpus, TrainConfig(**setup), world=world)))
    config = TrainConfig(**json.loads(config_json))
    trainer = Trainer(corpus, config, world=world)
    world.announce("build", config.to_dict())
    errors = [e for e in world.gather(None) if e is not None]
    if errors:
        print(errors[0], file=sys.stderr)
        sys.exit(world.leave(2))
    trainer.warm_up()
    trainer.train(1)  # the first collectives set the connections up
    world.allreduce_calls, world.allreduce_seconds = 0, 0.0
    seconds = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        trainer.train(steps)
        seconds.append(time.perf_counter() - t0)
    with open(out, "w") as f:
        json.dump(dict(round_seconds=seconds, steps=steps, ranks=world.size,
                       allreduce_calls=world.allreduce_calls, allreduce_seconds=world.allreduce_seconds,
                       allreduce_bytes=int(trainer.params.flat.nbytes), chars_per_step=trainer.chars_per_step), f)
    world.leave(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
