"""One seed for every model of this project (issue [reproducible]).

ParlAI 1.7.2's ``train_model --seed`` seeds Python's and torch's RNGs only *after* the agent and
its model exist (``TrainModel.run``: ``TrainLoop(opt)`` then ``set_seed``), so model
initialisation stays unseeded, and ``eval_model`` / ``interactive`` have no seed at all (sampling
decoders draw from torch's RNG). Our agents therefore own the option: ``--seed`` (default
:data:`DEFAULT_SEED`) is applied when the agent is created, before its model is built, and
``train_model`` re-applies the same seed before its first step (ParlAI's own ``set_seed``), which
fixes the order ParlAI samples training examples in (``random.randrange`` in
``FixedDialogTeacher.next_episode_idx``) and dropout.

What is seeded: Python's ``random``, numpy's global generator, torch's CPU and CUDA generators.
Seeding alone is not enough with more than one thread: two 2-thread CPU trainings of the zoo's rec
teacher with the same seed differed at about 1e-7 after one epoch (some CPU kernels accumulate in
thread order), and identical with deterministic kernels. So ``--deterministic`` defaults to
*auto*: ``torch.use_deterministic_algorithms(True)`` whenever the agent runs on CPU, which makes a
run bit-for-bit repeatable on one machine with one thread count (the zoo builder also fixes the
thread count; see
``parlai_conkd/zoo/conkd/builder.py``). On GPU some kernels (e.g. scatter/index_add in the
graph convolution's backward, cuBLAS split-K reductions) are not deterministic either;
``--deterministic true`` asks for deterministic kernels there too (slower; needs
``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which this sets when unset), ``false`` turns them off on CPU.
"""

import os
import random
from typing import Optional

import numpy as np
import torch

#: The seed every agent of this project uses unless told otherwise (``--seed``).
DEFAULT_SEED = 0


def add_seed_args(parser) -> None:
    """``--seed`` / ``--deterministic`` (ParlAI-style names; ``train_model``'s ``--seed`` is
    redefined with a default, ParlAI's parser resolves the duplicate to this definition).
    """
    group = parser.add_argument_group('Reproducibility')
    group.add_argument(
        '--seed',
        type=int,
        default=DEFAULT_SEED,
        help='Seed of Python, numpy and torch RNGs, applied when the agent is created (model '
        'initialisation) and again by train_model before training (example order, dropout); '
        'also used by sampling decoders. Same command + same seed = same model on one machine.',
    )
    group.add_argument(
        '--deterministic',
        type='bool',
        default=None,
        help='torch.use_deterministic_algorithms(True). Default (unset): on when the agent runs '
        'on CPU (repeatable multi-threaded runs), off on CUDA; true also on CUDA (slower; sets '
        'CUBLAS_WORKSPACE_CONFIG=:4096:8 when unset), false never.',
    )


def seed_everything(seed: Optional[int], deterministic: bool = False) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and every CUDA device).

    ``seed`` None leaves the generators alone (an explicitly unseeded run).
    """
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def seed_from_opt(opt, shared=None) -> None:
    """Apply the agent's seed at creation (not for shared copies: they reuse the parent's model).

    ``--rec-seed`` (the rec teacher's older option) wins when given, for old commands.
    """
    if shared:
        return
    seed = opt.get('rec_seed')
    if seed is None:
        seed = opt.get('seed', DEFAULT_SEED)
    seed_everything(seed, wants_deterministic(opt))


def wants_deterministic(opt) -> bool:
    """``--deterministic`` resolved: given -> as given; unset -> True unless the agent will use CUDA
    (ParlAI's rule: CUDA when available and not ``--no-cuda``)."""
    value = opt.get('deterministic')
    if value is not None:
        return bool(value)
    return not (torch.cuda.is_available() and not opt.get('no_cuda'))
