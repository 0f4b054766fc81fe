"""One command for comparable numbers: ``python -m parlai_conkd.leaderboard`` (see script.py).

spec.py (rows), runner.py (eval_model runs and their cache), table.py (aggregation, Markdown),
plot.py (PNG), script.py (the ParlAI script).
"""
