"""ParlAI 1.7.2 on today's torch / numpy / transformers / Python: one narrow patch per breakage.

ParlAI is archived; its last release predates torch 2.2+, numpy 2, transformers 5 and
setuptools 81. Each function below fixes exactly one upstream breakage, is keyed to the
ParlAI module it patches (``PATCHES``), and is applied by the start-up finder right after
that module is executed (``parlai_conkd._startup``), in every process including spawned
workers. Every patch first checks that the breakage is present, so on a stack where the
upstream code works it changes nothing. Nothing here edits site-packages.

| patch | upstream location (parlai 1.7.2) | breakage |
|---|---|---|
| ``reduce_on_plateau_without_verbose`` | nn/lr_scheduler.py:338 | torch >= 2.7 removed ``verbose`` |
| ``lenient_iopath_kwargs`` | agents/hugging_face/dict.py:166, gpt2.py:75 | iopath rejects ``recursive=True`` |
| ``txt2vec_without_np_int`` | core/dict.py:754 | numpy 2 removed ``np.int`` |
| ``gpt2_reorder_cache`` | agents/hugging_face/gpt2.py:196 | transformers 5 returns a ``Cache`` |
| ``cpu_distributed_context`` | utils/distributed.py:260-295 | CUDA/NCCL assumed; gloo teardown deadlock |
| ``cpu_all_gather_list`` | utils/distributed.py:128-137 | CUDA buffers assumed |
| ``cpu_ddp_device_ids`` | core/torch_generator_agent.py:584, torch_ranker_agent.py:255 | ``device_ids=[-1]`` on CPU |
| ``cpu_join_device`` | utils/fsdp.py:234, :286 | join device ``-1`` on CPU |
| ``cpu_world_size_default`` | scripts/multiprocessing_train.py:92 | default world size 0 on CPU |
| ``gpu_world_size_guard`` | scripts/multiprocessing_train.py:60 | more workers than GPUs: NCCL fails late |
| ``delayed_nucleus_beam_mask`` | core/torch_generator_agent.py:1958-1969 | ``--inference delayednucleusbeam`` crashes (no ``get_mask``) |
| ``resumable_train_loop`` | scripts/train_model.py:360-366, 1014 | resumed runs report/record the checkpoint; finished runs retrain (#2939) |
| ``validation_metric_may_be_absent`` | scripts/train_model.py:583 | KeyError when the validation metric is absent |
| ``display_data_on_empty_data`` | scripts/display_data.py:75-79 | a fake padding example on an empty fold |

The CPU patches act only where ``cpu_distributed`` says a worker runs on CPU (no CUDA, ``--no-cuda``
or ``gpu == -1``); on a CUDA machine ParlAI's NCCL code runs unchanged.

Scope. The rows above the last three make ParlAI 1.7.2 run on today's stack (and one search that
crashed on any stack, ``delayed_nucleus_beam_mask``, below) and apply to everything. The last three
rows are bugs of ParlAI's scripts themselves, on any stack, and fixing them changes what ParlAI
does (what a rerun trains, what the final report scores, what ``M.opt`` and ``M.trainstats`` hold,
whether training stops, what is displayed). Installed into someone's ParlAI, the plugin must not
change their runs, so these three act only for this project's own classes: an agent
(``conkd_agent``) or a teacher (``conkd_task``) for which :func:`from_this_project` holds. Every
other agent and task, ParlAI's own included, gets ParlAI 1.7.2's behaviour and API unchanged
(``TrainLoop(opt).agent`` exists, ``--init-model M.checkpoint --load-from-checkpoint true`` resumes
from it, a rerun of a finished run resumes from ``M.checkpoint``). The decision of what a rerun of
our agents resumes from lives in :mod:`parlai_conkd.resume`.

``delayed_nucleus_beam_mask`` is a bug of ParlAI's search on any stack: its nucleus steps call
``NucleusSampling.select_paths`` on an object without the two helpers it uses, so every run with
``--inference delayednucleusbeam`` ended in an AttributeError at its first step. The patch gives the
class NucleusSampling's helpers (the fixed ``p``); it only turns that crash into the documented
search, so it applies to everything.

``core/opt.py:18`` imports ``pkg_resources``, which setuptools 81 removed: that one is fixed by
the pin ``setuptools<81`` in requirements/parlai-runtime.txt; ``quiet_pkg_resources_warning`` (run
before that module executes) only silences the deprecation warning the import prints.
"""

import atexit
import contextlib
import functools
import gc
import inspect
import json
import logging
import os
import pickle
import sys
import warnings

logger = logging.getLogger(__name__)

_ATTEMPTED = set()
_EFFECTIVE = set()


# --------------------------------------------------------------------------- torch >= 2.7
def reduce_on_plateau_without_verbose(module):
    """``ReduceLROnPlateau(verbose=True)`` raises TypeError since torch 2.7; every train_model
    with ParlAI's default scheduler died. Build it without ``verbose`` (it only printed).
    """
    import torch

    if (
        'verbose'
        in inspect.signature(torch.optim.lr_scheduler.ReduceLROnPlateau).parameters
    ):
        return False
    scheduler_cls = module.ReduceOnPlateauLRScheduler

    def __init__(self, optimizer, patience, decay, warmup_updates, warmup_rate):
        module.ParlAILRScheduler.__init__(self, warmup_updates, warmup_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, 'min', factor=decay, patience=patience
        )

    scheduler_cls.__init__ = __init__
    return True


# --------------------------------------------------------------------------- iopath
def lenient_iopath_kwargs(module):
    """ParlAI's HF agents call ``PathManager.get_local_path(dir, recursive=True)``; iopath's
    strict kwargs checking rejects the unknown keyword. Turn the check off (as iopath allows).
    """
    path_manager = module.PathManager
    if not hasattr(path_manager, 'set_strict_kwargs_checking'):
        return False
    path_manager.set_strict_kwargs_checking(False)
    return True


# --------------------------------------------------------------------------- numpy 2
def txt2vec_without_np_int(module):
    """``DictionaryAgent.txt2vec(text, np.ndarray)`` uses ``np.int``, removed in numpy 2."""
    import numpy as np

    if hasattr(np, 'int'):
        return False
    dict_cls = module.DictionaryAgent
    original = dict_cls.txt2vec

    @functools.wraps(original)
    def txt2vec(self, text, vec_type=list):
        if vec_type is np.ndarray:
            return np.fromiter(
                (self._word_lookup(token) for token in self.tokenize(text)),
                dtype=np.int64,
            )
        return original(self, text, vec_type)

    dict_cls.txt2vec = txt2vec
    return True


# --------------------------------------------------------------------------- transformers 5
def gpt2_reorder_cache(module):
    """transformers 5 hands back ``past_key_values`` as a ``Cache`` object, which ParlAI's
    tuple-of-tensors reordering cannot index: beam search and greedy generation failed.
    A Cache reorders itself along the batch dimension."""
    try:
        from transformers.cache_utils import Cache
    except ImportError:
        return False
    model_cls = module.HFGPT2Model
    original = model_cls.reorder_decoder_incremental_state

    @functools.wraps(original)
    def reorder_decoder_incremental_state(self, incremental_state, inds):
        if isinstance(incremental_state, Cache):
            incremental_state.reorder_cache(inds)
            return incremental_state
        return original(self, incremental_state, inds)

    model_cls.reorder_decoder_incremental_state = reorder_decoder_incremental_state
    return True


# --------------------------------------------------------------------------- ParlAI's searches
def delayed_nucleus_beam_mask(module):
    """``DelayedNucleusBeamSearch.select_paths`` runs ``NucleusSampling.select_paths(self, ...)``
    for its first ``delay`` steps, which calls ``self.get_mask`` and ``self.update_p``: methods of
    NucleusSampling that DelayedNucleusBeamSearch lacks (it sets ``self.p``, the fixed nucleus
    mass they read)."""
    search = module.DelayedNucleusBeamSearch
    missing = [n for n in ('get_mask', 'update_p') if not hasattr(search, n)]
    for name in missing:
        setattr(search, name, getattr(module.NucleusSampling, name))
    return bool(missing)


# --------------------------------------------------------------------------- CPU multiprocessing
def _cuda_available():
    import torch

    return torch.cuda.is_available()


#: gloo groups made here, held until ``_release_gloo_groups`` (at exit or the next group).
_HELD_GLOO_GROUPS = []


def _hold_gloo_group(group):
    """Keep a Python handle on ``group`` so that the DDP reducer never drops the last reference.

    ``~ProcessGroupGloo`` joins gloo's worker threads. A worker thread that just finished a
    collective frees its tensors, and freeing a tensor whose Python object was already dropped
    takes the GIL. The DDP ``Reducer`` owns a reference to the group and pybind destroys it with
    the GIL held, so when it held the last one (agent freed as ``multiprocess_train`` returns,
    after ``destroy_process_group``), the main thread waited in ``thread.join()`` holding the
    GIL while the worker waited for the GIL: rank 0 hung for ever in about 1 of 15 runs (the
    worker freeing an all-reduce that the final barrier had waited on). The Python handle's
    destructor releases the GIL first, so the last reference must be ours.
    """
    atexit.unregister(_release_gloo_groups)  # registered once, however many groups
    atexit.register(_release_gloo_groups)
    _HELD_GLOO_GROUPS.append(group)


def _release_gloo_groups():
    """Drop the held groups while the interpreter is fully alive, after what shares them (at exit,
    or when the next group is made: its collectives are long finished, so no thread needs the GIL).
    """
    gc.collect()  # a reducer in a reference cycle must go before the group, not after
    while _HELD_GLOO_GROUPS:
        _HELD_GLOO_GROUPS.pop()  # destructor releases the GIL, then joins gloo's threads


def cpu_distributed_context(module):
    """``distributed_context`` assumes CUDA: it divides by ``cuda.device_count()``, uses NCCL and
    calls ``torch.cuda.init()``. On a machine without CUDA, run the same protocol with gloo on
    CPU (gpu = -1). A barrier before ``destroy_process_group`` stops a worker from tearing the
    group down while another still syncs; the group itself is held past the agents using it
    (``_hold_gloo_group``), or the DDP reducer's destructor deadlocks on it."""
    original = module.distributed_context

    @contextlib.contextmanager
    def distributed_context(
        rank, opt, rank_offset=0, gpu=None, init_method="tcp://localhost:61337"
    ):
        if not cpu_distributed(opt, gpu):  # CUDA: ParlAI's own NCCL path, unchanged
            with original(rank, opt, rank_offset, gpu, init_method) as worker_opt:
                yield worker_opt
            return
        import copy

        import torch
        import torch.distributed as dist

        opt = copy.deepcopy(opt)
        rank = rank + rank_offset
        opt['rank'] = rank
        opt['gpu'] = -1
        opt.setdefault('override', {})['gpu'] = -1
        print_prefix = (
            'rank:{:3d} |'.format(rank) if (opt.get('verbose') or rank != 0) else None
        )
        suppress_output = not opt.get('verbose') and rank != 0
        with module.override_print(suppress_output, print_prefix):
            _release_gloo_groups()  # a previous run's group (and its store's port) in this process
            dist.init_process_group(
                backend='gloo',
                init_method=init_method,
                world_size=opt['distributed_world_size'],
                rank=rank,
            )
            module.logging.info("Distributed group initialized (gloo, CPU)")
            _hold_gloo_group(dist.distributed_c10d._get_default_group())
            torch.manual_seed(42)
            module.sync_object(None)
            try:
                yield opt
            finally:
                with contextlib.suppress(Exception):
                    dist.barrier()
                dist.destroy_process_group()

    distributed_context.__wrapped__ = original
    module.distributed_context = distributed_context
    return True


def cpu_distributed(opt, gpu=None) -> bool:
    """Whether a distributed worker runs on CPU with gloo (``cpu_distributed_context``): no CUDA, a
    worker placed on the CPU (``gpu == -1``) or ``--no-cuda``. Otherwise ParlAI's NCCL path runs as
    upstream wrote it and the CPU patches change nothing (issue #17)."""
    return not _cuda_available() or gpu == -1 or bool(opt.get('no_cuda'))


def check_world_size_fits_gpus(opt) -> None:
    """On GPUs ParlAI puts worker ``rank`` on GPU ``rank % device_count``: more workers than GPUs
    would share a GPU, which NCCL does not support; it would only say so once the workers are up, and
    a worker left waiting for the others can hang the run. Refuse before any worker starts, naming
    the option and the ways out."""
    import torch

    workers = int(opt.get('distributed_world_size') or 0)
    if cpu_distributed(opt):
        return
    gpus = torch.cuda.device_count()
    if workers > gpus:
        raise ValueError(
            f'--distributed-world-size {workers}: only {gpus} GPU(s) visible, and multiprocessing_train runs '
            f'one worker per GPU. Pass --distributed-world-size {gpus} (or fewer), make more GPUs visible '
            f'(CUDA_VISIBLE_DEVICES), or add --no-cuda to run {workers} workers on CPU (gloo).'
        )


def gpu_world_size_guard(module):
    """``multiprocessing_train`` with more workers than GPUs fails at once with a clear message
    (``check_world_size_fits_gpus``) instead of in NCCL after the workers started. Nothing changes
    on CPU or when the world size fits."""
    original = module.launch_and_train

    @functools.wraps(original)
    def launch_and_train(opt, port=None):
        check_world_size_fits_gpus(opt)
        return original(opt, port)

    module.launch_and_train = launch_and_train
    return True


def cpu_all_gather_list(module):
    """``all_gather_list`` builds its exchange buffers with ``.cuda()``; gloo needs CPU tensors."""
    original = module.all_gather_list

    @functools.wraps(original)
    def all_gather_list(data):
        import torch
        import torch.distributed as dist

        if not module.is_distributed() or dist.get_backend() != 'gloo':
            return original(data)
        rank, world_size = dist.get_rank(), dist.get_world_size()
        encoded = pickle.dumps(data)
        sizes = torch.zeros(world_size, dtype=torch.long)
        sizes[rank] = len(encoded)
        dist.all_reduce(sizes)
        positions = sizes.cumsum(dim=0)
        buffer = torch.zeros(int(positions[-1]), dtype=torch.uint8)
        start = int(positions[rank]) - len(encoded)
        buffer[start : int(positions[rank])] = torch.frombuffer(
            bytearray(encoded), dtype=torch.uint8
        )
        dist.all_reduce(buffer)
        result = []
        for i in range(world_size):
            chunk = buffer[int(positions[i] - sizes[i]) : int(positions[i])]
            try:
                result.append(pickle.loads(chunk.numpy().tobytes()))
            except pickle.UnpicklingError as exc:
                raise RuntimeError(
                    'There was an unpickling error in all_gather_list: workers are out of '
                    'sync (one expects to sync and another does not).'
                ) from exc
        return result

    module.all_gather_list = all_gather_list
    # Scripts bind the name at import time; rebind the ones already imported.
    for name in ('parlai.scripts.train_model', 'parlai.scripts.eval_model'):
        script = sys.modules.get(name)
        if script is not None and getattr(script, 'all_gather_list', None) is original:
            script.all_gather_list = all_gather_list
    return True


def _rebind_all_gather_list(module):
    """train_model / eval_model do ``from parlai.utils.distributed import all_gather_list``."""
    distributed = sys.modules.get('parlai.utils.distributed')
    patched = getattr(distributed, 'all_gather_list', None)
    if patched is None or getattr(module, 'all_gather_list', None) is patched:
        return False
    module.all_gather_list = patched
    return True


def cpu_ddp_device_ids(module):
    """The agents wrap their model in DDP with ``device_ids=[opt['gpu']]``, i.e. ``[-1]`` on CPU,
    which DDP rejects. ``[-1]`` is never a valid device list, so we read it as "CPU module"
    (``device_ids=None``) and pass everything else through unchanged."""
    import torch

    ddp = torch.nn.parallel.DistributedDataParallel
    if getattr(ddp, '_parlai_conkd_cpu_ids', False):
        return True

    class DistributedDataParallel(ddp):
        _parlai_conkd_cpu_ids = True

        def __init__(self, module, device_ids=None, *args, **kwargs):
            if device_ids is not None and list(device_ids) == [-1]:
                device_ids = None
            with warnings.catch_warnings():
                # ParlAI passes broadcast_buffers=False, deprecated in torch 2.13; nothing to act on
                warnings.filterwarnings(
                    'ignore',
                    message='`broadcast_buffers` is deprecated',
                    category=FutureWarning,
                )
                super().__init__(module, device_ids, *args, **kwargs)

    DistributedDataParallel.__qualname__ = ddp.__qualname__
    DistributedDataParallel.__module__ = ddp.__module__
    torch.nn.parallel.DistributedDataParallel = DistributedDataParallel
    return True


def cpu_join_device(module):
    """``JoinableTrainLoop`` / ``JoinableEvaluator`` report ``opt['gpu']`` (-1 on CPU) as their
    join device; torch's Join needs a real device."""
    import torch

    for cls_name in ('JoinableTrainLoop', 'JoinableEvaluator'):
        cls = getattr(module, cls_name)
        original = cls.join_device

        def join_device(self, _original=original):
            device = _original.fget(self)
            return torch.device('cpu') if device == -1 else device

        cls.join_device = property(join_device)
    return True


def cpu_world_size_default(module):
    """``multiprocessing_train`` defaults its world size to ``cuda.device_count()``: 0 on CPU,
    which launches no worker at all. Default to 1 there (pass ``--distributed-world-size N``).
    """
    if _cuda_available():
        return False
    original = module.setup_args

    @functools.wraps(original)
    def setup_args():
        parser = original()
        parser.set_defaults(distributed_world_size=1)
        return parser

    module.setup_args = setup_args
    return True


# --------------------------------------------------------------------------- scope of the bug fixes
def from_this_project(cls) -> bool:
    """The one criterion for the patches that change ParlAI's behaviour: ``cls`` or one of its
    bases is defined in ``parlai_conkd`` (``-m conkd_student``, ``-t redial_crs`` and any subclass
    of them; the short names resolve to our modules, see ``_startup``). ParlAI's own classes and
    anyone else's are not, so they keep ParlAI 1.7.2's behaviour."""
    return any(
        (getattr(c, '__module__', None) or '').partition('.')[0] == 'parlai_conkd'
        for c in inspect.getmro(cls)
    )


def _model_name(opt):
    """``--model``, or, as ParlAI's ``create_agent`` does without it, the one in ``M.opt``."""
    model = opt.get('model')
    model_file = opt.get('model_file')
    if not model and model_file:
        try:
            with open(model_file + '.opt', encoding='utf-8') as f:
                model = json.load(f).get('model')
        except (OSError, ValueError, AttributeError):
            return None
    return model


def conkd_agent(opt) -> bool:
    """Whether ``opt``'s agent is one of this project's (:func:`from_this_project`)."""
    model = _model_name(opt)
    if not model:
        return False
    from parlai.core.loader import load_agent_module

    try:
        return from_this_project(load_agent_module(model))
    except Exception:  # an unknown name: ParlAI says so when it builds the agent
        return False


def conkd_task(opt) -> bool:
    """Whether one of ``opt``'s tasks (``-t a,b``) is one of this project's teachers."""
    from parlai.core.loader import load_teacher_module

    for task in (opt.get('task') or '').split(','):
        try:
            if task.strip() and from_this_project(load_teacher_module(task.strip())):
                return True
        except Exception:
            continue
    return False


def _ours(loop) -> bool:
    """Whether the patched ``TrainLoop.__init__`` found this loop's agent to be ours."""
    return bool(vars(loop).get('_conkd_fixes'))


# --------------------------------------------------------------------------- train_model (ParlAI bugs)
def resumable_train_loop(module):
    """Resuming ``train_model`` from ``M.checkpoint`` (ParlAI #2939) left the run pointing at it.

    ``TrainLoop.__init__`` sets ``opt['init_model'] = M.checkpoint`` to resume; that value stays in
    the loop's opt and, through ``_get_init_model``, the agent's opt gets ``dict_file =
    M.checkpoint.dict``. So the agent reloaded after training (the final valid/test report) was
    built from the checkpoint, not the final model, and ``M.opt`` recorded both checkpoint paths.
    And since the checkpoint is never removed, an identical rerun of a finished run resumed from
    it and overwrote the finished model. Fixed here, for this project's agents only
    (:func:`conkd_agent`; every other agent runs ParlAI's ``TrainLoop`` untouched): after the agent
    is built, ``init_model`` / ``dict_file`` / ``load_from_checkpoint`` are what the user gave again
    (the loaded weights are unaffected); the loop records in ``M.trainstats`` when it finished;
    what a rerun does is :func:`parlai_conkd.resume.plan` (finished: say so, leave the model alone,
    report the recorded final reports; raised limit: continue from ``M``; the checkpoint named as
    ``--init-model``, or otherwise: ParlAI's resume). A finished loop builds nothing until asked:
    its ``agent`` / ``world`` (any attribute of a built loop) are then built from the final ``M``,
    never from the older checkpoint, so ``TrainLoop(opt).agent`` exists as in ParlAI.
    """
    from parlai_conkd import resume

    loop = module.TrainLoop
    if getattr(loop, '_parlai_conkd_resumable', False):
        return True
    original_init, original_train = loop.__init__, loop.train
    original_train_steps, original_save_stats = loop.train_steps, loop._save_train_stats

    def build(self, opt, plan):
        """ParlAI's ``__init__``, then the user's paths back in the loop's and the agent's opt."""
        given = {key: opt.get(key) for key in ('init_model', 'load_from_checkpoint')}
        # the dictionary the loop builds or loads (ParlAI's default: M.dict)
        dict_file = opt.get('dict_file') or (
            opt['model_file'] + '.dict' if opt.get('model_file') else None
        )
        if plan.action in (resume.FROM_MODEL_FILE, resume.FINISHED):
            opt['load_from_checkpoint'] = False  # ParlAI then loads M and M.trainstats
        try:
            original_init(self, opt)
        finally:
            opt.update(given)
        # _get_init_model rewrote dict_file to M.checkpoint.dict in the loop's opt (generator
        # agents pass it the caller's opt) and in the agent's
        checkpoint = f'{opt.get("model_file")}.checkpoint'
        agent_opt = getattr(vars(self).get('agent'), 'opt', None)
        for target in (opt, agent_opt):
            if target is None:
                continue
            if target.get('init_model') == checkpoint:
                target['init_model'] = given['init_model']
            if target.get('dict_file') == checkpoint + '.dict':
                target['dict_file'] = dict_file
            target['load_from_checkpoint'] = given['load_from_checkpoint']

    @functools.wraps(original_init)
    def __init__(self, opt):
        self._conkd_fixes = conkd_agent(opt)
        if not self._conkd_fixes:
            return original_init(self, opt)  # not our agent: ParlAI's loop, as it is
        plan = resume.plan(opt)
        if plan.action == resume.FINISHED:
            self.opt, self._conkd_finished_plan = opt, plan
            module.logging.warning(resume.finished_message(opt['model_file'], plan))
            return  # built on first use (__getattr__)
        if plan.action == resume.FROM_MODEL_FILE:
            module.logging.info(
                f'{plan.reason}; not from the older {opt["model_file"]}.checkpoint'
            )
        build(self, opt, plan)

    def __getattr__(self, name):
        """Only for attributes a loop lacks: a finished loop of ours builds its agent, world,
        counters (ParlAI's ``__init__`` on the final ``M``) when one is first asked for.
        """
        state = vars(self)
        plan = state.get('_conkd_finished_plan')
        if plan is None or name.startswith('__') or state.get('_conkd_building'):
            raise AttributeError(
                f'{type(self).__name__!r} object has no attribute {name!r}'
            )
        self._conkd_building = True
        module.logging.info(
            f'building the agent of the finished run from {self.opt["model_file"]}'
        )
        build(self, self.opt, plan)
        return getattr(self, name)

    @functools.wraps(original_train_steps)
    def train_steps(self):
        yield from original_train_steps(self)
        if _ours(self) and hasattr(self, '_total_epochs'):
            # at least one step: ParlAI writes trainstats then
            state = {
                'train_steps': self._train_steps,
                'total_epochs': self._total_epochs,
                'train_time': self.train_time.time(),
                'impatience': self.impatience,
            }
            self._conkd_finished = resume.finished_record(self.opt, state)
            self._save_train_stats()  # finished even if the final evaluation is interrupted

    @functools.wraps(original_save_stats)
    def _save_train_stats(self, suffix=None):
        original_save_stats(self, suffix)
        record = vars(self).get('_conkd_finished')
        if (
            record is not None
            and not suffix
            and self.opt.get('model_file')
            and module.is_primary_worker()
        ):
            resume.mark_finished(self.opt['model_file'] + '.trainstats', record)

    @functools.wraps(original_train)
    def train(self):
        plan = vars(self).get('_conkd_finished_plan')
        if plan is None:
            return original_train(self)
        reports = []
        for datatype in ('valid', 'test'):
            report = plan.stats.get(f'final_{datatype}_report') or {}
            if report:
                module.logging.report(
                    f'{datatype} (recorded when the run finished):\n{module.nice_report(report)}\n'
                )
            reports.append(report)
        return tuple(reports)

    loop.__init__, loop.train, loop.__getattr__ = __init__, train, __getattr__
    loop.train_steps, loop._save_train_stats = train_steps, _save_train_stats
    loop._parlai_conkd_resumable = True
    return True


def validation_metric_may_be_absent(module):
    """``TrainLoop.validate`` indexes the validation report by ``--validation-metric``: a KeyError
    killed training when a validation run produced no value for it (CRSLab #40: a validation fold
    without gold items has no recall@k; any agent, any metric). Log which metric is absent and what
    the report holds, skip the best-model comparison for this validation and go on (the periodic
    ``--save-after-valid`` checkpoint is still written). This project's agents only
    (:func:`conkd_agent`); for every other agent ParlAI's KeyError stands."""
    loop = module.TrainLoop
    if getattr(loop, '_parlai_conkd_metric_may_be_absent', False):
        return True
    original = loop.validate

    @functools.wraps(original)
    def validate(self):
        if not _ours(self):
            return original(self)
        metric = self.opt['validation_metric']
        reports_before = len(self.valid_reports)
        try:
            return original(self)
        except KeyError as exc:
            report = (
                self.valid_reports[-1]
                if len(self.valid_reports) > reports_before
                else None
            )
            if exc.args != (metric,) or report is None or metric in report:
                raise
        bookkeeping = {
            'train_time',
            'parleys',
            'train_steps',
            'total_exs',
            'total_epochs',
        }
        present = sorted(k for k in report if k not in bookkeeping)
        best = 'none yet' if self.best_valid is None else f'{self.best_valid:.4g}'
        module.logging.warning(
            f'validation metric {metric!r} is absent from this validation report ({report.get("exs", 0)} '
            f'examples; metrics present: {", ".join(present) or "none"}), e.g. because no validation '
            f'example has a gold item: this validation is not compared with the best so far ({best}) '
            'and training goes on. If it is never reported, check --validation-metric.'
        )
        self.validate_time.reset()
        if self.opt.get('model_file') and self.opt.get('save_after_valid'):
            module.logging.info(
                f"saving model checkpoint: {self.opt['model_file']}.checkpoint"
            )
            self.save_model('.checkpoint')
        return False

    loop.validate = validate
    loop._parlai_conkd_metric_may_be_absent = True
    return True


def display_data_on_empty_data(module):
    """``display_data`` parleys before it checks ``epoch_done``: on an empty fold the teacher's
    only act is batch padding, shown as a fake example (``[no text field]``, or ``[batch_padding]``
    with ``--verbose``). Stop at the first padding act instead, and say that there is nothing
    (more) to show. The display loop itself is ParlAI's. This project's tasks only
    (:func:`conkd_task`); every other task is displayed exactly as ParlAI does."""
    if getattr(module.display_data, '_parlai_conkd_empty_aware', False):
        return True
    original, original_create_task = module.display_data, module.create_task

    class _NoMoreExamples(Exception):
        pass

    def create_task(opt, agent):
        world = original_create_task(opt, agent)
        if not conkd_task(opt):
            return world
        parley, shown = world.parley, [0]

        def guarded_parley():
            parley()
            acts = world.get_acts()
            if acts and getattr(acts[0], 'is_padding', lambda: False)():
                raise _NoMoreExamples(shown[0])
            shown[0] += 1

        world.parley = guarded_parley
        return world

    @functools.wraps(original)
    def display_data(opt):
        try:
            return original(opt)
        except _NoMoreExamples as stop:
            shown = stop.args[0]
            where = f"-t {opt.get('task')} -dt {opt.get('datatype')}"
            if shown:
                module.logging.info(f'{where}: no more examples after {shown}')
            else:
                module.logging.warning(
                    f'{where}: the fold has no examples; nothing to display'
                )

    display_data._parlai_conkd_empty_aware = True
    module.create_task, module.display_data = create_task, display_data
    return True


# --------------------------------------------------------------------------- setuptools >= 80
def quiet_pkg_resources_warning():
    """``core/opt.py`` imports ``pkg_resources`` (kept working by the setuptools<81 pin); since
    setuptools 80 that prints a deprecation UserWarning in every ParlAI command. Silence just it.
    """
    import warnings

    warnings.filterwarnings(
        'ignore', message='pkg_resources is deprecated', category=UserWarning
    )
    return True


# --------------------------------------------------------------------------- this project's errors
def one_line_user_errors(module):
    """An uncaught error of this project (``parlai_conkd.errors.UserError``: its message names the
    file or option and the remedy) ends a ``parlai`` command as that message alone, not under a
    traceback (issue #22). Every other exception is shown as before."""
    from parlai_conkd.errors import install_excepthook

    install_excepthook()
    return True


def _opt_file_of_ours(optfile: str) -> bool:
    """A ``.opt`` of this project's models: in the ConKD zoo, beside the item catalog our
    generators save (``<model>.catalog.json``), or naming one of our agents itself or in the
    dictionary's options ParlAI saves beside it (``<model>.dict.opt``: a truncated ``.opt`` may
    have lost its ``model`` key, which ParlAI writes in key order)."""
    model = optfile[: -len('.opt')] if optfile.endswith('.opt') else optfile
    if (os.path.join('models', 'conkd') + os.sep) in os.path.abspath(optfile):
        return True
    if os.path.isfile(model + '.catalog.json'):
        return True
    for path in (optfile, model + '.dict.opt'):
        try:
            with open(path, 'rb') as f:
                if b'"conkd_' in f.read():
                    return True
        except OSError:
            continue
    return False


def damaged_opt_file_error(module):
    """A damaged ``.opt`` (empty, truncated, not JSON) of one of this project's models ended in
    ``JSONDecodeError`` or pickle's ``EOFError`` from ``Opt.load``, wherever ParlAI first read it;
    it now raises ``ModelFileError`` naming the file and the remedy (issue #22). A ``.opt`` that is
    not ours fails as in ParlAI."""
    opt_class = module.Opt
    original = opt_class.load.__func__
    if getattr(original, '_parlai_conkd', False):
        return True

    @functools.wraps(original)
    def load(cls, optfile):
        try:
            return original(cls, optfile)
        # JSONDecodeError is a ValueError; a JSON list or number fails as a TypeError
        except (ValueError, TypeError, EOFError, pickle.UnpicklingError):
            if not _opt_file_of_ours(optfile):
                raise
            from parlai_conkd.model_files import read_opt_file

            read_opt_file(optfile)  # raises ModelFileError naming it
            raise

    load._parlai_conkd = True
    opt_class.load = classmethod(load)
    return True


def missing_model_file_error(module):
    """``eval_model`` / ``interactive`` with ``-mf PATH`` and no file at PATH ended in ParlAI's
    traceback ("WARNING: Model file does not exist"); when the command names one of this project's
    agents (``-m conkd_*``) or tasks (``-t redial_crs...``) it is now ``ModelFileError`` naming the
    file and the remedy (issue #22). Otherwise nothing tells whose model was meant, and ParlAI's
    error stands, as it does for every other agent and task.
    """
    original = module.create_agent
    if getattr(original, '_parlai_conkd', False):
        return True

    @functools.wraps(original)
    def create_agent(opt, requireModelExists=False):
        try:
            return original(opt, requireModelExists=requireModelExists)
        except RuntimeError as exc:
            if not str(exc).startswith('WARNING: Model file does not exist'):
                raise
            if not ((opt.get('model') and conkd_agent(opt)) or conkd_task(opt)):
                raise
            from parlai_conkd.errors import ModelFileError, remedy

            path = opt['model_file']
            raise ModelFileError(
                f'{path}: no such model file; {remedy(path)}'
            ) from None

    create_agent._parlai_conkd = True
    module.create_agent = create_agent
    return True


#: ParlAI module -> fixes that must run before it is executed.
BEFORE_IMPORT = {
    'parlai.core.opt': (quiet_pkg_resources_warning,),
}

#: ParlAI module -> patches applied right after it is executed.
PATCHES = {
    'parlai.nn.lr_scheduler': (reduce_on_plateau_without_verbose,),
    'parlai.utils.io': (lenient_iopath_kwargs,),
    'parlai.core.dict': (txt2vec_without_np_int,),
    'parlai.agents.hugging_face.gpt2': (gpt2_reorder_cache,),
    'parlai.utils.distributed': (cpu_distributed_context, cpu_all_gather_list),
    'parlai.scripts.train_model': (
        _rebind_all_gather_list,
        resumable_train_loop,
        validation_metric_may_be_absent,
    ),
    'parlai.scripts.eval_model': (_rebind_all_gather_list,),
    'parlai.core.torch_generator_agent': (
        cpu_ddp_device_ids,
        delayed_nucleus_beam_mask,
    ),
    'parlai.core.torch_ranker_agent': (cpu_ddp_device_ids,),
    'parlai.utils.fsdp': (cpu_join_device,),
    'parlai.scripts.multiprocessing_train': (
        cpu_world_size_default,
        gpu_world_size_guard,
    ),
    'parlai.scripts.display_data': (display_data_on_empty_data,),
    'parlai.core.opt': (damaged_opt_file_error,),
    'parlai.core.agents': (missing_model_file_error,),
    'parlai.core.script': (one_line_user_errors,),
}


def _run_once(module_name, fixes, *args):
    """Run each fix for ``module_name`` once per process; never let one break an import."""
    for fix in fixes:
        key = (module_name, fix.__name__)
        if key in _ATTEMPTED:
            continue
        _ATTEMPTED.add(key)
        try:
            if fix(*args):
                _EFFECTIVE.add(key)
                logger.debug(
                    'parlai_conkd.compat: applied %s for %s', fix.__name__, module_name
                )
        except (
            Exception
        ) as exc:  # an unexpected ParlAI version: warn, leave upstream as is
            logger.warning(
                'parlai_conkd.compat: %s could not patch %s: %s',
                fix.__name__,
                module_name,
                exc,
            )


def apply_patches(module_name, module):
    """Apply the patches registered for ``module_name`` right after it was executed."""
    _run_once(module_name, PATCHES.get(module_name, ()), module)


def prepare_import(module_name):
    """Run the BEFORE_IMPORT fixes for ``module_name`` before it is executed."""
    _run_once(module_name, BEFORE_IMPORT.get(module_name, ()))


def apply_to_loaded_modules():
    """Patch ParlAI modules imported before our finder was installed (e.g. no .pth processing)."""
    for module_name in PATCHES:
        module = sys.modules.get(module_name)
        if module is not None:
            apply_patches(module_name, module)


def applied_patches():
    """Patches that changed something in this process, as ``module:patch`` strings."""
    return sorted(f'{m}:{p}' for m, p in _EFFECTIVE)
