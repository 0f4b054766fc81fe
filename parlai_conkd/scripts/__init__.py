"""Command-line scripts in ParlAI's style (:class:`parlai.core.script.ParlaiScript`): run each with
``python -m parlai_conkd.scripts.<name> --help``."""
