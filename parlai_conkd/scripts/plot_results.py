#!/usr/bin/env python3
"""Bar chart of results tables: one panel per metric, one bar per model (a PNG).

Reads the results JSON the project writes (see :func:`parlai_conkd.plots.load_results` for the
accepted shapes, ParlAI's ``--report-filename`` output among them).

Examples
--------

.. code-block:: shell

  python -m parlai_conkd.scripts.plot_results --results a.json b.json --metrics recall@10,ppl --out r.png
"""

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript

from parlai_conkd.plots import DEFAULT_RESULT_METRICS, load_results, plot_results


def setup_args(parser=None) -> ParlaiParser:
    if parser is None:
        parser = ParlaiParser(False, False, 'Bar chart of ConKD results tables')
    parser.add_argument(
        '--results',
        nargs='+',
        required=True,
        help='results JSON file(s) (see load_results)',
    )
    parser.add_argument(
        '--metrics',
        default=','.join(DEFAULT_RESULT_METRICS),
        help='comma-separated metrics',
    )
    parser.add_argument('--title', default='ConKD results')
    parser.add_argument('--out', required=True, help='PNG file to write')
    return parser


class PlotResults(ParlaiScript):
    @classmethod
    def setup_args(cls):
        return setup_args()

    def run(self) -> str:
        """Write the PNG; returns its path."""
        metrics = [m.strip() for m in self.opt['metrics'].split(',') if m.strip()]
        return plot_results(
            load_results(self.opt['results']),
            metrics,
            self.opt['out'],
            self.opt['title'],
        )


if __name__ == '__main__':
    print(PlotResults.main())
