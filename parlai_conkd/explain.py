"""``python -m parlai_conkd.explain plot-gates|plot-results ...``: the older name of the two
picture scripts, kept working, with the same options as ``python -m parlai_conkd.scripts.plot_gates``
and ``python -m parlai_conkd.scripts.plot_results``."""

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from parlai_conkd.scripts.plot_gates import PlotGates
    from parlai_conkd.scripts.plot_results import PlotResults

    scripts = {'plot-gates': PlotGates, 'plot-results': PlotResults}
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in scripts:
        print(
            f'usage: python -m parlai_conkd.explain {{{",".join(scripts)}}} ...',
            file=sys.stderr,
        )
        return 2
    script = scripts[argv[0]]
    print(script(script.setup_args().parse_args(argv[1:])).run())
    return 0


if __name__ == '__main__':
    sys.exit(main())
