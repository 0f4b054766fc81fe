"""Helpers shared by the tests, in one module (ParlAI's ``parlai/utils/testing.py`` pattern).

Fixtures stay in the ``conftest.py`` files, which import what they need from here; a test module
imports helpers from here only, never from a ``conftest.py`` or another test module
(tests/foundation/test_test_layout.py checks it).
"""

import http.server
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from parlai_conkd.zoo.conkd import builder

# ------------------------------------------------------ Data, skips and the parlai command line

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get('CONKD_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data')
)
SHARED_REDIAL = SHARED_DATA / 'redial'
SHARED_REDIAL_META = SHARED_DATA / 'redial-meta'
PARLAI = str(Path(sys.executable).with_name('parlai'))


def shared_redial_or_skip():
    """Path of the shared ReDial copy; skips the calling test with the reason when it is absent."""
    if not (SHARED_REDIAL / 'train_data.jsonl').is_file():
        pytest.skip(
            f'shared ReDial data not found at {SHARED_REDIAL} (set CONKD_SHARED_DATA)'
        )
    return SHARED_REDIAL


def shared_meta_or_skip():
    if not (SHARED_REDIAL_META / 'kg.json').is_file():
        pytest.skip(
            f'shared movie KG not found at {SHARED_REDIAL_META} (set CONKD_SHARED_DATA)'
        )
    return SHARED_REDIAL_META


def run_parlai(args, cwd=None, env=None, input=None, timeout=300, check=True):
    """Run the installed `parlai` CLI in a subprocess; on failure show its output."""
    full_env = dict(os.environ)
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    full_env.update(env or {})
    proc = subprocess.run(
        [PARLAI, *[str(a) for a in args]],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f'parlai {" ".join(map(str, args))} exited {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}'
        )
    return proc


def train_stats(model_file):
    """``train_model``'s own record of a run (``<model_file>.trainstats``: ``train_reports``,
    ``final_valid_report``, ``final_test_report``). Unlike the printed reports, which ParlAI renders as
    tables when pandas is installed (as on the GPU machine), this is JSON everywhere."""
    with open(f'{model_file}.trainstats', encoding='utf-8') as f:
        return json.load(f)


def eval_report(args, report_file, **kwargs):
    """Run ``parlai eval_model`` with ``--report-filename`` and return its report (JSON everywhere)."""
    run_parlai(['eval_model', *args, '--report-filename', report_file], **kwargs)
    with open(report_file, encoding='utf-8') as f:
        return json.load(f)['report']


#: the environment of a smoke-recipe zoo on the shared data (``smoke_zoo``)
def smoke_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith('CONKD_')}
    env.update(
        CONKD_ZOO_RECIPE='smoke',
        CONKD_REDIAL_PATH=str(SHARED_REDIAL),
        CONKD_REDIAL_META_PATH=str(SHARED_REDIAL_META),
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
    )
    return env


# --------------- Tiny ReDial copies in the official layout (dialogues spelled out in the tests)

MOVIES_CSV = (
    'movieId,movieName,nbMentions\n'
    '111,Alien  (1979),5\n'
    '222,Heat (1995),3\n'
    '333,The Godfather ,2\n'
    '444,Up (2009),1\n'
)
#: catalog indices of the movies above (file order)
ALIEN, HEAT, GODFATHER, UP = 0, 1, 2, 3


def dialogue(conversation_id, messages, seeker=1, recommender=2, **extra):
    """A raw ReDial dialogue; ``messages`` is [(sender, text)], message ids/time offsets omitted."""
    return {
        'conversationId': str(conversation_id),
        'movieMentions': {},
        'respondentQuestions': {},
        'initiatorQuestions': [],
        'messages': [{'senderWorkerId': s, 'text': t} for s, t in messages],
        'initiatorWorkerId': seeker,
        'respondentWorkerId': recommender,
        **extra,
    }


def default_dialogues(n=6):
    return [
        dialogue(
            100 + i,
            [
                (1, 'hi, I liked @111'),
                (2, 'try @222'),
                (2, 'or @333?'),
                (1, 'seen @222, thanks'),
                (2, 'then @444'),
            ],
        )
        for i in range(n)
    ]


def write_redial(
    directory: Path, train=None, test=None, movies=MOVIES_CSV, train_text=None
):
    """Write the three official files; ``train_text`` overrides train_data.jsonl verbatim."""
    directory.mkdir(parents=True, exist_ok=True)
    train = default_dialogues() if train is None else train
    test = default_dialogues(2) if test is None else test
    (directory / 'train_data.jsonl').write_text(
        train_text
        if train_text is not None
        else ''.join(json.dumps(d) + '\n' for d in train)
    )
    (directory / 'test_data.jsonl').write_text(
        ''.join(json.dumps(d) + '\n' for d in test)
    )
    (directory / 'movies_with_mentions.csv').write_text(movies)
    return directory


def zip_redial(directory: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, 'w') as zf:
        for name in ('train_data.jsonl', 'test_data.jsonl', 'movies_with_mentions.csv'):
            zf.write(directory / name, name)
    return zip_path


def task_opt(datapath, **kwargs):
    opt = {
        'datapath': str(datapath),
        'redial_path': None,
        'redial_meta_path': None,
        'redial_max_dialogues': 0,
    }
    opt.update(kwargs)
    return opt


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# --------- Tiny dialogue models: a catalog, a random GPT-2 on disk, an in-process agent's shape

TINY_ITEMS = [
    ('111', 'The Matrix', 1999),
    ('222', 'Heat', 1995),
    ('333', 'Alien', 1979),
    ('444', 'Up', 2009),
    ('555', 'Jaws', None),
]


def _bytes_to_unicode():
    """GPT-2's byte -> printable-character table (the tokenizer's alphabet)."""
    printable = (
        list(range(ord('!'), ord('~') + 1))
        + list(range(ord('¡'), ord('¬') + 1))
        + list(range(ord('®'), ord('ÿ') + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def make_tiny_gpt2(directory: str) -> str:
    """A random 1-layer GPT-2 (16-d) with a byte-level tokenizer (256 bytes + a few merges).

    transformers 5 ignores vocab_file/merges_file given to the tokenizer's constructor, so the
    files are written first and loaded with ``from_pretrained(dir)``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    os.makedirs(directory, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'o u', 'e r', 'Ġ a', 'Ġ i']
    for merge in merges:
        vocab[merge.replace(' ', '')] = len(vocab)
    eos = len(vocab)
    vocab['<|endoftext|>'] = eos
    with open(os.path.join(directory, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + '\n'.join(merges) + '\n')
    GPT2Tokenizer.from_pretrained(directory).save_pretrained(directory)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=512,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


# --------- Tiny causal LMs of several architectures with locally trained tokenizers (issue #25)

#: ``config.model_type`` -> (config of a tiny random model, the tokenizer's special tokens). The
#: special tokens differ on purpose: GPT-2 and GPT-NeoX have only an end token (the backbone adds
#: a pad), Llama has bos/eos and an untied head, Qwen2 pads with its own token (tied head, spare
#: rows past the tokenizer).
TINY_CAUSAL_LMS = {
    'gpt2': (
        dict(n_embd=16, n_layer=1, n_head=2, n_positions=512),
        dict(eos_token='<|endoftext|>', bos_token='<|endoftext|>'),
    ),
    'llama': (
        dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        ),
        dict(bos_token='<s>', eos_token='</s>', unk_token='<unk>'),
    ),
    'qwen2': (
        dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        ),
        dict(eos_token='<|im_end|>', pad_token='<|endoftext|>'),
    ),
    'gpt_neox': (
        dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=512,
            rotary_pct=0.5,
        ),
        dict(eos_token='<|endoftext|>'),
    ),
}
#: the tokenizer's training text when the shared ReDial data is absent (unit tests only)
FALLBACK_TEXT = [
    'Hi! I am looking for a good movie to watch tonight.',
    'Have you seen The Matrix? It is a great science fiction film.',
    'I like comedies and horror movies, but not romance.',
    'You should watch Alien, or maybe Jaws if you like sharks.',
    'Thanks, I will check those out. Have a nice day!',
    'What kind of movies do you like? I love action films like Heat.',
]


def redial_texts(limit=300):
    """Message texts of the first ``limit`` shared ReDial training dialogues, or None if absent."""
    path = SHARED_REDIAL / 'train_data.jsonl'
    if not path.is_file():
        return None
    texts = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f):
            if number >= limit:
                break
            texts += [m['text'] for m in json.loads(line)['messages']]
    return texts


def make_tiny_causal_lm(
    directory, model_type='llama', texts=None, vocab_size=320, seed=0, **config
):
    """A random tiny ``model_type`` causal LM (:data:`TINY_CAUSAL_LMS`) and a byte-level BPE
    tokenizer trained here with the ``tokenizers`` library on ``texts`` (default: a ReDial slice,
    else :data:`FALLBACK_TEXT`), both saved in ``directory`` for ``AutoModelForCausalLM`` /
    ``AutoTokenizer``. No download. ``config``: overrides of the model's config (e.g. a real
    model's shape, ``vocab_size`` included: projects/conkd/gpu_check.py). Returns ``directory``.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config_kwargs, special = TINY_CAUSAL_LMS[model_type]
    config_kwargs = {**config_kwargs, **config}
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    texts = texts or redial_texts() or FALLBACK_TEXT
    specials = list(dict.fromkeys(special.values()))
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=1, special_tokens=specials
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **special)
    tokenizer.save_pretrained(directory)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in special.items()}
    # Qwen2.5's table has spare rows past its tokenizer (151,936 for 151,665): so has ours
    config_kwargs.setdefault(
        'vocab_size', len(tokenizer) + (16 if model_type == 'qwen2' else 0)
    )
    config = AutoConfig.for_model(
        model_type,
        bos_token_id=ids.get('bos_token', ids['eos_token']),
        eos_token_id=ids['eos_token'],
        pad_token_id=ids.get('pad_token'),
        **config_kwargs,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


TINY_DIALOGUE_TRANSFORMER = [
    '--n-layers',
    '1',
    '--embedding-size',
    '16',
    '--ffn-size',
    '32',
    '--n-heads',
    '2',
    '--text-truncate',
    '48',
    '--label-truncate',
    '12',
    '--truncate',
    '48',
]


# --- Students: the tiny teachers' shape and slice, in-process students, the fused loss's inputs

SLICE = ['--redial-max-dialogues', 12]
TRUNC = ['--truncate', 64, '--text-truncate', 64, '--label-truncate', 20]
TINY_TRANSFORMER = [
    '--n-layers',
    1,
    '--embedding-size',
    16,
    '--ffn-size',
    32,
    '--n-heads',
    2,
]
GEN = ['--inference', 'greedy', '--skip-generation', 'false']


def train_student_args(
    teachers,
    model_file,
    *extra,
    gate='soft',
    batch_size=8,
    steps=3,
    validation_max_exs=8,
    dialogue_teacher=None,
    backbone=(*TINY_TRANSFORMER, *TRUNC),
    command='train_model',
):
    """``parlai <command>`` arguments that train a ConKD student over the session's tiny teachers.

    :param teachers: the ``teachers`` fixture's ``(root, env, common)``.
    :param extra: more flags, last: ParlAI's parser keeps the last value of a repeated flag, so
        they also override the defaults here.
    :param steps: ``--max-train-steps``; None leaves it out (then pass ``--num-epochs``).
    :param dialogue_teacher: a dialogue-teacher model file other than the session's.
    :param backbone: the generator's shape flags (default: the tiny transformer, truncated).
    """
    root, _, common = teachers
    steps_args = [] if steps is None else ['--max-train-steps', steps]
    return [
        command,
        *('-t', 'redial_crs', '-m', 'conkd_student', '--gate', gate),
        *('--dialogue-teacher-file', dialogue_teacher or root / 'dial'),
        *('--rec-teacher-file', root / 'rec', '-mf', model_file),
        *('-bs', batch_size, *steps_args, '--skip-generation', 'true'),
        *('--validation-max-exs', validation_max_exs),
        *backbone,
        *common,
        *extra,
    ]


#: ``parlai interactive`` decoding flags for the tiny zoo: a short beam, short replies
TINY_CHAT = [
    *('--inference', 'beam', '--beam-size', '2', '--beam-min-length', '3'),
    *('--label-truncate', '12', '--text-truncate', '64', '--truncate', '64'),
]


def report(proc):
    """The last JSON metrics line ParlAI printed."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    assert lines, proc.stdout[-3000:]
    return json.loads(lines[-1])


def _student(teachers, tmp_path, *extra):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    root, env, common = teachers
    for key, value in env.items():
        pytest.MonkeyPatch().setenv(key, value)
    args = [
        '-t',
        'redial_crs',
        '-m',
        'conkd_student',
        '-dt',
        'train:ordered',
        '-bs',
        1,
        '--dialogue-teacher-file',
        root / 'dial',
        '--rec-teacher-file',
        root / 'rec',
        '--dropout',
        0,
        '-mf',
        tmp_path / 'student',
        *TINY_TRANSFORMER,
        *TRUNC,
        *common,
        *extra,
    ]
    opt = ParlaiParser(True, True).parse_args([str(a) for a in args])
    agent = create_agent(opt)
    world = create_task(opt, agent)
    return agent, world.get_agents()[0]


def _fixed_batch(agent, teacher, size=4):
    observations = []
    for _ in range(size):
        clone = agent.clone()
        observations.append(clone.observe(teacher.act()))
    return agent.batchify(observations)


def on_device(agent, batch):
    """``batchify`` gives CPU tensors; ParlAI's ``batch_act`` moves them to the agent's GPU (as here)."""
    return (
        batch.to(0 if agent.opt['gpu'] == -1 else agent.opt['gpu'])
        if agent.use_cuda
        else batch
    )


PAD = 0
# item ids as this project's dictionaries lay them out
CONTIGUOUS = torch.tensor([5, 6, 7, 8, 9])


def _inputs(items, seed=0, vocab=11, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    batch, steps, n = 3, 4, len(items)
    dial = torch.log_softmax(
        torch.randn(batch, steps, vocab, generator=g, dtype=dtype) * 2, -1
    )
    dial[0, 1, int(items[0])] = float('-inf')  # an exact zero in the dialogue teacher
    dial = torch.log_softmax(dial, -1)
    rec = torch.log_softmax(torch.randn(batch, n, generator=g, dtype=dtype), -1)
    rec[1, 2] = float('-inf')  # an excluded context item
    rec = torch.log_softmax(rec, -1)
    labels = torch.randint(1, vocab, (batch, steps), generator=g)
    labels[2, :2] = PAD  # left padding
    labels[0, 3] = PAD  # right padding
    logits = torch.randn(batch, steps, vocab, generator=g, dtype=dtype) * 3
    return dial, rec, labels, logits


# ----------------------------------------------- The zoo: a fake trainer, its files, PNG output

ZOO_ENV = ('CONKD_ZOO_URL', 'CONKD_ZOO_SHA256', 'CONKD_ZOO_RECIPE', 'CONKD_ZOO_MODELS')


class FakeTrainer:
    """Stands in for ``parlai train_model``: writes what ParlAI writes, records the calls."""

    def __init__(self, fail_for=()):
        self.calls = []
        self.fail_for = set(fail_for)

    def __call__(self, args, log_path, desc, epochs, threads=None):
        model_file = args[args.index('-mf') + 1]
        name = os.path.basename(model_file)
        self.calls.append((name, list(args)))
        opt = {
            'model_file': model_file,
            'dict_file': model_file + '.dict',
            'override': {'model_file': model_file},
        }
        for flag in ('--dialogue-teacher-file', '--rec-teacher-file', '--init-model'):
            if flag in args:
                opt[flag.lstrip('-').replace('-', '_')] = args[args.index(flag) + 1]
        torch.save({'model': {'weights': torch.tensor([float(len(name))])}}, model_file)
        for suffix, text in (
            ('.dict', 'a 1\n'),
            ('.checkpoint', 'ckpt'),
            ('.trainstats', '{}'),
        ):
            with open(model_file + suffix, 'w') as f:
                f.write(text)
        with open(log_path, 'w') as f:
            f.write('fake training log\n')
        if name in self.fail_for:  # dies after writing part of its output
            raise builder.ZooError(f'{desc}: parlai train_model exited 1')
        with open(model_file + '.opt', 'w') as f:
            json.dump(opt, f)


def visible_model_files(datapath, model):
    return builder.model_files(builder.zoo_dir(str(datapath)), model)


def tmp_dirs(datapath):
    models = os.path.join(str(datapath), 'models')
    return (
        [n for n in os.listdir(models) if n.startswith(builder.TMP_PREFIX)]
        if os.path.isdir(models)
        else []
    )


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def assert_png(path):
    import matplotlib.image

    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


# ---------------------------------------- Human evaluation: Conversations logs with item tokens

#: seeker turns per context; the gold reply mentions a movie
CONTEXTS = [
    [
        ('hi! i want a sci-fi movie', 'have you seen __item_111__ ?'),
        ('yes, loved it', 'then try __item_333__'),
    ],
    [('something for kids please', 'maybe __item_222__'), ('great thanks', 'enjoy!')],
    [('a crime movie?', 'try __item_333__'), ('sounds good', 'it is a classic')],
    [('any cartoon?', '__item_222__ is fun'), ('ok', 'bye')],
]


def conversation_id(context: int) -> str:
    """The ReDial conversation id the fixture logs give context ``context``."""
    return str(20001 + context)


def conversations_log(path: Path, model_id: str, reply) -> Path:
    """A Conversations jsonl as `parlai eval_model --world-logs` writes it (redial_crs teacher
    acts carry the ReDial ``conversation_id``)."""
    with open(path, 'w', encoding='utf-8') as f:
        for c, turns in enumerate(CONTEXTS):
            dialog = []
            for t, (seeker, gold) in enumerate(turns):
                dialog.append(
                    [
                        {
                            'id': 'redial_crs',
                            'text': seeker,
                            'eval_labels': [gold],
                            'conversation_id': conversation_id(c),
                            'episode_done': t == len(turns) - 1,
                        },
                        {'id': model_id, 'text': reply(c, t), 'episode_done': False},
                    ]
                )
            f.write(
                json.dumps({'dialog': dialog, 'context': [], 'metadata_path': None})
                + '\n'
            )
    return path


def checkpoint_train_steps(path):
    """``train_steps`` of a ``.trainstats`` file, None while it is not written (or being written)."""
    try:
        with open(path) as f:
            return json.load(f)['train_steps']
    except (OSError, ValueError, KeyError):
        return None


def final_report_updates(log):
    """total_train_updates of the JSON report after 'valid:' and after 'test:' (the final eval)."""
    found = {}
    for fold in ('valid', 'test'):
        matches = re.findall(r'\| ' + fold + r'\b[^\n]*:\n(\{.*\})', log)
        assert matches, log[-3000:]
        found[fold] = json.loads(matches[-1])['total_train_updates']
    return found


def loss_metrics_and_grads(agent, batch, padded):
    """compute_loss of the agent (ParlAI's own on padded scores when ``padded``), in training
    mode without dropout: (loss, {metric: value}, {parameter: grad})."""
    from parlai.agents.transformer.transformer import TransformerGeneratorAgent
    from parlai.core.metrics import AverageMetric

    agent.model.train()
    for module in agent.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    agent.model.zero_grad()
    agent.reset_metrics()
    agent._local_metrics = {}
    if padded:  # ParlAI's compute_loss, what RealStepLossMixin replaces
        loss = TransformerGeneratorAgent.compute_loss(agent, batch)
    else:
        loss = agent.compute_loss(batch)
    loss.backward()
    metrics = {
        k: sum((m for m in v if m is not None), AverageMetric(0, 0)).value()
        for k, v in agent._local_metrics.items()
    }
    grads = {
        n: p.grad.clone()
        for n, p in agent.model.named_parameters()
        if p.grad is not None
    }
    return loss.detach(), metrics, grads
