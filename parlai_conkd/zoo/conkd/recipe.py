"""The recorded recipe of the ConKD zoo: every ``parlai train_model`` argument of every model.

This is the one place the zoo models are defined; ``parlai_conkd/zoo/conkd/builder.py`` runs it and
docs/zoo.md cites it. ``python -m parlai_conkd.zoo.conkd.recipe [--recipe tiny]``
prints the commands as shell lines (what docs/zoo.md shows).

Order matters: the two teachers first, then the students distilled from them. The data is
whatever ReDial the ``redial_crs`` task reaches (``$CONKD_REDIAL_PATH``, else the official
download); the movie KG (``$CONKD_REDIAL_META_PATH``) is used when set, otherwise the
recommendation teacher is trained without the KG (``--use-kg false``) and says so.

Recipes: ``default`` (sized for a 2-core CPU: every model trains a fixed number of epochs and
keeps its best validation checkpoint; ``--seed`` and the thread count are fixed, so two builds give
the same weights; see docs/zoo.md, "Recipe"), ``tiny`` (40 dialogues, one epoch: tests),
``smoke`` (the default recipe's options at the tiny size: the README commands' test) and
``paper`` (one GPU: DialoGPT-small generators under ``--fp16 true``, meant for the whole official
ReDial; issue #17) and ``modern`` (one GPU: Qwen2.5-0.5B-Instruct with LoRA under bf16; issue #25).
Choose with ``$CONKD_ZOO_RECIPE``.
"""

import argparse
import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

#: Bump when a recipe changes: models stamped with another version are rebuilt (or re-fetched).
ZOO_VERSION = 'v2'
ENV_RECIPE = 'CONKD_ZOO_RECIPE'
DEFAULT_RECIPE = 'default'

#: Build order: teachers before the students that distil from them.
MODELS: Tuple[str, ...] = ('rec_teacher', 'dialogue_teacher', 'soft', 'hard')
DEPENDENCIES: Dict[str, Tuple[str, ...]] = {
    'rec_teacher': (),
    # its item token embeddings start from the rec teacher's item vectors (--item-embeddings-from)
    'dialogue_teacher': ('rec_teacher',),
    'soft': ('rec_teacher', 'dialogue_teacher'),
    'hard': ('rec_teacher', 'dialogue_teacher'),
}
DESCRIPTIONS = {
    'rec_teacher': 'recommendation teacher (R-GCN over the movie KG, item ranking)',
    'dialogue_teacher': 'dialogue teacher (transformer generator over words + item tokens, item embeddings '
    'from the rec teacher)',
    'soft': 'ConKD student, soft gate (mixture weighted by the teacher\'s item mass)',
    'hard': 'ConKD student, hard gate (rec teacher where item mass > 0.5, else dialogue teacher)',
}


@dataclass(frozen=True)
class Recipe:
    name: str
    #: arguments every model gets (seed, data slice, logging, final report size)
    common: Tuple[str, ...]
    rec_teacher: Tuple[str, ...]
    #: the transformer shape shared by the dialogue teacher and both students (same vocabulary)
    generator: Tuple[str, ...]
    dialogue_teacher: Tuple[str, ...]
    student: Tuple[str, ...]
    #: the training budget: epochs per model (deterministic, unlike a wall-clock cap)
    epochs: Mapping[str, float]
    #: rough wall-clock minutes per model on this project's 2-core CPU (measured; see docs/zoo.md)
    expected_minutes: Mapping[str, float] = field(default_factory=dict)
    #: CPU threads of every training process: float sums depend on it, so it is part of the
    #: recipe (same seed + same threads + same torch = same weights)
    threads: int = 2
    #: decoding saved with the generators (chosen on the validation fold, see the project README's "Item-aware decoding")
    decoding: Tuple[str, ...] = ()
    #: the dialogue teacher's item token embeddings start from the rec teacher's item vectors
    #: (``--item-embeddings-from``; either backbone)
    item_embeddings_from_rec_teacher: bool = True


def args(text: str) -> Tuple[str, ...]:
    """The arguments written in ``text``, split as a shell would split them: a recipe is written
    as a readable block, one group of options per line (``#`` starts a comment, as in a shell).
    """
    return tuple(shlex.split(text, comments=True))


#: The seed of every model of the zoo (``--seed``; see parlai_conkd/seeding.py).
SEED = 0

#: The default recipe's transformer (dialogue teacher and both students) and its training.
_GENERATOR_SHAPE = args('''
    --n-layers 2 --n-heads 4 --embedding-size 128 --ffn-size 512 --dropout 0.1  # shape
    --truncate 96 --text-truncate 96 --label-truncate 32                        # truncation
    --dict-minfreq 2                                                            # vocabulary
    -bs 64 --optimizer adam -lr 1e-3 --lr-scheduler none                        # optimisation
    --skip-generation true                                  # validation: teacher-forced only
    ''')
#: The final valid/test report of train_model covers as many examples as a validation does
#: (``--validation-max-exs`` of each model; the full evaluation is ``parlai eval_model``, see
#: projects/conkd/README.md): keeps the build short.
_SHORT_FINAL_EVAL = ('--short-final-eval', 'true')


def _cap(minutes: float) -> Tuple[str, ...]:
    """A guard against a stuck or very slow machine, set well above the expected time: it never
    binds on the machines the recipe is sized for (a build it cut short is not reproducible, and
    the builder says so)."""
    return ('--max-train-time', str(int(minutes * 60)))


RECIPES: Dict[str, Recipe] = {
    'default': Recipe(
        name='default',
        common=args(f'--seed {SEED} --log-every-n-secs 10') + _SHORT_FINAL_EVAL,
        rec_teacher=args('''
            --rec-dim 64                                                   # shape
            -bs 128                                                        # optimisation
            --redial-rec-seeker-mentions true                              # data
            --validation-max-exs -1 -veps 1 -vmt recall@10 -vmm max -vp 2  # validation
            ''') + _cap(10),
        generator=_GENERATOR_SHAPE,
        dialogue_teacher=args('''
            --validation-max-exs 500 -veps 0.5 -vmt ppl -vmm min -vp 3  # validation
            ''') + _cap(40),
        # students keep the checkpoint that ranks items best at the gold reply's item slot
        # (teacher-forced ReR@10 on the whole valid fold): the in-reply recommendation metric
        student=args('''
            --kd-weight 0.5 --kd-temperature 1.0                             # distillation
            --teacher-cache-topk 64 --teacher-cache-rec-topk 0               # cache (rec: whole)
            --validation-max-exs -1 -veps 0.5 -vmt tf_rer@10 -vmm max -vp 4  # validation
            ''')
        # a guard: 25 min bound on a 2-core machine at load 10 (1.5 of 3 epochs)
        + _cap(90),
        epochs={'rec_teacher': 5, 'dialogue_teacher': 6, 'soft': 3, 'hard': 3},
        # measured on a quiet 2-core machine after issue #26 (docs/zoo.md, "Build time")
        expected_minutes={
            'rec_teacher': 1,
            'dialogue_teacher': 8,
            'soft': 5,
            'hard': 5,
        },
        # chosen on the validation fold (project README, "Item-aware decoding"): class decoding, top-10 sampling for
        # the first 3 tokens then beam 5, no repeated 3-grams in the reply or from the context
        decoding=args('''
            --item-decoding class
            --inference delayedbeam --topk 10 --beam-delay 3 --beam-size 5
            --beam-block-ngram 3 --beam-context-block-ngram 3
            '''),
    ),
    'tiny': Recipe(
        name='tiny',
        common=args(f'--seed {SEED} --redial-max-dialogues 40 --log-every-n-secs 2'),
        rec_teacher=args('--rec-dim 16 -bs 16'),
        generator=args('''
            --n-layers 1 --n-heads 2 --embedding-size 32 --ffn-size 64  # shape
            --truncate 64 --text-truncate 64 --label-truncate 16        # truncation
            -bs 8                                                       # optimisation
            --skip-generation true                                      # validation
            '''),
        dialogue_teacher=(),
        student=args('--kd-weight 0.5'),
        epochs={'rec_teacher': 1, 'dialogue_teacher': 1, 'soft': 1, 'hard': 1},
        expected_minutes={
            'rec_teacher': 0.5,
            'dialogue_teacher': 0.5,
            'soft': 1,
            'hard': 1,
        },
        # token decoding: a one-epoch 32-d model's item mass beats every word at almost every
        # step, so class decoding would answer with a list of films (class decoding has its own
        # CLI tests on a copy of ReDial made for it: tests/dialogue/test_item_decoding_cli.py)
        decoding=args('--item-decoding token'),
    ),
}


# ---------------------------------------------------------------------------- smoke (issue #22)
def with_values(args: Sequence[str], values: Mapping[str, str]) -> Tuple[str, ...]:
    """``args`` with the value after each flag of ``values`` replaced (a flag absent is appended).

    Raises ValueError for a flag of ``args`` that has no value after it. (The smoke recipe below
    and the projects/conkd scripts build their variants of the recipe with it.)
    """
    out, todo = list(args), dict(values)
    for i, arg in enumerate(out):
        if arg in todo:
            if i + 1 >= len(out):
                raise ValueError(f'{arg} has no value in {args}')
            out[i + 1] = todo.pop(arg)
    for flag, value in todo.items():
        out += [flag, value]
    return tuple(out)


def _smoke(default: Recipe) -> Recipe:
    """The default recipe at test size: every option the default recipe saves with its models
    (decoding, truncation, validation rule, KD settings) is the default's; only the data slice,
    the model sizes, batch sizes and the epochs are small. The README's commands are tested against
    it (tests/zoo/test_readme_commands.py): a zoo saved differently (``tiny``'s token greedy
    decoding) hid a crash of ``--inference greedy`` on the real zoo (issue #22)."""
    sizes = {
        '--n-layers': '1',
        '--n-heads': '2',
        '--embedding-size': '32',
        '--ffn-size': '64',
        '-bs': '8',
    }
    few = {'--validation-max-exs': '40'}
    return Recipe(
        name='smoke',
        common=(*default.common, '--redial-max-dialogues', '40'),
        rec_teacher=with_values(
            default.rec_teacher, {'--rec-dim': '16', '-bs': '16', **few}
        ),
        generator=with_values(default.generator, sizes),
        dialogue_teacher=with_values(default.dialogue_teacher, few),
        student=with_values(default.student, few),
        epochs={model: 1 for model in MODELS},
        expected_minutes={
            'rec_teacher': 0.3,
            'dialogue_teacher': 0.5,
            'soft': 0.5,
            'hard': 0.5,
        },
        threads=default.threads,
        decoding=default.decoding,
        item_embeddings_from_rec_teacher=default.item_embeddings_from_rec_teacher,
    )


RECIPES['smoke'] = _smoke(RECIPES['default'])


# ---------------------------------------------------------------------------- paper (issue #17)
#: the paper's backbone for the dialogue teacher and the students (a hub name: see
#: parlai_conkd/agents/conkd_dialogue_teacher/hf_model.py; offline, pass a local copy instead)
PAPER_HF_MODEL = 'microsoft/DialoGPT-small'


def _uncapped(args: Sequence[str]) -> Tuple[str, ...]:
    """``args`` without ``--max-train-time`` (the CPU recipes' cap): the paper recipe runs its epochs."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == '--max-train-time':
            skip = True
        else:
            out.append(arg)
    return tuple(out)


#: One GPU, DialoGPT-small for the dialogue teacher and both students, ``--fp16 true``. Our choices,
#: not the paper's (its hyper-parameters were not readable here; see projects/conkd/README.md):
#: batch 32, AdamW lr 5e-5 with 500 warm-up updates, weight decay 0.01, gradient clip 1.0, context
#: 256 / response 64 BPE tokens, up to 5 epochs for the dialogue teacher and 3 for each student with
#: early stopping on validation perplexity (patience: 4 validations, two per epoch).
_PAPER_GENERATOR = args(f'''
    --backbone hf --hf-model-path {PAPER_HF_MODEL}           # backbone
    --fp16 true                                              # precision
    --text-truncate 256 --label-truncate 64 --truncate 256   # truncation
    -bs 32 --optimizer adamw -lr 5e-5 --weight-decay 0.01    # optimisation
    --warmup-updates 500 --gradient-clip 1.0
    --validation-every-n-epochs 0.5 --validation-metric ppl  # validation
    --validation-metric-mode min --validation-patience 4
    --skip-generation true
    ''')

RECIPES['paper'] = Recipe(
    name='paper',
    common=args(f'--seed {SEED} --log-every-n-secs 60'),
    # the rec teacher as in the default zoo recipe (same model and arguments), without its time cap
    rec_teacher=_uncapped(RECIPES['default'].rec_teacher),
    generator=_PAPER_GENERATOR,
    dialogue_teacher=(),
    student=args('--kd-weight 0.5 --kd-temperature 1.0'),
    epochs={
        'rec_teacher': RECIPES['default'].epochs['rec_teacher'],
        'dialogue_teacher': 5,
        'soft': 3,
        'hard': 3,
    },
    # not measured: no GPU run of this recipe yet, so the builder announces no duration
    expected_minutes={},
    decoding=args('--item-decoding class'),
    # DialoGPT brings its own embeddings; --item-embeddings-from is for the transformer backbone
    item_embeddings_from_rec_teacher=False,
)


# --------------------------------------------------------------------------- modern (issue #25)
#: a <= 1B-parameter instruction-tuned causal LM (494M parameters; Apache-2.0), LoRA on one GPU
MODERN_HF_MODEL = 'Qwen/Qwen2.5-0.5B-Instruct'

#: One GPU, Qwen2.5-0.5B-Instruct with LoRA (rank 16 on q/k/v/o, the item/flag/pad rows trainable)
#: under bf16 autocast, for the dialogue teacher and both students; the item rows start from the
#: rec teacher's item vectors. Our choices, not measured on the whole ReDial yet: batch 16, AdamW
#: lr 2e-4 (LoRA's usual order of magnitude) with 200 warm-up updates, context 256 / response 64
#: tokens, early stopping on validation perplexity. Memory: docs/gpu.md.
_MODERN_GENERATOR = args(f'''
    --backbone hf --hf-model-path {MODERN_HF_MODEL}          # backbone
    --lora-r 16 --lora-alpha 32 --lora-dropout 0.05          # LoRA (peft)
    --hf-bf16 true                                           # precision
    --text-truncate 256 --label-truncate 64 --truncate 256   # truncation
    -bs 16 --optimizer adamw -lr 2e-4 --weight-decay 0.0     # optimisation
    --warmup-updates 200 --gradient-clip 1.0
    --validation-every-n-epochs 0.5 --validation-metric ppl  # validation
    --validation-metric-mode min --validation-patience 4
    --skip-generation true
    ''')

RECIPES['modern'] = Recipe(
    name='modern',
    common=args(f'--seed {SEED} --log-every-n-secs 60'),
    rec_teacher=_uncapped(RECIPES['default'].rec_teacher),
    generator=_MODERN_GENERATOR,
    dialogue_teacher=(),
    student=args('--kd-weight 0.5 --kd-temperature 1.0'),
    epochs={
        'rec_teacher': RECIPES['default'].epochs['rec_teacher'],
        'dialogue_teacher': 3,
        'soft': 2,
        'hard': 2,
    },
    # not measured: no GPU run of this recipe yet
    expected_minutes={},
    decoding=args('--item-decoding class'),
    item_embeddings_from_rec_teacher=True,
)


def recipe_name(name: Optional[str] = None) -> str:
    name = name or os.environ.get(ENV_RECIPE) or DEFAULT_RECIPE
    if name not in RECIPES:
        raise ValueError(
            f'${ENV_RECIPE}={name!r}: unknown zoo recipe; choose one of {sorted(RECIPES)}'
        )
    return name


def with_dependencies(model: str) -> List[str]:
    """``model`` and everything it is distilled or initialised from (transitively), in build order."""
    if model not in DEPENDENCIES:
        raise ValueError(
            f'unknown ConKD zoo model {model!r}; choose one of {list(MODELS)}'
        )
    wanted, todo = set(), [model]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(DEPENDENCIES[name])
    return [m for m in MODELS if m in wanted]


def train_args(
    model: str,
    model_file: str,
    datapath: str,
    teacher_files: Optional[Mapping[str, str]] = None,
    use_kg: bool = True,
    recipe: Optional[str] = None,
) -> List[str]:
    """The ``parlai train_model`` arguments (after ``train_model``) that build ``model``."""
    r = RECIPES[recipe_name(recipe)]
    base = [
        '-mf',
        model_file,
        '-dp',
        datapath,
        '--num-epochs',
        str(r.epochs[model]),
        *r.common,
    ]
    if model == 'rec_teacher':
        return [
            '-t',
            'redial_crs:rec',
            '-m',
            'conkd_rec_teacher',
            '--use-kg',
            str(use_kg).lower(),
            *base,
            *r.rec_teacher,
        ]
    teacher_files = teacher_files or {}
    missing = [t for t in DEPENDENCIES.get(model, ()) if t not in teacher_files]
    if missing:
        raise ValueError(f'{model} needs the model files of {missing}')
    if model == 'dialogue_teacher':
        item_embeddings = (
            ('--item-embeddings-from', teacher_files['rec_teacher'])
            if r.item_embeddings_from_rec_teacher
            else ()
        )
        return [
            '-t',
            'redial_crs',
            '-m',
            'conkd_dialogue_teacher',
            *base,
            *r.generator,
            *r.dialogue_teacher,
            *item_embeddings,
            *r.decoding,
        ]
    if model in ('soft', 'hard'):
        # the student starts from the dialogue teacher's weights (same shape and vocabulary) and
        # is fine-tuned with the gated distillation loss: a useful student in one epoch on a CPU
        return [
            '-t',
            'redial_crs',
            '-m',
            'conkd_student',
            '--gate',
            model,
            '--dialogue-teacher-file',
            teacher_files['dialogue_teacher'],
            '--rec-teacher-file',
            teacher_files['rec_teacher'],
            '--init-model',
            teacher_files['dialogue_teacher'],
            '--teacher-cache',
            model_file + '.teacher_cache',
            *base,
            *r.generator,
            *r.student,
            *r.decoding,
        ]
    raise ValueError(f'unknown ConKD zoo model {model!r}; choose one of {list(MODELS)}')


def recipe_key(model: str, use_kg: bool, recipe: Optional[str] = None) -> str:
    """Identifies the arguments a model was built with (paths left out): part of its stamp."""
    placeholders = {t: f'<{t}>' for t in DEPENDENCIES[model]}
    args = train_args(model, '<model_file>', '<datapath>', placeholders, use_kg, recipe)
    return hashlib.sha256(json.dumps([ZOO_VERSION, args]).encode()).hexdigest()[:16]


def commands(
    datapath: str = 'data',
    models_dir: str = 'data/models/conkd',
    use_kg: bool = True,
    recipe: Optional[str] = None,
) -> List[str]:
    """Shell lines reproducing the whole family (what docs/zoo.md shows)."""
    files = {m: os.path.join(models_dir, m) for m in MODELS}
    return [
        'parlai train_model '
        + ' '.join(
            shlex.quote(a)
            for a in train_args(m, files[m], datapath, files, use_kg, recipe)
        )
        for m in MODELS
    ]


def wrapped(line: str, width: int = 100) -> str:
    """A shell line broken into continuation lines (``\\``) of at most ``width`` characters where
    possible, never between an option and its value."""
    tokens, words = line.split(' '), []
    for token in tokens:  # an option stays on one line with its value
        if (
            words
            and words[-1].startswith('-')
            and ' ' not in words[-1]
            and not token.startswith('-')
        ):
            words[-1] += ' ' + token
        else:
            words.append(token)
    lines, current = [], ''
    for word in words:
        if current and len(current) + 1 + len(word) > width - 2:
            lines.append(current + ' \\')
            current = '    ' + word
        else:
            current = f'{current} {word}' if current else word
    return '\n'.join(lines + [current])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description='Print the ConKD zoo recipe as parlai commands.'
    )
    parser.add_argument('--recipe', default=None, choices=sorted(RECIPES))
    parser.add_argument('--datapath', default='data')
    parser.add_argument(
        '--no-kg',
        action='store_true',
        help='the variant used when no movie KG is available',
    )
    parser.add_argument(
        '--wrap',
        type=int,
        default=0,
        help='break lines at this width (0: one line each)',
    )
    args = parser.parse_args(argv)
    for line in commands(
        args.datapath,
        os.path.join(args.datapath, 'models', 'conkd'),
        not args.no_kg,
        args.recipe,
    ):
        print(wrapped(line, args.wrap) if args.wrap else line)


if __name__ == '__main__':
    main()
