"""ParlAI's place for a task's data build (``parlai/tasks/<name>/build.py``). The ReDial build is
:mod:`parlai_conkd.redial.build`, below the agents that read the same data; these are its public
names, for code written against this module."""

from parlai_conkd.redial.build import (  # noqa: F401
    add_redial_args,
    build,
    built_dir,
    catalog_path,
    fold_path,
    load_catalog,
    load_episodes,
    meta_path,
    read_episodes,
    source_path,
)
