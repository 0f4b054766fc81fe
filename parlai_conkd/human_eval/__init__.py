"""Human evaluation the ParlAI way: ACUTE-Eval pairings, a rating page, analysis, Mechanical Turk.

Run ``python -m parlai_conkd.human_eval --help``. The pieces, each a module with one job:

- ``conversations``: conversation logs from model files via ``parlai eval_model --world-logs``,
  turned into ACUTE-Eval dialogue dicts;
- ``pairings``: ParlAI's ACUTE-Eval pairings JSONL (read, validate, build, onboarding pairs);
- ``questions``: the comparison questions and their choice phrasings;
- ``units``: one rater's unit of work, the rater-facing view of a pairing, the stored result shape;
- ``page``: the rating page (our own HTML/JS) rendered for the local server or an MTurk HIT;
- ``server``: the local study server on 127.0.0.1;
- ``analysis``: win rates, exact binomial tests, table and chart;
- ``mturk`` / ``mturk_standin``: the Mechanical Turk route through boto3, and a local stand-in
  of the MTurk API for rehearsals and tests.
"""
