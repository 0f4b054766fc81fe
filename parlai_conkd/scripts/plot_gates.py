#!/usr/bin/env python3
"""Draw a dialogue's gold responses, each token coloured by the ConKD gate (a PNG).

The gate of a token is the dialogue teacher's item mass lambda_t, teacher-forced on the gold
response (:func:`parlai_conkd.plots.gated_responses`); ``--gate hard`` colours by the teacher the
hard gate picks instead.

Examples
--------

.. code-block:: shell

  python -m parlai_conkd.scripts.plot_gates -mf zoo:conkd/hard -dp data --dialogue 1 --out gates.png
"""

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript

from parlai_conkd.plots import gated_responses, plot_gates


def setup_args(parser=None) -> ParlaiParser:
    if parser is None:
        parser = ParlaiParser(
            False, False, 'Colour each response token of a dialogue by its ConKD gate'
        )
    # dest plot_model_file: ParlAI would otherwise read the model's options into this parser
    parser.add_argument(
        '-mf',
        '--model-file',
        dest='plot_model_file',
        required=True,
        help='student (or dialogue teacher) model file or zoo: path',
    )
    parser.add_argument(
        '-dp', '--datapath', default=None, help='ParlAI datapath (default: ParlAI\'s)'
    )
    parser.add_argument('--fold', default='test', choices=('train', 'valid', 'test'))
    parser.add_argument(
        '--dialogue', type=int, default=0, help='index of the dialogue in the fold'
    )
    parser.add_argument('--max-turns', type=int, default=6, help='responses shown')
    parser.add_argument(
        '--gate',
        default=None,
        choices=('none', 'static', 'soft', 'hard'),
        help='colouring (default: the student\'s --gate)',
    )
    parser.add_argument('--redial-path', default=None)
    parser.add_argument('--redial-meta-path', default=None)
    parser.add_argument('--out', required=True, help='PNG file to write')
    return parser


class PlotGates(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self) -> str:
        """Write the PNG; returns its path."""
        opt = self.opt
        overrides = {
            k: opt[k] for k in ('redial_path', 'redial_meta_path') if opt.get(k)
        }
        model_file = opt['plot_model_file']
        responses, saved = gated_responses(
            model_file,
            opt['datapath'],
            opt['fold'],
            opt['dialogue'],
            opt['max_turns'],
            overrides,
        )
        kind = opt.get('gate') or saved.get('gate') or 'soft'
        title = f'{model_file}: {opt["fold"]} dialogue {opt["dialogue"]}, {kind} gate'
        return plot_gates(
            responses,
            opt['out'],
            kind,
            float(saved.get('hard_gate_threshold', 0.5)),
            title,
        )


if __name__ == '__main__':
    print(PlotGates.main())
